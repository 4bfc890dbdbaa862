import DigitalOcean

/// What the orchestration needs of DigitalOcean's API. `DOClient` is the production implementation; the composition
/// root (PluginApp) declares its conformance, so the core names no concrete client.
public protocol VolumeAPI: Sendable {
    /// Every volume with this name in this region, all pages.
    ///
    /// - Parameters:
    ///   - name: The volume name; nil for every name.
    ///   - region: The region slug; nil for every region.
    /// - Returns: The volumes.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func volumes(named name: String?, region: String?) async throws -> [Volume]
    /// One volume; throws `DOError` `.notFound` when it does not exist.
    ///
    /// - Parameter id: The volume's id.
    /// - Returns: The volume, with the droplets it is attached to.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func volume(id: String) async throws -> Volume
    /// Creates a volume; throws `DOError` `.conflict` when the name is taken in the region.
    ///
    /// - Parameter request: Name, size, region, filesystem, tags, or a snapshot to start from.
    /// - Returns: The new volume.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func createVolume(_ request: VolumeCreateRequest) async throws -> Volume
    /// Deletes a volume; throws `DOError` `.notFound` when it is gone, `.conflict` while it is attached.
    ///
    /// - Parameter id: The volume's id.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func deleteVolume(id: String) async throws
    /// Starts attaching a volume to a droplet.
    ///
    /// - Parameters:
    ///   - volumeID: The volume's id.
    ///   - dropletID: The droplet to attach it to.
    ///   - region: The region of both.
    /// - Returns: The attach action, usually still in progress.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered. A 422 "pending event" while another action on the droplet runs.
    func attach(volumeID: String, dropletID: Int, region: String) async throws -> Action
    /// Starts detaching a volume from a droplet.
    ///
    /// - Parameters:
    ///   - volumeID: The volume's id.
    ///   - dropletID: The droplet to detach it from.
    ///   - region: The region of both.
    /// - Returns: The detach action, usually still in progress.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func detach(volumeID: String, dropletID: Int, region: String) async throws -> Action
    /// One action on a volume, as it stands.
    ///
    /// - Parameters:
    ///   - volumeID: The volume's id.
    ///   - actionID: The action's id.
    /// - Returns: The action, with its status.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func action(volumeID: String, actionID: Int) async throws -> Action
    /// One droplet, its tags included; throws `DOError` `.notFound` when it does not exist (destroyed).
    ///
    /// - Parameter id: The droplet's id.
    /// - Returns: The droplet.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func droplet(id: Int) async throws -> Droplet
    /// Creates a tag; one that exists already is not an error.
    ///
    /// - Parameter name: The tag.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func createTag(name: String) async throws
    /// Puts an existing tag on a droplet; throws `DOError` `.notFound` when the tag does not exist.
    ///
    /// - Parameters:
    ///   - dropletID: The droplet's id.
    ///   - name: The tag.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func tag(dropletID: Int, with name: String) async throws
    /// Deletes a tag and takes it off everything; throws `DOError` `.notFound` when it does not exist.
    ///
    /// - Parameter name: The tag.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func deleteTag(name: String) async throws
    /// Puts an existing tag on a volume.
    ///
    /// - Parameters:
    ///   - id: The volume's id.
    ///   - name: The tag.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func tagVolume(id: String, with name: String) async throws
    /// Takes a tag off a volume.
    ///
    /// - Parameters:
    ///   - id: The volume's id.
    ///   - name: The tag.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func untagVolume(id: String, from name: String) async throws
    /// Starts growing a volume.
    ///
    /// - Parameters:
    ///   - volumeID: The volume's id.
    ///   - sizeGigabytes: The new size, larger than the current one.
    ///   - region: The volume's region.
    /// - Returns: The resize action.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func resize(volumeID: String, sizeGigabytes: Int, region: String) async throws -> Action
    /// Takes a snapshot of a volume; throws `DOError` `.conflict` when the volume has one by that name.
    ///
    /// - Parameters:
    ///   - volumeID: The volume's id.
    ///   - name: The snapshot's name.
    ///   - tags: The snapshot's tags.
    /// - Returns: The snapshot.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func createSnapshot(volumeID: String, name: String, tags: [String]) async throws -> Snapshot
    /// Every snapshot of one volume.
    ///
    /// - Parameter volumeID: The volume's id.
    /// - Returns: Its snapshots.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func snapshots(volumeID: String) async throws -> [Snapshot]
    /// Every volume snapshot of the account.
    ///
    /// - Returns: The snapshots.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func volumeSnapshots() async throws -> [Snapshot]
    /// One snapshot; throws `DOError` `.notFound` when it does not exist.
    ///
    /// - Parameter id: The snapshot's id.
    /// - Returns: The snapshot.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func snapshot(id: String) async throws -> Snapshot
    /// Deletes a snapshot; throws `DOError` `.notFound` when it does not exist.
    ///
    /// - Parameter id: The snapshot's id.
    /// - Throws: `DOError`, whose code says what DigitalOcean answered.
    func deleteSnapshot(id: String) async throws
}

/// Watches for block devices to appear and disappear. The production implementation listens to udev.
public protocol DeviceWatching: Sendable {
    /// A count of device events so far (appeared, disappeared, changed size).
    var eventCount: UInt64 { get }
    /// Returns once an event after `count` has happened (or the task is cancelled); the new count.
    ///
    /// - Parameter count: The count the caller saw last.
    /// - Returns: The count now.
    func nextEvent(after count: UInt64) async -> UInt64

