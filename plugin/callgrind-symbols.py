#!/usr/bin/env python3
"""Lists the code sections of one binary that callgrind profiles saw run, as a linker symbol-ordering file.

    callgrind-symbols.py <object> <link map> <profile> [<profile> ...]

<object> is the path valgrind ran; <link map> is lld's -Map output for that binary. Each profile must have been
recorded with `--dump-instr=yes`. Prints one symbol per input section that ran: first the sections run in the first
profile, then those first run in the next ones, each group in address order. Sections without a symbol (functions
the compiler left unnamed, .text..L*) can't be named here; plugin/text-layout.ld places them.
"""
import bisect
import re
import sys

MAP_LINE = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ (\s*)(\S.*)$")


def code_sections(link_map):
    """(start, size, first symbol or None) for every input section of the executable output sections."""
    sections, current, in_code = [], None, False
    for line in open(link_map, encoding="utf-8", errors="replace"):
        match = MAP_LINE.match(line)
        if not match:
            continue
        address, size, indent, text = int(match[1], 16), int(match[2], 16), len(match[3]), match[4]
        if indent == 0:  # an output section
            in_code = text.startswith(".text") or text in (".init", ".fini", ".plt")
            current = None
        elif indent == 8:  # an input section
            current = [address, size, None] if in_code and size > 0 else None
            if current:
                sections.append(current)
        elif indent == 16 and current is not None and current[2] is None:  # its first symbol
            current[2] = text
    return sections


def executed_addresses(profile, obj):
    """Instruction addresses in `obj` that have a cost in a callgrind profile."""
    names, current, last, found = {}, None, 0, set()
    for line in open(profile, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        match = re.match(r"^(ob|cob)=\((\d+)\)(?: (.*))?$", line)
        if match:
            kind, index, name = match.groups()
            if name:
                names[index] = name
            if kind == "ob":
                current = names.get(index)
            continue
        if line.startswith("calls="):  # the callee's position: absolute, and not code of this object
            continue
        if line[0] not in "0123456789+-*":
            continue
        position = line.split()[0]
        if position.startswith("0x"):
            address = int(position, 16)
        elif position[0] == "+":
            address = last + int(position[1:])
        elif position[0] == "-":
            address = last - int(position[1:])
        elif position == "*":
            address = last
        else:
            address = int(position)
        last = address
        if current == obj:
            found.add(address)
    return found


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    obj, link_map, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
    sections = sorted(code_sections(link_map))
    if not sections:
        sys.exit(f"no code sections in {link_map}")
    starts = [start for start, _, _ in sections]
    seen = set()
    for profile in profiles:
        group = {}
        for address in executed_addresses(profile, obj):
            index = bisect.bisect_right(starts, address) - 1
            if index < 0:
                continue
            start, size, symbol = sections[index]
            if address < start + size and symbol and symbol not in seen:
                group[symbol] = start
        for symbol, _ in sorted(group.items(), key=lambda item: item[1]):
            print(symbol)
        seen.update(group)
    if not seen:
        sys.exit(f"no code of {obj} in {' '.join(profiles)}")


if __name__ == "__main__":
    main()
