import FoundationEssentials
import Glibc
import Logging
import NIOPosix
import Subprocess
import VolumeService

/// `HostFilesystem` on Linux: blkid to probe, mount(2) and umount2(2) to mount, `/proc/self/mountinfo` to query.
/// Blocking system calls run on `NIOThreadPool.singleton`, never on Swift's cooperative pool.
public struct LinuxFilesystem: HostFilesystem {
    private let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    public func filesystemType(device: String) async throws -> String? {
        // -p probes the superblocks directly (no cache); exit status 2 means nothing was found.
        let result = try await Subprocess.run(
            .name("blkid"), arguments: ["-p", "-o", "export", device],
            output: .string(limit: 16 * 1024), error: .string(limit: 16 * 1024))
        let output = result.standardOutput
        switch result.terminationStatus {
        case .exited(0):
            let fields = Self.parseExport(output)
            if let type = fields["TYPE"] { return type }
            if let table = fields["PTTYPE"] {
                throw DeviceError(
                    message: "\(device) holds a \(table) partition table, not a filesystem; this driver mounts "
                        + "whole-device ext4 or xfs volumes")
            }
            return nil
        case .exited(2):
            return nil
        default:
            let detail = result.standardError.trimmedWhitespace
            throw DeviceError(message: "blkid \(device) failed (\(result.terminationStatus)): \(detail)")
        }
    }

    public func mounts(under root: String) async throws -> [MountEntry] {
        let text = try await NIOThreadPool.singleton.runIfActive {
            try ProcFile.read("/proc/self/mountinfo")
        }
        return MountInfo.parse(text).filter { $0.mountpoint == root || $0.mountpoint.hasPrefix(root + "/") }
    }

    public func mount(device: String, at path: String, type: String) async throws {
        try await NIOThreadPool.singleton.runIfActive {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            guard Glibc.mount(device, path, type, UInt(MS_NOATIME), nil) == 0 else {
                throw DeviceError(message: "mount(2) failed: \(String(cString: strerror(errno)))")
            }
        }
        logger.debug("Mounted", metadata: ["device.path": "\(device)", "mountpoint": "\(path)", "fs.type": "\(type)"])
    }

    /// Unmounts every mount stacked at `path`. In a managed plugin the mount point lies in the propagated mount,
    /// whose host side has two shared peers (the data root and the propagated-mount bind): the plugin's mount comes
    /// back into the plugin's own namespace as a second copy, and one umount2 removes only the top one. Unmounting
    /// until nothing is left removes every copy, on the host too, so the device is really free.
    public func unmount(path: String) async throws {
        let layers = try await NIOThreadPool.singleton.runIfActive { () throws -> Int in
            var layers = 0
            while layers < 16 {
                if umount2(path, 0) == 0 {
                    layers += 1
                    continue
                }
                let code = errno
                if code == EINVAL && layers > 0 { break }  // No mount left at the path.
                let hint = code == EBUSY ? " (something still uses it: a process outside Docker, or a bind mount)" : ""
                throw DeviceError(message: "umount(2) failed: \(String(cString: strerror(code)))\(hint)")
            }
            rmdir(path)
            return layers
        }
        logger.debug("Unmounted", metadata: ["mountpoint": "\(path)", "layers": "\(layers)"])
    }

    static func parseExport(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            fields[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return fields
    }
}

/// Reading procfs files: they report a size of 0 and are produced page by page, so they are read with read(2)
/// until end of file (a size-based read sees a truncated or empty file). Blocking: call off the cooperative pool.
public enum ProcFile {
    public static func read(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DeviceError(message: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw DeviceError(message: "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Parses `/proc/self/mountinfo`.
public enum MountInfo {
    public static func parse(_ text: String) -> [MountEntry] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count >= 10, let separator = fields.firstIndex(of: "-"), separator + 2 < fields.count else {
                return nil
            }
            return MountEntry(
                source: unescape(fields[separator + 2]), mountpoint: unescape(fields[4]),
                fstype: String(fields[separator + 1]))
        }
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo octal.
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3,
                let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
