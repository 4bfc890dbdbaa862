import DigitalOcean
import FoundationEssentials
import Logging
import Timekeeping

/// Snapshots: a volume's history on DigitalOcean, taken here (frozen when the volume is mounted here), the
/// snapshots volumes are made from (`from_snapshot`, `clone_of`), and the schedules (see `SnapshotSchedule`). At
/// most one snapshot of a volume at a time.
struct Snapshots: Sendable {
    /// On the snapshot a clone is made from.
    static let cloneTag = "do-storage-clone"

    let configuration: ServiceConfiguration
    let api: any VolumeAPI
    let registry: VolumeRegistry
    let finder: VolumeFinder
    let filesystems: Filesystems
    /// Each volume's sequences, shared with the orchestration: a snapshot's note is written under it.
    let volumeLocks: AsyncKeyedLock
    /// One snapshot at a time per volume.
    let snapshotLocks: AsyncKeyedLock
    let time: TimeSource
    let logger: Logger

    // MARK: The CLI's requests

    func create(volume name: String, name snapshotName: String?) async throws -> SnapshotInfo {
        let snapshotName = snapshotName ?? "\(name)-\(Self.snapshotTime(time.wallClock()))"
        guard !snapshotName.isEmpty, snapshotName.utf8.count <= 255 else {
            throw VolumeError(.invalidOption, "a snapshot name has 1 to 255 characters")
        }
        return Self.info(try await take(of: name) { _ in (snapshotName, []) })
    }

    /// Takes a snapshot of the Docker volume `name`, whether or not this droplet knows it: frozen when it is mounted
    /// here, and noted in its record when this droplet knows it. `naming` gives the snapshot's name and tags from the
    /// volume as DigitalOcean has it now (read once).
    func take(
        of name: String, _ naming: (Volume) async throws -> (name: String, tags: [String])
    ) async throws -> Snapshot {
        if registry[name] != nil {
            return try await volumeLocks.withLock(name) {
                let volume = try await finder.current(name)
                let (snapshotName, tags) = try await naming(volume)
                let (snapshot, _) = try await takeSnapshot(of: volume, volume: name, name: snapshotName, tags: tags)
                try await registry.save()
                return snapshot
            }
        }
        let volume = try await finder.onDigitalOcean(name)
        let (snapshotName, tags) = try await naming(volume)
        return try await snapshot(volume, name: snapshotName, tags: tags)
    }

    func list(volume name: String) async throws -> [SnapshotInfo] {
        let volume = try await finder.onDigitalOcean(name)
        // Newest first; snapshots of the same second in the reverse of DigitalOcean's order (oldest first).
        let listed = try await cloud("list the snapshots of volume \(name)") { try await api.snapshots(volumeID: volume.id) }
        let snapshots = listed.enumerated().map { (time: Self.date($0.element.createdAt) ?? .distantPast, order: $0.offset, snapshot: $0.element) }
            .sorted { $0.time != $1.time ? $0.time > $1.time : $0.order > $1.order }.map(\.snapshot)
        let noted = registry.update(name) { record in
            record.snapshotCount = snapshots.count
            record.lastSnapshot = snapshots.first.map { "\($0.name) at \($0.createdAt)" }
        }
        if noted != nil { try await registry.save() }
        return snapshots.map(Self.info)
    }

    func delete(volume name: String, snapshot text: String) async throws {
        let volume = try await finder.onDigitalOcean(name)
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
            try await registry.save()
        }
    }

    static func info(_ snapshot: Snapshot) -> SnapshotInfo {
        let origin =
            snapshot.tags.contains(SnapshotSchedule.scheduledTag) ? "scheduled"
            : snapshot.tags.contains(cloneTag) ? "clone" : snapshot.tags.contains(History.commitTag) ? "commit" : "manual"
        return SnapshotInfo(
            id: snapshot.id, name: snapshot.name, createdAt: snapshot.createdAt, sizeGigabytes: snapshot.sizeGigabytes,
            origin: origin)
    }

    /// A volume snapshot by id, or else by name among all the account's volume snapshots. A name that several
    /// volumes' snapshots share is an error listing them.
    func find(_ text: String) async throws -> Snapshot {
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
    func forClone(of source: String, for name: String, options: CreateOptions) async throws -> (Snapshot, CloneConsistency) {
        guard source != name else { throw VolumeError(.invalidOption, "clone_of=\(source): a volume cannot be its own clone") }
        let snapshotName = "\(name)-clone-\(Self.snapshotTime(time.wallClock()))"
        if registry[source] != nil {
            return try await volumeLocks.withLock(source) {
                let volume = try await finder.current(source)
                try Provisioning.checkDataDirectoryOptions(options, origin: volume.tags, what: "clone_of=\(source)")
                let snapshot = try await takeSnapshot(of: volume, volume: source, name: snapshotName, tags: [Self.cloneTag])
                try await registry.save()
                return snapshot
            }
        }
        let (doName, found) = try await finder.resolve(source)
        guard let volume = found else {
            throw VolumeError(
                .notFound,
                "clone_of=\(source): there is no DigitalOcean volume \(doName) in region \(configuration.region) to clone")
        }
        try Provisioning.checkDataDirectoryOptions(options, origin: volume.tags, what: "clone_of=\(source)")
        return (try await snapshot(volume, name: snapshotName, tags: [Self.cloneTag]), .crash)
    }

    /// Snapshots `volume`, the volume this droplet knows as `volumeName`: frozen when it is mounted here. Notes the
    /// snapshot in its record.
    func takeSnapshot(
        of volume: Volume, volume volumeName: String, name: String, tags: [String]
    ) async throws -> (Snapshot, CloneConsistency) {
        let mountpoint = configuration.mountpoint(for: volumeName)
        let attachedHere = volume.dropletIDs.contains(configuration.dropletID)
        let mountedHere = attachedHere ? try await filesystems.isMounted(mountpoint) : false
        let snapshot: Snapshot
        if mountedHere {
            snapshot = try await filesystems.frozen(mountpoint, name: volumeName) {
                try await self.snapshot(volume, name: name, tags: tags)
            } abandoned: { late in
                await self.deleteAbandoned(late)
            }
        } else {
            snapshot = try await self.snapshot(volume, name: name, tags: tags)
        }
        registry.update(volumeName) { record in
            record.snapshotCount = (record.snapshotCount ?? 0) + 1
            record.lastSnapshot = "\(snapshot.name) at \(snapshot.createdAt)"
        }
        return (snapshot, mountedHere ? .frozen : .crash)
    }

    /// Deletes a snapshot DigitalOcean made after the filesystem was thawed: it would not be consistent.
    func deleteAbandoned(_ late: Snapshot) async {
        do {
            try await api.deleteSnapshot(id: late.id)
        } catch {
            logger.warning(
                "Cannot delete a snapshot taken after the thaw; delete it by hand",
                metadata: ["do.snapshot.id": "\(late.id)", "error": "\(error)"])
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
