import DigitalOcean
import FoundationEssentials
import Logging
import Timekeeping

/// A volume's history on DigitalOcean: snapshots taken here (frozen when the volume is mounted here), and volumes
/// made from them (`from_snapshot`, `clone_of`).
extension VolumeService {
    /// On the snapshot a clone is made from.
    static let cloneTag = "do-storage-clone"

    // MARK: The CLI's requests

    public func createSnapshot(volume name: String, name snapshotName: String?) async throws -> SnapshotInfo {
        let snapshotName = snapshotName ?? "\(name)-\(Self.snapshotTime(time.wallClock()))"
        guard !snapshotName.isEmpty, snapshotName.utf8.count <= 255 else {
            throw VolumeError(.invalidOption, "a snapshot name has 1 to 255 characters")
        }
        if registry[name] != nil {
            return try await volumeLocks.withLock(name) {
                let volume = try await currentVolume(name)
                let (snapshot, _) = try await takeSnapshot(of: volume, volume: name, name: snapshotName, tags: [])
                try await persist()
                return Self.info(snapshot)
            }
        }
        return Self.info(try await snapshot(try await volumeOnDigitalOcean(name), name: snapshotName, tags: []))
    }

    public func listSnapshots(volume name: String) async throws -> [SnapshotInfo] {
        let volume = try await volumeOnDigitalOcean(name)
        // Newest first; snapshots of the same second in the reverse of DigitalOcean's order (oldest first).
        let listed = try await cloud("list the snapshots of volume \(name)") { try await api.snapshots(volumeID: volume.id) }
        let snapshots = listed.enumerated().map { (time: Self.date($0.element.createdAt) ?? .distantPast, order: $0.offset, snapshot: $0.element) }
            .sorted { $0.time != $1.time ? $0.time > $1.time : $0.order > $1.order }.map(\.snapshot)
        let noted = registry.update(name) { record in
            record.snapshotCount = snapshots.count
            record.lastSnapshot = snapshots.first.map { "\($0.name) at \($0.createdAt)" }
        }
        if noted != nil { try await persist() }
        return snapshots.map(Self.info)
    }

    public func deleteSnapshot(volume name: String, snapshot text: String) async throws {
        let volume = try await volumeOnDigitalOcean(name)
        let snapshots = try await cloud("list the snapshots of volume \(name)") { try await api.snapshots(volumeID: volume.id) }
        guard let snapshot = snapshots.first(where: { $0.id == text }) ?? snapshots.first(where: { $0.name == text }) else {
            throw VolumeError(
                .notFound,
                "volume \(name) has no snapshot with the name or id \"\(text)\"; see do-storage snapshot list \(name)")
        }
        do {
            try await api.deleteSnapshot(id: snapshot.id)
        } catch let error as DOError where error.code != .notFound {
            throw VolumeError(.cloud, "cannot delete snapshot \(snapshot.name) of volume \(name): \(error)")
        }
        logger.notice("Snapshot deleted", metadata: ["volume.name": "\(name)", "do.snapshot.id": "\(snapshot.id)"])
        if registry[name]?.snapshotCount != nil {
            registry.update(name) { $0.snapshotCount = snapshots.count - 1 }
            try await persist()
        }
    }

    /// The DigitalOcean volume behind a Docker name, whether or not this droplet knows it.
    func volumeOnDigitalOcean(_ name: String) async throws -> Volume {
        if registry[name] != nil { return try await currentVolume(name) }
        try checkDockerName(name)
        let (doName, found) = try await resolve(name)
        guard let volume = found else {
            throw VolumeError(.notFound, "there is no volume \(name) (DigitalOcean volume \(doName) in \(configuration.region))")
        }
        return volume
    }

    static func info(_ snapshot: Snapshot) -> SnapshotInfo {
        let origin =
            snapshot.tags.contains(SnapshotSchedule.scheduledTag) ? "scheduled"
            : snapshot.tags.contains(cloneTag) ? "clone" : "manual"
        return SnapshotInfo(
            id: snapshot.id, name: snapshot.name, createdAt: snapshot.createdAt, sizeGigabytes: snapshot.sizeGigabytes,
            origin: origin)
    }

