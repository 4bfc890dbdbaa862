import Foundation
import Glibc
import VolumePlugin

/// A client connection that sends byte for byte what it is told, to the plugin's unix socket or to a test server on
/// loopback TCP. Sends and receives have a 10 s limit, so a test that waits on one fails instead of hanging. The
/// calls block: a test that shares Swift's cooperative pool with the server it talks to runs them through
/// `blocking`, on a Dispatch queue of the connection's own.
public final class RawConnection: @unchecked Sendable {
    public let fd: Int32
    /// Bytes received and not yet taken as an answer.
    private var pending: [UInt8] = []
    private let queue = DispatchQueue(label: "raw-connection")

    /// Connects to a unix socket.
    public convenience init(path: String) throws {
        switch UnixSocket.connect(path) {
        case .success(let connected): self.init(fd: connected)
        case .failure(let error): throw ConnectionError("connect to \(path): \(error.reason)")
        }
    }

    /// Connects to 127.0.0.1 on `port`.
    public convenience init(port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw ConnectionError("connect to port \(port): \(reason)")
        }
        self.init(fd: fd)
    }

    private init(fd: Int32) {
        self.fd = fd
        var limit = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    public func close() { Glibc.close(fd) }

    /// Runs `work` on the connection's queue and awaits it.
    public func blocking<T: Sendable>(_ work: @escaping @Sendable (RawConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try work(self) }) }
        }
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw ConnectionError("send: \(String(cString: strerror(errno)))") }
            offset += sent
        }
    }

    /// An answer as it came: its status, head and body.
    public struct Answer: Sendable {
        public var status: Int
        public var head: String
        public var body: Data

        /// The body's JSON object; an answer without one throws.
        public func object() throws -> [String: Any] {
            guard let object = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
                throw ConnectionError("the answer has no JSON object: \(head)")
            }
            return object
        }
    }

    /// One answer, read by its Content-Length.
    public func receiveAnswer() throws -> Answer {
        while true {
            if let (head, body) = takeAnswer() {
                return Answer(status: Int(head.split(separator: " ")[1]) ?? 0, head: head, body: Data(body))
            }
            guard try receive() else { throw ConnectionError("the connection closed before a whole answer") }
        }
    }

    /// One answer as text, head and body; or, when the peer closes first, what came before it.
    public func receiveResponse() throws -> String {
        while true {
            if let (head, body) = takeAnswer() { return head + "\r\n\r\n" + String(decoding: body, as: UTF8.self) }
            guard try receive() else {
                defer { pending = [] }
                return String(decoding: pending, as: UTF8.self)
            }
        }
    }

    /// What arrives until the peer closes the connection.
    public func receiveToEnd() throws -> [UInt8] {
        while try receive() {}
        defer { pending = [] }
        return pending
    }

    /// The first whole answer among the bytes received (head, and a body of its Content-Length), taken from them.
    private func takeAnswer() -> (head: String, body: [UInt8])? {
        guard let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
        let head = String(decoding: pending[..<end.lowerBound], as: UTF8.self)
        let length = head.split(separator: "\r\n")
            .first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
        guard pending.count >= end.upperBound + length else { return nil }
        let body = Array(pending[end.upperBound..<(end.upperBound + length)])
        pending.removeFirst(end.upperBound + length)
        return (head, body)
    }

    /// Receives what is there; false when the peer has closed the connection.
    private func receive() throws -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { throw ConnectionError("recv: \(String(cString: strerror(errno)))") }
        pending += buffer[0..<count]
        return count > 0
    }
}

/// A raw connection failed: what was done, and the system's words.
public struct ConnectionError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
