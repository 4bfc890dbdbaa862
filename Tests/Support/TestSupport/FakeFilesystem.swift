import DOSimulator
import Foundation
import Glibc
import NIOConcurrencyHelpers
import VolumeService

extension InProcessAPI: VolumeAPI {}

/// An in-memory `HostFilesystem`: mounts are remembered, and a device's filesystem is what `FileDeviceBackend`
/// wrote at its start ("ext4", "xfs", or nothing for a blank volume).
public final class FakeFilesystem: HostFilesystem {
    private struct State {
        var mounts: [String: MountEntry] = [:]
        var options: [String: [MountOption]] = [:]
        var failNextMount: String?
        var failNextGrowth: String?
        var operations: [String] = []
        var filesystemBytes: [String: UInt64] = [:]
        var frozen: Set<String> = []
        var freezes: [String] = []
        var directories: [String: DataDirectory] = [:]
    }
    private let state = NIOLockedValueBox(State())

    public init() {}

    public var mounted: [String: MountEntry] { state.withLockedValue { $0.mounts } }

    /// The options each mount point was last mounted with.
    public var mountOptions: [String: [MountOption]] { state.withLockedValue { $0.options } }

    /// The next mount fails with this message.
    public func failNextMount(_ message: String) { state.withLockedValue { $0.failNextMount = message } }

    /// Mount points frozen now.
    public var frozen: Set<String> { state.withLockedValue { $0.frozen } }

    /// "freeze <path>" and "thaw <path>", in order.
    public var freezeLog: [String] { state.withLockedValue { $0.freezes } }

    public func freeze(mountpoint: String) async throws {
        try state.withLockedValue { state in
            guard state.mounts[mountpoint] != nil else { throw FakeError(message: "\(mountpoint) is not mounted") }
            guard state.frozen.insert(mountpoint).inserted else { throw FakeError(message: "\(mountpoint) is frozen already") }
            state.freezes.append("freeze \(mountpoint)")
        }
    }

    public func thaw(mountpoint: String) async throws {
        try state.withLockedValue { state in
            guard state.frozen.remove(mountpoint) != nil else { throw FakeError(message: "\(mountpoint) is not frozen") }
            state.freezes.append("thaw \(mountpoint)")
        }
    }

    /// The directories made in mounted filesystems, with the owner and mode last given to each.
    public var directories: [String: DataDirectory] { state.withLockedValue { $0.directories } }

    public func prepareDirectory(_ path: String, uid: UInt32?, gid: UInt32?, mode: UInt32?) async throws {
        try state.withLockedValue { state in
            guard state.mounts.keys.contains(where: { path.hasPrefix($0 + "/") }) else {
                throw FakeError(message: "\(path) is in no mounted filesystem")
            }
            var directory = state.directories[path] ?? DataDirectory(uid: 0, gid: 0, mode: DataDirectory.defaultMode)
            directory.uid = uid ?? directory.uid
            directory.gid = gid ?? directory.gid
            directory.mode = mode ?? directory.mode
            state.directories[path] = directory
        }
    }

    /// Drops a mount behind the plugin's back (as dockerd does at shutdown).
    public func forget(_ path: String) { state.withLockedValue { $0.mounts[path] = nil } }

    public func filesystemType(device: String) async throws -> String? {
        let text = Self.head(device)
        return text.isEmpty ? nil : text
    }

    /// What the fake device's first bytes say it holds ("ext4", "xfs", "" for blank, anything else for other data).
    static func head(_ device: String) -> String {
        guard let handle = FileHandle(forReadingAtPath: device) else { return "" }
        defer { try? handle.close() }
        let bytes = (try? handle.read(upToCount: 64)) ?? Data()
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// The size of what the device link leads to.
    public static func size(_ device: String) -> UInt64 {
        var info = stat()
        return stat(device, &info) == 0 ? UInt64(info.st_size) : 0
    }

    /// Whether the device's last bytes are anything but zeros.
    static func tailHoldsData(_ device: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: device) else { return false }
        defer { try? handle.close() }
        let size = size(device)
        guard size >= 64, (try? handle.seek(toOffset: size - 64)) != nil else { return false }
        return ((try? handle.read(upToCount: 64)) ?? Data()).contains { $0 != 0 }
    }

    /// Formats and growths, in order, as "format ext4 <device>" and "grow xfs <device> <mountpoint or ->".
    public var operations: [String] { state.withLockedValue { $0.operations } }

    /// The next growth fails with this message.
    public func failNextGrowth(_ message: String) { state.withLockedValue { $0.failNextGrowth = message } }

    public func checkBlank(device: String) async throws -> BlankCheck {
        let head = Self.head(device)
        let found = !head.isEmpty ? head : Self.tailHoldsData(device) ? "data at its end" : nil
        return BlankCheck(sizeBytes: Self.size(device), found: found)
    }

    public func format(device: String, type: FilesystemType, label: String?) async throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: device))
        try handle.write(contentsOf: Data(type.rawValue.utf8))
        try handle.close()
        state.withLockedValue {
            $0.operations.append("format \(type.rawValue) \(device)")
            $0.filesystemBytes[device] = Self.size(device)
        }
    }

    /// The filesystem's size is the device's when first asked, and after each growth.
    public func sizes(device: String) async throws -> (device: UInt64, filesystem: UInt64?) {
        let size = Self.size(device)
        let filesystem = state.withLockedValue { state -> UInt64 in
            if let known = state.filesystemBytes[device] { return known }
            state.filesystemBytes[device] = size
            return size
        }
        return (size, Self.head(device).isEmpty ? nil : filesystem)
    }

    public func grow(device: String, type: FilesystemType, mountpoint: String?) async throws {
        try state.withLockedValue { state in
            state.operations.append("grow \(type.rawValue) \(device) \(mountpoint ?? "-")")
            if let message = state.failNextGrowth {
                state.failNextGrowth = nil
                throw FakeError(message: message)
            }
            state.filesystemBytes[device] = Self.size(device)
        }
    }

    public func mounts(under root: String) async throws -> [MountEntry] {
        state.withLockedValue { state in
            state.mounts.values.filter { $0.mountpoint == root || $0.mountpoint.hasPrefix(root + "/") }
        }
    }

    public func mount(device: String, at path: String, type: String, options: [MountOption]) async throws {
        try state.withLockedValue { state in
            if let message = state.failNextMount {
                state.failNextMount = nil
                throw FakeError(message: message)
            }
            guard state.mounts[path] == nil else { throw FakeError(message: "\(path) is already mounted") }
            // As the kernel: xfs no longer takes nobarrier.
            if type == "xfs" && options.contains(.nobarrier) { throw FakeError(message: "mount(2) failed: Invalid argument") }
            state.mounts[path] = MountEntry(source: device, mountpoint: path, fstype: type)
            state.options[path] = options
        }
    }

    public func unmount(path: String) async throws {
        try state.withLockedValue { state in
            guard state.mounts.removeValue(forKey: path) != nil else { throw FakeError(message: "\(path) is not mounted") }
        }
    }
}

public struct FakeError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}
