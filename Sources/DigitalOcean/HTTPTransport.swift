import HTTPTypes

/// One HTTP request as the DigitalOcean clients send it: HTTPTypes' method and fields, and the whole URL (the
/// transport resolves and connects to it).
public struct TransportRequest: Sendable {
    public var method: HTTPRequest.Method
    public var url: String
    /// Sent in this order.
    public var headers: HTTPFields
    public var body: [UInt8]?
    /// The whole exchange, connect included, must finish within this time.
    public var timeout: Duration

    public init(
        method: HTTPRequest.Method, url: String, headers: HTTPFields = [:], body: [UInt8]? = nil,
        timeout: Duration = .seconds(30)
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

/// One HTTP response: its status code, HTTPTypes' fields (looked up by name, in any case), and its body.
public struct TransportResponse: Sendable {
    public var status: Int
    public var headers: HTTPFields
    public var body: [UInt8]

    public init(status: Int, headers: HTTPFields = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// A request that produced no HTTP response: the connection failed, was reset or timed out.
public struct TransportError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        case connect
        case timeout
        case connectionLost
        case tls
        /// The response was larger than the transport accepts: a broken or hostile server. Not retried.
        case responseTooLarge
        case other
    }
    public var kind: Kind
    /// What the transport said, without the request's headers (so never the access token).
    public var message: String

    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

/// The seam between the DigitalOcean clients and the network. The production implementation is libcurl
/// (`CurlTransport`); tests use it against the simulator too.
public protocol HTTPTransport: Sendable {
    /// Sends one request and returns the response, whatever its status. Throws `TransportError` when there is none.
    func send(_ request: TransportRequest) async throws -> TransportResponse
}
