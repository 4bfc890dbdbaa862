import DigitalOcean
import Foundation
import Subprocess
import Timekeeping

/// What happens on a simulated droplet when a volume is attached or detached.
public protocol SimDeviceBackend: Sendable {
    /// Makes the volume's storage; formats it when `filesystem` is given, as DigitalOcean does.
    func create(volumeID: String, name: String, sizeGigabytes: Int, filesystem: String?, label: String) async throws
    /// Makes `<droplet.deviceDirectory>/scsi-0DO_Volume_<name>` appear.
    func attach(volumeID: String, name: String, droplet: SimDroplet) async throws
    /// Makes it disappear.
    func detach(volumeID: String, name: String, droplet: SimDroplet) async throws
    func delete(volumeID: String, name: String) async throws
    /// Grows the volume's storage; an attached device reports its new capacity (a udev `change` event).
    func resize(volumeID: String, sizeGigabytes: Int) async throws
    /// Keeps a copy of the volume's content as it is now. Returns the space the copy's data takes, in bytes.
    func snapshot(volumeID: String, snapshotID: String) async throws -> UInt64
    /// Makes a new volume's storage from a snapshot, `sizeGigabytes` large.
    func restore(snapshotID: String, volumeID: String, sizeGigabytes: Int) async throws
    func deleteSnapshot(snapshotID: String) async throws
}

/// A backend whose volumes are sparse files in `dataDirectory`: snapshots are sparse copies beside them.
public protocol FileBackedDevices: SimDeviceBackend {
    var dataDirectory: String { get }
}

extension FileBackedDevices {
    public func snapshot(volumeID: String, snapshotID: String) async throws -> UInt64 {
        try await BackingFiles(dataDirectory: dataDirectory).takeSnapshot(volumeID: volumeID, snapshotID: snapshotID)
    }

    public func restore(snapshotID: String, volumeID: String, sizeGigabytes: Int) async throws {
        try await BackingFiles(dataDirectory: dataDirectory).restore(
            snapshotID: snapshotID, volumeID: volumeID, sizeGigabytes: sizeGigabytes)
    }

    public func deleteSnapshot(snapshotID: String) async throws {
        BackingFiles(dataDirectory: dataDirectory).deleteSnapshot(snapshotID)
    }
}

/// Volume storage as sparse files in one folder, snapshots beside them: what both device backends share.
struct BackingFiles: Sendable {
    let dataDirectory: String

    func volume(_ volumeID: String) -> String { "\(dataDirectory)/\(volumeID).img" }
    func snapshot(_ snapshotID: String) -> String { "\(dataDirectory)/snapshots/\(snapshotID).img" }

    /// Copies the volume's file, keeping it sparse (the page cache is shared with a loop device on it, so what a
    /// mounted filesystem wrote is in the copy).
    func takeSnapshot(volumeID: String, snapshotID: String) async throws -> UInt64 {
        try FileManager.default.createDirectory(atPath: dataDirectory + "/snapshots", withIntermediateDirectories: true)
        try await LoopDeviceBackend.run("cp", ["--sparse=always", volume(volumeID), snapshot(snapshotID)])
        var info = stat()
        guard stat(snapshot(snapshotID), &info) == 0 else { return 0 }
        return UInt64(info.st_blocks) * 512
    }

    func restore(snapshotID: String, volumeID: String, sizeGigabytes: Int) async throws {
        try await LoopDeviceBackend.run("cp", ["--sparse=always", snapshot(snapshotID), volume(volumeID)])
        try FileDeviceBackend.setSize(volume(volumeID), gigabytes: sizeGigabytes)
    }

    func deleteSnapshot(_ snapshotID: String) {
        try? FileManager.default.removeItem(atPath: snapshot(snapshotID))
    }
}

/// Devices as plain files, for tests that run without root: the link points at the volume's backing file.
public struct FileDeviceBackend: FileBackedDevices {
    public let dataDirectory: String
    /// Called after every link change: the test's stand-in for a udev event.
    private let onChange: @Sendable () -> Void

    public init(dataDirectory: String, onChange: @escaping @Sendable () -> Void = {}) {
        self.dataDirectory = dataDirectory
        self.onChange = onChange
    }

    func backingFile(_ volumeID: String) -> String { "\(dataDirectory)/\(volumeID).img" }

    public func create(volumeID: String, name: String, sizeGigabytes: Int, filesystem: String?, label: String) async throws {
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        // The first bytes say what the "device" holds, for fakes that probe it; the file is as large as the volume
        // (sparse, so it costs nothing).
        let path = backingFile(volumeID)
        try Data((filesystem ?? "").utf8).write(to: URL(fileURLWithPath: path))
        try Self.setSize(path, gigabytes: sizeGigabytes)
    }

