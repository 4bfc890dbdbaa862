import ArgumentParser
import DOSimulator
import DigitalOcean
import Dispatch
import Foundation
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Subprocess
import Synchronization
import SystemPackage
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
    /// Get, List, Path and Capabilities against the plugin binary, next to a bare SwiftNIO handler (and a bare Go
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
            "bare SwiftNIO handler", executable: CommandLine.arguments[0], arguments: ["--serve-bare-nio"], socket: root + "/bare-nio.sock")]
        defer { bares.forEach { $0.stop() } }
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
        let client = goClientBinary.map { "the light Go client (\($0))" } ?? "the bench's own Dispatch-thread client"
        print("load over the unix socket, keep-alive HTTP/1.1, \(loadRequests) requests per row, \(loadRounds) rounds alternating the servers, sent by \(client)")
        print("(requests/s and p99 in ms: the median round; ratio: do_storage's rate over the handler's, lowest–highest of the rounds):")
        print("method         conns   do_storage" + bares.map { "                  \($0.name)" }.joined())
        var summary: [String] = []
        for connections in [1, 16] {
            var lowest = Double.infinity
            var highest = 0.0
            var worseP99: [String] = []
            for (method, body) in methods {
                let request = SocketLoad.request(method, body: body)
                let answer = try await SocketLoad.answer(socket, request)
                let parsed = try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any]
                guard let parsed, (parsed["Err"] as? String ?? "").isEmpty else {
                    throw ValidationError("\(method) answers an error: \(answer)")
                }
                var ours: [Figures] = []
                var floors = [[Figures]](repeating: [], count: bares.count)
                for _ in 0..<loadRounds {
                    ours.append(try await load(socket, request, connections: connections))
                    for (index, bare) in bares.enumerated() {
                        floors[index].append(try await load(bare.socket, request, connections: connections))
                    }
                }
                let median = Self.median(ours)
                let name = String(method.split(separator: ".").last!).padding(toLength: 14, withPad: " ", startingAt: 0)
                print(name + String(format: " %5d   %7.0f/s p99 %.3f", connections, median.rate, median.p99)
                    + floors.map { floor in
                        let ratios = zip(ours, floor).map { $0.rate / $1.rate }
                        return String(format: "   %7.0f/s p99 %.3f %.2f–%.2f×", Self.median(floor).rate, Self.median(floor).p99,
                            ratios.min()!, ratios.max()!)
                    }.joined())
                // The floor of record: the Go handler where there is one, else SwiftNIO's.
                let ratios = zip(ours, floors.last!).map { $0.rate / $1.rate }
                lowest = min(lowest, ratios.min()!)
                highest = max(highest, ratios.max()!)
                if median.p99 > Self.median(floors.last!).p99 { worseP99.append(name.trimmingCharacters(in: .whitespaces)) }
            }
            summary.append(
                String(format: "%d connection%@: %.2f–%.2f× the %@'s rate", connections, connections == 1 ? "" : "s", lowest, highest, bares.last!.name)
                    + (worseP99.isEmpty ? ", p99 no worse than its" : ", p99 above its for \(worseP99.joined(separator: ", "))"))
        }
        print("  " + summary.joined(separator: "; ") + " (target: ≥ 0.7× a bare Go net/http handler)")
        if bareGoBinary == nil {
            print("  (no bare Go net/http handler measured: install golang-go, and scripts/bench builds one)")
        }
    }

    typealias Figures = (rate: Double, p50: Double, p99: Double)

    /// One row's round: `request` sent over `connections` connections to `socket`, by the Go client when there is one.
    func load(_ socket: String, _ request: [UInt8], connections: Int) async throws -> Figures {
        guard let goClientBinary else {
            return Self.figures(try await SocketLoad(socket: socket).run(request, requests: loadRequests, connections: connections))
        }
        let result = try await Subprocess.run(
            .path(FilePath(goClientBinary)),
            arguments: [socket, String(connections), String(loadRequests), String(decoding: request, as: UTF8.self)],
            output: .string(limit: 4096), error: .string(limit: 4096))
        let fields = result.standardOutput.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard result.terminationStatus.isSuccess, fields.count == 3 else {
            throw ValidationError("the Go load client failed on \(socket): \(result.standardError)")
        }
        return (fields[0], fields[1], fields[2])
    }

    /// The round with the median rate.
    static func median(_ rounds: [Figures]) -> Figures { rounds.sorted { $0.rate < $1.rate }[rounds.count / 2] }

    static func figures(_ run: (latencies: [Double], seconds: Double)) -> (rate: Double, p50: Double, p99: Double) {
        let sorted = run.latencies.sorted()
        func at(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        return (Double(sorted.count) / run.seconds, at(0.5), at(0.99))
    }
}

/// A SwiftNIO HTTP/1.1 server that answers every request with a fixed body from its channel handler, without Swift
/// Concurrency: the floor of the event loop and NIO's HTTP coding, which the plugin's server is built on.
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
