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
    /// `docker volume create`: adopts the DigitalOcean volume of that name, or makes it (with `options`).
    ///
    /// - Parameters:
    ///   - name: the Docker volume name.
    ///   - options: `-o key=value` (size, fstype, from_snapshot, clone_of, snapshot_every, …); unknown keys refused.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    ///   Docker sends Create again on other nodes and on retries: the same name and options succeed.
    func create(name: String, options: [String: String]) async throws
    /// `docker volume rm`: forgets the volume, and deletes it on DigitalOcean under `onremove=delete`.
    ///
    /// - Parameter name: the Docker volume name; one this driver does not know succeeds (Docker expects it).
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func remove(name: String) async throws
    /// A container starts with the volume: attach it here (detaching it from an idle droplet, never from a busy
    /// one), wait for its device, mount it, and count the reference.
    ///
    /// - Parameters:
    ///   - name: the Docker volume name.
    ///   - id: the mount id Docker gives this use; Unmount names it again.
    /// - Returns: the path the container gets.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func mount(name: String, id: String) async throws -> String
    /// A container with the volume stops: drop the reference, and on the last one unmount (and detach, by default).
    ///
    /// - Parameters:
    ///   - name: the Docker volume name.
    ///   - id: the mount id its Mount had.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func unmount(name: String, id: String) async throws
    /// Where the volume is mounted here; never calls DigitalOcean.
    ///
    /// - Parameter name: the Docker volume name.
    /// - Returns: the mountpoint, or "" when it is not mounted here.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.notFound` for a name this driver does not know.
    func path(name: String) async throws -> String
    /// `docker volume inspect`; never calls DigitalOcean (Status shows values as last seen).
    ///
    /// - Parameter name: the Docker volume name.
    /// - Returns: the volume, with its Status keys.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.notFound` for a name this driver does not know.
    func get(name: String) async throws -> VolumeInfo
    /// `docker volume ls`; never calls DigitalOcean.
    ///
    /// - Returns: every volume this driver knows, by name.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func list() async throws -> [VolumeInfo]
    /// Takes a snapshot of the volume, frozen when it is mounted here.
    ///
    /// - Parameters:
    ///   - volume: the Docker volume name.
    ///   - name: the snapshot's name; nil for `<volume>-<UTC time>`.
    /// - Returns: the snapshot as the command line shows it.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.invalidOption` for a name the volume's snapshots already use.
    func createSnapshot(volume: String, name: String?) async throws -> SnapshotInfo
    /// The volume's snapshots.
    ///
    /// - Parameter volume: the Docker volume name.
    /// - Returns: its snapshots, newest first.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.notFound` for a volume DigitalOcean does not have.
    func listSnapshots(volume: String) async throws -> [SnapshotInfo]
    /// Deletes one of the volume's snapshots.
    ///
    /// - Parameters:
    ///   - volume: the Docker volume name.
    ///   - snapshot: the snapshot's name or id, among this volume's snapshots only.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.notFound` when the volume has no such snapshot.
    func deleteSnapshot(volume: String, snapshot: String) async throws
    /// Get, List and Path's answers as they stand, for a caller that must not wait (the protocol's channel handler
    /// answers from them on the connection's thread); nil where the driver has none ready (it is still starting).
    /// A name they lack is asked of `get(name:)`, which says why.
    var readyLookups: VolumeLookups? { get }
}

extension VolumeDriver {
    public var readyLookups: VolumeLookups? { nil }
}

/// The volumes a driver knows, as Get and List show them.
public struct VolumeLookups: Sendable {
    private var byName: [String: VolumeInfo] = [:]
    /// By name, as List answers them.
    public private(set) var volumes: [VolumeInfo] = []
    /// Different for each set of lookups a driver makes: what is kept made from one set is good while it is the same.
    public private(set) var generation: UInt64 = 0

    /// The lookups of `volumes`.
    ///
    /// - Parameters:
    ///   - volumes: Every volume the driver knows.
    ///   - generation: Distinct from the last set the driver made.
    public init(_ volumes: [VolumeInfo] = [], generation: UInt64 = 0) {
        self.generation = generation
        self.volumes = volumes.sorted { $0.name < $1.name }
        byName = Dictionary(volumes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// One volume as Get shows it.
    ///
    /// - Parameter name: A Docker volume name.
    /// - Returns: The volume, or nil when the driver does not know the name.
    public func volume(named name: String) -> VolumeInfo? { byName[name] }
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
