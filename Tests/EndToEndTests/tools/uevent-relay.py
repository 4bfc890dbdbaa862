#!/usr/bin/env python3
"""Carries udevd's device events into a test network namespace.

udevd multicasts each processed event on the netlink group "udev" of its own network namespace; a plugin in a test
host's namespace never hears them (on a droplet the plugin shares udevd's namespace). Run as

    uevent-relay.py receive | nsenter --net=/var/run/netns/NAME uevent-relay.py send

The first half reads udevd's messages in the initial namespace and writes them, length-prefixed, to stdout; the
second re-sends them unchanged on the "udev" group inside the test namespace. Both end when the pipe closes.
"""
import socket
import struct
import sys

NETLINK_KOBJECT_UEVENT = 15
UDEV_GROUP = 2


def receive() -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, UDEV_GROUP))
    out = sys.stdout.buffer
    while True:
        message = sock.recv(1 << 16)
        out.write(struct.pack("<I", len(message)) + message)
        out.flush()


def send() -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
    sock.bind((0, 0))
    source = sys.stdin.buffer
    while True:
        header = source.read(4)
        if len(header) < 4:
            return
        (length,) = struct.unpack("<I", header)
        message = source.read(length)
        if len(message) < length:
            return
        sock.sendto(message, (0, UDEV_GROUP))


if __name__ == "__main__":
    try:
        {"receive": receive, "send": send}[sys.argv[1]]()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
