import ArgumentParser
import DOSimulator
import DigitalOcean
import Dispatch
import Foundation
import Glibc
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import VolumePlugin

/// Keep-alive HTTP/1.1 over a unix socket, as the engine talks to a plugin: one blocking connection per thread.
struct SocketLoad {
    let socket: String

    /// Sends `requests` copies of `request` over `connections` connections at once. Returns each request's latency
    /// and the wall time of the whole run. The connections block on their sockets on Dispatch's threads, never on
    /// Swift's cooperative pool.
    func run(_ request: [UInt8], requests: Int, connections: Int) async throws -> (latencies: [Double], seconds: Double) {
        let perConnection = requests / connections
        return try await Self.offPool { [socket] in
            let results = Mutex([Result<[Double], any Error>](repeating: .success([]), count: connections))
            let started = ContinuousClock.now
            DispatchQueue.concurrentPerform(iterations: connections) { index in
                let result = Result { try Self.connection(socket, request, count: perConnection) }
                results.withLock { $0[index] = result }
            }
            let seconds = (ContinuousClock.now - started).seconds
            return (try results.withLock { try $0.flatMap { try $0.get() } }, seconds)
        }
    }

    /// Runs blocking socket work on a Dispatch thread and awaits its result.
    static func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result(catching: work)) }
        }
    }

    /// One connection: `count` requests one after another, each answer read in full (Content-Length).
    static func connection(_ path: String, _ request: [UInt8], count: Int) throws -> [Double] {
        guard case .success(let fd) = UnixSocket.connect(path) else { throw ValidationError("cannot connect to \(path)") }
        defer { close(fd) }
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        var buffer = [UInt8](repeating: 0, count: 65536)
        var pending: [UInt8] = []
        for _ in 0..<count {
            let started = ContinuousClock.now
            let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent == request.count else { throw ValidationError("cannot send to \(path)") }
            while true {
                if let length = Self.completeResponse(pending) {
                    pending.removeFirst(length)
                    break
                }
                let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard received > 0 else { throw ValidationError("\(path) closed the connection") }
                pending += buffer[0..<received]
            }
            latencies.append((ContinuousClock.now - started).milliseconds)
        }
        return latencies
    }

    /// The length of the first complete response in `bytes` (head and Content-Length body), if it is all there.
    /// Scans bytes without making strings: the generator must cost far less than the servers it measures.
    static func completeResponse(_ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBufferPointer { buffer -> Int? in
            let count = buffer.count
            var index = 0
            var lineStart = 0
            var length: Int?
            while index + 1 < count {
                guard buffer[index] == 13, buffer[index + 1] == 10 else {
                    index += 1
                    continue
                }
                if index == lineStart {  // the empty line: the head ends
                    guard let length else { return nil }
                    let total = index + 2 + length
                    return count >= total ? total : nil
                }
                // "content-length:" in any case: 15 bytes, compared with the ASCII case bit cleared.
                let name = Array("CONTENT-LENGTH:".utf8)
                if index - lineStart > name.count, (0..<name.count).allSatisfy({ buffer[lineStart + $0] & 0xDF == name[$0] & 0xDF }) {
                    var value = 0
                    for position in (lineStart + name.count)..<index where buffer[position] >= 48 && buffer[position] <= 57 {
                        value = value * 10 + Int(buffer[position] - 48)
                    }
                    length = value
                }
                index += 2
                lineStart = index
            }
            return nil
        }
    }

    /// One request on a connection of its own, and the answer's body.
    static func answer(_ path: String, _ request: [UInt8]) async throws -> String {
        try await offPool { try blockingAnswer(path, request) }
    }

    private static func blockingAnswer(_ path: String, _ request: [UInt8]) throws -> String {
        guard case .success(let fd) = UnixSocket.connect(path) else { throw ValidationError("cannot connect to \(path)") }
        defer { close(fd) }
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while completeResponse(bytes) == nil {
            let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard received > 0 else { break }
            bytes += buffer[0..<received]
        }
        guard let end = bytes.firstRange(of: [13, 10, 13, 10]) else { return "" }
        return String(decoding: bytes[end.upperBound...], as: UTF8.self)
    }

    static func request(_ method: String, body: String) -> [UInt8] {
        Array("POST /\(method) HTTP/1.1\r\nHost: plugin\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
    }
}

/// A Hummingbird server that answers every POST with a fixed body: the floor any handler on this stack pays.
enum BareServer {
    static func serve(socket: String) async throws {
        let router = Router()
        let body = ByteBuffer(string: #"{"Err":""}"#)
        router.post("/**") { _, _ in
            Response(status: .ok, headers: [.contentType: VolumeDriverController.contentType], body: .init(byteBuffer: body))
        }
        unlink(socket)
        var logger = Logger(label: "bare")
        logger.logLevel = .error
        let app = Application(
            router: router, configuration: .init(address: .unixDomainSocket(path: socket), serverName: "bare"), logger: logger)
        try await app.runService()
    }
}

/// A bare handler in a process of its own, answering on a unix socket: the floor the load step compares with.
struct BareHandler {
    let name: String
    let socket: String
    let process: Process

