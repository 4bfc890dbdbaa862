import DigitalOcean
import FoundationEssentials
import Glibc
import Logging
import Synchronization
import Timekeeping

/// The orchestration: brings DigitalOcean volumes to this droplet and mounts them, counts Docker's references,
/// releases them on the last unmount, and persists what it knows.
///
/// Get, List and Path answer from the registry and never call DigitalOcean. Mount, Unmount,
/// Create and Remove of one volume are serialised; different volumes proceed in parallel, and this droplet's own
/// attach/detach actions are serialised (DigitalOcean allows one pending event per droplet).
public actor VolumeService: VolumeDriver {
    let configuration: ServiceConfiguration
    let api: any VolumeAPI
    let devices: any DeviceWatching
    let filesystem: any HostFilesystem
    let store: StateStore
    let time: TimeSource
    let logger: Logger

    var registry: VolumeRegistry {
        didSet { publishLookups() }
    }
    /// What Get, List and Path answer: the registry's volumes as the protocol shows them, made again whenever the
    /// registry changes, and read without the actor (the engine sends these by the thousand, from many connections).
    nonisolated let lookups = Mutex(VolumeLookups())
    /// Names DigitalOcean did not know, for a short while.
    var negativeLookups: RecentMisses
    /// Device sizes at which an online growth failed, by volume name: not tried again until the size changes.
    var failedOnlineGrowth: [String: UInt64] = [:]
    /// Mounts between their first DigitalOcean call and their end: the droplet holds (or is about to hold) a volume.
    var mountsInFlight = 0
    let volumeLocks: AsyncKeyedLock
    /// One snapshot at a time per volume.
    let snapshotLocks: AsyncKeyedLock
    /// Filesystems frozen for a snapshot now, by volume name: an Unmount thaws them at once.
    var activeFreezes: [String: ThawOnce] = [:]
    let dropletLock: AsyncKeyedLock
    /// Releases to try again (`scheduleRelease`), taken by `retryReleases`.
    var pendingReleases: [PendingRelease] = []
    let releasesPending = EventSignal()

    public init(
        configuration: ServiceConfiguration, api: any VolumeAPI, devices: any DeviceWatching,
        filesystem: any HostFilesystem, store: StateStore, time: TimeSource = .system, logger: Logger
    ) throws {
        self.configuration = configuration
        self.api = api
        self.devices = devices
        self.filesystem = filesystem
        self.store = store
        self.time = time
        self.logger = logger
        volumeLocks = AsyncKeyedLock(time: time) { "volume \($0)" }
        snapshotLocks = AsyncKeyedLock(time: time) { "the snapshot of volume \($0)" }
        dropletLock = AsyncKeyedLock(time: time) { "this droplet's \($0)" }
        let loaded = try store.load()
        self.registry = VolumeRegistry(loaded)
        self.negativeLookups = RecentMisses(ttl: configuration.negativeLookupTTL)
        lookups.withLock { $0 = Self.lookups(of: loaded, configuration, generation: 0) }
    }

    private func publishLookups() {
        let generation = lookups.withLock { $0.generation } &+ 1
        let made = Self.lookups(of: registry.state, configuration, generation: generation)
        lookups.withLock { $0 = made }
    }

    /// Get's and List's answers for the registry in `state`.
    static func lookups(of state: PersistedState, _ configuration: ServiceConfiguration, generation: UInt64) -> VolumeLookups {
        VolumeLookups(state.volumes.values.map { info($0, configuration) }, generation: generation)
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
        let mounts = try await filesystem.mounts(under: configuration.mountRoot)
        let mounted = Dictionary(mounts.map { ($0.mountpoint, $0) }, uniquingKeysWith: { first, _ in first })
        var changed = false
        for (name, record) in registry.records {
            let mountpoint = mountpoint(for: name)
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
                try await filesystem.unmount(path: mountpoint)
                registry.update(name) { $0.mountpoint = nil }
                changed = true
            } else if record.mountpoint == nil {
                registry.update(name) { $0.mountpoint = mountpoint }
                changed = true
            }
        }
        if changed { try await persist() }
    }

    /// Releases volumes that DigitalOcean shows attached here but that no container here holds: a plugin killed
    /// between an attach and its mount, or during an unmount, or a droplet rebooted. An attach requested before the
    /// plugin stopped may complete after it starts again: such a volume is watched (with polls growing to
    /// `maxPollInterval`) until it is attached, then released, or until the request can no longer complete: it was
    /// sent by the Mount's deadline at the latest (after waiting its turn behind the droplet's other actions), and
    /// takes at most `actionTimeout`. Only
    /// volumes in the registry are touched, and only with DETACH_ON_UNMOUNT. When DigitalOcean cannot be listed or
    /// a detach fails (an outage at start-up), it tries again, waiting twice as long each time up to a minute, until
    /// it has succeeded: an attachment is never left dangling for want of one call. Safe to run while serving: each
    /// volume's lock is held while it is looked at. Call once at start.
    public func releaseUnusedAttachments() async {
        guard configuration.detachOnUnmount else { return }
        var wait = configuration.initialPollInterval
        var retry = configuration.releaseRetryInterval
        while true {
            if await !releaseUnusedAttachmentsOnce() {
                do { try await time.sleep(retry) } catch { return }
                retry = min(retry * 2, .seconds(60))
                continue
            }
            let now = time.wallClock()
            var waiting = false
            for (name, record) in registry.records {
                guard let requested = record.attachRequested, record.references.isEmpty, record.mountpoint == nil else {
                    continue
                }
                // The request is noted before the Mount waits for its turn on the droplet's actions, and sent before
                // the Mount's deadline: DigitalOcean has finished it an action's time after that at the latest.
                if Duration.seconds(now.timeIntervalSince(requested)) > configuration.mountDeadline + configuration.actionTimeout {
                    // It never happened, or was released above.
                    registry.update(name) { $0.attachRequested = nil }
                    do {
                        try await persist()
                    } catch {
                        logger.warning("Cannot save the plugin's state", metadata: ["error": "\(error)"])
                    }
                } else {
                    waiting = true
                }
            }
            guard waiting else { return }
            do { try await time.sleep(wait) } catch { return }
            wait = min(wait * 2, configuration.maxPollInterval)
        }
    }

    /// One look: returns false when DigitalOcean could not be listed or a release failed, to be tried again.
    func releaseUnusedAttachmentsOnce() async -> Bool {
        let attachedHere: [Volume]
        do {
            attachedHere = try await api.volumes(named: nil, region: configuration.region)
                .filter { $0.dropletIDs.contains(configuration.dropletID) }
        } catch {
            logger.warning("Cannot list volumes to release unused attachments; trying again", metadata: ["error": "\(error)"])
            return false
        }
        var released = true
        for volume in attachedHere {
            guard let name = registry.records.first(where: { $0.value.volumeID == volume.id || $0.value.doName == volume.name })?.key
            else { continue }
            try? await volumeLocks.withLock(name) {
                guard let record = registry[name], record.references.isEmpty, record.mountpoint == nil else { return }
                logger.notice("Releasing an attachment no container holds", metadata: ["volume.name": "\(name)"])
                do {
                    try await detachHere(volumeID: volume.id, doName: record.doName, name: name)
                    registry.update(name) { record in
                        record.attachRequested = nil
                        record.seen?.attachedTo = nil
                        record.seen?.device = nil
                    }
                    try await persist()
                } catch {
                    logger.warning("Cannot release attachment; trying again", metadata: ["volume.name": "\(name)", "error": "\(error)"])
                    released = false
                }
            }
        }
        return released
    }

    // MARK: VolumeDriver

    public nonisolated var readyLookups: VolumeLookups? { lookups.withLock { $0 } }

    // Get, List and Path read the ready lookups, never the actor.

    /// Answers from the registry only. A volume this droplet does not know yet is "not found", even when it exists
    /// on DigitalOcean: Docker then sends Create, with the options of `docker volume create`, compose's
    /// `driver_opts` or a service's `volume-opt`, and Create adopts it (checking those options). Had Get found it,
    /// Docker would have dropped them. No DigitalOcean call, so probing every driver for a name stays fast.
    public nonisolated func get(name: String) async throws -> VolumeInfo {
        guard let info = lookups.withLock({ $0.volume(named: name) }) else { throw VolumeError(.notFound, "no such volume: \(name)") }
        return info
    }

    public nonisolated func list() async throws -> [VolumeInfo] {
        lookups.withLock { $0.volumes }
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
            let record = try knownRecord(name)
            let mountpoint = mountpoint(for: name)
            if try await isMounted(mountpoint) {
                try await prepareDataDirectory(record, at: mountpoint)
                let mounted = registry.update(name) { record in
                    record.references[id, default: 0] += 1
                    record.mountpoint = mountpoint
                }
                try await persist()
                logger.debug("Mount reused", metadata: ["volume.name": "\(name)", "references": "\(mounted?.referenceCount ?? 0)"])
                return (mounted ?? record).shownPath(mountpoint)
            }
            let started = time.now()
            mountsInFlight += 1
            defer { mountsInFlight -= 1 }
            let (volume, device, attachedByUs) = try await bringHere(name)
            registry.update(name) { $0.saw(volume, device: device) }
            do {
                try await mountDevice(device, at: mountpoint, name: name)
            } catch {
                if attachedByUs { await release(volumeID: volume.id, doName: record.doName, name: name) }
                throw error
            }
            let mounted = registry.update(name) { record in
                record.references[id, default: 0] += 1
                record.mountpoint = mountpoint
                record.attachRequested = nil
            }
            try await persist()
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
                try await persist()
                return
            }
            let mountpoint = mountpoint(for: name)
            // A snapshot holding it frozen is abandoned: the Unmount does not wait for it.
            await activeFreezes[name]?.run()
            try await unmountIfMounted(mountpoint, name: name)
            registry.update(name) { $0.mountpoint = nil }
            try await persist()
            logger.info("Volume unmounted", metadata: ["volume.name": "\(name)"])
            if configuration.detachOnUnmount {
                let volumeID = try await resolveVolumeID(name)
                do {
                    try await detachHere(volumeID: volumeID, doName: record.doName, name: name)
                    registry.update(name) { record in
                        record.seen?.attachedTo = nil
                        record.seen?.device = nil
                    }
                    try await persist()
                } catch {
                    // The container stops whatever we answer; keep trying so the volume is not left attached here.
                    scheduleRelease(name: name, volumeID: volumeID, doName: record.doName)
                    throw VolumeError(
                        .cloud, "volume \(name) is unmounted but could not be released yet (\(error)); "
                            + "do_storage keeps trying in the background")
                }
            }
        }
    }

    /// Releases a volume a failed Mount attached: at once while the Mount's deadline leaves time, else (or when that
    /// fails) in the background, so no attachment is left without a user.
    func release(volumeID: String, doName: String, name: String) async {
        guard configuration.detachOnUnmount else { return }
        do {
            try await detachHere(volumeID: volumeID, doName: doName, name: name)
        } catch {
            logger.warning(
                "Cannot release the volume after a failed mount yet; retrying in the background",
                metadata: ["volume.name": "\(name)", "error": "\(error)"])
            scheduleRelease(name: name, volumeID: volumeID, doName: doName)
        }
    }

    /// A release to try again: an unused volume still attached here.
    struct PendingRelease: Sendable {
        var name: String
        var volumeID: String
        var doName: String
        /// An attach action still in progress: the release waits until it has finished (a detach before then finds
        /// nothing to detach, and the attach would complete after it).
        var pending: Int?
    }

    /// Asks `retryReleases` to keep trying to release an unused volume: after 5 s, doubling to 60 s, 8 tries (about 6
    /// minutes), stopping as soon as the volume is in use here again or released. Outside any Mount's deadline.
    func scheduleRelease(name: String, volumeID: String, doName: String, pending: Int? = nil) {
        pendingReleases.append(PendingRelease(name: name, volumeID: volumeID, doName: doName, pending: pending))
        releasesPending.fire()
    }

    /// Runs the releases `scheduleRelease` asks for, each on its own, until cancelled (the plugin stopping).
    public func retryReleases() async {
        await withDiscardingTaskGroup { group in
            var seen = releasesPending.generation
            while !Task.isCancelled {
                for release in pendingReleases {
                    group.addTask {
                        if let pending = release.pending {
                            await self.waitUntilFinished(actionID: pending, volumeID: release.volumeID)
                        }
                        await self.retryRelease(name: release.name, volumeID: release.volumeID, doName: release.doName)
                    }
                }
                pendingReleases = []
                await releasesPending.wait(after: seen)
                seen = releasesPending.generation
            }
        }
    }

    /// Polls an action until it is no longer in progress (at most the action timeout, five times over).
    func waitUntilFinished(actionID: Int, volumeID: String) async {
        let deadline = time.now().advanced(by: configuration.actionTimeout * 5)
        var interval = configuration.initialPollInterval
        while time.now() < deadline {
            do { try await time.sleep(interval) } catch { return }
            if let action = try? await api.action(volumeID: volumeID, actionID: actionID), action.status != .inProgress {
                return
            }
            interval = min(interval * 2, configuration.maxPollInterval)
        }
    }

    func retryRelease(name: String, volumeID: String, doName: String) async {
        var wait = configuration.releaseRetryInterval
        for attempt in 1...8 {
            do { try await time.sleep(wait) } catch { return }
            // Cancelled (the plugin stopping): stop trying.
            guard let finished = try? await volumeLocks.withLock(name, { () -> Bool in
                guard let record = registry[name], record.references.isEmpty, record.mountpoint == nil else {
                    return true
                }
                do {
                    try await detachHere(volumeID: volumeID, doName: doName, name: name)
                    return true
                } catch {
                    logger.warning(
                        "Releasing the volume failed again",
                        metadata: ["volume.name": "\(name)", "attempt": "\(attempt)", "error": "\(error)"])
                    return false
                }
            }) else { return }
            if finished { return }
            wait = min(wait * 2, .seconds(60))
        }
        logger.error("Gave up releasing the volume; it stays attached to this droplet", metadata: ["volume.name": "\(name)"])
    }

    // MARK: Helpers

    /// What `docker volume inspect` shows: the plugin's registry and what it last saw of the volume, with no
    /// DigitalOcean call.
    static func info(_ record: VolumeRecord, _ configuration: ServiceConfiguration) -> VolumeInfo {
        let seen = record.seen
        var status: [String: String] = [
            "do_id": record.volumeID ?? "",
            "do_name": record.doName,
            "region": configuration.region,
            "size_gib": seen.map { String($0.sizeGiB) } ?? "",
            "fstype": seen?.fstype ?? "",
            "attached_to": seen?.attachedTo.map(String.init) ?? "",
            "device": seen?.attachedTo == configuration.dropletID ? seen?.device ?? "" : "",
            "mounts": String(record.referenceCount),
            "created_by_plugin": seen.map { String($0.createdByPlugin) } ?? "",
            "last_error": record.lastError ?? "",
            "snapshots": record.snapshotCount.map(String.init) ?? "",
            "last_snapshot": record.lastSnapshot ?? "",
            "snapshot_every": record.schedule.map { SnapshotSchedule.text($0.every) } ?? "",
            "snapshot_keep": record.schedule?.keep.description ?? "",
        ]
        if let consistency = record.cloneConsistency { status["clone_consistency"] = consistency.rawValue }
        // What a container sees: the data directory (with its owner and mode) or the filesystem's root.
        status["container_sees"] = record.dataDirectory.map { "data directory (\(DataDirectory.name)/ of the filesystem, "
            + "owner:group mode \($0.statusText))" } ?? "filesystem root (volume not made by do_storage)"
        return VolumeInfo(
            name: record.name, mountpoint: record.mountpoint.map(record.shownPath) ?? "", createdAt: record.createdAt, status: status)
    }

    func mountpoint(for name: String) -> String { configuration.mountRoot + "/" + name }

    func persist() async throws {
        do {
            try await store.save(registry.state)
        } catch {
            throw VolumeError(.state, "cannot save the plugin's state: \(error)")
        }
    }

    /// Looks a name up on DigitalOcean, remembering misses for a short while.
    func lookUp(doName: String, name: String) async throws -> Volume? {
        if negativeLookups.contains(doName, now: time.now()) { return nil }
        let found = try await cloud("look up volume \(doName)") {
            try await api.volumes(named: doName, region: configuration.region)
        }.first { $0.name == doName }
        if found == nil { negativeLookups.remember(doName, now: time.now()) } else { negativeLookups.forget(doName) }
        return found
    }

    /// Runs a DigitalOcean call, turning its failure into a `VolumeError` that says what was being done.
    func cloud<T: Sendable>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as DOError {
            throw VolumeError(.cloud, "cannot \(what): \(error)")
        } catch let error as VolumeError {
            throw error
        } catch is CancellationError {
            throw VolumeError(.cloud, "cannot \(what): cancelled")
        } catch {
            throw VolumeError(.cloud, "cannot \(what): \(error)")
        }
    }

    func isMounted(_ mountpoint: String) async throws -> Bool {
        try await filesystem.mounts(under: mountpoint).contains { $0.mountpoint == mountpoint }
    }

    func unmountIfMounted(_ mountpoint: String, name: String) async throws {
        guard try await isMounted(mountpoint) else { return }
        do {
            try await filesystem.unmount(path: mountpoint)
        } catch {
            throw VolumeError(.unmountFailed, "cannot unmount volume \(name) at \(mountpoint): \(error)")
        }
    }

    /// The record of `name`, which this droplet knows; else "no such volume".
    func knownRecord(_ name: String) throws -> VolumeRecord {
        guard let record = registry[name] else { throw VolumeError(.notFound, "no such volume: \(name)") }
        return record
    }

    /// The DigitalOcean id of `name`'s volume: the one the registry has, else looked up by its DigitalOcean name.
    func resolveVolumeID(_ name: String) async throws -> String {
        let record = try knownRecord(name)
        if let id = record.volumeID { return id }
        let doName = record.doName
        guard let volume = try await lookUp(doName: doName, name: name) else {
            throw VolumeError(.notFound, "the DigitalOcean volume \(doName) no longer exists in region \(configuration.region)")
        }
        registry.update(name) { $0.volumeID = volume.id }
        return volume.id
    }
}
