import CCurl
import DigitalOcean
import FoundationEssentials
import Glibc
import HTTPTypes
import NIOConcurrencyHelpers
import NIOPosix
import Timekeeping

/// The production `HTTPTransport`: libcurl easy handles, run on a dedicated `NIOThreadPool` so the blocking
/// `curl_easy_perform` never occupies Swift's cooperative pool.
///
/// Handles are pooled and reused, so connections (and TLS sessions) to the same host are kept alive between calls.
/// TLS peers are always verified. Requests are never redirected. A response larger than `limits` allows is cut off
/// and fails with `TransportError.Kind.responseTooLarge`, so no server can make the plugin's memory grow without
/// bound. Thread safe.
public final class CurlTransport: HTTPTransport, Sendable {
    /// The most a response may carry.
    public struct Limits: Sendable {
        /// Body bytes. Default 4 MiB: a page of 200 volumes is about 200 KB.
        public var bodyBytes: Int
        /// Header bytes, all lines together. Default 64 KiB.
        public var headerBytes: Int

        public init(bodyBytes: Int = 4 << 20, headerBytes: Int = 64 << 10) {
            self.bodyBytes = bodyBytes
            self.headerBytes = headerBytes
        }
    }

    private let pool: NIOThreadPool
    private let idle = NIOLockedValueBox<[CurlEasy]>([])
    private let caInfo: String?
    private let limits: Limits

    /// - Parameters:
    ///   - threads: how many requests may block at once (default 4).
    ///   - caInfo: a CA bundle file, when the system default is not where libcurl looks (a minimal rootfs).
    ///   - limits: the largest response accepted.
    public init(threads: Int = 4, caInfo: String? = nil, limits: Limits = Limits()) {
        CurlGlobal.initialise()
        self.caInfo = caInfo
        self.limits = limits
        self.pool = NIOThreadPool(numberOfThreads: threads)
        self.pool.start()
    }

    deinit {
        pool.shutdownGracefully { _ in }
    }

    public func send(_ request: TransportRequest) async throws -> TransportResponse {
        let easy = try idle.withLockedValue { $0.popLast() } ?? CurlEasy()
        let caInfo = self.caInfo
        let limits = self.limits
        let result = try await pool.runIfActive { () -> Result<TransportResponse, TransportError> in
            easy.perform(request, caInfo: caInfo, limits: limits)
        }
        idle.withLockedValue { handles in
            if handles.count < 8 { handles.append(easy) }
        }
        return try result.get()
    }
}

private enum CurlGlobal {
    static let once: Void = { curl_global_init(Int(CURL_GLOBAL_ALL)) ; () }()
    static func initialise() { _ = once }
}

/// Owns one `CURL` easy handle and frees it on deinit. Used by one thread at a time: `CurlTransport` hands each
/// instance to a single request.
final class CurlEasy: @unchecked Sendable {
    private let handle: UnsafeMutableRawPointer
    private let errorBuffer: UnsafeMutablePointer<CChar>

    init() throws {
        guard let handle = curl_easy_init() else {
            throw TransportError(kind: .other, message: "libcurl could not create a handle")
        }
        self.handle = handle
        self.errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }

