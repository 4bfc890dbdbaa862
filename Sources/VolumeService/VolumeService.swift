import DigitalOcean
import FoundationEssentials
import Logging
import Timekeeping

/// The orchestration: Docker's Mount, Unmount, Create and Remove, read top to bottom, over the parts that do the
/// work — `VolumeRegistry` (the records and the lease: the one owner of state), `VolumeFinder` (names),
/// `Attachments` (bringing a volume here and releasing it, with `Heartbeat` and `DropletActions`), `Filesystems`,
/// `Snapshots` (with schedules) and `Provisioning` (volumes on DigitalOcean) — and the long-running work.
///
/// Get, List and Path answer from the registry and never call DigitalOcean. Mount, Unmount, Create and Remove of one
/// volume are serialised; different volumes proceed in parallel, and this droplet's own attach/detach actions are
/// serialised (DigitalOcean allows one pending event per droplet).
public actor VolumeService: VolumeDriver {
    let configuration: ServiceConfiguration
    let logger: Logger
    let time: TimeSource
    let registry: VolumeRegistry
    let finder: VolumeFinder
    let heartbeat: Heartbeat
    let actions: DropletActions
    let attachments: Attachments
    let filesystems: Filesystems
    let snapshots: Snapshots
    let provisioning: Provisioning
    let history: History
    let host: any HostFilesystem
    let devices: any DeviceWatching
    /// Each volume's sequences (attach → wait → mount), one at a time.
    let volumeLocks: AsyncKeyedLock

    public init(
        configuration: ServiceConfiguration, api: any VolumeAPI, devices: any DeviceWatching,
        filesystem: any HostFilesystem, store: StateStore, time: TimeSource = .system, logger: Logger
    ) throws {
        self.configuration = configuration
        self.logger = logger
        self.time = time
        self.host = filesystem
        self.devices = devices
        let registry = try VolumeRegistry(store: store, configuration: configuration)
        let volumeLocks = AsyncKeyedLock(time: time) { "volume \($0)" }
        let finder = VolumeFinder(configuration: configuration, api: api, registry: registry, time: time, logger: logger)
        let heartbeat = Heartbeat(configuration: configuration, api: api, registry: registry, time: time, logger: logger)
        let actions = DropletActions(configuration: configuration, api: api, time: time, logger: logger)
        let attachments = Attachments(
            configuration: configuration, api: api, devices: devices, registry: registry, finder: finder,
            heartbeat: heartbeat, actions: actions, volumeLocks: volumeLocks, time: time, logger: logger)
        let filesystems = Filesystems(configuration: configuration, host: filesystem, time: time, logger: logger)
        self.registry = registry
        self.volumeLocks = volumeLocks
        self.finder = finder
        self.heartbeat = heartbeat
        self.actions = actions
        self.attachments = attachments
        self.filesystems = filesystems
        let snapshots = Snapshots(
            configuration: configuration, api: api, registry: registry, finder: finder, filesystems: filesystems,
            volumeLocks: volumeLocks, snapshotLocks: AsyncKeyedLock(time: time) { "the snapshot of volume \($0)" }, time: time,
            logger: logger)
        self.snapshots = snapshots
        let provisioning = Provisioning(
            configuration: configuration, api: api, registry: registry, finder: finder, attachments: attachments,
            logger: logger)
        self.provisioning = provisioning
        history = History(
            configuration: configuration, api: api, registry: registry, finder: finder, snapshots: snapshots,
            provisioning: provisioning, attachments: attachments, actions: actions, heartbeat: heartbeat,
            volumeLocks: volumeLocks, time: time, logger: logger)
    }

    /// The registry as it stands.
    public var records: [String: VolumeRecord] { registry.records }

    // MARK: Start-up

    /// Makes the registry agree with the host before the socket opens: a record that claims a mount that is gone
    /// (the engine unmounts propagated mounts when it stops) loses its references, and a mount under the mount root
    /// that no reference holds is unmounted. Call once, before serving.
    ///
    /// - Throws: `DeviceError` when mountinfo cannot be read or a stale mount cannot be unmounted; `VolumeError` `.state` when the state cannot be saved.
    public func reconcileWithHost() async throws {
        let mounts = try await host.mounts(under: configuration.mountRoot)
        let mounted = Dictionary(mounts.map { ($0.mountpoint, $0) }, uniquingKeysWith: { first, _ in first })
        var changed = false
        for (name, record) in registry.records {
            let mountpoint = configuration.mountpoint(for: name)
            // Each change is written to the registry as one field, never as a copy of the record from before an await.
            if mounted[mountpoint] == nil {
                if record.mountpoint != nil || !record.references.isEmpty {
                    logger.notice(
                        "Mount is gone; dropping its references",
                        metadata: ["volume.name": "\(name)", "references": "\(record.referenceCount)"])
                    registry.update(name) { record in
                        record.mountpoint = nil
                        record.references = [:]
                    }
                    changed = true
                }
            } else if record.references.isEmpty {
                logger.notice("Unmounting a mount that no container holds", metadata: ["volume.name": "\(name)"])
                try await host.unmount(path: mountpoint)
                registry.update(name) { $0.mountpoint = nil }
                changed = true
            } else if record.mountpoint == nil {
                registry.update(name) { $0.mountpoint = mountpoint }
                changed = true
            }
        }
        if changed { try await registry.save() }
    }

    // MARK: VolumeDriver

    public nonisolated var readyLookups: VolumeLookups? { registry.lookups }

    // Get, List and Path read the ready lookups, never the actor.

    /// Answers from the registry only. A volume this droplet does not know yet is "not found", even when it exists
    /// on DigitalOcean: Docker then sends Create, with the options of `docker volume create`, compose's
    /// `driver_opts` or a service's `volume-opt`, and Create adopts it (checking those options). Had Get found it,
    /// Docker would have dropped them. No DigitalOcean call, so probing every driver for a name stays fast.
    public nonisolated func get(name: String) async throws -> VolumeInfo {
        guard let info = registry.lookups.volume(named: name) else { throw VolumeError(.notFound, "no such volume: \(name)") }
        return info
    }

    public nonisolated func list() async throws -> [VolumeInfo] {
        registry.lookups.volumes
    }

    public nonisolated func path(name: String) async throws -> String {
        try await get(name: name).mountpoint
    }

    /// One deadline for the whole Mount (`mountDeadline`, 110 s; Unmount, Create and Remove have the same): every wait and DigitalOcean call in it ends by it,
    /// the lookup of a name this droplet does not know yet included.
    ///
    /// - Parameters:
    ///   - name: The Docker volume name.
    ///   - id: The mount id Docker gives this use.
    /// - Returns: The mount point.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    public func mount(name: String, id: String) async throws -> String {
        try await withinDockersDeadline { try await mountWithinDeadline(name: name, id: id) }
    }

    /// Runs one of Docker's calls under the plugin's deadline (`mountDeadline`, 110 s: Docker gives a call two
    /// minutes): every wait in it, for the volume's lock included, ends by then.
    func withinDockersDeadline<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await Deadline.$current.withValue(time.now().advanced(by: configuration.mountDeadline)) { try await body() }
    }

    func mountWithinDeadline(name: String, id: String) async throws -> String {
        if registry[name] == nil { try await register(name, options: CreateOptions(), mayCreate: false) }
        return try await volumeLocks.withLock(name) {
            let record = try registry.known(name)
            let mountpoint = configuration.mountpoint(for: name)
            if try await filesystems.isMounted(mountpoint) {
                try await filesystems.prepareDataDirectory(record, at: mountpoint)
                let mounted = registry.update(name) { record in
                    record.references[id, default: 0] += 1
                    record.mountpoint = mountpoint
                }
                try await registry.save()
                logger.debug("Mount reused", metadata: ["volume.name": "\(name)", "references": "\(mounted?.referenceCount ?? 0)"])
                return (mounted ?? record).shownPath(mountpoint)
            }
            let started = time.now()
            let device = try await heartbeat.whileMounting {
                let (volume, device, attachedByUs) = try await attachments.bringHere(name)
                let seen = registry.update(name) { $0.saw(volume, device: device) } ?? record
                do {
                    let filesystem = try await filesystems.mount(device, at: mountpoint, record: seen)
                    registry.update(name) { filesystem.apply(to: &$0) }
                } catch {
                    if attachedByUs { await attachments.release(volumeID: volume.id, doName: record.doName, name: name) }
                    throw error
                }
                return device
            }
            let mounted = registry.update(name) { record in
                record.references[id, default: 0] += 1
                record.mountpoint = mountpoint
                record.attachRequested = nil
            }
            try await registry.save()
            logger.info(
                "Volume mounted",
                metadata: [
                    "volume.name": "\(name)", "device.path": "\(device)", "mountpoint": "\(mountpoint)",
                    "duration.ms": "\(Int(started.duration(to: time.now()).milliseconds))",
                ])
            return (mounted ?? record).shownPath(mountpoint)
        }
    }

    public func unmount(name: String, id: String) async throws {
        try await withinDockersDeadline { try await unmountWithinDeadline(name: name, id: id) }
    }

    func unmountWithinDeadline(name: String, id: String) async throws {
        try await volumeLocks.withLock(name) {
            guard let record = registry[name] else { return }
            guard let count = record.references[id] else {
                logger.notice("Unmount for a mount ID this plugin does not hold", metadata: ["volume.name": "\(name)", "mount.id": "\(id)"])
                return
            }
            let left = registry.update(name) { $0.references[id] = count > 1 ? count - 1 : nil }
            if let left, left.referenceCount > 0 {
                try await registry.save()
                return
            }
            let mountpoint = configuration.mountpoint(for: name)
            // A snapshot holding it frozen is abandoned: the Unmount does not wait for it.
            await filesystems.thawNow(name)
            try await filesystems.unmountIfMounted(mountpoint, name: name)
            registry.update(name) { $0.mountpoint = nil }
            try await registry.save()
            logger.info("Volume unmounted", metadata: ["volume.name": "\(name)"])
            if configuration.detachOnUnmount {
                let volumeID = try await finder.volumeID(name)
                do {
                    try await attachments.detachHere(volumeID: volumeID, doName: record.doName, name: name)
                    registry.update(name) { record in
                        record.seen?.attachedTo = nil
                        record.seen?.device = nil
                    }
                    try await registry.save()
                } catch {
                    // The container stops whatever we answer; keep trying so the volume is not left attached here.
                    attachments.scheduleRelease(name: name, volumeID: volumeID, doName: record.doName)
                    throw VolumeError(
                        .cloud, "volume \(name) is unmounted but could not be released yet (\(error)); "
                            + "do_storage keeps trying in the background")
                }
            }
        }
    }

    // MARK: Long-running work

    /// Releases volumes attached here that no container holds, as `Attachments.releaseUnused` says. Call once at start.
    public func releaseUnusedAttachments() async { await attachments.releaseUnused() }

    /// Runs the releases that failed Mounts and Unmounts left to try again, until cancelled.
    public func retryReleases() async { await attachments.retryReleases() }

    /// Keeps this droplet's heartbeat until cancelled. Start it once, after `reconcileWithHost`.
    public func keepHeartbeat() async { await heartbeat.keep() }

    /// One step of the heartbeat (see `Heartbeat.beat`); how long until the next.
    @discardableResult
    public func heartbeat() async -> Duration { await heartbeat.beat() }

    /// Takes the scheduled snapshots of the volumes mounted here as they fall due, until cancelled.
    public func runSnapshotSchedules() async { await snapshots.runSchedules() }

    /// Takes the scheduled snapshots that are due now.
    public func snapshotSchedulesOnce() async { await snapshots.schedulesOnce() }

    /// Grows mounted volumes whose devices grew (a resize on DigitalOcean), on each device event, until cancelled.
    /// Start it once with the service; it never makes a Mount or Unmount wait longer than one growth.
    public func growOnDeviceEvents() async {
        var count = devices.eventCount
        while !Task.isCancelled {
            count = await devices.nextEvent(after: count)
            if Task.isCancelled { return }
            for name in registry.records.keys.sorted() where registry[name]?.mountpoint != nil {
                // Only cancellation ends the wait for the lock, and with it the loop.
                try? await volumeLocks.withLock(name) {
                    guard let record = registry[name], let mountpoint = record.mountpoint, let device = record.seen?.device,
                        let type = record.seen.flatMap({ FilesystemType(rawValue: $0.fstype) }),
                        let growth = await filesystems.grow(
                            device, type: type, mountpoint: mountpoint, filesystemBytes: record.seen?.filesystemBytes, name: name)
                    else { return }
                    registry.update(name) { growth.apply(to: &$0) }
                    await registry.saveOrWarn(logger)
                }
            }
        }
    }

    // MARK: The command line's snapshots

    public func createSnapshot(volume: String, name: String?) async throws -> SnapshotInfo {
        try await snapshots.create(volume: volume, name: name)
    }

    public func listSnapshots(volume: String) async throws -> [SnapshotInfo] {
        try await snapshots.list(volume: volume)
    }

    public func deleteSnapshot(volume: String, snapshot: String) async throws {
        try await snapshots.delete(volume: volume, snapshot: snapshot)
    }

    // MARK: History

    public func commit(volume: String, message: String) async throws -> CommitInfo {
        try await history.commit(volume: volume, message: message)
    }

    public func log(volume: String) async throws -> [CommitInfo] {
        try await history.log(volume: volume)
    }

    public func branches(volume: String) async throws -> [BranchInfo] {
        try await withKnown(volume) { try await history.branches(volume: volume) }
    }

    public func checkout(volume: String, branch: String, create: Bool, from commit: String?) async throws -> BranchInfo {
        try await withKnown(volume) {
            create
                ? try await history.checkoutNew(volume: volume, branch: branch, from: commit)
                : try await history.checkout(volume: volume, branch: branch)
        }
    }

    public func reset(volume: String, to commit: String?) async throws -> String {
        try await withKnown(volume) { try await history.reset(volume: volume, to: commit) }
    }

    public func deleteBranch(volume: String, branch: String) async throws -> String {
        try await withKnown(volume) { try await history.deleteBranch(volume: volume, branch: branch) }
    }

    /// Runs a history step on a volume this droplet knows, adopting it first (as a Mount does), within Docker's
    /// deadline: a step holds the volume attached here, and a plugin stopped meanwhile releases it at its next start.
    private func withKnown<T: Sendable>(_ name: String, _ body: () async throws -> T) async throws -> T {
        try await withinDockersDeadline {
            if registry[name] == nil { try await register(name, options: CreateOptions(), mayCreate: false) }
            return try await body()
        }
    }
}
