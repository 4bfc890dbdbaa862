/// The one owner of the plugin's persisted state: the volume records and this droplet's lease.
///
/// The service's actor holds it and changes it only through its transitions, each one synchronous: a record is
/// read where it is needed and changed where the change happens, never copied before an await and written back
/// after one. So a change made meanwhile (another request's, `snapshot list`'s count, the release of an attach
/// request at start-up, a growth on a device event) is never lost to an older copy. The service saves it as it
/// stands (`VolumeService.persist`) and publishes Get's, List's and Path's answers from it on every change.
struct VolumeRegistry: Sendable, Equatable {
    private(set) var state: PersistedState

    init(_ state: PersistedState) {
        self.state = state
    }

    /// Every record, by Docker name.
    var records: [String: VolumeRecord] { state.volumes }

    /// The record of `name`, as it stands now.
    subscript(name: String) -> VolumeRecord? { state.volumes[name] }

    /// This droplet's heartbeat, while it has one.
    var lease: LeaseState? { state.lease }

    /// Changes the record of `name` in place; nothing when there is none. Returns the record as changed.
    @discardableResult
    mutating func update(_ name: String, _ change: (inout VolumeRecord) -> Void) -> VolumeRecord? {
        guard var record = state.volumes[name] else { return nil }
        change(&record)
        state.volumes[name] = record
        return record
    }

    /// Changes this droplet's heartbeat in place (a new one when there is none); one with neither a tag nor
    /// leftovers is none.
    mutating func updateLease(_ change: (inout LeaseState) -> Void) {
        var lease = state.lease ?? LeaseState()
        change(&lease)
        state.lease = lease.tag == nil && lease.leftovers.isEmpty ? nil : lease
    }

    /// Adds a record, or replaces the one with its name.
    mutating func add(_ record: VolumeRecord) {
        state.volumes[record.name] = record
    }

    /// Forgets `name`.
    mutating func remove(_ name: String) {
        state.volumes[name] = nil
    }
}
