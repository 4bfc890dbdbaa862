import DigitalOcean
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// A fault the next matching requests meet instead of their answer.
public enum FaultKind: Sendable, Equatable {
    /// Answer this status with DigitalOcean's error body (500, 502, 503, …).
    case status(Int)
    /// Answer 429 with `Retry-After: seconds`.
    case tooManyRequests(retryAfter: Int)
    /// Answer 429 with these headers as they are (absurd values included: `inf`, `nan`, `1e19`).
    case tooManyRequestsWithHeaders([String: String])
    /// Answer 200 with a body of this many bytes: valid JSON, a volume list padded with a long field.
    case oversizedBody(bytes: Int)
    /// Answer exactly this: any status, headers and body (malformed JSON, wrong types, absurd headers).
    case raw(status: Int, headers: [String: String], body: [UInt8])
    /// Start a response, then drop the connection.
    case reset
    /// Answer normally after this delay.
    case slow(Duration)
}

public struct Fault: Sendable, Equatable {
    public var kind: FaultKind
    /// How many requests meet it.
    public var count: Int
    /// Only requests with this method (nil: any).
    public var method: String?
    /// Only requests whose path starts with this (nil: any API path).
    public var pathPrefix: String?

    public init(_ kind: FaultKind, count: Int = 1, method: String? = nil, pathPrefix: String? = nil) {
        self.kind = kind
        self.count = count
        self.method = method
        self.pathPrefix = pathPrefix
    }
}

/// One request and its answer, as the simulator saw them.
public struct Exchange: Sendable, Codable {
    public var method: String
    public var path: String
    public var query: [String: String]
    public var requestBody: String?
    public var status: Int
    public var responseHeaders: [String: String]
    public var responseBody: String?
}

/// The simulated API over HTTP on loopback: `/v2/...` as DigitalOcean, `/droplets/<id>/metadata/v1/...` as each
/// droplet's metadata service. Bearer-token auth, rate-limit headers and 429s, injected faults, and a record of every
/// exchange for tests.
public final class SimulatorServer: Sendable {
    public let world: SimulatorWorld
    private let faults = NIOLockedValueBox<[Fault]>([])
    private let exchanges = NIOLockedValueBox<[Exchange]>([])
    private let limiter: NIOLockedValueBox<RateLimiter>
    private let logger: Logger

    public init(world: SimulatorWorld, logger: Logger = Logger(label: "do-sim")) {
        self.world = world
        self.logger = logger
        self.limiter = NIOLockedValueBox(
            RateLimiter(perMinute: world.options.requestsPerMinute, perHour: world.options.requestsPerHour))
    }

    // MARK: Controls

    public func inject(_ fault: Fault) { faults.withLockedValue { $0.append(fault) } }

    /// Every API exchange so far (metadata requests excluded).
    public var recorded: [Exchange] { exchanges.withLockedValue { $0 } }

    public func clearRecorded() { exchanges.withLockedValue { $0 = [] } }

    /// Forgets the requests counted against the rate limits, as if the account had been idle for an hour: a
    /// benchmark step then measures itself, not the steps before it.
    public func resetRateLimits() { limiter.withLockedValue { $0.recent = [] } }

    /// How many API requests matched `method` and a path prefix.
    public func count(method: String? = nil, pathPrefix: String = "/v2/") -> Int {
        recorded.filter { (method == nil || $0.method == method) && $0.path.hasPrefix(pathPrefix) }.count
    }

    // MARK: Running

    /// Serves on `host:port` (port 0: any free port) until the returned handle is stopped.
    public func start(host: String = "127.0.0.1", port: Int = 0) async throws -> RunningSimulator {
        try await start(address: .hostname(host, port: port), host: host)
    }

    /// Serves on a unix socket too (for test hosts in network namespaces, reached through a relay on their own
    /// loopback). The returned handle's URLs are not meaningful; stop it like any other.
    public func start(unixSocket path: String) async throws -> RunningSimulator {
        try await start(address: .unixDomainSocket(path: path), host: "unix")
    }

