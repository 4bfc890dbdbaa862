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
        add(.create, to: router) { (body: CreateRequest) in
            try await driver.create(name: body.name, options: body.options ?? [:])
            return Self.ok()
        }
        add(.remove, to: router) { (body: NameRequest) in
            try await driver.remove(name: body.name)
            return Self.ok()
        }
        add(.mount, to: router) { (body: MountRequest) in
            Self.answer(LookupAnswers.mountpoint(try await driver.mount(name: body.name, id: body.id)))
        }
        add(.unmount, to: router) { (body: MountRequest) in
            try await driver.unmount(name: body.name, id: body.id)
            return Self.ok()
        }
        add(.path, to: router) { (body: NameRequest) in
            Self.answer(LookupAnswers.mountpoint(try await driver.path(name: body.name)))
        }
        add(.get, to: router) { (body: NameRequest) in
            Self.answer(LookupAnswers.get(try await driver.get(name: body.name)))
        }
        add(.list, to: router) { (_: NoRequest) in
            Self.answer(LookupAnswers.list(try await driver.list()))
        }
    }

    /// The CLI's requests (`do-storage snapshot …`, `do-storage restore …`) on the same socket. Not part of
    /// Docker's protocol; the engine never sends them.
    public func addCommandRoutes(to router: Router<some RequestContext>) {
        add(.snapshotCreate, to: router) { (body: SnapshotRequest) in
            Self.encode(SnapshotResponse(snapshot: try await driver.createSnapshot(volume: body.volume, name: body.name)))
        }
        add(.snapshotList, to: router) { (body: SnapshotRequest) in
            Self.encode(SnapshotListResponse(snapshots: try await driver.listSnapshots(volume: body.volume)))
        }
        add(.snapshotDelete, to: router) { (body: SnapshotRequest) in
            try await driver.deleteSnapshot(volume: body.volume, snapshot: body.snapshot ?? "")
            return Self.ok()
        }
        add(.restore, to: router) { (body: SnapshotRequest) in
            try await driver.create(name: body.volume, options: ["from_snapshot": body.snapshot ?? ""])
            return Self.ok()
        }
    }

    /// The requests the socket serves besides the fixed answers to Activate and Capabilities; the command line
    /// names its requests by these too.
    public enum Method: String, Sendable {
        case create = "VolumeDriver.Create", remove = "VolumeDriver.Remove", mount = "VolumeDriver.Mount"
        case unmount = "VolumeDriver.Unmount", path = "VolumeDriver.Path", get = "VolumeDriver.Get"
        case list = "VolumeDriver.List"
        case snapshotCreate = "DoStorage.SnapshotCreate", snapshotList = "DoStorage.SnapshotList"
        case snapshotDelete = "DoStorage.SnapshotDelete", restore = "DoStorage.Restore"

        /// `Mount`, `SnapshotCreate`: the name in the logs.
        var name: Substring { rawValue[rawValue.index(after: rawValue.firstIndex(of: ".")!)...] }

        /// Lookups the engine sends all the time log at debug; changes at info.
        var level: Logger.Level {
            switch self {
            case .path, .get, .list, .snapshotList: .debug
            default: .info
            }
        }

        /// The engine asks Get of every driver for a name it does not know yet: "no such volume" is routine there.
        var notFoundIsRoutine: Bool { self == .get }
    }

    /// One route: the body decoded (`decode`), `call` with it, the answer it makes; a failure, the malformed body's
    /// included, answered `{"Err": ...}` with HTTP 500 (`handle`). Every request is logged with its outcome.
    func add<Body: DriverRequest>(
        _ method: Method, to router: Router<some RequestContext>,
        _ call: @escaping @Sendable (Body) async throws -> Response
    ) {
        router.post(RouterPath("/" + method.rawValue)) { request, _ in
            let decoded = await Self.decode(Body.self, request)
            let body = (try? decoded.get()) ?? Body.empty
            return await handle(method, name: body.volumeName, id: body.mountID) {
                try await call(try decoded.get())
            }
        }
    }

    // MARK: Requests

    /// A request body: what to log it by, and what a missing field reads as.
    protocol DriverRequest: Decodable, Sendable {
        /// The request with every field missing, to log a malformed one by.
        static var empty: Self { get }
        /// Whether the body is read at all (List's is not: the engine sends `{}` or nothing).
        static var readsBody: Bool { get }
        var volumeName: String { get }
        var mountID: String? { get }
    }

    /// List: no fields.
    struct NoRequest: DriverRequest {
        static let empty = NoRequest()
        static var readsBody: Bool { false }
        var volumeName: String { "" }
    }

    /// The CLI's requests: the Docker volume, and a snapshot's name (to take) or name or id (to delete, restore).
    public struct SnapshotRequest: Codable, Sendable, DriverRequest {
        public var volume: String
        public var name: String?
        public var snapshot: String?
        static let empty = SnapshotRequest(volume: "")
        var volumeName: String { volume }
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

    struct CreateRequest: DriverRequest {
        var name: String
        var options: [String: String]?
        static let empty = CreateRequest(name: "", options: nil)
        var volumeName: String { name }
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
    struct NameRequest: DriverRequest {
        var name: String
        static let empty = NameRequest(name: "")
        var volumeName: String { name }
        enum CodingKeys: String, CodingKey { case name = "Name" }
        init(name: String) { self.name = name }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        }
    }

    struct MountRequest: DriverRequest {
        var name: String
        var id: String
        static let empty = MountRequest(name: "", id: "")
        var volumeName: String { name }
        var mountID: String? { id }
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

    struct ErrorResponse: Encodable {
        var err: String
        enum CodingKeys: String, CodingKey { case err = "Err" }
    }

    // MARK: Plumbing

    /// Runs one request, logs it with its outcome, and turns a failure into `{"Err": ...}`.
    func handle(_ method: Method, name: String, id: String?, _ body: () async throws -> Response) async -> Response {
        let started = ContinuousClock.now
        func metadata(_ outcome: String) -> Logger.Metadata {
            var metadata: Logger.Metadata = [
                "request.method": "\(method.name)", "outcome": "\(outcome)", "duration.ms": "\(Self.milliseconds(since: started))",
            ]
            if !name.isEmpty { metadata["volume.name"] = "\(name)" }
            if let id { metadata["mount.id"] = "\(id)" }
            return metadata
        }
        do {
            let response = try await body()
            // The metadata is built only for a line that is written: lookups come by the thousand at debug.
            if logger.logLevel <= method.level {
                logger.log(level: method.level, "VolumeDriver request", metadata: metadata("ok"))
            }
            return response
        } catch {
            var metadata = metadata("error")
            metadata["error"] = "\(error)"
            if let volumeError = error as? VolumeError { metadata["error.code"] = "\(volumeError.code)" }
            let quiet = (error as? VolumeError)?.code == .notFound && method.notFoundIsRoutine
            logger.log(level: quiet ? .debug : .warning, "VolumeDriver request", metadata: metadata)
            return Self.encode(ErrorResponse(err: "\(error)"), status: .internalServerError)
        }
    }

    static func milliseconds(since start: ContinuousClock.Instant) -> Int {
        let elapsed = start.duration(to: .now).components
        return Int(elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000)
    }

    /// The request body, or the reason it cannot be read (answered as `Err` by `handle`).
    static func decode<T: DriverRequest>(_ type: T.Type, _ request: Request) async -> Result<T, RequestError> {
        guard T.readsBody else { return .success(T.empty) }
        do {
            let buffer = try await request.body.collect(upTo: 1 << 20)
            let bytes = Data(buffer.readableBytesView)
            return .success(try decoder.decode(T.self, from: bytes.isEmpty ? Data("{}".utf8) : bytes))
        } catch {
            return .failure(RequestError(message: "malformed VolumeDriver request: \(error)"))
        }
    }

    struct RequestError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    static func ok() -> Response { encode(ErrorResponse(err: "")) }

    /// Shared: coding keeps no state between calls.
    static let decoder = JSONDecoder()
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static func encode(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? encoder.encode(value)) ?? Data("{\"Err\":\"cannot encode the response\"}".utf8)
        return response(data, status: status)
    }

    static func answer(_ bytes: [UInt8]) -> Response {
        Response(status: .ok, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func response(_ data: Data, status: HTTPResponse.Status) -> Response {
        Response(
            status: status, headers: [.contentType: contentType],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension VolumeDriverController.DriverRequest {
    static var readsBody: Bool { true }
    var mountID: String? { nil }
}
