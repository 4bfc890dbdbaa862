import Logging
import Synchronization

/// The one owner of the plugin's persisted state: the volume records and this droplet's lease, their saving to the
/// state file, and the answers Get, List and Path give from them.
///
/// Every change is one synchronous transition under its lock (`update(name) { … }`, `updateLease`, `add`,
/// `remove`): a record is read where it is needed and changed where the change happens, never copied before an
/// await and written back after one. So a change made meanwhile (another request's, `snapshot list`'s count, the
/// release of an attach request at start-up, a growth on a device event) is never lost to an older copy. Each
/// change to the records publishes the lookups again; `save()` writes the state as it stands, and saves land in the
/// order they were asked for.
final class VolumeRegistry: Sendable {
    private let state: Mutex<PersistedState>
    private let store: StateStore
    private let configuration: ServiceConfiguration
    /// What Get, List and Path answer, read without waiting for anything but this lock (the engine sends these by
    /// the thousand, from many connections).
    private let published: Mutex<VolumeLookups>

    /// The registry as `store` last saved it.
    ///
    /// - Throws: `StateError` `.damaged` when the state file is not what the plugin writes.
    init(store: StateStore, configuration: ServiceConfiguration) throws {
        let loaded = try store.load()
        self.store = store
        self.configuration = configuration
        state = Mutex(loaded)
        published = Mutex(Self.lookups(of: loaded, configuration, generation: 0))
    }

    /// Every record, by Docker name.
    var records: [String: VolumeRecord] { state.withLock { $0.volumes } }

    /// The record of `name`, as it stands now.
    subscript(name: String) -> VolumeRecord? { state.withLock { $0.volumes[name] } }

    /// This droplet's heartbeat, while it has one.
    var lease: LeaseState? { state.withLock { $0.lease } }

    /// Get's, List's and Path's answers as they stand.
    var lookups: VolumeLookups { published.withLock { $0 } }

    /// Changes the record of `name` in place; nothing when there is none. Returns the record as changed.
    @discardableResult
    func update(_ name: String, _ change: (inout VolumeRecord) -> Void) -> VolumeRecord? {
        changeRecords { state in
            guard var record = state.volumes[name] else { return nil }
            change(&record)
            state.volumes[name] = record
            return record
        }
    }

    /// Changes this droplet's heartbeat in place (a new one when there is none); one with neither a tag nor
    /// leftovers is none.
    func updateLease(_ change: (inout LeaseState) -> Void) {
        state.withLock { state in
            var lease = state.lease ?? LeaseState()
            change(&lease)
            state.lease = lease.tag == nil && lease.leftovers.isEmpty ? nil : lease
        }
    }

    /// Adds a record, or replaces the one with its name.
    func add(_ record: VolumeRecord) {
        changeRecords { $0.volumes[record.name] = record }
    }

    /// Forgets `name`.
    func remove(_ name: String) {
        changeRecords { $0.volumes[name] = nil }
    }

    /// Saves the state as it stands; returns once it, or a newer one, is on disk.
    ///
    /// - Throws: `VolumeError` `.state` when it cannot be written.
    func save() async throws {
        do {
            // Numbered under the lock: a save asked for later never lands before this one.
            let pending = try state.withLock { try store.prepare($0) }
            try await pending.write()
        } catch {
            throw VolumeError(.state, "cannot save the plugin's state: \(error)")
        }
    }

    /// Saves, logging a failure instead of throwing it: for background work whose change is saved again with the
    /// next one.
    func saveOrWarn(_ logger: Logger) async {
        do {
            try await save()
        } catch {
            logger.warning("Cannot save the plugin's state", metadata: ["error": "\(error)"])
        }
    }

    private func changeRecords<T>(_ change: (inout PersistedState) -> T) -> T {
        state.withLock { state in
            let result = change(&state)
            let made = Self.lookups(of: state, configuration, generation: published.withLock { $0.generation } &+ 1)
            published.withLock { $0 = made }
            return result
        }
    }

    /// Get's and List's answers for the records in `state`.
    private static func lookups(of state: PersistedState, _ configuration: ServiceConfiguration, generation: UInt64) -> VolumeLookups {
        VolumeLookups(state.volumes.values.map { VolumeInfo($0, configuration) }, generation: generation)
    }
}
