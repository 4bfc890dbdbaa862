import FoundationEssentials
import Glibc

/// A region as DigitalOcean returns it inside a volume.
public struct Region: Codable, Sendable, Equatable {
    public var name: String
    public var slug: String
    public var sizes: [String]
    public var features: [String]
    public var available: Bool

    public init(name: String, slug: String, sizes: [String] = [], features: [String] = [], available: Bool = true) {
        self.name = name
        self.slug = slug
        self.sizes = sizes
        self.features = features
        self.available = available
    }
}

/// A block storage volume (`GET /v2/volumes/{id}`).
public struct Volume: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var region: Region
    /// The droplets the volume is attached to; at most one. DigitalOcean may send `null`.
    public var dropletIDs: [Int]
    public var description: String
    public var sizeGigabytes: Int
    public var createdAt: String
    public var filesystemType: String
    public var filesystemLabel: String
    public var tags: [String]

    public init(
        id: String, name: String, region: Region, dropletIDs: [Int] = [], description: String = "",
        sizeGigabytes: Int, createdAt: String, filesystemType: String = "", filesystemLabel: String = "",
        tags: [String] = []
    ) {
        self.id = id
        self.name = name
        self.region = region
        self.dropletIDs = dropletIDs
        self.description = description
        self.sizeGigabytes = sizeGigabytes
        self.createdAt = createdAt
        self.filesystemType = filesystemType
        self.filesystemLabel = filesystemLabel
        self.tags = tags
    }

    enum CodingKeys: String, CodingKey {
        case id, name, region, description, tags
        case dropletIDs = "droplet_ids"
        case sizeGigabytes = "size_gigabytes"
        case createdAt = "created_at"
        case filesystemType = "filesystem_type"
        case filesystemLabel = "filesystem_label"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        name = try c.decode(String.self, forKey: .name)
        region = try c.decode(Region.self, forKey: .region)
        dropletIDs = try c.decodeIfPresent([Int].self, forKey: .dropletIDs) ?? []
        description = try c.decodeIfPresent(String.self, forKey: .description) ?? ""
        sizeGigabytes = try c.decode(Int.self, forKey: .sizeGigabytes)
        createdAt = try c.decodeIfPresent(String.self, forKey: .createdAt) ?? ""
        filesystemType = try c.decodeIfPresent(String.self, forKey: .filesystemType) ?? ""
        filesystemLabel = try c.decodeIfPresent(String.self, forKey: .filesystemLabel) ?? ""
        tags = try c.decodeIfPresent([String].self, forKey: .tags) ?? []
    }
}

/// The body of `POST /v2/volumes`.
public struct VolumeCreateRequest: Codable, Sendable, Equatable {
    public var name: String
    public var sizeGigabytes: Int
    public var region: String
    public var description: String?
    public var snapshotID: String?
    public var filesystemType: String?
    public var filesystemLabel: String?
    public var tags: [String]?

    public init(
        name: String, sizeGigabytes: Int, region: String, description: String? = nil, snapshotID: String? = nil,
        filesystemType: String? = nil, filesystemLabel: String? = nil, tags: [String]? = nil
    ) {
        self.name = name
        self.sizeGigabytes = sizeGigabytes
        self.region = region
        self.description = description
        self.snapshotID = snapshotID
        self.filesystemType = filesystemType
        self.filesystemLabel = filesystemLabel
        self.tags = tags
    }

    enum CodingKeys: String, CodingKey {
        case name, region, description, tags
        case sizeGigabytes = "size_gigabytes"
        case snapshotID = "snapshot_id"
        case filesystemType = "filesystem_type"
        case filesystemLabel = "filesystem_label"
    }
}

/// The body of `POST /v2/volumes/{id}/actions` and `POST /v2/volumes/actions`.
public struct VolumeActionRequest: Codable, Sendable, Equatable {
    public var type: String
    public var dropletID: Int?
    public var region: String?
    public var sizeGigabytes: Int?
    /// Only for the by-name endpoint.
    public var volumeName: String?

    public init(type: String, dropletID: Int? = nil, region: String? = nil, sizeGigabytes: Int? = nil, volumeName: String? = nil) {
        self.type = type
        self.dropletID = dropletID
        self.region = region
        self.sizeGigabytes = sizeGigabytes
        self.volumeName = volumeName
    }