    public func attach(volumeID: String, name: String, droplet: SimDroplet) async throws {
        let link = try droplet.newDeviceLink(forVolume: name)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: backingFile(volumeID))
        onChange()
    }

    public func detach(volumeID: String, name: String, droplet: SimDroplet) async throws {
        let link = droplet.deviceLink(forVolume: name)
        try? FileManager.default.removeItem(atPath: link)
        onChange()
    }

    public func delete(volumeID: String, name: String) async throws {
        try? FileManager.default.removeItem(atPath: backingFile(volumeID))
    }

    public func resize(volumeID: String, sizeGigabytes: Int) async throws {
        try Self.setSize(backingFile(volumeID), gigabytes: sizeGigabytes)
        onChange()
    }

    static func setSize(_ path: String, gigabytes: Int) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(gigabytes) << 30)
        try handle.close()
    }
}

/// Devices as real loop block devices (needs root): a sparse backing file per volume, `losetup` on attach, and a
/// `change` uevent once the droplet's link exists, so udev listeners hear of it as they would on a droplet.
public actor LoopDeviceBackend: FileBackedDevices {
    public nonisolated let dataDirectory: String
    private var loops: [String: String] = [:]

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }

    func backingFile(_ volumeID: String) -> String { "\(dataDirectory)/\(volumeID).img" }

    /// The loop devices in use, volume id → /dev/loopN.
    public var attachedLoops: [String: String] { loops }

    public func create(volumeID: String, name: String, sizeGigabytes: Int, filesystem: String?, label: String) async throws {
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        let path = backingFile(volumeID)
        try Data().write(to: URL(fileURLWithPath: path))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(sizeGigabytes) << 30)
        try handle.close()
        switch filesystem {
        case "ext4":
            var arguments = ["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"]
            if !label.isEmpty { arguments += ["-L", String(label.prefix(16))] }
            try await Self.run("mkfs.ext4", arguments + [path])
        case "xfs":
            var arguments = ["-q", "-f"]
            if !label.isEmpty { arguments += ["-L", String(label.prefix(12))] }
            try await Self.run("mkfs.xfs", arguments + [path])
        default:
            break
        }
    }

    public func attach(volumeID: String, name: String, droplet: SimDroplet) async throws {
        guard loops[volumeID] == nil else { return }
        let loop = try await Self.run("losetup", ["--find", "--show", backingFile(volumeID)])
        loops[volumeID] = loop
        let link = try droplet.newDeviceLink(forVolume: name)
        // Relative, as udev makes them in /dev/disk/by-id: ../../loop3.
        let node = loop.split(separator: "/").last.map(String.init) ?? loop
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "../../" + node)
        Self.announce(loop)
    }

    public func detach(volumeID: String, name: String, droplet: SimDroplet) async throws {
        let link = droplet.deviceLink(forVolume: name)
        try? FileManager.default.removeItem(atPath: link)
        if let loop = loops.removeValue(forKey: volumeID) {
            Self.announce(loop)
            try await Self.run("losetup", ["-d", loop])
        }
    }

    public func delete(volumeID: String, name: String) async throws {
        try? FileManager.default.removeItem(atPath: backingFile(volumeID))
    }

    /// Grows the backing file; an attached loop device is told its new capacity (`losetup -c`), and the kernel
    /// reports the change with a uevent, as it does for a resized volume on a droplet.
    public func resize(volumeID: String, sizeGigabytes: Int) async throws {
        try FileDeviceBackend.setSize(backingFile(volumeID), gigabytes: sizeGigabytes)
        if let loop = loops[volumeID] {
            try await Self.run("losetup", ["-c", loop])
            Self.announce(loop)
        }
    }

    /// Asks the kernel for a `change` uevent on the device, which udev processes and rebroadcasts.
    static func announce(_ loop: String) {
        let device = (loop as NSString).lastPathComponent
        try? "change".write(toFile: "/sys/class/block/\(device)/uevent", atomically: false, encoding: .utf8)
    }

    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) async throws -> String {
        let result = try await Subprocess.run(
            .name(tool), arguments: Arguments(arguments), output: .string(limit: 64 * 1024),
            error: .string(limit: 64 * 1024))
        guard case .exited(0) = result.terminationStatus else {
            throw SimDeviceError(message: "\(tool) \(arguments.joined(separator: " ")) failed: \(result.standardError)")
        }
        return result.standardOutput.trimmedWhitespace
    }
}

public struct SimDeviceError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

extension SimDroplet {
    /// Where the droplet's link to an attached volume's device is.
    func deviceLink(forVolume name: String) -> String {
        deviceDirectory + "/" + DigitalOceanNames.deviceLinkName(forVolume: name)
    }

    /// The link's path, with its folder made (as udev makes /dev/disk/by-id with a droplet's first disk) and no
    /// stale link in its place.
    func newDeviceLink(forVolume name: String) throws -> String {
        try FileManager.default.createDirectory(atPath: deviceDirectory, withIntermediateDirectories: true)
        let link = deviceLink(forVolume: name)
        try? FileManager.default.removeItem(atPath: link)
        return link
    }
}
