import FoundationEssentials
import Glibc
import NIOCore
import NIOHTTP1
import Logging
import VolumeService

/// Docker's VolumeDriver protocol (`POST /VolumeDriver.<Method>`): one route per method, each answering a JSON body;
/// `VolumeDriverChannelHandler` serves them on a connection.
///
/// Failures answer HTTP 500 with `{"Err": "..."}`, which the engine shows to the user. The engine sends no
/// Content-Type and sometimes an empty body; both are accepted.
public struct VolumeDriverController: Sendable {
    public static let contentType = "application/vnd.docker.plugins.v1+json"

    /// What a request is answered: an HTTP status and a JSON body.
    public struct Answer: Sendable {
        public var status: HTTPResponseStatus
        public var body: ByteBuffer
    }

    /// A route: the request's body in, its answer out. Failures are answers too (`{"Err": ...}`, HTTP 500).
    typealias Route = @Sendable (ByteBuffer) async -> Answer

    /// A lookup answered on the spot from the driver's ready lookups (`VolumeDriver.readyLookups`), without a task;
    /// nil sends the request its route's way (the driver is still starting, or the name is unknown: the route says
    /// why).
    typealias Immediate = @Sendable (ByteBuffer) -> Answer?

    /// What answers a request.
    enum Endpoint: Sendable {
        /// An answer that never changes (Activate, Capabilities): written without a task.
        case fixed(Answer)
        case route(Route, immediate: Immediate?)
    }

    /// Docker's methods and the command line's, by path (`/VolumeDriver.Mount`).
    let endpoints: [String: Endpoint]