    /// Blocks until the exchange ends. Returns a transport error rather than throwing so the caller can recycle us.
    func perform(
        _ request: TransportRequest, caInfo: String?, limits: CurlTransport.Limits
    ) -> Result<TransportResponse, TransportError> {
        curl_easy_reset(handle)
        errorBuffer[0] = 0
        let sink = ResponseSink(limits: limits)
        let sinkPointer = Unmanaged.passRetained(sink)
        defer { sinkPointer.release() }

        var headerList: UnsafeMutablePointer<curl_slist>?
        for field in request.headers {
            headerList = curl_slist_append(headerList, "\(field.name): \(field.value)")
        }
        // No "Expect: 100-continue" round trip on POSTs.
        headerList = curl_slist_append(headerList, "Expect:")
        defer { curl_slist_free_all(headerList) }

        let timeoutMS = max(Int(request.timeout.milliseconds), 1)
        do_curl_setopt_string(handle, CURLOPT_URL, request.url)
        do_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        do_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, timeoutMS)
        do_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, min(timeoutMS, 10_000))
        do_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0)
        do_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1)
        do_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2)
        do_curl_setopt_long(handle, CURLOPT_PROTOCOLS, Int(CURLPROTO_HTTP | CURLPROTO_HTTPS))
        if let caInfo { do_curl_setopt_string(handle, CURLOPT_CAINFO, caInfo) }
        do_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer)
        do_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList)
        do_curl_setopt_write_callback(handle, CURLOPT_WRITEFUNCTION, curlBodyCallback)
        do_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, sinkPointer.toOpaque())
        do_curl_setopt_write_callback(handle, CURLOPT_HEADERFUNCTION, curlHeaderCallback)
        do_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, sinkPointer.toOpaque())

        switch request.method {
        case .get:
            do_curl_setopt_long(handle, CURLOPT_HTTPGET, 1)
        default:
            do_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method.rawValue)
        }
        if let body = request.body {
            do_curl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, body.count)
            body.withUnsafeBufferPointer { buffer in
                // COPYPOSTFIELDS copies, so the buffer need not outlive this call.
                buffer.withMemoryRebound(to: CChar.self) { chars in
                    _ = do_curl_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: chars.baseAddress ?? UnsafePointer(errorBuffer)))
                }
            }
        }

        let code = curl_easy_perform(handle)
        if let overflow = sink.overflow {
            return .failure(
                TransportError(
                    kind: .responseTooLarge,
                    message: "the response's \(overflow) exceeded \(overflow == "body" ? limits.bodyBytes : limits.headerBytes) bytes"))
        }
        guard code == CURLE_OK else {
            return .failure(transportError(code))
        }
        var status = 0
        do_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return .success(TransportResponse(status: status, headers: sink.headers, body: sink.body))
    }

    private func transportError(_ code: CURLcode) -> TransportError {
        let detail = String(cString: errorBuffer)
        let summary = String(cString: curl_easy_strerror(code))
        let message = detail.isEmpty ? summary : "\(summary): \(detail)"
        let kind: TransportError.Kind
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            kind = .connect
        case CURLE_OPERATION_TIMEDOUT:
            kind = .timeout
        case CURLE_GOT_NOTHING, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE:
            kind = .connectionLost
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE,
            CURLE_SSL_CERTPROBLEM:
            kind = .tls
        default:
            kind = .other
        }
        return TransportError(kind: kind, message: message)
    }
}

/// Collects one response's headers and body while libcurl runs its callbacks, up to the limits.
private final class ResponseSink {
    let limits: CurlTransport.Limits
    var headers: HTTPFields = [:]
    var headerBytes = 0
    var body: [UInt8] = []
    /// "body" or "headers" once one went past its limit (the callback then stops the transfer).
    var overflow: String?

    init(limits: CurlTransport.Limits) { self.limits = limits }
}

private let curlBodyCallback: do_curl_write_callback = { pointer, size, count, userdata in
    guard let pointer, let userdata else { return 0 }
    let sink = Unmanaged<ResponseSink>.fromOpaque(userdata).takeUnretainedValue()
    let length = size * count
    guard sink.body.count + length <= sink.limits.bodyBytes else {
        sink.overflow = "body"
        return 0
    }
    pointer.withMemoryRebound(to: UInt8.self, capacity: length) { bytes in
        sink.body.append(contentsOf: UnsafeBufferPointer(start: bytes, count: length))
    }
    return length
}

private let curlHeaderCallback: do_curl_write_callback = { pointer, size, count, userdata in
    guard let pointer, let userdata else { return 0 }
    let sink = Unmanaged<ResponseSink>.fromOpaque(userdata).takeUnretainedValue()
    let length = size * count
    sink.headerBytes += length
    guard sink.headerBytes <= sink.limits.headerBytes else {
        sink.overflow = "headers"
        return 0
    }
    let line = pointer.withMemoryRebound(to: UInt8.self, capacity: length) { bytes in
        String(decoding: UnsafeBufferPointer(start: bytes, count: length), as: UTF8.self)
    }
    if line.hasPrefix("HTTP/") {
        // A new status line (after 100 Continue, say): the headers so far belonged to another response.
        sink.headers = [:]
        sink.headerBytes = length
    } else if let colon = line.firstIndex(of: ":"), let name = HTTPField.Name(String(line[..<colon])) {
        // A line that is no valid field (a name with spaces, say) is not kept.
        sink.headers.append(HTTPField(name: name, value: String(line[line.index(after: colon)...].trimmedWhitespace)))
    }
    return length
}
