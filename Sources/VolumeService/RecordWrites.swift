/// How a volume's record changes: the holder of the volume's lock takes the record (`checkout`), works on its copy
/// across awaits, and writes back only the fields it changed (`write`). What others wrote meanwhile without the
/// lock (a snapshot count from `snapshot list`, an attach request cleared at start-up) is kept, not overwritten by
/// an older copy.
extension VolumeService {
    /// The record of `name`, for the holder of its lock to change and `write` back; nil when there is none.
    func checkout(_ name: String) -> VolumeRecord? {
        let record = state.volumes[name]
        writeBases[name] = record
        return record
    }

    /// Writes what `record` changed since it was checked out (or last written) into the registry, leaving the
    /// fields that others changed meanwhile as they are.
    func write(_ record: VolumeRecord) {
        let name = record.name
        if let base = writeBases[name], let current = state.volumes[name] {
            state.volumes[name] = record.changes(since: base, appliedTo: current)
        } else {
            state.volumes[name] = record
        }
        writeBases[name] = record
    }
}

extension VolumeRecord {
    /// `current` with the fields in which this copy differs from `base`, the record it was made from: a three-way
    /// merge, field by field.
    func changes(since base: VolumeRecord, appliedTo current: VolumeRecord) -> VolumeRecord {
        var merged = current
        func take<Value: Equatable>(_ field: WritableKeyPath<VolumeRecord, Value>) {
            if self[keyPath: field] != base[keyPath: field] { merged[keyPath: field] = self[keyPath: field] }
        }
        take(\.doName)
        take(\.volumeID)
        take(\.createdAt)
        take(\.references)
        take(\.mountpoint)
        take(\.mountOptions)
        take(\.onRemove)
        take(\.seen)
        take(\.lastError)
        take(\.formatAs)
        take(\.formatLabel)
        take(\.takeover)
        take(\.attachRequested)
        take(\.detachRequested)
        take(\.cloneConsistency)
        take(\.snapshotCount)
        take(\.lastSnapshot)
        take(\.schedule)
        take(\.lastScheduledAt)
        take(\.dataDirectory)
        return merged
    }
}
