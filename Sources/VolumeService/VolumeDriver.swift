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

/// The operations behind Docker's VolumeDriver protocol. `VolumeService` is the implementation; a plugin without an
/// access token uses `UnconfiguredDriver`.
public protocol VolumeDriver: Sendable {
    func create(name: String, options: [String: String]) async throws
    func remove(name: String) async throws
    func mount(name: String, id: String) async throws -> String
    func unmount(name: String, id: String) async throws
    func path(name: String) async throws -> String
    func get(name: String) async throws -> VolumeInfo
    func list() async throws -> [VolumeInfo]
    /// Takes a snapshot of the volume (frozen when it is mounted here); `name` nil: `<volume>-<UTC time>`.
    func createSnapshot(volume: String, name: String?) async throws -> SnapshotInfo
    /// The volume's snapshots, newest first.
    func listSnapshots(volume: String) async throws -> [SnapshotInfo]
    /// Deletes one of the volume's snapshots, by name or id.
    func deleteSnapshot(volume: String, snapshot: String) async throws
}

/// A volume snapshot as the CLI shows it.
public struct SnapshotInfo: Sendable, Codable, Equatable {
    public var id: String
    public var name: String
    /// RFC 3339, UTC.
    public var createdAt: String
    public var sizeGigabytes: Double
    /// `scheduled`, `clone` or `manual`.
    public var origin: String

    public init(id: String, name: String, createdAt: String, sizeGigabytes: Double, origin: String) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.sizeGigabytes = sizeGigabytes
        self.origin = origin
    }
}

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
}
