/// A volume snapshot as the CLI shows it.
public struct SnapshotInfo: Sendable, Codable, Equatable {
    public var id: String
    public var name: String
    /// RFC 3339, UTC.
    public var createdAt: String
    public var sizeGigabytes: Double
    /// `scheduled`, `clone`, `commit` or `manual`.
    public var origin: String

    public init(id: String, name: String, createdAt: String, sizeGigabytes: Double, origin: String) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.sizeGigabytes = sizeGigabytes
        self.origin = origin
    }
}

/// A commit of a volume's history, as `do-storage log` shows it.
public struct CommitInfo: Sendable, Codable, Equatable {
    /// The snapshot's id.
    public var id: String
    public var message: String
    /// RFC 3339, UTC.
    public var createdAt: String
    /// The branch it was committed on.
    public var branch: String

    public init(id: String, message: String, createdAt: String, branch: String) {
        self.id = id
        self.message = message
        self.createdAt = createdAt
        self.branch = branch
    }

    enum CodingKeys: String, CodingKey {
        case id, message, branch
        case createdAt = "created_at"
    }
}

/// A branch of a volume's history, as `do-storage branch` shows it.
public struct BranchInfo: Sendable, Codable, Equatable {
    public var name: String
    /// Whether the Docker name mounts it.
    public var current: Bool
    /// The DigitalOcean volume that holds it.
    public var doID: String

    public init(name: String, current: Bool, doID: String) {
        self.name = name
        self.current = current
        self.doID = doID
    }

    enum CodingKeys: String, CodingKey {
        case name, current
        case doID = "do_id"
    }
}
