import FoundationEssentials

/// What Docker sees of a volume.
public struct VolumeInfo: Sendable, Equatable {
    public var name: String
    /// Empty while not mounted.
    public var mountpoint: String
    public var createdAt: Date?
    public var status: [String: String]

    public init(name: String, mountpoint: String, createdAt: Date?, status: [String: String] = [:]) {
        self.name = name
        self.mountpoint = mountpoint
        self.createdAt = createdAt
        self.status = status
    }
}

extension VolumeInfo {
    /// What `docker volume inspect` shows of a record: the plugin's registry and what it last saw of the volume,
    /// with no DigitalOcean call.
    init(_ record: VolumeRecord, _ configuration: ServiceConfiguration) {
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
            "branch": record.branch ?? History.mainBranch,
            "head": record.head ?? "",
        ]
        if let consistency = record.cloneConsistency { status["clone_consistency"] = consistency.rawValue }
        // What a container sees: the data directory (with its owner and mode) or the filesystem's root.
        status["container_sees"] = record.dataDirectory.map { "data directory (\(DataDirectory.name)/ of the filesystem, "
            + "owner:group mode \($0.statusText))" } ?? "filesystem root (volume not made by do_storage)"
        self.init(
            name: record.name, mountpoint: record.mountpoint.map(record.shownPath) ?? "", createdAt: record.createdAt, status: status)
    }
}