    enum CodingKeys: String, CodingKey {
        case type, region
        case dropletID = "droplet_id"
        case sizeGigabytes = "size_gigabytes"
        case volumeName = "volume_name"
    }
}

/// An asynchronous action (attach, detach, resize).
public struct Action: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case inProgress = "in-progress"
        case completed
        case errored
    }

    public var id: Int
    public var status: Status
    public var type: String
    public var startedAt: String?
    public var completedAt: String?
    public var resourceID: Int?
    public var resourceType: String?
    public var regionSlug: String?

    public init(
        id: Int, status: Status, type: String, startedAt: String? = nil, completedAt: String? = nil,
        resourceID: Int? = nil, resourceType: String? = nil, regionSlug: String? = nil
    ) {
        self.id = id
        self.status = status
        self.type = type
        self.startedAt = startedAt
        self.completedAt = completedAt
        self.resourceID = resourceID
        self.resourceType = resourceType
        self.regionSlug = regionSlug
    }

    enum CodingKeys: String, CodingKey {
        case id, status, type
        case startedAt = "started_at"
        case completedAt = "completed_at"
        case resourceID = "resource_id"
        case resourceType = "resource_type"
        case regionSlug = "region_slug"
    }
}

/// The parts of a droplet the plugin reads.
public struct Droplet: Codable, Sendable, Equatable {
    public var id: Int
    public var name: String
    public var status: String
    public var volumeIDs: [String]
    /// The droplet's tags (the plugin's heartbeat is one).
    public var tags: [String]

    public init(id: Int, name: String, status: String, volumeIDs: [String] = [], tags: [String] = []) {
        self.id = id
        self.name = name
        self.status = status
        self.volumeIDs = volumeIDs
        self.tags = tags
    }

    enum CodingKeys: String, CodingKey {
        case id, name, status, tags
        case volumeIDs = "volume_ids"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(Int.self, forKey: .id)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        status = try c.decodeIfPresent(String.self, forKey: .status) ?? ""
        volumeIDs = try c.decodeIfPresent([String].self, forKey: .volumeIDs) ?? []
        tags = try c.decodeIfPresent([String].self, forKey: .tags) ?? []
    }
}

/// `POST /v2/tags`.
public struct TagCreateRequest: Codable, Sendable, Equatable {
    public var name: String
    public init(name: String) { self.name = name }

    /// A DigitalOcean tag name: `^[a-zA-Z0-9_\-:]{1,255}$`.
    ///
    /// - Parameter name: A tag name.
    /// - Returns: Whether DigitalOcean takes it.
    public static func isValid(name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 255
            && name.utf8.allSatisfy { byte in
                (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ":")
            }
    }
}

/// `POST|DELETE /v2/tags/{name}/resources`.
public struct TagResourcesRequest: Codable, Sendable, Equatable {
    public struct Resource: Codable, Sendable, Equatable {
        public var resourceID: String
        /// `droplet`, `volume`, …
        public var resourceType: String

        public init(resourceID: String, resourceType: String) {
            self.resourceID = resourceID
            self.resourceType = resourceType
        }

        enum CodingKeys: String, CodingKey {
            case resourceID = "resource_id"
            case resourceType = "resource_type"
        }
    }

    public var resources: [Resource]
    public init(resources: [Resource]) { self.resources = resources }
}

/// DigitalOcean's error body: `{"id": "...", "message": "...", "request_id": "..."}`.
public struct ErrorBody: Codable, Sendable, Equatable {
    public var id: String
    public var message: String
    public var requestID: String?

    public init(id: String, message: String, requestID: String? = nil) {
        self.id = id
        self.message = message
        self.requestID = requestID
    }

    enum CodingKeys: String, CodingKey {
        case id, message
        case requestID = "request_id"
    }
}