    /// Starts watching `path` (a `/dev/disk/by-id/...` link). Call it before the action that makes the device
    /// appear, so no event is missed.
    ///
    /// - Parameter path: The link to watch.
    /// - Returns: The watch; it ends when released.
    func watch(path: String) -> any DeviceWatch
}

/// One device path being watched.
public protocol DeviceWatch: Sendable {
    /// The device node the path resolves to now, when it is a usable device; nil otherwise.
    ///
    /// - Returns: The device node, e.g. `/dev/sda`; nil while there is none.
    func current() -> String?
    /// Waits until the path's presence is `present`, at most `timeout`. Returns whether it is. Returns early on the
    /// event that makes it so; cancellation ends the wait.
    ///
    /// - Parameters:
    ///   - present: Whether to wait for the device to be there, or to be gone.
    ///   - timeout: How long to wait at most.
    /// - Returns: Whether the device is as asked.
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
    ///
    /// - Parameter device: The device node.
    /// - Returns: The filesystem type; nil for none.
    /// - Throws: `DeviceError` `.probe` when libblkid cannot read the device or finds more than one signature.
    func filesystemType(device: String) async throws -> String?
    /// Every mount whose mount point is `root` or below it.
    ///
    /// - Parameter root: A folder, such as the plugin's mount root.
    /// - Returns: The mounts, as `/proc/self/mountinfo` lists them.
    /// - Throws: `DeviceError` `.io` when mountinfo cannot be read.
    func mounts(under root: String) async throws -> [MountEntry]
    /// Mounts `device` at `path` (creating the directory) with the given options. Not idempotent: check
    /// `mounts(under:)` first.
    ///
    /// - Parameters:
    ///   - device: The device node.
    ///   - path: The mount point.
    ///   - type: The filesystem type, `ext4` or `xfs`.
    ///   - options: The mount options the volume was created with.
    /// - Throws: `DeviceError` `.mount`, with the system's reason.
    func mount(device: String, at path: String, type: String, options: [MountOption]) async throws
    /// Unmounts `path`.
    ///
    /// - Parameter path: The mount point.
    /// - Throws: `DeviceError` `.mount`, with the system's reason (EBUSY while something uses it).
    func unmount(path: String) async throws
    /// Reads the device in full for anything on it (see `BlankCheck`). Writes nothing.
    ///
    /// - Parameter device: The device node.
    /// - Returns: The device's size, and what was found on it, if anything.
    /// - Throws: `DeviceError` `.io` or `.probe` when the device cannot be read.
    func checkBlank(device: String) async throws -> BlankCheck
    /// Makes a filesystem on the device. Call only on a device `checkBlank` found blank.
    ///
    /// - Parameters:
    ///   - device: The device node.
    ///   - type: ext4 or xfs.
    ///   - label: The filesystem's label, if one was asked for.
    /// - Throws: `DeviceError` `.program` when the tool fails, with what it said.
    func format(device: String, type: FilesystemType, label: String?) async throws
    /// The device's size and the size of the ext4 or xfs filesystem on it (nil when it holds neither), in bytes. The
    /// filesystem's size is read from its superblock on the device: exact while it is not mounted.
    ///
    /// - Parameter device: The device node.
    /// - Returns: Both sizes in bytes.
    /// - Throws: `DeviceError` `.io` when the device cannot be read.
    func sizes(device: String) async throws -> (device: UInt64, filesystem: UInt64?)
    /// Grows the filesystem on the device to fill it: ext4 while unmounted (`mountpoint` nil: a forced check, then
    /// the resize), ext4 or xfs while mounted at `mountpoint` (online).
    ///
    /// - Parameters:
    ///   - device: The device node.
    ///   - type: The filesystem's type.
    ///   - mountpoint: Where it is mounted; nil while it is not.
    /// - Throws: `DeviceError` `.program` when a tool fails, `.unsupported` for xfs while unmounted.
    func grow(device: String, type: FilesystemType, mountpoint: String?) async throws
    /// Freezes the filesystem mounted at `mountpoint` (FIFREEZE): writes block and what was written is on the device,
    /// until `thaw`.
    ///
    /// - Parameter mountpoint: Where the filesystem is mounted.
    /// - Throws: `DeviceError` `.freeze`, with the system's reason.
    func freeze(mountpoint: String) async throws
    /// Makes the directory `path` when it is missing (owned by root, mode 0755 whatever the umask), then gives it the
    /// owner, group and mode given, where they differ. Refuses anything at `path` that is not a directory, links
    /// included.
    ///
    /// - Parameters:
    ///   - path: The directory, in a mounted filesystem.
    ///   - uid: Its owner; nil: left as it is.
    ///   - gid: Its group; nil: left as it is.
    ///   - mode: Its permission bits; nil: left as they are.
    /// - Throws: `DeviceError` `.io`, with the system's reason.
    func prepareDirectory(_ path: String, uid: UInt32?, gid: UInt32?, mode: UInt32?) async throws
    /// Thaws a frozen filesystem (FITHAW).
    ///
    /// - Parameter mountpoint: Where the filesystem is mounted.
    /// - Throws: `DeviceError` `.freeze`, with the system's reason.
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
