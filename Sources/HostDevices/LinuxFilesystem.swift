import CBlkid
import FoundationEssentials
import Glibc
import Logging
import NIOPosix
import VolumeService

/// `HostFilesystem` on Linux: libblkid to probe, mount(2) and umount2(2) to mount, `/proc/self/mountinfo` to query.
/// Blocking calls run on `NIOThreadPool.singleton`, never on Swift's cooperative pool.
public struct LinuxFilesystem: HostFilesystem {
    private let logger: Logger

    /// The host's filesystems, through libblkid, mount(2) and the filesystem tools.
    ///
    /// - Parameter logger: Told of formats, growth and freezes.
    public init(logger: Logger) {
        self.logger = logger
    }

    public func filesystemType(device: String) async throws -> String? {
        try await NIOThreadPool.singleton.runIfActive {
            let probe = try BlockProbe(device: device)
            return try probe.filesystemType()
        }
    }

    public func mounts(under root: String) async throws -> [MountEntry] {
        let text = try await NIOThreadPool.singleton.runIfActive {
            try ProcFile.read("/proc/self/mountinfo")
        }
        return MountInfo.parse(text).filter { $0.mountpoint == root || $0.mountpoint.hasPrefix(root + "/") }
    }

    public func mount(device: String, at path: String, type: String, options: [MountOption]) async throws {
        let (flags, data) = Self.mountArguments(options, type: type)
        try await NIOThreadPool.singleton.runIfActive {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            guard Glibc.mount(device, path, type, flags, data.isEmpty ? nil : data) == 0 else {
                throw DeviceError(.mount, "mount(2) failed: \(String(cString: strerror(errno)))")
            }
        }
        logger.debug(
            "Mounted",
            metadata: [
                "device.path": "\(device)", "mountpoint": "\(path)", "fs.type": "\(type)",
                "mount.options": "\(options.map(\.rawValue).joined(separator: ","))",
            ])
    }

    /// mount(2)'s flags and data string for the options. Access times are `noatime` unless an option says otherwise.
    /// xfs is mounted `nouuid`: a clone or a volume restored from a snapshot carries its origin's filesystem UUID, and
    /// xfs refuses (EINVAL) a second filesystem with a UUID already mounted, so without it a clone could not be
    /// mounted on the droplet where its origin is.
    static func mountArguments(_ options: [MountOption], type: String) -> (flags: UInt, data: String) {
        var flags = UInt(MS_NOATIME)
        var data: [String] = type == "xfs" ? ["nouuid"] : []
        for option in options {
            switch option {
            case .ro: flags |= UInt(MS_RDONLY)
            case .nosuid: flags |= UInt(MS_NOSUID)
            case .nodev: flags |= UInt(MS_NODEV)
            case .noexec: flags |= UInt(MS_NOEXEC)
            case .noatime: flags |= UInt(MS_NOATIME)
            case .nodiratime: flags |= UInt(MS_NODIRATIME)
            case .relatime: flags = (flags & ~UInt(MS_NOATIME)) | UInt(MS_RELATIME)
            case .strictatime: flags = (flags & ~UInt(MS_NOATIME)) | UInt(MS_STRICTATIME)
            case .lazytime: flags |= UInt(MS_LAZYTIME)
            case .discard, .nobarrier: data.append(option.rawValue)
            }
        }
        return (flags, data.joined(separator: ","))
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
                throw DeviceError(.mount, "umount(2) failed: \(String(cString: strerror(code)))\(hint)")
            }
            rmdir(path)
            return layers
        }
        logger.debug("Unmounted", metadata: ["mountpoint": "\(path)", "layers": "\(layers)"])
    }
}

extension LinuxFilesystem {
    /// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` from linux/fs.h.
    static let fifreeze: UInt = 0xC004_5877
    static let fithaw: UInt = 0xC004_5878

    public func freeze(mountpoint: String) async throws {
        try await Self.freezeIoctl(Self.fifreeze, "FIFREEZE", mountpoint)
        logger.debug("Filesystem frozen", metadata: ["mountpoint": "\(mountpoint)"])
    }

    public func thaw(mountpoint: String) async throws {
        try await Self.freezeIoctl(Self.fithaw, "FITHAW", mountpoint)
        logger.debug("Filesystem thawed", metadata: ["mountpoint": "\(mountpoint)"])
    }