/// Response envelopes.
public struct VolumeList: Codable, Sendable {
    public struct Links: Codable, Sendable {
        public struct Pages: Codable, Sendable {
            public var next: String?
            public var last: String?
            public var first: String?
            public var prev: String?
            public init(next: String? = nil, last: String? = nil, first: String? = nil, prev: String? = nil) {
                self.next = next
                self.last = last
                self.first = first
                self.prev = prev
            }
        }
        public var pages: Pages?
        public init(pages: Pages? = nil) { self.pages = pages }
    }
    public struct Meta: Codable, Sendable {
        public var total: Int
        public init(total: Int) { self.total = total }
    }
    public var volumes: [Volume]
    public var links: Links
    public var meta: Meta

    public init(volumes: [Volume], links: Links, meta: Meta) {
        self.volumes = volumes
        self.links = links
        self.meta = meta
    }
}

public struct VolumeEnvelope: Codable, Sendable {
    public var volume: Volume
    public init(volume: Volume) { self.volume = volume }
}

public struct ActionEnvelope: Codable, Sendable {
    public var action: Action
    public init(action: Action) { self.action = action }
}

public struct DropletEnvelope: Codable, Sendable {
    public var droplet: Droplet
    public init(droplet: Droplet) { self.droplet = droplet }
}

/// A volume snapshot.
public struct Snapshot: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    /// RFC 3339.
    public var createdAt: String
    public var regions: [String]
    /// The smallest volume made from it, in GiB: the volume's size when it was taken.
    public var minDiskSize: Int
    /// The space its data takes, in GiB.
    public var sizeGigabytes: Double
    /// The volume it was taken of.
    public var resourceID: String
    /// `volume` (or `droplet`).
    public var resourceType: String
    public var tags: [String]

    public init(
        id: String, name: String, createdAt: String, regions: [String], minDiskSize: Int, sizeGigabytes: Double,
        resourceID: String, resourceType: String = "volume", tags: [String] = []
    ) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.regions = regions
        self.minDiskSize = minDiskSize
        self.sizeGigabytes = sizeGigabytes
        self.resourceID = resourceID
        self.resourceType = resourceType
        self.tags = tags
    }

    enum CodingKeys: String, CodingKey {
        case id, name, regions, tags
        case createdAt = "created_at"
        case minDiskSize = "min_disk_size"
        case sizeGigabytes = "size_gigabytes"
        case resourceID = "resource_id"
        case resourceType = "resource_type"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        createdAt = try c.decodeIfPresent(String.self, forKey: .createdAt) ?? ""
        regions = try c.decodeIfPresent([String].self, forKey: .regions) ?? []
        minDiskSize = try c.decodeIfPresent(Int.self, forKey: .minDiskSize) ?? 0
        sizeGigabytes = try c.decodeIfPresent(Double.self, forKey: .sizeGigabytes) ?? 0
        resourceID = try c.decodeIfPresent(String.self, forKey: .resourceID) ?? ""
        resourceType = try c.decodeIfPresent(String.self, forKey: .resourceType) ?? ""
        tags = try c.decodeIfPresent([String].self, forKey: .tags) ?? []
    }
}

/// `POST /v2/volumes/{id}/snapshots`.
public struct SnapshotCreateRequest: Codable, Sendable, Equatable {
    public var name: String
    public var tags: [String]?
    public init(name: String, tags: [String]? = nil) {
        self.name = name
        self.tags = tags
    }
}

public struct SnapshotEnvelope: Codable, Sendable {
    public var snapshot: Snapshot
    public init(snapshot: Snapshot) { self.snapshot = snapshot }
}

public struct SnapshotList: Codable, Sendable {
    public var snapshots: [Snapshot]
    public var links: VolumeList.Links
    public var meta: VolumeList.Meta

    public init(snapshots: [Snapshot], links: VolumeList.Links = .init(), meta: VolumeList.Meta) {
        self.snapshots = snapshots
        self.links = links
        self.meta = meta
    }
}

/// A page of a DigitalOcean listing: its items, the link to the next page, and the total.
protocol PagedList: Decodable, Sendable {
    associatedtype Item: Sendable
    var items: [Item] { get }
    var links: VolumeList.Links { get }
    var meta: VolumeList.Meta { get }
}

extension VolumeList: PagedList {
    var items: [Volume] { volumes }
}

extension SnapshotList: PagedList {
    var items: [Snapshot] { snapshots }
}