    /// The API's routes, for serving in process (HummingbirdTesting's router framework) without a socket.
    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        addRoutes(to: router)
        return router
    }

    private func start(address: BindAddress, host: String) async throws -> RunningSimulator {
        let router = router()
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: address, serverName: "do-sim"),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? -1)
                continuation.finish()
            },
            logger: logger)
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        let task = Task {
            defer { continuation.finish() }  // A server that cannot start ends the wait below.
            try await group.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let bound = await iterator.next(), bound != 0 else {
            task.cancel()
            throw SimDeviceError(message: "the simulator could not listen on \(address)")
        }
        return RunningSimulator(host: host, port: max(bound, 0), task: task, group: group)
    }

    func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/v2/volumes") { request, context in
            await self.api(request, context) { _ in
                let query = request.uri.queryParameters
                let name = query.get("name")
                let region = query.get("region")
                let perPage = min(max(query.get("per_page").flatMap(Int.init) ?? 20, 1), 200)
                let page = max(query.get("page").flatMap(Int.init) ?? 1, 1)
                let all = await self.world.listVolumes(name: name, region: region)
                let slice = Array(all.dropFirst((page - 1) * perPage).prefix(perPage))
                let last = max((all.count + perPage - 1) / perPage, 1)
                var pages = VolumeList.Links.Pages()
                func link(_ number: Int) -> String {
                    var items = ["page=\(number)", "per_page=\(perPage)"]
                    if let name { items.append("name=\(name)") }
                    if let region { items.append("region=\(region)") }
                    return "http://\(request.head.authority ?? "127.0.0.1")/v2/volumes?" + items.joined(separator: "&")
                }
                if page < last {
                    pages.next = link(page + 1)
                    pages.last = link(last)
                }
                if page > 1 {
                    pages.prev = link(page - 1)
                    pages.first = link(1)
                }
                return .json(200, VolumeList(volumes: slice, links: .init(pages: pages), meta: .init(total: all.count)))
            }
        }
        router.post("/v2/volumes") { request, context in
            await self.api(request, context) { body throws(SimError) in
                let create: VolumeCreateRequest = try Self.decode(body)
                return .json(201, VolumeEnvelope(volume: try await self.world.createVolume(create)))
            }
        }
        router.delete("/v2/volumes") { request, context in
            await self.api(request, context) { _ throws(SimError) in
                let query = request.uri.queryParameters
                guard let name = query.get("name"), let region = query.get("region") else {
                    throw SimError.unprocessable("name and region are required")
                }
                try await self.world.deleteVolume(name: name, region: region)
                return .noContent
            }
        }
        router.get("/v2/volumes/:id") { request, context in
            await self.api(request, context) { _ throws(SimError) in
                let id = context.parameters.get("id") ?? ""
                return .json(200, VolumeEnvelope(volume: try await self.world.volume(id: id)))
            }
        }
        router.delete("/v2/volumes/:id") { request, context in
            await self.api(request, context) { _ throws(SimError) in
                try await self.world.deleteVolume(id: context.parameters.get("id") ?? "")
                return .noContent
            }
        }
        router.post("/v2/volumes/actions") { request, context in
            await self.api(request, context) { body throws(SimError) in
                let action: VolumeActionRequest = try Self.decode(body)
                return .json(202, ActionEnvelope(action: try await self.world.startAction(volumeID: nil, request: action)))
            }
        }
        router.post("/v2/volumes/:id/actions") { request, context in
            await self.api(request, context) { body throws(SimError) in
                let action: VolumeActionRequest = try Self.decode(body)
                let id = context.parameters.get("id") ?? ""
                return .json(202, ActionEnvelope(action: try await self.world.startAction(volumeID: id, request: action)))
            }
        }
        router.get("/v2/volumes/:id/actions/:action") { request, context in
            await self.api(request, context) { _ throws(SimError) in
                let action = Int(context.parameters.get("action") ?? "") ?? -1
                let id = context.parameters.get("id") ?? ""
                return .json(200, ActionEnvelope(action: try await self.world.action(id: action, volumeID: id)))
            }
        }
        router.get("/v2/actions/:action") { request, context in
            await self.api(request, context) { _ throws(SimError) in
                let action = Int(context.parameters.get("action") ?? "") ?? -1
                return .json(200, ActionEnvelope(action: try await self.world.action(id: action, volumeID: nil)))
            }
        }
        router.get("/v2/droplets/:droplet") { request, context in
            await self.api(request, context) { _ throws(SimError) in
                let id = Int(context.parameters.get("droplet") ?? "") ?? -1
                let droplet = try await self.world.droplet(id: id)
                let volumeIDs = await self.world.dropletVolumeIDs(id: id)
                let tags = await self.world.dropletTags(id: id)
                return SimReply(status: 200, body: Self.dropletJSON(droplet, volumeIDs: volumeIDs, tags: tags))
            }
        }
        router.post("/v2/volumes/:id/snapshots") { request, context in
            await self.api(request, context) { body throws(SimError) in
                let create: SnapshotCreateRequest = try Self.decode(body)
                let id = context.parameters.get("id") ?? ""
                return .json(201, SnapshotEnvelope(snapshot: try await self.world.createSnapshot(volumeID: id, request: create)))
            }
        }
        router.get("/v2/volumes/:id/snapshots") { request, context in
            await self.api(request, context) { _ throws(SimError) in
                let all = try await self.world.listSnapshots(volumeID: context.parameters.get("id") ?? "")
                return .json(200, Self.page(all, request.uri.queryParameters))
            }
        }
        router.get("/v2/snapshots") { request, context in
            await self.api(request, context) { _ throws(SimError) in
                let query = request.uri.queryParameters
                // Droplet snapshots are none of the simulator's business: only volumes have them here.
                let all = query.get("resource_type") == "droplet" ? [] : try await self.world.listSnapshots(volumeID: nil)
                return .json(200, Self.page(all, query))
            }
        }
        for path in ["/v2/snapshots/:snapshot", "/v2/volumes/snapshots/:snapshot"] {
            router.get(RouterPath(path)) { request, context in
                await self.api(request, context) { _ throws(SimError) in
                    .json(200, SnapshotEnvelope(snapshot: try await self.world.snapshot(id: context.parameters.get("snapshot") ?? "")))
                }
            }
            router.delete(RouterPath(path)) { request, context in
                await self.api(request, context) { _ throws(SimError) in
                    try await self.world.deleteSnapshot(id: context.parameters.get("snapshot") ?? "")
                    return .noContent
                }
            }
        }
        router.post("/v2/tags") { request, context in
            await self.api(request, context) { body throws(SimError) in
                let create: TagCreateRequest = try Self.decode(body)
                do throws(SimError) {
                    try await self.world.createTag(name: create.name)
                } catch {
                    guard error.status == 400 else { throw error }
                    // The tags API answers a bad name in its own error shape.
                    let object: [String: Any] = ["error": error.message, "messages": NSNull(), "root_causes": [String]()]
                    return SimReply(status: 400, body: try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
                }
                return SimReply(status: 201, body: Self.tagJSON(create.name))
            }
        }
        router.post("/v2/tags/:tag/resources") { request, context in
            await self.api(request, context) { body throws(SimError) in
                let resources: TagResourcesRequest = try Self.decode(body)
                try await self.world.tag(name: context.parameters.get("tag") ?? "", resources: resources.resources)
                return .noContent
            }
        }
        router.delete("/v2/tags/:tag/resources") { request, context in
            await self.api(request, context) { body throws(SimError) in
                let resources: TagResourcesRequest = try Self.decode(body)
                try await self.world.untag(name: context.parameters.get("tag") ?? "", resources: resources.resources)
                return .noContent
            }
        }
        router.delete("/v2/tags/:tag") { request, context in
            await self.api(request, context) { _ throws(SimError) in
                try await self.world.deleteTag(name: context.parameters.get("tag") ?? "")
                return .noContent
            }
        }
        router.get("/droplets/:droplet/metadata/v1/:item") { _, context in
            let id = Int(context.parameters.get("droplet") ?? "") ?? -1
            guard let droplet = try? await self.world.droplet(id: id) else {
                return Response(status: .notFound, body: .init(byteBuffer: ByteBuffer(string: "not found")))
            }
            let text: String
            switch context.parameters.get("item") ?? "" {
            case "id": text = String(droplet.id)
            case "region": text = droplet.region
            case "hostname": text = droplet.name
            default: return Response(status: .notFound, body: .init(byteBuffer: ByteBuffer(string: "not found")))
            }
            return Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
    }

    // MARK: Exchange handling

    struct SimReply: Sendable {
        var status: Int
        var body: Data?

        static func json(_ status: Int, _ value: some Encodable) -> SimReply {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return SimReply(status: status, body: try? encoder.encode(value))
        }

        static let noContent = SimReply(status: 204, body: nil)

        static func error(_ error: SimError) -> SimReply {
            json(error.status, ErrorBody(id: error.id, message: error.message, requestID: UUID().uuidString.lowercased()))
        }
    }

    static func decode<T: Decodable>(_ body: Data) throws(SimError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: body)
        } catch {
            throw SimError(status: 400, id: "bad_request", message: "unable to parse the request body: \(error)")
        }
    }

    /// Auth, faults, rate limit, the handler, rate-limit headers, and the record.
    private func api(
        _ request: Request, _ context: BasicRequestContext, _ handler: (Data) async throws(SimError) -> SimReply
    ) async -> Response {
        var request = request
        let bodyBuffer = (try? await request.collectBody(upTo: 1 << 20)) ?? ByteBuffer()
        let body = Data(bodyBuffer.readableBytesView)
        let method = request.method.rawValue
        let path = request.uri.path
        var headers: [String: String] = [:]
        var reply: SimReply
        var drop = false

        let fault = takeFault(method: method, path: path)
        let bearer = request.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
        let scopes = bearer == world.options.token ? nil : bearer.flatMap { world.options.scopedTokens[$0] }
        if bearer != world.options.token && scopes == nil {
            reply = .error(SimError(status: 401, id: "unauthorized", message: "Unable to authenticate you"))
        } else if let scopes, Self.scopes(method: method, route: context.endpointPath ?? "").isDisjoint(with: scopes) {
            reply = .error(SimError(status: 403, id: "forbidden", message: "You are not authorized to perform this operation."))
        } else {
            let now = world.options.wallClock()
            let verdict = limiter.withLockedValue { $0.admit(now: now) }
            headers["ratelimit-limit"] = String(verdict.limit)
            headers["ratelimit-remaining"] = String(verdict.remaining)
            headers["ratelimit-reset"] = String(verdict.reset)
            switch fault {
            case .status(let status)?:
                reply = .error(SimError(status: status, id: "server_error", message: "Server was unable to give you a response."))
            case .tooManyRequests(let seconds)?:
                headers["retry-after"] = String(seconds)
                reply = .error(SimError(status: 429, id: "too_many_requests", message: "API Rate limit exceeded."))
            case .tooManyRequestsWithHeaders(let raw)?:
                headers.merge(raw) { _, new in new }
                reply = .error(SimError(status: 429, id: "too_many_requests", message: "API Rate limit exceeded."))
            case .oversizedBody(let bytes)?:
                let head = Data(#"{"volumes":[],"links":{},"meta":{"total":0},"padding":""#.utf8)
                reply = SimReply(
                    status: 200, body: head + Data(repeating: UInt8(ascii: "x"), count: max(bytes - head.count - 2, 0)) + Data(#""}"#.utf8))
            case .raw(let status, let raw, let body)?:
                headers.merge(raw) { _, new in new }
                reply = SimReply(status: status, body: Data(body))
            case .reset?:
                drop = true
                reply = SimReply(status: 200, body: nil)
            case .slow(let delay)?:
                try? await world.options.time.sleep(delay)
                fallthrough
            case nil:
                if verdict.refused {
                    if let retryAfter = verdict.retryAfter { headers["retry-after"] = String(retryAfter) }
                    reply = .error(SimError(status: 429, id: "too_many_requests", message: "API Rate limit exceeded."))
                } else {
                    do {
                        reply = try await handler(body)
                    } catch {
                        reply = .error(error)
                    }
                }
            }
        }
        if reply.body != nil { headers["content-type"] = "application/json; charset=utf-8" }
        var query: [String: String] = [:]
        for (key, value) in request.uri.queryParameters { query[String(key)] = String(value) }
        let exchange = Exchange(
            method: method, path: path, query: query, requestBody: body.isEmpty ? nil : String(decoding: body, as: UTF8.self),
            status: reply.status, responseHeaders: headers,
            responseBody: reply.body.map { String(decoding: $0, as: UTF8.self) })
        exchanges.withLockedValue { $0.append(exchange) }

        var fields = HTTPFields()
        for (name, value) in headers { fields[HTTPField.Name(name)!] = value }
        if drop {
            return Response(
                status: .ok, headers: fields,
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: "{\"volu"))
                    throw SimDeviceError(message: "connection reset by the simulator")
                })
        }
        return Response(
            status: .init(code: reply.status), headers: fields,
            body: .init(byteBuffer: ByteBuffer(bytes: reply.body ?? Data())))
    }

    /// The scopes DigitalOcean accepts for each operation the simulator serves (any one of them will do), by method
    /// and path with `{}` for each parameter; the OpenAPI document's per-operation security, its legacy
    /// `api:read`/`api:write` left out.
    public static let operationScopes: [String: Set<String>] = [
        "GET /v2/volumes": ["block_storage:read"],
        "POST /v2/volumes": ["block_storage:create"],
        "DELETE /v2/volumes": ["block_storage:delete"],
        "GET /v2/volumes/{}": ["block_storage:read"],
        "DELETE /v2/volumes/{}": ["block_storage:delete"],
        "POST /v2/volumes/actions": ["block_storage_action:create"],
        "POST /v2/volumes/{}/actions": ["block_storage_action:create"],
        "GET /v2/volumes/{}/actions/{}": ["block_storage_action:read"],
        "GET /v2/actions/{}": ["actions:read"],
        "GET /v2/droplets/{}": ["droplet:read"],
        "POST /v2/volumes/{}/snapshots": ["block_storage_snapshot:create"],
        "GET /v2/volumes/{}/snapshots": ["block_storage_snapshot:read"],
        "GET /v2/snapshots": ["snapshot:read"],
        "GET /v2/snapshots/{}": ["snapshot:read", "block_storage_snapshot:read"],
        "DELETE /v2/snapshots/{}": ["image:delete", "snapshot:delete"],
        "GET /v2/volumes/snapshots/{}": ["block_storage_snapshot:read"],
        "DELETE /v2/volumes/snapshots/{}": ["block_storage_snapshot:delete"],
        "POST /v2/tags": ["tag:create"],
        "POST /v2/tags/{}/resources": ["tag:create"],
        "DELETE /v2/tags/{}/resources": ["tag:delete"],
        "DELETE /v2/tags/{}": ["tag:delete"],
    ]

    /// The scopes for a route as the router names it (`/v2/volumes/{id}` or `/v2/volumes/:id`).
    static func scopes(method: String, route: String) -> Set<String> {
        let path = route.split(separator: "/").map { $0.hasPrefix("{") || $0.hasPrefix(":") ? "{}" : String($0) }
        return operationScopes["\(method) /" + path.joined(separator: "/")] ?? []
    }

    private func takeFault(method: String, path: String) -> FaultKind? {
        faults.withLockedValue { faults in
            guard let index = faults.firstIndex(where: { fault in
                (fault.method == nil || fault.method == method) && path.hasPrefix(fault.pathPrefix ?? "/v2/")
            }) else { return nil }
            let kind = faults[index].kind
            faults[index].count -= 1
            if faults[index].count <= 0 { faults.remove(at: index) }
            return kind
        }
    }

    /// One page of snapshots (`per_page`, default 20, at most 200; `page` from 1), with DigitalOcean's links.
    static func page(_ all: [Snapshot], _ query: Parameters) -> SnapshotList {
        let perPage = min(max(Int(query.get("per_page") ?? "") ?? 20, 1), 200)
        let page = max(Int(query.get("page") ?? "") ?? 1, 1)
        let slice = Array(all.dropFirst((page - 1) * perPage).prefix(perPage))
        let more = page * perPage < all.count
        return SnapshotList(
            snapshots: slice,
            links: .init(pages: more ? .init(next: "?page=\(page + 1)&per_page=\(perPage)") : nil),
            meta: .init(total: all.count))
    }

    /// A new tag as DigitalOcean renders it: nothing tagged yet.
    static func tagJSON(_ name: String) -> Data {
        let none: [String: Any] = ["count": 0, "last_tagged_uri": ""]
        let object: [String: Any] = [
            "tag": [
                "name": name,
                "resources": [
                    "count": 0, "last_tagged_uri": "", "droplets": none, "imgages": none, "volumes": none,
                    "volume_snapshots": none, "databases": none,
                ] as [String: Any],
            ] as [String: Any]
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    }

    /// A droplet as DigitalOcean renders it (the fields its schema requires).
    static func dropletJSON(_ droplet: SimDroplet, volumeIDs: [String], tags: [String]) -> Data {
        let regionName = SimulatorWorld.regions[droplet.region] ?? droplet.region
        let object: [String: Any] = [
            "droplet": [
                "id": droplet.id, "name": droplet.name, "memory": 1024, "vcpus": 1, "disk": 25, "locked": false,
                "status": droplet.status, "created_at": "2026-01-01T00:00:00Z", "features": ["monitoring"],
                "backup_ids": [Int](), "next_backup_window": NSNull(), "snapshot_ids": [Int](),
                "image": [
                    "id": 6_918_990, "name": "24.04 x64", "distribution": "Ubuntu", "slug": "ubuntu-24-04-x64",
                    "public": true, "regions": [droplet.region], "created_at": "2026-01-01T00:00:00Z",
                    "min_disk_size": 20, "type": "base", "size_gigabytes": 2.36, "description": "Ubuntu 24.04 x64",
                    "tags": [String](), "status": "available",
                ],
                "volume_ids": volumeIDs,
                "size": [
                    "slug": "s-1vcpu-1gb", "memory": 1024, "vcpus": 1, "disk": 25, "transfer": 1.0,
                    "price_monthly": 6.0, "price_hourly": 0.00893, "regions": [droplet.region], "available": true,
                    "description": "Basic",
                ],
                "size_slug": "s-1vcpu-1gb",
                "networks": ["v4": [[String: Any]](), "v6": [[String: Any]]()],
                "region": [
                    "name": regionName, "slug": droplet.region, "features": ["metadata", "storage"],
                    "available": true, "sizes": ["s-1vcpu-1gb"],
                ],
                "tags": tags,
            ] as [String: Any]
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    }
}

/// A running simulator.
public struct RunningSimulator: Sendable {
    public let host: String
    public let port: Int
    let task: Task<Void, any Error>
    let group: ServiceGroup

    /// `http://127.0.0.1:<port>`: the `DO_API_URL` to give the plugin.
    public var apiURL: String { "http://\(host):\(port)" }

    /// The `DO_METADATA_URL` for one droplet.
    public func metadataURL(droplet: Int) -> String { "\(apiURL)/droplets/\(droplet)/metadata/v1" }

    /// Stops accepting, lets answers in progress finish (an injected slow answer is cut off after 2 s), and waits.
    public func stop() async {
        await group.triggerGracefulShutdown()
        let task = self.task
        let deadline = Task {
            try await Task.sleep(for: .seconds(2))
            task.cancel()
        }
        _ = await task.result
        deadline.cancel()
    }
}

/// DigitalOcean's limits: a sliding minute and a sliding hour.
struct RateLimiter {
    let perMinute: Int
    let perHour: Int
    var recent: [Date] = []

    struct Verdict {
        var limit: Int
        var remaining: Int
        var reset: Int
        /// The request is refused (429).
        var refused = false
        /// Seconds until the per-minute burst limit admits again: sent as `Retry-After`. DigitalOcean sends it only
        /// for that limit; a refusal by the hourly limit carries `ratelimit-reset` alone.
        var retryAfter: Int?
    }

    mutating func admit(now: Date) -> Verdict {
        recent.removeAll { now.timeIntervalSince($0) >= 3600 }
        let lastMinute = recent.filter { now.timeIntervalSince($0) < 60 }
        var retryAfter: Int?
        var refused = true
        if recent.count >= perHour {
            // The hourly budget: ratelimit-reset says when it frees up.
        } else if lastMinute.count >= perMinute, let oldest = lastMinute.first {
            retryAfter = max(Int((60 - now.timeIntervalSince(oldest)).rounded(.up)), 1)
        } else {
            refused = false
            recent.append(now)
        }
        let reset = Int((recent.first ?? now).addingTimeInterval(3600).timeIntervalSince1970.rounded(.up))
        return Verdict(
            limit: perHour, remaining: max(perHour - recent.count, 0), reset: reset, refused: refused, retryAfter: retryAfter)
    }
}
