import FoundationEssentials
import Glibc
import HTTPTypes
import Logging
import Timekeeping

/// The DigitalOcean API v2 calls the plugin needs, over any `HTTPTransport`.
///
/// Every call retries per `RetryPolicy` and fails with a `DOError`. The token travels only in the Authorization
/// header; it is never logged and never part of an error. This type is a value and safe to share between tasks.
public struct DOClient: Sendable {
    public let baseURL: String
    private let token: String
    private let transport: any HTTPTransport
    public var retry: RetryPolicy
    private let time: TimeSource
    private let logger: Logger

    /// A client of one account.
    ///
    /// - Parameters:
    ///   - baseURL: `https://api.digitalocean.com` in production; the simulator's URL in tests.
    ///   - token: the personal access token, sent only in the Authorization header.
    ///   - transport: how requests travel (`CurlTransport` in production).
    ///   - retry: attempts, backoff and deadlines for every call.
    ///   - time: the clock the backoff waits on (virtual in tests).
    ///   - logger: one line per request, with its outcome and the remaining rate budget; never the token.
    public init(
        baseURL: String, token: String, transport: any HTTPTransport, retry: RetryPolicy = RetryPolicy(),
        time: TimeSource = .system, logger: Logger
    ) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.transport = transport
        self.retry = retry
        self.time = time
        self.logger = logger
    }

    // MARK: Volumes

    /// Every volume with this name in this region (DigitalOcean allows one), following all pages.
    ///
    /// - Parameters:
    ///   - name: the DigitalOcean volume name, or nil for every volume.
    ///   - region: a region slug (`nyc1`), or nil for every region.
    /// - Returns: the volumes, in DigitalOcean's order.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`.
    public func volumes(named name: String? = nil, region: String? = nil) async throws -> [Volume] {
        var query: [(String, String)] = []
        if let name { query.append(("name", name)) }
        if let region { query.append(("region", region)) }
        return try await allPages(VolumeList.self, "/v2/volumes", query: query)
    }

    /// One volume.
    ///
    /// - Parameter id: the volume's id.
    /// - Returns: the volume, with the droplets it is attached to and its tags.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.notFound` when it does not exist.
    public func volume(id: String) async throws -> Volume {
        let envelope: VolumeEnvelope = try await call(.get, "/v2/volumes/\(id)")
        return envelope.volume
    }

    /// Creates a volume (201).
    ///
    /// - Parameter request: name, size, region, and optionally filesystem, label, description, tags or a snapshot id.
    /// - Returns: the new volume.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.conflict` when the name is taken in the region, `.unprocessable` when DigitalOcean refuses the request
    ///   (a size, a snapshot in another region).
    public func createVolume(_ request: VolumeCreateRequest) async throws -> Volume {
        let envelope: VolumeEnvelope = try await call(.post, "/v2/volumes", body: request)
        return envelope.volume
    }

    /// Deletes a volume (204).
    ///
    /// - Parameter id: the volume's id.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.notFound` when it is gone, `.conflict` while it is still attached.
    public func deleteVolume(id: String) async throws {
        let _: Empty = try await call(.delete, "/v2/volumes/\(id)")
    }

    // MARK: Snapshots

    /// Takes a snapshot of a volume (201).
    ///
    /// - Parameters:
    ///   - volumeID: the volume's id.
    ///   - name: unique among the volume's snapshots.
    ///   - tags: tags for the snapshot (the plugin marks scheduled and clone snapshots so).
    /// - Returns: the snapshot, complete (DigitalOcean answers once it is taken).
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.conflict` when the volume has a snapshot of that name, `.unprocessable` at 25 snapshots.
    public func createSnapshot(volumeID: String, name: String, tags: [String]) async throws -> Snapshot {
        let envelope: SnapshotEnvelope = try await call(
            .post, "/v2/volumes/\(volumeID)/snapshots", body: SnapshotCreateRequest(name: name, tags: tags))
        return envelope.snapshot
    }

    /// Every snapshot of one volume, following all pages.
    ///
    /// - Parameter volumeID: the volume's id.
    /// - Returns: its snapshots, oldest first as DigitalOcean lists them.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`.
    public func snapshots(volumeID: String) async throws -> [Snapshot] {
        try await allPages(SnapshotList.self, "/v2/volumes/\(volumeID)/snapshots")
    }

    /// Every volume snapshot of the account, following all pages.
    ///
    /// - Returns: the snapshots of every volume, droplet snapshots left out.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`.
    public func volumeSnapshots() async throws -> [Snapshot] {
        try await allPages(SnapshotList.self, "/v2/snapshots", query: [("resource_type", "volume")])
    }

    /// One snapshot.
    ///
    /// - Parameter id: the snapshot's id.
    /// - Returns: the snapshot, with its regions and minimum disk size.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.notFound` when it does not exist.
    public func snapshot(id: String) async throws -> Snapshot {
        let envelope: SnapshotEnvelope = try await call(.get, "/v2/volumes/snapshots/\(id)")
        return envelope.snapshot
    }

    /// Deletes a snapshot (204).
    ///
    /// - Parameter id: the snapshot's id.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.notFound` when it is gone.
    public func deleteSnapshot(id: String) async throws {
        let _: Empty = try await call(.delete, "/v2/volumes/snapshots/\(id)")
    }

    /// Every item of a listing, 200 a page, until DigitalOcean says there is no next page or all are read.
    private func allPages<List: PagedList>(
        _ type: List.Type, _ path: String, query: [(String, String)] = []
    ) async throws -> [List.Item] {
        var all: [List.Item] = []
        var page = 1
        while true {
            let list: List = try await call(.get, path, query: query + [("per_page", "200"), ("page", String(page))])
            all += list.items
            if list.items.isEmpty || list.links.pages?.next == nil || all.count >= list.meta.total { return all }
            page += 1
        }
    }

    // MARK: Actions

    /// Starts growing a volume (202); poll the action with `action(volumeID:actionID:)`.
    ///
    /// - Parameters:
    ///   - volumeID: the volume's id.
    ///   - sizeGigabytes: the new size, larger than the current one.
    ///   - region: the volume's region slug.
    /// - Returns: the action, in progress.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.unprocessable` for a size that is not larger, or a pending event on the volume.
    public func resize(volumeID: String, sizeGigabytes: Int, region: String) async throws -> Action {
        let body = VolumeActionRequest(type: "resize", region: region, sizeGigabytes: sizeGigabytes)
        let envelope: ActionEnvelope = try await call(.post, "/v2/volumes/\(volumeID)/actions", body: body)
        return envelope.action
    }

    /// Starts attaching a volume to a droplet (202); poll the action with `action(volumeID:actionID:)`.
    ///
    /// - Parameters:
    ///   - volumeID: the volume's id.
    ///   - dropletID: the droplet to attach it to.
    ///   - region: the region both are in.
    /// - Returns: the action, in progress.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.unprocessable` when it is attached already (`isAlreadyAttached`), another action is pending
    ///   (`isPendingEvent`), or the droplet has 15 volumes (`isDropletVolumeLimit`).
    public func attach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        let body = VolumeActionRequest(type: "attach", dropletID: dropletID, region: region)
        let envelope: ActionEnvelope = try await call(.post, "/v2/volumes/\(volumeID)/actions", body: body)
        return envelope.action
    }

    /// Starts detaching a volume from a droplet (202); poll the action with `action(volumeID:actionID:)`.
    ///
    /// - Parameters:
    ///   - volumeID: the volume's id.
    ///   - dropletID: the droplet to detach it from.
    ///   - region: the region both are in.
    /// - Returns: the action, in progress.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.unprocessable` or `.notFound` when it is not attached there (`isAttachmentNotFound`), or
    ///   another action is pending (`isPendingEvent`).
    public func detach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        let body = VolumeActionRequest(type: "detach", dropletID: dropletID, region: region)
        let envelope: ActionEnvelope = try await call(.post, "/v2/volumes/\(volumeID)/actions", body: body)
        return envelope.action
    }

    /// The current state of a volume action.
    ///
    /// - Parameters:
    ///   - volumeID: the volume the action is on.
    ///   - actionID: the action's id.
    /// - Returns: the action: `in-progress`, `completed` or `errored`.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`.
    public func action(volumeID: String, actionID: Int) async throws -> Action {
        let envelope: ActionEnvelope = try await call(.get, "/v2/volumes/\(volumeID)/actions/\(actionID)")
        return envelope.action
    }

    // MARK: Droplets

    /// One droplet.
    ///
    /// - Parameter id: the droplet's id.
    /// - Returns: the droplet, its tags included (the lease heartbeats live there).
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.notFound` when it does not exist (destroyed).
    public func droplet(id: Int) async throws -> Droplet {
        let envelope: DropletEnvelope = try await call(.get, "/v2/droplets/\(id)")
        return envelope.droplet
    }

    // MARK: Tags

    /// Creates a tag (201); creating one that exists is not an error on DigitalOcean.
    ///
    /// - Parameter name: the tag, as DigitalOcean allows them (letters, digits, `:`, `-`, `_`).
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`.
    public func createTag(name: String) async throws {
        let _: Empty = try await call(.post, "/v2/tags", body: TagCreateRequest(name: name))
    }

    /// Tags a droplet (204).
    ///
    /// - Parameters:
    ///   - dropletID: the droplet.
    ///   - name: an existing tag.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.notFound` when the tag does not exist.
    public func tag(dropletID: Int, with name: String) async throws {
        let body = TagResourcesRequest(resources: [.init(resourceID: String(dropletID), resourceType: "droplet")])
        let _: Empty = try await call(.post, "/v2/tags/\(name)/resources", body: body)
    }

    /// Tags a volume (204).
    ///
    /// - Parameters:
    ///   - id: the volume's id.
    ///   - name: an existing tag.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.notFound` when the tag does not exist.
    public func tagVolume(id: String, with name: String) async throws {
        let body = TagResourcesRequest(resources: [.init(resourceID: id, resourceType: "volume")])
        let _: Empty = try await call(.post, "/v2/tags/\(name)/resources", body: body)
    }

    /// Takes a tag off a volume (204).
    ///
    /// - Parameters:
    ///   - id: the volume's id.
    ///   - name: the tag.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.notFound` when the tag does not exist.
    public func untagVolume(id: String, from name: String) async throws {
        let body = TagResourcesRequest(resources: [.init(resourceID: id, resourceType: "volume")])
        let _: Empty = try await call(.delete, "/v2/tags/\(name)/resources", body: body)
    }

    /// Deletes a tag, untagging everything it was on (204).
    ///
    /// - Parameter name: the tag.
    /// - Throws: `DOError` once the retries are spent: `.unauthorized`, `.rateLimited`, `.server`, `.transport`,
    ///   `.deadlineExceeded`, `.invalidResponse`; `.notFound` when it does not exist.
    public func deleteTag(name: String) async throws {
        let _: Empty = try await call(.delete, "/v2/tags/\(name)")
    }

    // MARK: Plumbing

    private struct Empty: Codable {}

    private func call<Response: Decodable>(
        _ method: HTTPRequest.Method, _ path: String, query: [(String, String)] = [], body: (some Encodable)? = Optional<Empty>.none
    ) async throws -> Response {
        let operation = "\(method) \(path)"
        var url = baseURL + path
        if !query.isEmpty {
            url += "?" + query.map { "\($0.0)=\(Self.percentEncode($0.1))" }.joined(separator: "&")
        }
        var headers: HTTPFields = [.authorization: "Bearer \(token)", .accept: "application/json"]
        var bodyBytes: [UInt8]?
        if let body {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            bodyBytes = Array(try encoder.encode(body))
            headers[.contentType] = "application/json"
        }
        let response = try await send(
            TransportRequest(method: method, url: url, headers: headers, body: bodyBytes, timeout: retry.attemptTimeout),
            operation: operation)
        if Response.self == Empty.self { return Empty() as! Response }
        do {
            return try JSONDecoder().decode(Response.self, from: Data(response.body))
        } catch {
            throw DOError(
                code: .invalidResponse, status: response.status,
                message: "unexpected response body (\(error))", operation: operation)
        }
    }

    /// Sends with retries; returns only a 2xx response.
    private func send(_ request: TransportRequest, operation: String) async throws -> TransportResponse {
        let deadline = Deadline.bounding(time.now().advanced(by: retry.deadline))
        var request = request
        var attempt = 0
        while true {
            attempt += 1
            let started = time.now()
            // An attempt ends by the call's deadline (or the task's: a Mount's). A retry the backoff timed to end at
            // the deadline still gets its attempt.
            let remaining = started.duration(to: deadline)
            if remaining <= .zero && attempt == 1 {
                throw DOError(code: .deadlineExceeded, message: "no time was left for the request", operation: operation)
            }
            request.timeout = remaining > .zero ? min(retry.attemptTimeout, remaining) : retry.attemptTimeout
            var lastError: DOError
            var wait: Duration
            do {
                let response = try await transport.send(request)
                let elapsed = started.duration(to: time.now())
                logger.debug(
                    "DigitalOcean request",
                    metadata: [
                        "http.method": "\(request.method)", "do.operation": "\(operation)",
                        "http.status": "\(response.status)", "attempt": "\(attempt)",
                        "duration.ms": "\(Int(elapsed.milliseconds.rounded()))",
                        "ratelimit.remaining": "\(response.headers[.rateLimitRemaining] ?? "-")",
                    ])
                if (200..<300).contains(response.status) { return response }
                lastError = Self.error(from: response, operation: operation)
                guard Self.isRetryable(status: response.status) else { throw lastError }
                wait = retryWait(for: response, retry: attempt)
            } catch let error as TransportError where error.kind == .responseTooLarge {
                throw DOError(code: .invalidResponse, message: error.message, operation: operation)
            } catch let error as TransportError {
                logger.debug(
                    "DigitalOcean request failed",
                    metadata: ["do.operation": "\(operation)", "attempt": "\(attempt)", "error": "\(error.message)"])
                lastError = DOError(code: .transport, message: error.message, operation: operation)
                wait = retry.backoff(retry: attempt)
            }
            if lastError.code == .rateLimited { lastError.retryAfter = wait }
            if attempt > retry.maxRetries { throw lastError }
            if time.now().advanced(by: wait) > deadline {
                if lastError.code == .transport || lastError.code == .server || lastError.code == .rateLimited {
                    throw lastError
                }
                throw DOError(code: .deadlineExceeded, message: lastError.message, operation: operation)
            }
            logger.info(
                "Retrying DigitalOcean request",
                metadata: [
                    "do.operation": "\(operation)", "attempt": "\(attempt)",
                    "wait.ms": "\(Int(wait.milliseconds.rounded()))", "error": "\(lastError.message)",
                ])
            try await time.sleep(wait)
        }
    }

    /// The wait before retrying: what a 429 asks for (`Retry-After`, else until `ratelimit-reset`), else the
    /// backoff. Header values that are not numbers are ignored; absurd ones (∞, 1e19) are clamped, and a wait past
    /// the deadline then fails the call at once.
    private func retryWait(for response: TransportResponse, retry number: Int) -> Duration {
        guard response.status == 429 else { return retry.backoff(retry: number) }
        if let value = response.headers[.retryAfter], let seconds = Double(value.trimmedWhitespace),
            let wait = Duration.clamped(seconds: seconds)
        {
            return wait
        }
        if let value = response.headers[.rateLimitReset], let epoch = Double(value.trimmedWhitespace),
            let wait = Duration.clamped(seconds: epoch - time.wallClock().timeIntervalSince1970), wait > .zero
        {
            return wait
        }
        return retry.backoff(retry: number)
    }

    static func isRetryable(status: Int) -> Bool {
        status == 429 || (status >= 500 && status != 501)
    }

    static func error(from response: TransportResponse, operation: String) -> DOError {
        let code: DOError.Code
        switch response.status {
        case 401: code = .unauthorized
        case 403: code = .forbidden
        case 404: code = .notFound
        case 409: code = .conflict
        case 422: code = .unprocessable
        case 429: code = .rateLimited
        case 500...: code = .server
        default: code = .invalidResponse
        }
        if let body = try? JSONDecoder().decode(ErrorBody.self, from: Data(response.body)) {
            return DOError(
                code: code, status: response.status, id: body.id, message: body.message, requestID: body.requestID,
                operation: operation)
        }
        let text = String(decoding: response.body.prefix(200), as: UTF8.self)
        return DOError(
            code: code, status: response.status,
            message: text.isEmpty ? "HTTP \(response.status) with no body" : text, operation: operation)
    }

    static func percentEncode(_ value: String) -> String { value.percentEncodedQueryValue }
}

extension HTTPField.Name {
    /// DigitalOcean's rate-limit headers: requests left in the window, and when it resets (Unix seconds).
    static let rateLimitRemaining = HTTPField.Name("ratelimit-remaining")!
    static let rateLimitReset = HTTPField.Name("ratelimit-reset")!
}
