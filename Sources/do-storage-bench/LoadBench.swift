import ArgumentParser
import DOSimulator
import DigitalOcean
import Dispatch
import Foundation
import Glibc
import Hummingbird
import Logging
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

extension Bench {
    /// Get, List, Path and Capabilities against the plugin binary, next to a bare Hummingbird handler on the same
    /// kind of socket, over 1 and 16 keep-alive connections.
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
        let bareSocket = root + "/bare.sock"
        let bare = Process()
        bare.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        bare.arguments = ["--serve-bare", bareSocket]
        try bare.run()
        defer {
            bare.terminate()
            bare.waitUntilExit()
        }
        while !UnixSocket.isServed(bareSocket) {
            guard bare.isRunning else { throw ValidationError("the bare server did not start") }
            try await Task.sleep(for: .milliseconds(1))
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
        print("method         conns   do_storage                      bare Hummingbird handler        ratio")
        for connections in [1, 16] {
            var bareFigures: (rate: Double, p50: Double, p99: Double)?
            for (method, body) in methods {
                let request = SocketLoad.request(method, body: body)
                let answer = try await SocketLoad.answer(socket, request)
                let parsed = try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any]
                guard let parsed, (parsed["Err"] as? String ?? "").isEmpty else {
                    throw ValidationError("\(method) answers an error: \(answer)")
                }
                let ours = try await Self.figures(SocketLoad(socket: socket).run(request, requests: loadRequests, connections: connections))
                if bareFigures == nil {
                    bareFigures = try await Self.figures(SocketLoad(socket: bareSocket).run(request, requests: loadRequests, connections: connections))
                }
                let floor = bareFigures!
                let name = String(method.split(separator: ".").last!).padding(toLength: 14, withPad: " ", startingAt: 0)
                print(name + String(format: " %5d   %7.0f/s p50 %.3f p99 %.3f   %7.0f/s p50 %.3f p99 %.3f   %.2f×", connections, ours.rate, ours.p50, ours.p99,
                             floor.rate, floor.p50, floor.p99, ours.rate / floor.rate))
            }
        }
        print("  (a bare Go net/http handler is not measured: no Go toolchain here)")
    }

    static func figures(_ run: (latencies: [Double], seconds: Double)) -> (rate: Double, p50: Double, p99: Double) {
        let sorted = run.latencies.sorted()
        func at(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        return (Double(sorted.count) / run.seconds, at(0.5), at(0.99))
    }
}
