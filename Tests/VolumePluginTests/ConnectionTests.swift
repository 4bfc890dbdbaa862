import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
import TestSupport
import VolumePlugin
import VolumeService

/// The plugin's connections as HTTP/1.1 has them, over loopback TCP to a live server with the plugin's channel
/// handler: pipelined requests answered in order (a slow Mount before an instant Get), the body limit, a path that is
/// no request, and `Connection: close`.
@Suite(.timeLimit(.minutes(1))) struct ConnectionTests {
    func withConnection(_ body: @escaping @Sendable (RawConnection, ServiceHarness.Node) async throws -> Void) async throws {
        let harness = try ServiceHarness(actionLatency: .milliseconds(200))
        try await harness.createVolume("data")
        let node = try await harness.node(droplet: 1001)
        _ = try await node.service.create(name: "data", options: [:])
        let controller = VolumeDriverController(driver: node.service, logger: Logger(label: "test"))
        try await Application(router: Router(), server: controller.server).test(.live) { client in
            let connection = try RawConnection(port: try #require(client.port))
            defer { connection.close() }
            try await body(connection, node)
        }
    }

    static func request(_ method: String, _ body: String, close: Bool = false) -> String {
        "POST /\(method) HTTP/1.1\r\nHost: plugin\r\nContent-Length: \(body.utf8.count)\r\n"
            + (close ? "Connection: close\r\n" : "") + "\r\n" + body
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withConnection { connection, node in
            // One write: a Mount that waits for a 200 ms attach, then lookups answered at once.
            let requests = Self.request("VolumeDriver.Mount", #"{"Name":"data","ID":"a"}"#)
                + Self.request("VolumeDriver.Get", #"{"Name":"data"}"#)
                + Self.request("VolumeDriver.Capabilities", "")
                + Self.request("VolumeDriver.Path", #"{"Name":"data"}"#)
            let answers = try await connection.blocking { connection in
                try connection.send(requests)
                return try (0..<4).map { _ in try connection.receiveAnswer() }
            }
            #expect(answers.map(\.status) == [200, 200, 200, 200])
            let mountpoint = node.configuration.mountRoot + "/data"
            #expect(try answers[0].object()["Mountpoint"] as? String == mountpoint)
            let volume = try #require(try answers[1].object()["Volume"] as? [String: Any])
            #expect(volume["Mountpoint"] as? String == mountpoint, "Get was answered after the Mount, not before")
            #expect(try answers[2].object()["Capabilities"] != nil)
            #expect(try answers[3].object()["Mountpoint"] as? String == mountpoint)
        }
    }

    @Test func aBodyPastTheLimitIsRefusedAndTheConnectionServesOn() async throws {
        try await withConnection { connection, _ in
            let huge = #"{"Name":""# + String(repeating: "a", count: VolumeDriverChannelHandler.bodyLimit) + #""}"#
            try await connection.blocking { try $0.send(Self.request("VolumeDriver.Get", huge)) }
            let refused = try await connection.blocking { try $0.receiveAnswer() }
            #expect(refused.status == 500)
            #expect(try (refused.object()["Err"] as? String)?.contains("more than \(VolumeDriverChannelHandler.bodyLimit) bytes") == true)
            try await connection.blocking { try $0.send(Self.request("VolumeDriver.Get", #"{"Name":"data"}"#)) }
            #expect(try await connection.blocking { try $0.receiveAnswer() }.object()["Volume"] != nil)
        }
    }

    @Test func aPathThatIsNoRequestIsNotFound() async throws {
        try await withConnection { connection, _ in
            try await connection.blocking { try $0.send(Self.request("VolumeDriver.Nope", "{}")) }
            let answer = try await connection.blocking { try $0.receiveAnswer() }
            #expect(answer.status == 404)
            #expect(try answer.object()["Err"] as? String == "no such request: POST /VolumeDriver.Nope")
            try await connection.blocking { try $0.send("GET /VolumeDriver.Get HTTP/1.1\r\nHost: plugin\r\n\r\n") }
            #expect(try await connection.blocking { try $0.receiveAnswer() }.status == 404, "the protocol's requests are POSTs")
        }
    }

    @Test func connectionCloseIsAnsweredThenClosed() async throws {
        try await withConnection { connection, _ in
            try await connection.blocking { try $0.send(Self.request("VolumeDriver.List", "{}", close: true)) }
            let answer = try await connection.blocking { try $0.receiveAnswer() }
            #expect(answer.status == 200)
            #expect(answer.head.lowercased().contains("connection: close"))
            #expect(try await connection.blocking { try $0.receiveToEnd() }.isEmpty, "the server closed the connection after the answer")
        }
    }
}

extension ConnectionTests {
    /// SIGTERM (a graceful shutdown) while a Mount is under way: the connection stays open until Docker has the
    /// Mount's answer, then closes. Without the handler's hold, the server would close it as idle at once.
    @Test func aMountUnderWayAtShutdownIsAnsweredBeforeTheConnectionCloses() async throws {
        let harness = try ServiceHarness(actionLatency: .milliseconds(500))
        try await harness.createVolume("data")
        let node = try await harness.node(droplet: 1001)
        _ = try await node.service.create(name: "data", options: [:])
        let controller = VolumeDriverController(driver: node.service, logger: Logger(label: "test"))
        let connection = try await Application(router: Router(), server: controller.server).test(.live) { client in
            let connection = try RawConnection(port: try #require(client.port))
            try await connection.blocking { try $0.send(ConnectionTests.request("VolumeDriver.Mount", #"{"Name":"data","ID":"a"}"#)) }
            try await waitUntil("the Mount's attach to start", within: .seconds(10)) {
                await harness.world.actionLog.contains { $0.type == "attach" }
            }
            return connection  // the test's end shuts the server down gracefully, the Mount still under way
        }
        defer { connection.close() }
        let answer = try await connection.blocking { try $0.receiveAnswer() }
        #expect(answer.status == 200)
        #expect(try answer.object()["Mountpoint"] as? String == node.configuration.mountRoot + "/data")
        #expect(answer.head.lowercased().contains("connection: close"))
        #expect(try await connection.blocking { try $0.receiveToEnd() }.isEmpty)
    }
}

/// A TCP connection to 127.0.0.1 with a 10 s receive timeout, so that a missing answer fails the test. Its blocking
/// calls run on a Dispatch queue of its own, never on Swift's cooperative pool, which the server under test needs.
final class RawConnection: @unchecked Sendable {
    let fd: Int32
    private var pending: [UInt8] = []
    private let queue = DispatchQueue(label: "raw-connection")

    /// Runs `work` on the connection's queue and awaits it.
    func blocking<T: Sendable>(_ work: @escaping @Sendable (RawConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try work(self) }) }
        }
    }

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ConnectionError("connect: \(String(cString: strerror(errno)))") }
    }

    func close() { Glibc.close(fd) }

    func send(_ text: String) throws {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw ConnectionError("send: \(String(cString: strerror(errno)))") }
            bytes = bytes.dropFirst(sent)
        }
    }

    /// An answer as it came: its status, head and body.
    struct Answer: Sendable {
        var status: Int
        var head: String
        var body: Data

        /// The body's JSON object; an answer without one fails the test.
        func object() throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any], "the answer has no JSON object: \(head)")
        }
    }

    /// One answer, read by its Content-Length.
    func receiveAnswer() throws -> Answer {
        while true {
            if let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: pending[..<end.lowerBound], as: UTF8.self)
                let length = head.split(separator: "\r\n")
                    .first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if pending.count >= end.upperBound + length {
                    let body = Data(pending[end.upperBound..<(end.upperBound + length)])
                    pending.removeFirst(end.upperBound + length)
                    return Answer(status: Int(head.split(separator: " ")[1]) ?? 0, head: head, body: body)
                }
            }
            guard try receive() else { throw ConnectionError("the connection closed before a whole answer") }
        }
    }

    /// What arrives until the server closes the connection.
    func receiveToEnd() throws -> [UInt8] {
        while try receive() {}
        defer { pending = [] }
        return pending
    }

    private func receive() throws -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { throw ConnectionError("recv: \(String(cString: strerror(errno)))") }
        pending += buffer[0..<count]
        return count > 0
    }
}

struct ConnectionError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
