import FoundationEssentials
import Glibc
import Hummingbird
import Logging
import VolumeService

/// Docker's VolumeDriver protocol (`POST /VolumeDriver.<Method>`): one method per route, each answering a JSON body.
///
/// Failures answer HTTP 500 with `{"Err": "..."}`, which the engine shows to the user. The engine sends no
/// Content-Type and sometimes an empty body; both are accepted.
public struct VolumeDriverController: Sendable {
    public static let contentType = "application/vnd.docker.plugins.v1+json"

    let driver: any VolumeDriver
    let logger: Logger

    public init(driver: any VolumeDriver, logger: Logger) {
        self.driver = driver
        self.logger = logger
    }

    public func addRoutes(to router: Router<some RequestContext>) {
        router.post("/Plugin.Activate") { _, _ in Self.encode(ActivateResponse()) }
        router.post("/VolumeDriver.Capabilities") { _, _ in Self.encode(CapabilitiesResponse()) }
        router.post("/VolumeDriver.Create") { request, _ in
            let decoded = await Self.decode(CreateRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("Create", name: body.name) {
                _ = try decoded.get()
                try await driver.create(name: body.name, options: body.options ?? [:])
                return Self.ok()
            }
        }
        router.post("/VolumeDriver.Remove") { request, _ in
            let decoded = await Self.decode(NameRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("Remove", name: body.name) {
                _ = try decoded.get()
                try await driver.remove(name: body.name)
                return Self.ok()
            }
        }
        router.post("/VolumeDriver.Mount") { request, _ in
            let decoded = await Self.decode(MountRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("Mount", name: body.name, id: body.id) {
                _ = try decoded.get()
                let mountpoint = try await driver.mount(name: body.name, id: body.id)
                return Self.encode(MountpointResponse(mountpoint: mountpoint))
            }
        }
        router.post("/VolumeDriver.Unmount") { request, _ in
            let decoded = await Self.decode(MountRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("Unmount", name: body.name, id: body.id) {
                _ = try decoded.get()
                try await driver.unmount(name: body.name, id: body.id)
                return Self.ok()
            }
        }
        router.post("/VolumeDriver.Path") { request, _ in
            let decoded = await Self.decode(NameRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("Path", name: body.name, level: .debug) {
                _ = try decoded.get()
                return Self.encode(MountpointResponse(mountpoint: try await driver.path(name: body.name)))
            }
        }
        router.post("/VolumeDriver.Get") { request, _ in
            let decoded = await Self.decode(NameRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("Get", name: body.name, level: .debug) {
                _ = try decoded.get()
                let info = try await driver.get(name: body.name)
                return Self.encode(GetResponse(volume: WireVolume(info)))
            }
        }
        router.post("/VolumeDriver.List") { _, _ in
            await handle("List", name: "", level: .debug) {
                let volumes = try await driver.list()
                return Self.encode(ListResponse(volumes: volumes.map { WireVolume($0, withDetails: false) }))
            }
        }
    }

    /// The CLI's requests (`do-storage snapshot …`, `do-storage restore …`) on the same socket. Not part of
    /// Docker's protocol; the engine never sends them.
    public func addCommandRoutes(to router: Router<some RequestContext>) {
        router.post("/DoStorage.SnapshotCreate") { request, _ in
            let decoded = await Self.decode(SnapshotRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("SnapshotCreate", name: body.volume) {
                _ = try decoded.get()
                let snapshot = try await driver.createSnapshot(volume: body.volume, name: body.name)
                return Self.encode(SnapshotResponse(snapshot: snapshot))
            }
        }
        router.post("/DoStorage.SnapshotList") { request, _ in
            let decoded = await Self.decode(SnapshotRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("SnapshotList", name: body.volume, level: .debug) {
                _ = try decoded.get()
                return Self.encode(SnapshotListResponse(snapshots: try await driver.listSnapshots(volume: body.volume)))
            }
        }
        router.post("/DoStorage.SnapshotDelete") { request, _ in
            let decoded = await Self.decode(SnapshotRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("SnapshotDelete", name: body.volume) {
                _ = try decoded.get()
                try await driver.deleteSnapshot(volume: body.volume, snapshot: body.snapshot ?? "")
                return Self.ok()
            }
        }
        router.post("/DoStorage.Restore") { request, _ in
            let decoded = await Self.decode(SnapshotRequest.self, request)
            let body = (try? decoded.get()) ?? .empty
            return await handle("Restore", name: body.volume) {
                _ = try decoded.get()
                try await driver.create(name: body.volume, options: ["from_snapshot": body.snapshot ?? ""])
                return Self.ok()
            }
        }
    }

    // MARK: Requests

    /// The CLI's requests: the Docker volume, and a snapshot's name (to take) or name or id (to delete, restore).
    public struct SnapshotRequest: Codable, Sendable {
        public var volume: String
        public var name: String?
        public var snapshot: String?
        static let empty = SnapshotRequest(volume: "")
        public init(volume: String, name: String? = nil, snapshot: String? = nil) {
            self.volume = volume
            self.name = name
            self.snapshot = snapshot
        }
        enum CodingKeys: String, CodingKey {
            case volume = "Volume"
            case name = "Name"
            case snapshot = "Snapshot"
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            volume = try c.decodeIfPresent(String.self, forKey: .volume) ?? ""
            name = try c.decodeIfPresent(String.self, forKey: .name)
            snapshot = try c.decodeIfPresent(String.self, forKey: .snapshot)
        }
    }

    public struct SnapshotResponse: Codable, Sendable {
        public var snapshot: SnapshotInfo
        public var err = ""
        enum CodingKeys: String, CodingKey {
            case snapshot = "Snapshot"
            case err = "Err"
        }
    }

    public struct SnapshotListResponse: Codable, Sendable {
        public var snapshots: [SnapshotInfo]
        public var err = ""
        enum CodingKeys: String, CodingKey {
            case snapshots = "Snapshots"
            case err = "Err"
        }
    }

    struct CreateRequest: Decodable {
        var name: String
        var options: [String: String]?
        static let empty = CreateRequest(name: "", options: nil)
        enum CodingKeys: String, CodingKey {
            case name = "Name"
            case options = "Opts"
        }
        init(name: String, options: [String: String]?) {
            self.name = name
            self.options = options
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
            options = try c.decodeIfPresent([String: String].self, forKey: .options)
        }
    }

    /// A missing Name reads as "" (the engine's conformance suite sends `{}` to Get and expects "no such volume").
    struct NameRequest: Decodable {
        var name: String
        static let empty = NameRequest(name: "")
        enum CodingKeys: String, CodingKey { case name = "Name" }
        init(name: String) { self.name = name }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        }
    }

    struct MountRequest: Decodable {
        var name: String
        var id: String
        static let empty = MountRequest(name: "", id: "")
        enum CodingKeys: String, CodingKey {
            case name = "Name"
            case id = "ID"
        }
        init(name: String, id: String) {
            self.name = name
            self.id = id
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
            id = try c.decodeIfPresent(String.self, forKey: .id) ?? ""
        }
    }

    // MARK: Responses

    struct WireVolume: Encodable {
        var name: String
        var mountpoint: String
        var createdAt: String?
        var status: [String: String]?

        init(_ info: VolumeInfo, withDetails: Bool = true) {
            name = info.name
            mountpoint = info.mountpoint
            createdAt = withDetails ? info.createdAt.map { $0.formatted(.iso8601) } : nil
            status = withDetails ? info.status : nil
        }

        enum CodingKeys: String, CodingKey {
            case name = "Name"
            case mountpoint = "Mountpoint"
            case createdAt = "CreatedAt"
            case status = "Status"
        }
    }

    struct GetResponse: Encodable {
        var volume: WireVolume
        var err = ""
        enum CodingKeys: String, CodingKey {
            case volume = "Volume"
            case err = "Err"
        }
    }

    struct ListResponse: Encodable {
        var volumes: [WireVolume]
        var err = ""
        enum CodingKeys: String, CodingKey {
            case volumes = "Volumes"
            case err = "Err"
        }
    }

    struct ActivateResponse: Encodable {
        var implements = ["VolumeDriver"]
        enum CodingKeys: String, CodingKey { case implements = "Implements" }
    }

    /// Scope global: a volume is one DigitalOcean volume, the same from every droplet.
    struct CapabilitiesResponse: Encodable {
        struct Capabilities: Encodable {
            var scope = "global"
            enum CodingKeys: String, CodingKey { case scope = "Scope" }
        }
        var capabilities = Capabilities()
        enum CodingKeys: String, CodingKey { case capabilities = "Capabilities" }
    }

    struct MountpointResponse: Encodable {
        var mountpoint: String
        var err = ""
        enum CodingKeys: String, CodingKey {
            case mountpoint = "Mountpoint"
            case err = "Err"
        }
    }

    struct ErrorResponse: Encodable {
        var err: String
        enum CodingKeys: String, CodingKey { case err = "Err" }
    }

    // MARK: Plumbing

    /// Runs one request, logs it with its outcome, and turns a failure into `{"Err": ...}`.
    func handle(
        _ method: String, name: String, id: String? = nil, level: Logger.Level = .info,
        _ body: () async throws -> Response
    ) async -> Response {
        let started = ContinuousClock.now
        var metadata: Logger.Metadata = ["request.method": "\(method)"]
        if !name.isEmpty { metadata["volume.name"] = "\(name)" }
        if let id { metadata["mount.id"] = "\(id)" }
        do {
            let response = try await body()
            metadata["outcome"] = "ok"
            metadata["duration.ms"] = "\(Self.milliseconds(since: started))"
            logger.log(level: level, "VolumeDriver request", metadata: metadata)
            return response
        } catch {
            metadata["outcome"] = "error"
            metadata["error"] = "\(error)"
            if let volumeError = error as? VolumeError { metadata["error.code"] = "\(volumeError.code)" }
            metadata["duration.ms"] = "\(Self.milliseconds(since: started))"
            let quiet = (error as? VolumeError)?.code == .notFound && method == "Get"
            logger.log(level: quiet ? .debug : .warning, "VolumeDriver request", metadata: metadata)
            return Self.encode(ErrorResponse(err: "\(error)"), status: .internalServerError)
        }
    }

    static func milliseconds(since start: ContinuousClock.Instant) -> Int {
        let elapsed = start.duration(to: .now).components
        return Int(elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000)
    }

    /// The request body, or the reason it cannot be read (answered as `Err` by `handle`).
    static func decode<T: Decodable>(_ type: T.Type, _ request: Request) async -> Result<T, RequestError> {
        do {
            let buffer = try await request.body.collect(upTo: 1 << 20)
            let bytes = Data(buffer.readableBytesView)
            return .success(try JSONDecoder().decode(T.self, from: bytes.isEmpty ? Data("{}".utf8) : bytes))
        } catch {
            return .failure(RequestError(message: "malformed VolumeDriver request: \(error)"))
        }
    }

    struct RequestError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    static func ok() -> Response { encode(ErrorResponse(err: "")) }

    static func encode(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(value)) ?? Data("{\"Err\":\"cannot encode the response\"}".utf8)
        return response(data, status: status)
    }

    static func response(_ data: Data, status: HTTPResponse.Status) -> Response {
        Response(
            status: status, headers: [.contentType: contentType],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
