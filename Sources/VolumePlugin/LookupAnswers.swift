import FoundationEssentials
import Glibc
import VolumeService

/// The answers to the requests the engine sends by the thousand (Get, List, Path), written straight into bytes.
/// JSONEncoder's generic, reflective path cost more than the rest of such a request together; these answers are a
/// handful of fixed keys and strings, so they are written here, with JSON's escaping (RFC 8259, section 7), keys in
/// sorted order as the encoder writes them. The other answers use JSONEncoder.
struct LookupAnswers {
    private(set) var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(512) }

    /// `{"Err":"","Volume":{…}}`
    static func get(_ volume: VolumeInfo) -> [UInt8] {
        var writer = LookupAnswers()
        writer.raw(#"{"Err":"","Volume":"#)
        writer.volume(volume, withDetails: true)
        writer.raw("}")
        return writer.bytes
    }

    /// `{"Err":"","Volumes":[{"Mountpoint":…,"Name":…},…]}`
    static func list(_ volumes: [VolumeInfo]) -> [UInt8] {
        var writer = LookupAnswers()
        writer.raw(#"{"Err":"","Volumes":["#)
        for (index, volume) in volumes.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.volume(volume, withDetails: false)
        }
        writer.raw("]}")
        return writer.bytes
    }

    /// `{"Err":"","Mountpoint":"…"}`
    static func mountpoint(_ path: String) -> [UInt8] {
        var writer = LookupAnswers()
        writer.raw(#"{"Err":"","Mountpoint":"#)
        writer.string(path)
        writer.raw("}")
        return writer.bytes
    }

    /// A volume as the protocol has it: CreatedAt and Status only with details (Get), as List leaves them out.
    mutating func volume(_ volume: VolumeInfo, withDetails: Bool) {
        raw("{")
        if withDetails, let created = volume.createdAt {
            raw(#""CreatedAt":"#)
            timestamp(created)
            raw(",")
        }
        raw(#""Mountpoint":"#)
        string(volume.mountpoint)
        raw(#","Name":"#)
        string(volume.name)
        if withDetails {
            raw(#","Status":{"#)
            for (index, key) in volume.status.keys.sorted().enumerated() {
                if index > 0 { raw(",") }
                string(key)
                raw(":")
                string(volume.status[key] ?? "")
            }
            raw("}")
        }
        raw("}")
    }

    /// RFC 3339 in UTC to the second (`2026-11-23T17:27:05Z`), as `Date.formatted(.iso8601)` writes it, from the
    /// C library's calendar: the Foundation formatter's was the dearest part of a Get.
    mutating func timestamp(_ date: Date) {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        bytes.append(UInt8(ascii: "\""))
        digits(Int(parts.tm_year) + 1900, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        bytes.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
        bytes.append(contentsOf: [UInt8(ascii: "Z"), UInt8(ascii: "\"")])
    }

    private mutating func digits(_ value: Int, _ width: Int) {
        var divisor = 1
        for _ in 1..<width { divisor *= 10 }
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8((value / divisor) % 10))
            divisor /= 10
        }
    }

    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    /// A JSON string: quotation mark, reverse solidus and the control characters escaped; everything else, UTF-8
    /// included, as it is.
    mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [92, 92])
            case 0x0A: bytes.append(contentsOf: [92, UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [92, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [92, UInt8(ascii: "t")])
            case ..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [92, UInt8(ascii: "u"), 48, 48, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
