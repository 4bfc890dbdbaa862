import DOSimulator
import Foundation
import NIOConcurrencyHelpers
import VolumeService

extension InProcessAPI: VolumeAPI {}

/// An in-memory `HostFilesystem`: mounts are remembered, and a device's filesystem is what `FileDeviceBackend`
/// wrote at its start ("ext4", "xfs", or nothing for a blank volume).
public final class FakeFilesystem: HostFilesystem {
    private let state = NIOLockedValueBox<(mounts: [String: MountEntry], options: [String: [MountOption]], failNextMount: String?)>(
        ([:], [:], nil))

    public init() {}

    public var mounted: [String: MountEntry] { state.withLockedValue { $0.mounts } }

    /// The options each mount point was last mounted with.
    public var mountOptions: [String: [MountOption]] { state.withLockedValue { $0.options } }

    /// The next mount fails with this message.
    public func failNextMount(_ message: String) { state.withLockedValue { $0.failNextMount = message } }

    /// Drops a mount behind the plugin's back (as dockerd does at shutdown).
    public func forget(_ path: String) { state.withLockedValue { $0.mounts[path] = nil } }

    public func filesystemType(device: String) async throws -> String? {
        let text = (try? String(contentsOfFile: device, encoding: .utf8)) ?? ""
        return text.isEmpty ? nil : text
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
}
