import FoundationEssentials
import Glibc
import Logging
import Timekeeping
import TypedErrors

/// This droplet's identity.
public struct DropletIdentity: Sendable, Equatable {
    public var id: Int
    public var region: String

    public init(id: Int, region: String) {
        self.id = id
        self.region = region
    }
}

/// Reads the droplet's id and region from the metadata service (`http://169.254.169.254/metadata/v1`).
///
/// Each request times out after `timeout` (default 2 s) and is tried `attempts` times (default 3), 500 ms apart.
public struct MetadataClient: Sendable {
    public var baseURL: String
    public var timeout: Duration
    public var attempts: Int
    private let transport: any HTTPTransport
    private let time: TimeSource

    public init(
        baseURL: String, transport: any HTTPTransport, timeout: Duration = .seconds(2), attempts: Int = 3,
        time: TimeSource = .system
    ) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.transport = transport
        self.timeout = timeout
        self.attempts = attempts
        self.time = time
    }

    /// Reads this droplet's id and region, retrying a failed read.
    ///
    /// - Returns: The droplet's id and region.
    /// - Throws: `MetadataError` `.unreachable` after every attempt failed, `.invalidAnswer` for an answer that is no id or region.
    public func identity() async throws -> DropletIdentity {
        let idText = try await fetch("id")
        guard let id = Int(idText) else {
            throw MetadataError(.invalidAnswer, "the metadata service at \(baseURL)/id answered \"\(idText.prefix(40))\", not a droplet id")
        }
        let region = try await fetch("region")
        guard !region.isEmpty else {
            throw MetadataError(.invalidAnswer, "the metadata service at \(baseURL)/region answered an empty region")
        }
        return DropletIdentity(id: id, region: region)
    }

    private func fetch(_ item: String) async throws -> String {
        let url = "\(baseURL)/\(item)"
        var last = ""
        for attempt in 1...max(attempts, 1) {
            do {
                let response = try await transport.send(TransportRequest(method: .get, url: url, timeout: timeout))
                if response.status == 200 {
                    return String(decoding: response.body, as: UTF8.self).trimmedWhitespace
                }
                last = "HTTP \(response.status)"
            } catch {
                last = "\(error)"
            }
            if attempt < attempts { try await time.sleep(.milliseconds(500)) }
        }
        throw MetadataError(
            .unreachable, "cannot read the droplet's \(item) from the metadata service at \(url) (\(last)); "
                + "run the plugin on a DigitalOcean droplet, or set DROPLET_ID and DROPLET_REGION")
    }
}

/// The droplet's identity could not be read from the metadata service.
public typealias MetadataError = CodedError<MetadataErrorCode>

/// What kind of `MetadataError` it is.
public struct MetadataErrorCode: Hashable, Sendable, CustomStringConvertible {
    private enum Base: String, Hashable, Sendable {
        case unreachable, invalidAnswer
    }
    private let base: Base
    private init(_ base: Base) { self.base = base }

    /// No answer, or not HTTP 200, after every attempt: not on a droplet, or the service is down.
    public static let unreachable = Self(.unreachable)
    /// An answer that is not a droplet id or a region.
    public static let invalidAnswer = Self(.invalidAnswer)

    public var description: String { base.rawValue }
}
