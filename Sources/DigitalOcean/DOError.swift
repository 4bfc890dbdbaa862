/// A failed DigitalOcean call, mapped at the boundary into a code and a sentence for the user.
///
/// The code set can grow without breaking callers: compare against the static members (`error.code == .notFound`).
/// The description never holds the access token: it is built from the method, the path and DigitalOcean's own message.
public struct DOError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unauthorized, forbidden, notFound, conflict, unprocessable, rateLimited, server, transport
            case deadlineExceeded, invalidResponse, actionErrored
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// 401: the access token is wrong, expired or revoked.
        public static let unauthorized = Code(.unauthorized)
        /// 403: the token lacks a scope, or an account limit was hit.
        public static let forbidden = Code(.forbidden)
        /// 404.
        public static let notFound = Code(.notFound)
        /// 409: a name in use, or a volume still attached.
        public static let conflict = Code(.conflict)
        /// 422: the request is valid JSON but DigitalOcean refuses it (already attached, pending event, limits).
        public static let unprocessable = Code(.unprocessable)
        /// 429 after every retry.
        public static let rateLimited = Code(.rateLimited)
        /// 5xx after every retry.
        public static let server = Code(.server)
        /// No response after every retry (connection refused, reset, timed out).
        public static let transport = Code(.transport)
        /// The call's overall deadline passed while retrying or waiting.
        public static let deadlineExceeded = Code(.deadlineExceeded)
        /// A response that is not what the API documents.
        public static let invalidResponse = Code(.invalidResponse)
        /// An asynchronous action ended `errored`.
        public static let actionErrored = Code(.actionErrored)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// The HTTP status, when there was a response.
    public var status: Int?
    /// DigitalOcean's error id (`not_found`, `unprocessable_entity`, `too_many_requests`, …).
    public var id: String?
    /// DigitalOcean's message, verbatim, or the transport's.
    public var message: String
    public var requestID: String?
    /// What was being done, e.g. "POST /v2/volumes/<id>/actions".
    public var operation: String
    /// For `.rateLimited`: how long until DigitalOcean admits requests again, as its headers said.
    public var retryAfter: Duration?

    public init(
        code: Code, status: Int? = nil, id: String? = nil, message: String, requestID: String? = nil,
        operation: String
    ) {
        self.code = code
        self.status = status
        self.id = id
        self.message = message
        self.requestID = requestID
        self.operation = operation
    }

    public var description: String {
        var text = "DigitalOcean API \(operation) failed"
        if let status { text += " (HTTP \(status))" }
        text += ": \(message)"
        if let requestID { text += " [request_id \(requestID)]" }
        if let advice { text += ". \(advice)" }
        return text
    }

    /// What the user can do about it, where there is something to say.
    public var advice: String? {
        switch code {
        case .unauthorized:
            return "Check ACCESS_TOKEN: it must be a valid DigitalOcean personal access token with read and write scope "
                + "(docker plugin disable <plugin>; docker plugin set <plugin> ACCESS_TOKEN=<token>; docker plugin enable <plugin>)"
        case .forbidden:
            if message.lowercased().contains("limit") {
                return "An account limit was reached (volumes, their total size, or snapshots): delete what is no longer "
                    + "needed, or ask DigitalOcean support to raise the limit"
            }
            let scope = TokenScopes.call(for: operation).map { "the scope \($0.scope), which \($0.method) \($0.path) needs" }
            return "The token lacks \(scope ?? "a scope this call needs"): give do_storage a token with the scopes "
                + "README.md lists under \"Token scopes\" (docker plugin disable <plugin>; docker plugin set <plugin> "
                + "ACCESS_TOKEN=<token>; docker plugin enable <plugin>)"
        case .rateLimited:
            if let retryAfter, retryAfter > .seconds(90) {
                return "The account's hourly API budget (5000 requests, shared by every client of the token) is spent; "
                    + "it frees up in about \(max(Int((retryAfter.seconds / 60).rounded()), 2)) minutes: try again then, and "
                    + "look for another client of the token that calls DigitalOcean in a loop"
            }
            return "The account's API rate limit (250 requests a minute, 5000 an hour, shared by every client of the token) "
                + "is exhausted; try again in a minute"
        case .transport, .server:
            return "DigitalOcean could not be reached or failed; try again shortly"
        default:
            return nil
        }
    }

    /// Which of the refusals the plugin acts on a 422 (or a 404 "Attachment not found") is: DigitalOcean gives them
    /// no id of their own, only their words.
    public struct Reason: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case alreadyAttached, pendingEvent, attachmentNotFound, snapshotRateLimit, dropletVolumeLimit
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// "This volume is already attached ...": a repeated attach.
        public static let alreadyAttached = Reason(.alreadyAttached)
        /// "Droplet already has a pending event.": another action on the droplet is still running.
        public static let pendingEvent = Reason(.pendingEvent)
        /// "Attachment not found" (422 or 404): detaching a volume that is not attached there.
        public static let attachmentNotFound = Reason(.attachmentNotFound)
        /// A second snapshot of a volume within DigitalOcean's 10 minutes.
        public static let snapshotRateLimit = Reason(.snapshotRateLimit)
        /// "cannot attach more volumes to the Droplet".
        public static let dropletVolumeLimit = Reason(.dropletVolumeLimit)

        public var description: String { base.rawValue }

        /// The words that tell each apart, lowercased, and the statuses they come with.
        fileprivate static let phrases: [(String, Set<Int>, Reason)] = [
            ("already attached", [422], .alreadyAttached), ("pending event", [422], .pendingEvent),
            ("attachment not found", [422, 404], .attachmentNotFound), ("snapshot rate limit", [422], .snapshotRateLimit),
            ("cannot attach more volumes", [422], .dropletVolumeLimit),
        ]
    }

    /// Which refusal the plugin acts on this is, or nil.
    public var reason: Reason? {
        guard let status else { return nil }
        let words = message.lowercased()
        return Reason.phrases.first { words.contains($0.0) && $0.1.contains(status) }?.2
    }
}
