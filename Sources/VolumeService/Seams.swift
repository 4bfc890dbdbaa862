import DigitalOcean

/// What the orchestration needs of DigitalOcean's API. `DOClient` is the production implementation; the composition
/// root (PluginApp) declares its conformance, so the core names no concrete client.
public protocol VolumeAPI: Sendable {
    /// Every volume with this name in this region, all pages.
    func volumes(named name: String?, region: String?) async throws -> [Volume]
    /// One volume; throws `DOError` `.notFound` when it does not exist.
    func volume(id: String) async throws -> Volume
    /// Creates a volume; throws `DOError` `.conflict` when the name is taken in the region.
    func createVolume(_ request: VolumeCreateRequest) async throws -> Volume
    /// Deletes a volume; throws `DOError` `.notFound` when it is gone, `.conflict` while it is attached.
    func deleteVolume(id: String) async throws
    func attach(volumeID: String, dropletID: Int, region: String) async throws -> Action
    func detach(volumeID: String, dropletID: Int, region: String) async throws -> Action
    func action(volumeID: String, actionID: Int) async throws -> Action
    /// One droplet, its tags included; throws `DOError` `.notFound` when it does not exist (destroyed).
    func droplet(id: Int) async throws -> Droplet
    /// Creates a tag; one that exists already is not an error.
    func createTag(name: String) async throws
    /// Puts an existing tag on a droplet; throws `DOError` `.notFound` when the tag does not exist.
    func tag(dropletID: Int, with name: String) async throws
    /// Deletes a tag and takes it off everything; throws `DOError` `.notFound` when it does not exist.
    func deleteTag(name: String) async throws
    /// Puts an existing tag on a volume.
    func tagVolume(id: String, with name: String) async throws
    /// Takes a tag off a volume.
    func untagVolume(id: String, from name: String) async throws
    /// Starts growing a volume.
    func resize(volumeID: String, sizeGigabytes: Int, region: String) async throws -> Action
    /// Takes a snapshot of a volume; throws `DOError` `.conflict` when the volume has one by that name.
    func createSnapshot(volumeID: String, name: String, tags: [String]) async throws -> Snapshot
    /// Every snapshot of one volume.
    func snapshots(volumeID: String) async throws -> [Snapshot]
    /// Every volume snapshot of the account.
    func volumeSnapshots() async throws -> [Snapshot]
    /// One snapshot; throws `DOError` `.notFound` when it does not exist.
    func snapshot(id: String) async throws -> Snapshot
    /// Deletes a snapshot; throws `DOError` `.notFound` when it does not exist.
    func deleteSnapshot(id: String) async throws
}

/// Watches for block devices to appear and disappear. The production implementation listens to udev.
public protocol DeviceWatching: Sendable {
    /// A count of device events so far (appeared, disappeared, changed size).
    var eventCount: UInt64 { get }
    /// Returns once an event after `count` has happened (or the task is cancelled); the new count.
    func nextEvent(after count: UInt64) async -> UInt64

    /// Starts watching `path` (a `/dev/disk/by-id/...` link). Call it before the action that makes the device
    /// appear, so no event is missed.
    func watch(path: String) -> any DeviceWatch
}

/// One device path being watched.
public protocol DeviceWatch: Sendable {
    /// The device node the path resolves to now, when it is a usable device; nil otherwise.
    func current() -> String?
    /// Waits until the path's presence is `present`, at most `timeout`. Returns whether it is. Returns early on the
    /// event that makes it so; cancellation ends the wait.
    func wait(present: Bool, within timeout: Duration) async -> Bool
}

/// One mounted filesystem, as `/proc/self/mountinfo` shows it.
public struct MountEntry: Sendable, Equatable {
    public var source: String
    public var mountpoint: String
    public var fstype: String

    public init(source: String, mountpoint: String, fstype: String) {
        self.source = source
        self.mountpoint = mountpoint
        self.fstype = fstype
    }
}

/// Queries and commands on the host's filesystems, so every caller can check before it acts.
/// The production implementation uses libblkid and mount(2); every call is made off Swift's cooperative pool.
public protocol HostFilesystem: Sendable {
    /// The filesystem on the device (`ext4`, `xfs`, …), or nil when the device holds none.
    func filesystemType(device: String) async throws -> String?
    /// Every mount whose mount point is `root` or below it.
    func mounts(under root: String) async throws -> [MountEntry]
    /// Mounts `device` at `path` (creating the directory) with the given options. Not idempotent: check
    /// `mounts(under:)` first.
    func mount(device: String, at path: String, type: String, options: [MountOption]) async throws
    /// Unmounts `path`.
    func unmount(path: String) async throws
    /// Reads the device in full for anything on it (see `BlankCheck`). Writes nothing.
    func checkBlank(device: String) async throws -> BlankCheck
    /// Makes a filesystem on the device. Call only on a device `checkBlank` found blank.
    func format(device: String, type: FilesystemType, label: String?) async throws
    /// The device's size and the size of the ext4 or xfs filesystem on it (nil when it holds neither), in bytes. The
    /// filesystem's size is read from its superblock on the device: exact while it is not mounted.
    func sizes(device: String) async throws -> (device: UInt64, filesystem: UInt64?)
    /// Grows the filesystem on the device to fill it: ext4 while unmounted (`mountpoint` nil: a forced check, then
    /// the resize), ext4 or xfs while mounted at `mountpoint` (online).
    func grow(device: String, type: FilesystemType, mountpoint: String?) async throws
    /// Freezes the filesystem mounted at `mountpoint` (FIFREEZE): writes block and what was written is on the device,
    /// until `thaw`.
    func freeze(mountpoint: String) async throws
    /// Thaws a frozen filesystem (FITHAW).
    func thaw(mountpoint: String) async throws
}

/// What a full read of a device found.
public struct BlankCheck: Sendable, Equatable {
    /// The device's size in bytes.
    public var sizeBytes: UInt64
    /// Nil when the device is blank: no filesystem, RAID, LVM or other signature, no partition table, and only
    /// zeros in its first and last MiB. Otherwise what was found.
    public var found: String?

    public init(sizeBytes: UInt64, found: String?) {
        self.sizeBytes = sizeBytes
        self.found = found
    }

    public var isBlank: Bool { found == nil }
}