    /// Starts `executable arguments… socket` and waits until the socket is served.
    static func start(_ name: String, executable: String, arguments: [String], socket: String) async throws -> BareHandler {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments + [socket]
        try process.run()
        let handler = BareHandler(name: name, socket: socket, process: process)
        do {
            while !UnixSocket.isServed(socket) {
                guard process.isRunning else { throw ValidationError("the \(name) did not start") }
                try await Task.sleep(for: .milliseconds(1))
            }
        } catch {
            handler.stop()
            throw error
        }
        return handler
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

extension Bench {
    /// Get, List, Path and Capabilities against the plugin binary, next to a bare Hummingbird handler (and a bare Go
    /// net/http one, given --bare-go-binary) on the same kind of socket, over 1 and 16 keep-alive connections.
    func measureLoad(_ binary: String, running: RunningSimulator, world: SimulatorWorld, root: String) async throws {
        for index in 0..<5 {
            _ = try await world.createVolume(
                VolumeCreateRequest(name: "load-\(index)", sizeGigabytes: 1, region: "nyc1", filesystemType: "ext4"))
        }
        let socket = root + "/load.sock"
        let (plugin, _) = try await startPlugin(
            binary, running: running, socket: socket, state: root + "/loadstate", mountRoot: root + "/loadmnt",
            deviceDirectory: root + "/by-id", logLevel: "info")
        defer {
            plugin.terminate()
            plugin.waitUntilExit()
        }
        var bares = [try await BareHandler.start(
            "bare Hummingbird handler", executable: CommandLine.arguments[0], arguments: ["--serve-bare"], socket: root + "/bare.sock")]
        defer { bares.forEach { $0.stop() } }
        bares.append(try await BareHandler.start(
            "bare SwiftNIO handler", executable: CommandLine.arguments[0], arguments: ["--serve-bare-nio"], socket: root + "/bare-nio.sock"))
        if let bareGoBinary {
            bares.append(try await BareHandler.start("bare Go net/http handler", executable: bareGoBinary, arguments: [], socket: root + "/bare-go.sock"))
        }
        // The plugin adopts the volumes (docker volume create of existing DigitalOcean volumes), so the lookups below
        // find them.
        for name in (0..<5).map({ "load-\($0)" }) {
            let answer = try await SocketLoad.answer(socket, SocketLoad.request("VolumeDriver.Create", body: #"{"Name":"\#(name)"}"#))
            guard answer.hasSuffix(#"{"Err":""}"#) else { throw ValidationError("Create \(name) failed: \(answer)") }
        }
        let methods: [(String, String)] = [
            ("VolumeDriver.Get", #"{"Name":"load-1"}"#), ("VolumeDriver.List", "{}"),
            ("VolumeDriver.Path", #"{"Name":"load-2"}"#), ("VolumeDriver.Capabilities", "{}"),
        ]
        print("load over the unix socket, keep-alive HTTP/1.1, \(loadRequests) requests per row (requests/s, p50 and p99 in ms):")
        print("method         conns   do_storage" + bares.map { "                  \($0.name): figures, ratio" }.joined())
        var summary: [String] = []
        for connections in [1, 16] {
            var floors: [(rate: Double, p50: Double, p99: Double)] = []
            var lowest = Double.infinity
            var worseP99: [String] = []
            for (method, body) in methods {
                let request = SocketLoad.request(method, body: body)
                let answer = try await SocketLoad.answer(socket, request)
                let parsed = try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any]
                guard let parsed, (parsed["Err"] as? String ?? "").isEmpty else {
                    throw ValidationError("\(method) answers an error: \(answer)")
                }
                let ours = try await Self.figures(SocketLoad(socket: socket).run(request, requests: loadRequests, connections: connections))
                if floors.isEmpty {
                    for bare in bares {
                        floors.append(try await Self.figures(
                            SocketLoad(socket: bare.socket).run(request, requests: loadRequests, connections: connections)))
                    }
                }
                let name = String(method.split(separator: ".").last!).padding(toLength: 14, withPad: " ", startingAt: 0)
                print(name + String(format: " %5d   %7.0f/s p50 %.3f p99 %.3f", connections, ours.rate, ours.p50, ours.p99)
                    + floors.map { String(format: "   %7.0f/s p50 %.3f p99 %.3f %.2f×", $0.rate, $0.p50, $0.p99, ours.rate / $0.rate) }.joined())
                // The floor of record: the Go handler where there is one, else Hummingbird's.
                let floor = floors.last!
                lowest = min(lowest, ours.rate / floor.rate)
                if ours.p99 > floor.p99 { worseP99.append(name.trimmingCharacters(in: .whitespaces)) }
            }
            summary.append(
                String(format: "%d connection%@: at least %.2f× the %@'s rate", connections, connections == 1 ? "" : "s", lowest, bares.last!.name)
                    + (worseP99.isEmpty ? ", p99 no worse than its" : ", p99 above its for \(worseP99.joined(separator: ", "))"))
        }
        print("  " + summary.joined(separator: "; ") + " (target: ≥ 0.7× a bare Go net/http handler, p99 at 16 no worse)")
        if bareGoBinary == nil {
            print("  (no bare Go net/http handler measured: install golang-go, and scripts/bench builds one)")
        }
    }

    static func figures(_ run: (latencies: [Double], seconds: Double)) -> (rate: Double, p50: Double, p99: Double) {
        let sorted = run.latencies.sorted()
        func at(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        return (Double(sorted.count) / run.seconds, at(0.5), at(0.99))
    }
}

/// A SwiftNIO HTTP/1.1 server that answers every request with a fixed body from its channel handler, without Swift
/// Concurrency: the floor of the event loop and NIO's HTTP coding under Hummingbird.
enum BareNIOServer {
    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let body = ByteBuffer(string: #"{"Err":""}"#)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head, .body:
                break
            case .end:
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: VolumeDriverController.contentType)
                headers.add(name: "Content-Length", value: "\(body.readableBytes)")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }

    static func serve(socket: String) async throws {
        unlink(socket)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler())
                }
            }
            .bind(unixDomainSocketPath: socket).get()
        try await channel.closeFuture.get()
    }
}
