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
