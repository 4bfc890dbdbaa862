import Foundation
import NIOCore
import Logging
import Testing
import TestSupport
import VolumePlugin
import VolumeService

/// Hostile VolumeDriver requests: random and mutated JSON, wrong types, huge and truncated bodies, odd names and
/// unicode, unknown methods. Every answer is a JSON object with `Err` set on failure, and the plugin keeps serving.
@Suite(.timeLimit(.minutes(3))) struct ProtocolFuzzTests {
    static let methods = [
        "Plugin.Activate", "VolumeDriver.Capabilities", "VolumeDriver.Create", "VolumeDriver.Remove",
        "VolumeDriver.Mount", "VolumeDriver.Unmount", "VolumeDriver.Path", "VolumeDriver.Get", "VolumeDriver.List",
    ]

    static let oddNames = [
        "data", "pgdata", "app_data", "app-data", "My.Data", "..", "../etc", "/abs", "a/b", "", " ", "\u{0}",
        "ünïcode", "名前", "🙂", String(repeating: "x", count: 300), "a..b", "-lead", "9lives", "NUL\u{0}in",
    ]

    /// A JSON value of a random type, strings drawn from odd names.
    static func value(_ random: inout SeededGenerator, depth: Int = 0) -> Any {
        switch Int.random(in: 0..<8, using: &random) {
        case 0: return NSNull()
        case 1: return Int.random(in: Int.min...Int.max, using: &random)
        case 2: return Double.random(in: -1e300...1e300, using: &random)
        case 3: return Bool.random(using: &random)
        case 4 where depth < 3: return (0..<Int.random(in: 0..<4, using: &random)).map { _ in value(&random, depth: depth + 1) }
        case 5 where depth < 3:
            var object: [String: Any] = [:]
            for _ in 0..<Int.random(in: 0..<4, using: &random) {
                object[oddNames.randomElement(using: &random)!] = value(&random, depth: depth + 1)
            }
            return object
        default: return oddNames.randomElement(using: &random)!
        }
    }

    /// One request body: well-formed with random field types, mutated, truncated, huge, binary or empty.
    static func body(_ random: inout SeededGenerator) -> [UInt8] {
        var object: [String: Any] = [:]
        for key in ["Name", "ID", "Opts"] where Bool.random(using: &random) {
            object[key] = Int.random(in: 0..<3, using: &random) == 0
                ? value(&random) : (key == "Opts" ? ["size": oddNames.randomElement(using: &random)!] : oddNames.randomElement(using: &random)!)
        }
        let valid = Array((try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8))
        switch Int.random(in: 0..<10, using: &random) {
        case 0, 1, 2, 3: return valid
        case 4:  // Mutated bytes.
            var bytes = valid
            for _ in 0..<Int.random(in: 1...4, using: &random) where !bytes.isEmpty {
                bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            return bytes
        case 5: return Array(valid.prefix(Int.random(in: 0...valid.count, using: &random)))  // Truncated.
        case 6: return (0..<Int.random(in: 1..<64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
        case 7: return []
        case 8: return Array("[1,2,3]".utf8)
        default:  // Huge: past the 1 MiB the plugin reads, or just under it.
            let size = Bool.random(using: &random) ? (1 << 20) + 10 : (1 << 20) - 100
            return Array("{\"Name\":\"".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: size) + Array("\"}".utf8)
        }
    }

    @Test func tenThousandHostileRequestsAreAnsweredAndThePluginKeepsServing() async throws {
        let harness = try ServiceHarness(actionLatency: .milliseconds(1))
        try await harness.createVolume("data")
        let node = try await harness.node(droplet: 1001)
        var quiet = Logger(label: "fuzz")
        quiet.logLevel = .critical
        let controller = VolumeDriverController(driver: node.service, logger: quiet)
        let seed: UInt64 = 20_261_123
        var random = SeededGenerator(state: seed)
        var generated: [(String, [UInt8])] = []
        for _ in 0..<10_000 {
            let method = Int.random(in: 0..<50, using: &random) == 0
                ? "VolumeDriver.\(Self.oddNames.randomElement(using: &random)!.filter(\.isLetter))X"
                : Self.methods.randomElement(using: &random)!
            generated.append((method, Self.body(&random)))
        }
        let requests = generated
        // Straight to the controller, which decodes, calls and answers (the connection's handling has its own tests,
        // ConnectionTests and the real socket's HostileClientTests): ten thousand requests in a second or two.
        var outcomes: [String: Int] = [:]
        for (index, (method, body)) in requests.enumerated() {
            guard let answer = await controller.answer("/\(method)", body: ByteBuffer(bytes: body)) else {
                #expect(!Self.methods.contains(method), "request \(index) (seed \(seed)): \(method) has no route")
                outcomes["unknown method", default: 0] += 1
                continue
            }
            #expect(Self.methods.contains(method), "request \(index) (seed \(seed)): an unknown method was answered")
            let object = try? JSONSerialization.jsonObject(with: Data(answer.body.readableBytesView)) as? [String: Any]
            #expect(object != nil, "request \(index) (seed \(seed)) to \(method) answered no JSON object")
            let err = object?["Err"] as? String ?? ""
            if answer.status == .ok {
                #expect(err.isEmpty, "request \(index): 200 with an error")
                outcomes["ok", default: 0] += 1
            } else {
                #expect(answer.status == .internalServerError && !err.isEmpty, "request \(index) (seed \(seed)): \(answer.status) without Err")
                outcomes["Err", default: 0] += 1
            }
        }
        // Still serving, and the known volume is intact.
        let get = try #require(await controller.answer("/VolumeDriver.Get", body: ByteBuffer(string: #"{"Name":"data"}"#)))
        let object = try JSONSerialization.jsonObject(with: Data(get.body.readableBytesView)) as? [String: Any]
        #expect(get.status == .ok && (object?["Volume"] as? [String: Any])?["Name"] as? String == "data")
        print("protocol fuzz (seed \(seed)): \(requests.count) requests — \(outcomes.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))")
        #expect(outcomes.values.reduce(0, +) == 10_000)
        #expect((outcomes["ok"] ?? 0) > 0 && (outcomes["Err"] ?? 0) > 0)
        // Nothing a request did leaves a mount the registry does not hold.
        let held = Set(await node.service.records.values.compactMap(\.mountpoint))
        #expect(Set(node.filesystem.mounted.keys).isSubset(of: held))
    }
}