    /// - Parameters:
    ///   - driver: What the requests ask: the service, or a driver that answers every call with an error.
    ///   - logger: Told of every request and its outcome (lookups at debug, the rest at info, failures at warning).
    public init(driver: any VolumeDriver, logger: Logger) {
        let fixed = [
            ("/Plugin.Activate", Endpoint.fixed(Self.answer(#"{"Implements":["VolumeDriver"]}"#))),
            // Scope global: a volume is one DigitalOcean volume, the same from every droplet.
            ("/VolumeDriver.Capabilities", Endpoint.fixed(Self.answer(#"{"Capabilities":{"Scope":"global"}}"#))),
        ]
        // Get, Path and List: answered on the spot from the driver's ready lookups where they can be, else asked.
        let getAnswers = KeptAnswers(LookupAnswers.get)
        let pathAnswers = KeptAnswers { LookupAnswers.mountpoint($0.mountpoint) }
        let lookups = [
            Self.lookup(.get, logger, driver) { (body: NameRequest, lookups) in
                lookups.volume(named: body.name).map {
                    Answer(status: .ok, body: getAnswers.answer($0, generation: lookups.generation))
                }
            } asked: { body in
                Self.answer(LookupAnswers.get(try await driver.get(name: body.name)))
            },
            Self.lookup(.path, logger, driver) { (body: NameRequest, lookups) in
                lookups.volume(named: body.name).map {
                    Answer(status: .ok, body: pathAnswers.answer($0, generation: lookups.generation))
                }
            } asked: { body in
                Self.answer(LookupAnswers.mountpoint(try await driver.path(name: body.name)))
            },
            Self.lookup(.list, logger, driver) { (_: NoRequest, lookups) in
                Self.answer(LookupAnswers.list(lookups.volumes))
            } asked: { _ in
                Self.answer(LookupAnswers.list(try await driver.list()))
            },
        ]
        let routes = [
            Self.route(.create, logger) { (body: CreateRequest) in
                try await driver.create(name: body.name, options: body.options ?? [:])
                return Self.ok
            },
            Self.route(.remove, logger) { (body: NameRequest) in
                try await driver.remove(name: body.name)
                return Self.ok
            },
            Self.route(.mount, logger) { (body: MountRequest) in
                Self.answer(LookupAnswers.mountpoint(try await driver.mount(name: body.name, id: body.id)))
            },
            Self.route(.unmount, logger) { (body: MountRequest) in
                try await driver.unmount(name: body.name, id: body.id)
                return Self.ok
            },
            // The command line's requests (`do-storage snapshot …`, `do-storage restore …`). Not part of Docker's
            // protocol; the engine never sends them.
            Self.route(.snapshotCreate, logger) { (body: SnapshotRequest) in
                Self.encode(SnapshotResponse(snapshot: try await driver.createSnapshot(volume: body.volume, name: body.name)))
            },
            Self.route(.snapshotList, logger) { (body: SnapshotRequest) in
                Self.encode(SnapshotListResponse(snapshots: try await driver.listSnapshots(volume: body.volume)))
            },
            Self.route(.snapshotDelete, logger) { (body: SnapshotRequest) in
                try await driver.deleteSnapshot(volume: body.volume, snapshot: body.snapshot ?? "")
                return Self.ok
            },
            Self.route(.restore, logger) { (body: SnapshotRequest) in
                try await driver.create(name: body.volume, options: ["from_snapshot": body.snapshot ?? ""])
                return Self.ok
            },
            Self.route(.commit, logger) { (body: HistoryRequest) in
                Self.encode(CommitResponse(commit: try await driver.commit(volume: body.volume, message: body.message ?? "")))
            },
            Self.route(.log, logger) { (body: HistoryRequest) in
                Self.encode(LogResponse(commits: try await driver.log(volume: body.volume)))
            },
            Self.route(.branches, logger) { (body: HistoryRequest) in
                Self.encode(BranchListResponse(branches: try await driver.branches(volume: body.volume)))
            },
            Self.route(.checkout, logger) { (body: HistoryRequest) in
                Self.encode(BranchResponse(branch: try await driver.checkout(
                    volume: body.volume, branch: body.branch ?? "", create: body.create ?? false, from: body.commit)))
            },
            Self.route(.reset, logger) { (body: HistoryRequest) in
                Self.encode(DoneResponse(message: try await driver.reset(volume: body.volume, to: body.commit)))
            },
            Self.route(.branchDelete, logger) { (body: HistoryRequest) in
                Self.encode(DoneResponse(message: try await driver.deleteBranch(volume: body.volume, branch: body.branch ?? "")))
            },
        ].map { ($0.0, Endpoint.route($0.1, immediate: nil)) }
        endpoints = Dictionary(uniqueKeysWithValues: fixed + lookups + routes)
    }

    /// The answer to the request at `path` (`/VolumeDriver.Get`) with `body`, or nil if the path is no request of
    /// the protocol.
    ///
    /// - Parameters:
    ///   - path: The request's path, without a query.
    ///   - body: The request's body, as sent (empty, `{}` or a JSON object).
    /// - Returns: The answer; a failure is one too, `{"Err": ...}` with HTTP 500.
    public func answer(_ path: String, body: ByteBuffer) async -> Answer? {
        switch endpoints[path] {
        case .fixed(let answer): answer
        case .route(let route, let immediate): if let answer = immediate?(body) { answer } else { await route(body) }
        case nil: nil
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
        case commit = "DoStorage.Commit", log = "DoStorage.Log", branches = "DoStorage.Branches"
        case checkout = "DoStorage.Checkout", reset = "DoStorage.Reset", branchDelete = "DoStorage.BranchDelete"

        /// `Mount`, `SnapshotCreate`: the name in the logs.
        var name: Substring { rawValue[rawValue.index(after: rawValue.firstIndex(of: ".")!)...] }

        /// Lookups the engine sends all the time log at debug; changes at info.
        var level: Logger.Level {
            switch self {
            case .path, .get, .list, .snapshotList, .log, .branches: .debug
            default: .info
            }
        }

        /// The engine asks Get of every driver for a name it does not know yet: "no such volume" is routine there.
        var notFoundIsRoutine: Bool { self == .get }
    }

    /// One route: the body decoded (`decode`), `call` with it, the answer it makes; a failure, the malformed body's
    /// included, answered `{"Err": ...}` with HTTP 500 (`handle`). Every request is logged with its outcome.
    static func route<Body: DriverRequest>(
        _ method: Method, _ logger: Logger, _ call: @escaping @Sendable (Body) async throws -> Answer
    ) -> (String, Route) {
        ("/" + method.rawValue, { bytes in
            let decoded = Self.decode(Body.self, bytes)
            let body = (try? decoded.get()) ?? Body.empty
            return await handle(method, logger, name: body.volumeName, id: body.mountID) {
                try await call(try decoded.get())
            }
        })
    }

    /// A lookup (Get, Path, List): answered on the spot by `ready` with the decoded body and the driver's ready
    /// lookups, logged as the route would log it; where `ready` has no answer (the driver is still starting, or the
    /// name is unknown), by `asked` in a task, as any other route.
    static func lookup<Body: DriverRequest>(
        _ method: Method, _ logger: Logger, _ driver: any VolumeDriver,
        ready: @escaping @Sendable (Body, VolumeLookups) -> Answer?, asked: @escaping @Sendable (Body) async throws -> Answer
    ) -> (String, Endpoint) {
        let immediate: Immediate = { bytes in
            let started = ContinuousClock.now
            guard let lookups = driver.readyLookups, case .success(let body) = decode(Body.self, bytes),
                let made = ready(body, lookups)
            else { return nil }
            logSuccess(method, logger, name: body.volumeName, id: body.mountID, started: started)
            return made
        }
        let (path, route) = route(method, logger, asked)
        return (path, .route(route, immediate: immediate))
    }

    // MARK: Requests

    /// A request body: what to log it by, and what a missing field reads as.
    protocol DriverRequest: Decodable, Sendable {
        /// The request with every field missing, to log a malformed one by.
        static var empty: Self { get }
        /// Whether the body is read at all (List's is not: the engine sends `{}` or nothing).
        static var readsBody: Bool { get }
        /// The request read from the body the engine most often sends without JSONDecoder; nil to decode it.
        static func plain(_ bytes: ByteBuffer) -> Self?
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

    /// The history commands' requests: the Docker volume, and a commit's message, a commit, a branch.
    public struct HistoryRequest: Codable, Sendable, DriverRequest {
        public var volume: String
        public var message: String?
        public var commit: String?
        public var branch: String?
        /// For a checkout: make the branch.
        public var create: Bool?
        static let empty = HistoryRequest(volume: "")
        var volumeName: String { volume }
        public init(volume: String, message: String? = nil, commit: String? = nil, branch: String? = nil, create: Bool? = nil) {
            self.volume = volume
            self.message = message
            self.commit = commit
            self.branch = branch
            self.create = create
        }
        enum CodingKeys: String, CodingKey {
            case volume = "Volume"
            case message = "Message"
            case commit = "Commit"
            case branch = "Branch"
            case create = "Create"
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            volume = try c.decodeIfPresent(String.self, forKey: .volume) ?? ""
            message = try c.decodeIfPresent(String.self, forKey: .message)
            commit = try c.decodeIfPresent(String.self, forKey: .commit)
            branch = try c.decodeIfPresent(String.self, forKey: .branch)
            create = try c.decodeIfPresent(Bool.self, forKey: .create)
        }
    }

    public struct BranchResponse: Codable, Sendable {
        public var branch: BranchInfo
        public var err = ""
        enum CodingKeys: String, CodingKey {
            case branch = "Branch"
            case err = "Err"
        }
    }

    public struct BranchListResponse: Codable, Sendable {
        public var branches: [BranchInfo]
        public var err = ""
        enum CodingKeys: String, CodingKey {
            case branches = "Branches"
            case err = "Err"
        }
    }

    /// What a step did, in a sentence.
    public struct DoneResponse: Codable, Sendable {
        public var message: String
        public var err = ""
        enum CodingKeys: String, CodingKey {
            case message = "Message"
            case err = "Err"
        }
    }

    public struct CommitResponse: Codable, Sendable {
        public var commit: CommitInfo
        public var err = ""
        enum CodingKeys: String, CodingKey {
            case commit = "Commit"
            case err = "Err"
        }
    }

    public struct LogResponse: Codable, Sendable {
        public var commits: [CommitInfo]
        public var err = ""
        enum CodingKeys: String, CodingKey {
            case commits = "Commits"
            case err = "Err"
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

        /// `{"Name":"pgdata"}` exactly as the engine writes it (Go's encoding/json: no spaces, no escapes in a
        /// volume name), read without JSONDecoder, which costs more than the rest of a Get or Path together; any
        /// other body is nil here and goes to JSONDecoder.
        static func plain(_ bytes: ByteBuffer) -> NameRequest? {
            let prefix = #"{"Name":""#.utf8
            return bytes.withUnsafeReadableBytes { raw -> NameRequest? in
                // A longer name is no volume name: JSONDecoder reads it, and the driver says why.
                guard raw.count >= prefix.count + 2, raw.count <= prefix.count + 2 + VolumeNames.maxDockerNameBytes,
                    raw.starts(with: prefix),
                    raw[raw.count - 2] == UInt8(ascii: "\""),
                    raw[raw.count - 1] == UInt8(ascii: "}")
                else { return nil }
                let name = raw[prefix.count..<(raw.count - 2)]
                guard name.allSatisfy(Self.isPlainNameByte) else { return nil }
                return NameRequest(name: String(decoding: name, as: UTF8.self))
            }
        }

        /// What a Docker volume name is made of: letters, digits, "_", "." and "-".
        static func isPlainNameByte(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"):
                true
            default: false
            }
        }
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

    struct ErrorResponse: Encodable {
        var err: String
        enum CodingKeys: String, CodingKey { case err = "Err" }
    }

    // MARK: Plumbing

    /// Runs one request, logs it with its outcome, and turns a failure into `{"Err": ...}`.
    static func handle(
        _ method: Method, _ logger: Logger, name: String, id: String?, _ body: () async throws -> Answer
    ) async -> Answer {
        let started = ContinuousClock.now
        func metadata(_ outcome: String) -> Logger.Metadata {
            requestMetadata(method, outcome: outcome, name: name, id: id, started: started)
        }
        do {
            let response = try await body()
            logSuccess(method, logger, name: name, id: id, started: started)
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

    /// A request's log line on success. Its metadata is built only for a line that is written: lookups come by the
    /// thousand at debug.
    static func logSuccess(_ method: Method, _ logger: Logger, name: String, id: String?, started: ContinuousClock.Instant) {
        if logger.logLevel <= method.level {
            logger.log(
                level: method.level, "VolumeDriver request",
                metadata: requestMetadata(method, outcome: "ok", name: name, id: id, started: started))
        }
    }

    static func requestMetadata(
        _ method: Method, outcome: String, name: String, id: String?, started: ContinuousClock.Instant
    ) -> Logger.Metadata {
        var metadata: Logger.Metadata = [
            "request.method": "\(method.name)", "outcome": "\(outcome)", "duration.ms": "\(Self.milliseconds(since: started))",
        ]
        if !name.isEmpty { metadata["volume.name"] = "\(name)" }
        if let id { metadata["mount.id"] = "\(id)" }
        return metadata
    }

    static func milliseconds(since start: ContinuousClock.Instant) -> Int {
        let elapsed = start.duration(to: .now).components
        return Int(elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000)
    }

    /// The request body, or the reason it cannot be read (answered as `Err` by `handle`). A decoder of its own for
    /// each: a shared one takes a lock on every decode, which the event loops' threads then wait on each other for.
    static func decode<T: DriverRequest>(_ type: T.Type, _ bytes: ByteBuffer) -> Result<T, VolumeError> {
        guard T.readsBody else { return .success(T.empty) }
        if let plain = T.plain(bytes) { return .success(plain) }
        do {
            let json = bytes.readableBytes == 0 ? Data("{}".utf8) : Data(bytes.readableBytesView)
            return .success(try JSONDecoder().decode(T.self, from: json))
        } catch {
            return .failure(VolumeError(.malformedRequest, "malformed VolumeDriver request: \(error)"))
        }
    }

    /// The fixed answers are written as they are: the JSON encoder is not worth its pages in an idle plugin's memory.
    static let ok = answer(#"{"Err":""}"#)

    /// For the answers that are not lookups, which are few (the lookups' are written by `LookupAnswers`).
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static func encode(_ value: some Encodable, status: HTTPResponseStatus = .ok) -> Answer {
        let data = (try? encoder.encode(value)) ?? Data("{\"Err\":\"cannot encode the response\"}".utf8)
        return Answer(status: status, body: ByteBuffer(bytes: data))
    }

    static func answer(_ bytes: [UInt8]) -> Answer {
        Answer(status: .ok, body: ByteBuffer(bytes: bytes))
    }

    static func answer(_ json: StaticString) -> Answer {
        json.withUTF8Buffer { Answer(status: .ok, body: ByteBuffer(bytes: $0)) }
    }
}

extension VolumeDriverController.DriverRequest {
    static var readsBody: Bool { true }
    static func plain(_ bytes: ByteBuffer) -> Self? { nil }
    var mountID: String? { nil }
}