    /// A volume snapshot by id, or else by name among all the account's volume snapshots. A name that several
    /// volumes' snapshots share is an error listing them.
    func findSnapshot(_ text: String) async throws -> Snapshot {
        // Volume snapshot ids are UUIDs; anything else is a name.
        if UUID(uuidString: text) != nil {
            do {
                return try await api.snapshot(id: text.lowercased())
            } catch let error as DOError where error.code == .notFound {
                // A name that looks like an id, perhaps.
            } catch let error as DOError {
                throw VolumeError(.cloud, "cannot read snapshot \(text) from DigitalOcean: \(error)")
            }
        }
        let matches = try await cloud("list volume snapshots") { try await api.volumeSnapshots() }.filter { $0.name == text }
        guard matches.count <= 1 else {
            let volumes = try await cloud("list volumes") { try await api.volumes(named: nil, region: nil) }
            let names = Dictionary(volumes.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
            let list = matches.map { "\($0.id) (of volume \(names[$0.resourceID] ?? $0.resourceID))" }.joined(separator: ", ")
            throw VolumeError(
                .invalidOption,
                "snapshot name \"\(text)\" is used by snapshots of \(matches.count) volumes: \(list); give the id instead")
        }
        guard let snapshot = matches.first else {
            throw VolumeError(
                .notFound,
                "there is no volume snapshot with the id or name \"\(text)\"; list them with do-storage snapshot list "
                    + "VOLUME or doctl compute snapshot list --resource volume")
        }
        return snapshot
    }

    /// Takes a snapshot of the Docker volume `source` for a clone named `name`. When `source` is mounted here its
    /// filesystem is frozen for the request (at most `freezeLimit`) and always thawed again.
    func cloneSnapshot(of source: String, for name: String, options: CreateOptions) async throws -> (Snapshot, CloneConsistency) {
        guard source != name else { throw VolumeError(.invalidOption, "clone_of=\(source): a volume cannot be its own clone") }
        let snapshotName = "\(name)-clone-\(Self.snapshotTime(time.wallClock()))"
        if registry[source] != nil {
            return try await volumeLocks.withLock(source) {
                let volume = try await currentVolume(source)
                try checkDataDirectoryOptions(options, origin: volume.tags, what: "clone_of=\(source)")
                let snapshot = try await takeSnapshot(of: volume, volume: source, name: snapshotName, tags: [Self.cloneTag])
                try await persist()
                return snapshot
            }
        }
        let (doName, found) = try await resolve(source)
        guard let volume = found else {
            throw VolumeError(
                .notFound,
                "clone_of=\(source): there is no DigitalOcean volume \(doName) in region \(configuration.region) to clone")
        }
        try checkDataDirectoryOptions(options, origin: volume.tags, what: "clone_of=\(source)")
        return (try await snapshot(volume, name: snapshotName, tags: [Self.cloneTag]), .crash)
    }

    /// Snapshots `volume`, the volume this droplet knows as `volumeName`: frozen when it is mounted here. Notes the
    /// snapshot in its record.
    func takeSnapshot(
        of volume: Volume, volume volumeName: String, name: String, tags: [String]
    ) async throws -> (Snapshot, CloneConsistency) {
        let mountpoint = mountpoint(for: volumeName)
        let attachedHere = volume.dropletIDs.contains(configuration.dropletID)
        let mountedHere = attachedHere ? try await isMounted(mountpoint) : false
        let snapshot: Snapshot
        if mountedHere {
            snapshot = try await frozen(mountpoint, name: volumeName) { try await self.snapshot(volume, name: name, tags: tags) }
        } else {
            snapshot = try await self.snapshot(volume, name: name, tags: tags)
        }
        registry.update(volumeName) { record in
            record.snapshotCount = (record.snapshotCount ?? 0) + 1
            record.lastSnapshot = "\(snapshot.name) at \(snapshot.createdAt)"
        }
        return (snapshot, mountedHere ? .frozen : .crash)
    }

    /// Runs `body` with the filesystem at `mountpoint` frozen, and thaws it when `body` ends or at `freezeLimit`,
    /// whichever comes first: a request still running then is cancelled, and the snapshot fails (one made after
    /// the thaw would not be consistent, so it is deleted).
    func frozen(_ mountpoint: String, name: String, _ body: @escaping @Sendable () async throws -> Snapshot) async throws -> Snapshot {
        do {
            try await filesystem.freeze(mountpoint: mountpoint)
        } catch {
            throw VolumeError(.cloud, "cannot freeze volume \(name) for a consistent snapshot: \(error)")
        }
        let started = time.now()
        let limit = configuration.freezeLimit
        let thawOnce = ThawOnce { await self.thaw(mountpoint, name: name) }
        activeFreezes[name] = thawOnce
        defer { activeFreezes[name] = nil }
        // The request against the freeze limit and an Unmount: whoever ends first thaws, and a request still
        // running then is cancelled.
        enum Outcome: Sendable { case answered(Result<Snapshot, any Error>), thaw, stopped }
        let time = self.time
        let result = await withTaskGroup(of: Outcome.self) { group -> Result<Snapshot, any Error> in
            group.addTask {
                do {
                    let bound = Deadline.bounding(started.advanced(by: limit))
                    return .answered(.success(try await Deadline.$current.withValue(bound) { try await body() }))
                } catch {
                    return .answered(.failure(error))
                }
            }
            group.addTask {
                do { try await time.sleep(limit) } catch { return .stopped }
                return .thaw
            }
            group.addTask {
                await thawOnce.waitUntilThawed()
                return Task.isCancelled ? .stopped : .thaw
            }
            while let outcome = await group.next() {
                switch outcome {
                case .answered(let result):
                    group.cancelAll()
                    return result
                case .thaw:
                    await thawOnce.run()
                    group.cancelAll()
                case .stopped:
                    continue
                }
            }
            return .failure(CancellationError())
        }
        let inTime = await thawOnce.run()
        let frozenFor = started.duration(to: time.now())
        guard inTime else {
            if case .success(let late) = result {
                do {
                    try await api.deleteSnapshot(id: late.id)
                } catch {
                    logger.warning(
                        "Cannot delete a snapshot taken after the thaw; delete it by hand",
                        metadata: ["do.snapshot.id": "\(late.id)", "error": "\(error)"])
                }
            }
            throw VolumeError(
                .cloud,
                "the snapshot of volume \(name) was abandoned: its filesystem was thawed before DigitalOcean answered "
                    + "(after \(Int(frozenFor.seconds))s; at most \(Int(limit.seconds))s, or sooner when the volume is "
                    + "unmounted); try again")
        }
        logger.info(
            "Snapshot taken with the filesystem frozen",
            metadata: ["volume.name": "\(name)", "frozen.ms": "\(Int(frozenFor.milliseconds))"])
        return try result.get()
    }

    /// Thaws, retrying: a filesystem left frozen blocks every writer on it.
    func thaw(_ mountpoint: String, name: String) async {
        for attempt in 1...5 {
            do {
                try await filesystem.thaw(mountpoint: mountpoint)
                return
            } catch {
                logger.error(
                    "Cannot thaw the filesystem; trying again",
                    metadata: ["volume.name": "\(name)", "attempt": "\(attempt)", "error": "\(error)"])
                // Kept trying even when the task is cancelled: a frozen filesystem must not stay so.
                try? await time.sleep(.milliseconds(100 * attempt))
            }
        }
    }

    /// One snapshot request, its errors in plain words.
    /// A volume that shows its data directory passes that on in the snapshot's tags: a volume made from the snapshot
    /// shows it too.
    func snapshot(_ volume: Volume, name: String, tags: [String]) async throws -> Snapshot {
        do {
            let layout = DataDirectory(tags: volume.tags)?.tags ?? []
            return try await api.createSnapshot(volumeID: volume.id, name: name, tags: tags + layout)
        } catch let error as DOError where error.code == .conflict {
            throw VolumeError(
                .invalidOption,
                "volume \(volume.name) already has a snapshot named \(name); choose another name")
        } catch let error as DOError where error.reason == .snapshotRateLimit {
            throw VolumeError(
                .cloud,
                "DigitalOcean takes at most one snapshot of a volume every 10 minutes, and volume \(volume.name) had one "
                    + "less than 10 minutes ago; try again later (do-storage snapshot list shows when)")
        } catch let error as DOError {
            throw VolumeError(.cloud, "cannot take a snapshot of volume \(volume.name): \(error)")
        }
    }

    /// `20261123T093000Z`: UTC, sortable, valid in names.
    static func snapshotTime(_ date: Date) -> String {
        date.formatted(
            Date.ISO8601FormatStyle(dateSeparator: .omitted, dateTimeSeparator: .standard, timeSeparator: .omitted, timeZone: .gmt))
    }
}

/// Thaws once, from whichever of the request, the freeze limit and an Unmount gets there first.
actor ThawOnce {
    private var done = false
    private let thaw: @Sendable () async -> Void
    private let thawed = EventSignal()

    init(_ thaw: @escaping @Sendable () async -> Void) { self.thaw = thaw }

    /// Thaws unless already thawed; returns whether this call did it.
    @discardableResult
    func run() async -> Bool {
        guard !done else { return false }
        done = true
        await thaw()
        thawed.fire()
        return true
    }

    /// Returns once thawed, or when the task is cancelled.
    nonisolated func waitUntilThawed() async { await thawed.wait(after: 0) }
}