    public func prepareDirectory(_ path: String, uid: UInt32?, gid: UInt32?, mode: UInt32?) async throws {
        let made = try await NIOThreadPool.singleton.runIfActive { () throws -> Bool in
            func failure(_ what: String) -> DeviceError {
                DeviceError(.io, "cannot \(what) \(path): \(String(cString: strerror(errno)))")
            }
            let made = Glibc.mkdir(path, 0o700) == 0
            guard made || errno == EEXIST else { throw failure("make the directory") }
            // Opened without following a link, so that what is changed is the directory itself.
            let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw failure("open the directory (it must be a directory, not a link)") }
            defer { close(fd) }
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw failure("read") }
            if (uid.map { $0 != info.st_uid } ?? false) || (gid.map { $0 != info.st_gid } ?? false) {
                // -1 leaves that id as it is; chown clears the set-id bits, so the mode comes after.
                guard fchown(fd, uid ?? UInt32.max, gid ?? UInt32.max) == 0 else { throw failure("change the owner of") }
                info.st_mode &= ~mode_t(0o6000)
            }
            // A directory made now gets its mode whatever the plugin's umask: 0755 when none was given.
            let wanted = mode ?? (made ? DataDirectory.defaultMode : nil)
            if let wanted, info.st_mode & 0o7777 != wanted {
                guard fchmod(fd, mode_t(wanted)) == 0 else { throw failure("change the mode of") }
            }
            return made
        }
        if made { logger.debug("Data directory made", metadata: ["path": "\(path)"]) }
    }

    static func freezeIoctl(_ request: UInt, _ name: String, _ mountpoint: String) async throws {
        try await NIOThreadPool.singleton.runIfActive {
            let fd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else {
                throw DeviceError(.freeze, "cannot open \(mountpoint): \(String(cString: strerror(errno)))")
            }
            defer { close(fd) }
            guard ioctl(fd, request, 0) == 0 else {
                throw DeviceError(.freeze, "\(name) on \(mountpoint) failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// How much of each end of a device must read as zeros for it to count as blank: DigitalOcean's new volumes read
    /// as zeros, and partition tables, LVM labels, RAID superblocks and backup headers sit within it.
    static let zeroedEnds = 1 << 20

    public func checkBlank(device: String) async throws -> BlankCheck {
        try await NIOThreadPool.singleton.runIfActive {
            if let found = try BlockProbe(device: device).anySignature() {
                return BlankCheck(sizeBytes: try DeviceFile(device).size(), found: found)
            }
            let file = try DeviceFile(device)
            let size = try file.size()
            let span = Int(min(UInt64(Self.zeroedEnds), size))
            for (offset, end) in [(UInt64(0), "first"), (size - UInt64(span), "last")] {
                let bytes = try file.read(span, at: offset)
                guard bytes.count == span else { throw DeviceError(.io, "cannot read \(device) to its end") }
                if bytes.contains(where: { $0 != 0 }) {
                    return BlankCheck(sizeBytes: size, found: "data in its \(end) MiB")
                }
            }
            return BlankCheck(sizeBytes: size, found: nil)
        }
    }

    public func format(device: String, type: FilesystemType, label: String?) async throws {
        var arguments: [String]
        switch type {
        case .ext4:
            // As DigitalOcean formats: inode tables and journal initialised lazily, so a large volume is ready at once.
            arguments = ["-t", "ext4", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1"]
            if let label { arguments += ["-L", label] }
            try await Programs.run("mke2fs", arguments + [device])
        case .xfs:
            // No -f: mkfs.xfs itself refuses a device that holds anything it recognises.
            arguments = ["-q"]
            if let label { arguments += ["-L", label] }
            try await Programs.run("mkfs.xfs", arguments + [device])
        }
        logger.notice("Formatted a blank volume", metadata: ["device.path": "\(device)", "fs.type": "\(type.rawValue)"])
    }

    public func sizes(device: String) async throws -> (device: UInt64, filesystem: UInt64?) {
        try await NIOThreadPool.singleton.runIfActive {
            let file = try DeviceFile(device)
            return (try file.size(), Superblock.parse(try file.read(2048, at: 0)))
        }
    }

    public func grow(device: String, type: FilesystemType, mountpoint: String?) async throws {
        switch (type, mountpoint) {
        case (.ext4, nil):
            // resize2fs requires a checked filesystem; e2fsck answers 1 when it corrected something.
            try await Programs.run("e2fsck", ["-f", "-p", device], accept: [0, 1])
            try await Programs.run("resize2fs", [device])
        case (.ext4, .some):
            // Online: the kernel's EXT4_IOC_RESIZE_FS, which needs CAP_SYS_RESOURCE.
            try await Programs.run("resize2fs", [device])
        case (.xfs, let mountpoint?):
            try await Programs.run("xfs_growfs", ["-d", mountpoint])
        case (.xfs, nil):
            throw DeviceError(.unsupported, "xfs grows only while mounted")
        }
        logger.notice("Grew the filesystem", metadata: ["device.path": "\(device)", "fs.type": "\(type.rawValue)"])
    }
}

/// A device (or image file) open for reading; closed when released. Blocking: use off the cooperative pool.
final class DeviceFile {
    let path: String
    private let fd: Int32

    init(_ path: String) throws {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DeviceError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        self.path = path
    }

    deinit { close(fd) }

    /// The size in bytes.
    func size() throws -> UInt64 {
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw DeviceError(.io, "cannot size \(path): \(String(cString: strerror(errno)))") }
        return UInt64(end)
    }

    /// `count` bytes from `offset`; fewer at the end of the device.
    func read(_ count: Int, at offset: UInt64) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let read = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        guard read >= 0 else { throw DeviceError(.io, "cannot read \(path): \(String(cString: strerror(errno)))") }
        return Array(buffer.prefix(read))
    }
}

/// The size an ext4 or xfs filesystem says it has, read from its superblock.
enum Superblock {
    /// From the device's first 2 KiB: xfs's superblock at 0 (big-endian), ext4's at 1024 (little-endian).
    static func parse(_ head: [UInt8]) -> UInt64? {
        guard head.count >= 2048 else { return nil }
        func big(_ offset: Int, _ width: Int) -> UInt64 {
            head[offset..<offset + width].reduce(0) { $0 << 8 | UInt64($1) }
        }
        func little(_ offset: Int, _ width: Int) -> UInt64 {
            head[offset..<offset + width].reversed().reduce(0) { $0 << 8 | UInt64($1) }
        }
        if head.count >= 16, Array(head[0..<4]) == Array("XFSB".utf8) {
            return big(4, 4) * big(8, 8)  // sb_blocksize × sb_dblocks
        }
        let ext = 1024
        if head.count >= ext + 0x158, little(ext + 0x38, 2) == 0xEF53 {
            let blockSize = UInt64(1024) << little(ext + 0x18, 4)  // s_log_block_size
            var blocks = little(ext + 0x04, 4)  // s_blocks_count_lo
            if little(ext + 0x60, 4) & 0x80 != 0 {  // INCOMPAT_64BIT: s_blocks_count_hi
                blocks |= little(ext + 0x150, 4) << 32
            }
            return blocks * blockSize
        }
        return nil
    }
}

/// One libblkid low-level probe of a device's superblocks and partition table: what `blkid -p` does, in process.
/// Owns the probe, which holds the device open until it is released.
final class BlockProbe {
    private let probe: blkid_probe
    let device: String

    init(device: String) throws {
        guard let probe = blkid_new_probe_from_filename(device) else {
            throw DeviceError(.probe, "cannot open \(device) to probe it: \(String(cString: strerror(errno)))")
        }
        self.probe = probe
        self.device = device
        blkid_probe_enable_superblocks(probe, 1)
        blkid_probe_set_superblocks_flags(probe, Int32(BLKID_SUBLKS_TYPE))
        blkid_probe_enable_partitions(probe, 1)
        blkid_probe_set_partitions_flags(probe, Int32(BLKID_PARTS_MAGIC))
    }

    deinit {
        blkid_free_probe(probe)
    }

    /// Any signature libblkid knows (filesystem, RAID or LVM member, crypto, partition table), or nil. Blocking.
    func anySignature() throws -> String? {
        switch blkid_do_safeprobe(probe) {
        case 0: return value("TYPE") ?? value("PTTYPE").map { "a \($0) partition table" } ?? "a signature"
        case 1: return nil
        case -2: return "more than one signature"
        default: throw DeviceError(.probe, "probing \(device) failed: \(String(cString: strerror(errno)))")
        }
    }

    /// The filesystem on the device, nil when it holds none. Refuses a partition table and a device with more than
    /// one signature: mounting either could hide or damage data. Blocking: call off the cooperative pool.
    func filesystemType() throws -> String? {
        switch blkid_do_safeprobe(probe) {
        case 0:
            if let type = value("TYPE") { return type }
            if let table = value("PTTYPE") {
                throw DeviceError(
                    .probe, "\(device) holds a \(table) partition table, not a filesystem; this driver mounts "
                        + "whole-device ext4 or xfs volumes")
            }
            return nil
        case 1:
            return nil
        case -2:
            throw DeviceError(
                .probe, "\(device) carries more than one filesystem signature; it is not mounted, so nothing is "
                    + "damaged: inspect it with wipefs \(device) from the droplet")
        default:
            throw DeviceError(.probe, "probing \(device) failed: \(String(cString: strerror(errno)))")
        }
    }

    private func value(_ name: String) -> String? {
        var data: UnsafePointer<CChar>?
        guard blkid_probe_lookup_value(probe, name, &data, nil) == 0, let data else { return nil }
        return String(cString: data)
    }
}

/// Reading procfs files: they report a size of 0 and are produced page by page, so they are read with read(2)
/// until end of file (a size-based read sees a truncated or empty file). Blocking: call off the cooperative pool.
public enum ProcFile {
    /// Reads the whole file.
    ///
    /// - Parameter path: A file under /proc.
    /// - Returns: The whole file, as UTF-8.
    /// - Throws: `DeviceError` `.io` when it cannot be opened or read.
    public static func read(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DeviceError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw DeviceError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Parses `/proc/self/mountinfo`.
public enum MountInfo {
    /// The mounts it lists.
    ///
    /// - Parameter text: The file's contents.
    /// - Returns: Every mount, with its source, mount point (octal escapes decoded) and filesystem type.
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
