import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing
import TestSupport
import VolumePlugin
import VolumeService

/// The plugin's connections as HTTP/1.1 has them, over loopback TCP to the plugin's server: pipelined requests answered in order (a slow Mount before an instant Get), the body limit, a path that is
/// no request, and `Connection: close`.
@Suite(.timeLimit(.minutes(5))) struct ConnectionTests {
    func withConnection(_ body: @escaping @Sendable (RawConnection, ServiceHarness.Node) async throws -> Void) async throws {
        let harness = try ServiceHarness(actionLatency: .milliseconds(200))
        try await harness.createVolume("data")
        let node = try await harness.node(droplet: 1001)
        _ = try await node.service.create(name: "data", options: [:])
        let controller = VolumeDriverController(driver: node.service, logger: Logger(label: "test"))
        try await withLiveServer(controller) { port in
            let connection = try RawConnection(port: port)
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
        // The attach stays in progress until the test clock moves: the Mount is still under way at the shutdown,
        // however slow the machine.
        let time = TestTime()
        let harness = try ServiceHarness(actionLatency: .seconds(5), testTime: time)
        try await harness.createVolume("data")
        let node = try await harness.node(droplet: 1001)
        _ = try await node.service.create(name: "data", options: [:])
        let controller = VolumeDriverController(driver: node.service, logger: Logger(label: "test"))
        let port = NIOLockedValueBox<Int?>(nil)
        // Once the server has stopped listening (the graceful shutdown has begun), the clock moves and the Mount ends.
        let finishing = Task {
            try await waitUntil("the server to start", within: .seconds(60)) { port.withLockedValue { $0 } != nil }
            let port = port.withLockedValue { $0 }!
            try await waitUntil("the shutdown to begin", within: .seconds(60)) {
                guard let probe = try? RawConnection(port: port) else { return true }
                probe.close()
                return false
            }
            try await time.advance(until: "the Mount") { node.filesystem.mounted[node.configuration.mountRoot + "/data"] != nil }
        }
        let connection = try await withLiveServer(controller) { serverPort in
            let connection = try RawConnection(port: serverPort)
            try await connection.blocking { try $0.send(ConnectionTests.request("VolumeDriver.Mount", #"{"Name":"data","ID":"a"}"#)) }
            try await waitUntil("the Mount's attach to start", within: .seconds(60)) {
                await harness.world.actionLog.contains { $0.type == "attach" }
            }
            port.withLockedValue { $0 = serverPort }
            return connection  // the test's end shuts the server down gracefully, the Mount still under way
        }
        defer { connection.close() }
        try await finishing.value
        let answer = try await connection.blocking { try $0.receiveAnswer() }
        #expect(answer.status == 200)
        #expect(try answer.object()["Mountpoint"] as? String == node.configuration.mountRoot + "/data")
        #expect(answer.head.lowercased().contains("connection: close"))
        #expect(try await connection.blocking { try $0.receiveToEnd() }.isEmpty)
    }
}
