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
