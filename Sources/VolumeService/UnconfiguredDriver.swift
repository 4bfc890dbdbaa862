/// Answers every call with the same error, for a plugin that cannot work (no access token).
public struct UnconfiguredDriver: VolumeDriver {
    public let error: VolumeError

    public init(error: VolumeError) { self.error = error }

    public func create(name: String, options: [String: String]) async throws { throw error }
    public func remove(name: String) async throws { throw error }
    public func mount(name: String, id: String) async throws -> String { throw error }
    public func unmount(name: String, id: String) async throws { throw error }
    public func path(name: String) async throws -> String { throw error }
    public func get(name: String) async throws -> VolumeInfo { throw error }
    public func list() async throws -> [VolumeInfo] { throw error }
    public func createSnapshot(volume: String, name: String?) async throws -> SnapshotInfo { throw error }
    public func listSnapshots(volume: String) async throws -> [SnapshotInfo] { throw error }
    public func deleteSnapshot(volume: String, snapshot: String) async throws { throw error }
    public func commit(volume: String, message: String) async throws -> CommitInfo { throw error }
    public func log(volume: String) async throws -> [CommitInfo] { throw error }
    public func branches(volume: String) async throws -> [BranchInfo] { throw error }
    public func checkout(volume: String, branch: String, create: Bool, from commit: String?) async throws -> BranchInfo { throw error }
    public func reset(volume: String, to commit: String?) async throws -> String { throw error }
    public func deleteBranch(volume: String, branch: String) async throws -> String { throw error }
}
