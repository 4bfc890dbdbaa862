import DOSimulator
import DigitalOcean
import Foundation
import NIOConcurrencyHelpers
import Testing
import TestSupport

/// The torture run: real plugin processes for three droplets, real loop devices, udev and the simulator. A workload
/// moves volumes between droplets, appending checksummed, fsync'd records to them; a nemesis SIGKILLs plugins (also
/// while a Mount is in flight), starts them again, and injects DigitalOcean's faults. `TORTURE_SECONDS` sets how long
/// it runs (`make test`: 120, `make torture`: 600); `TORTURE_SEED` replays a seed's choices. Checked throughout: never
/// mounted on two droplets, no acknowledged record lost or corrupt, every call answered within Docker's 120 s; at the
/// end: nothing mounted or attached without a reference, and every plugin alive.
@Suite(.serialized) struct TortureTests {
    static var seconds: Int? { ProcessInfo.processInfo.environment["TORTURE_SECONDS"].flatMap(Int.init) }

    @Test(.enabled(if: E2E.available && seconds != nil, "TORTURE_SECONDS is not set, or no root, udev and loop devices"))
    func volumesMoveBetweenDropletsWhilePluginsAreKilled() async throws {
        let seconds = Self.seconds ?? 120
        let seed = ProcessInfo.processInfo.environment["TORTURE_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...1_000_000)
        print("torture: seed \(seed), \(seconds) s")
        try await Lab.withLab { lab in
            let torture = try await Torture(lab: lab, seed: seed)
            let report = try await torture.run(for: .seconds(seconds))
            print("torture: " + report.summary)
            #expect(report.violations.isEmpty, "violations (seed \(seed)): \(report.violations)")
            #expect(report.moves > 0 && report.records > 0 && report.kills > 0, "the run did work: \(report.summary)")
        }
    }
}

/// What the run did and found.
struct TortureReport: Sendable {
    var mounts = 0
    var moves = 0
    var records = 0
    var kills = 0
    var killsDuringMount = 0
    var faults: [String: Int] = [:]
    var failedCalls = 0
    var slowestCall: Duration = .zero
    var slowestCallName = ""
    var violations: [String] = []

    var summary: String {
        "\(mounts) mounts, \(moves) moves between droplets, \(records) records appended and verified, \(kills) plugins "
            + "killed (\(killsDuringMount) with a Mount in flight), faults: "
            + faults.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            + "; \(failedCalls) calls answered with an error; slowest call \(slowestCallName) "
            + String(format: "%.1f s", slowestCall.seconds) + "; \(violations.count) violations"
    }
}

final class Torture: @unchecked Sendable {
    static let droplets = [1001, 1002, 1003]
    static let volumes = ["t0", "t1", "t2"]
    let lab: Lab
    let seed: UInt64
    private let state = NIOLockedValueBox(TortureReport())
    /// Each droplet's plugin as it runs now.
    private let plugins = NIOLockedValueBox<[Int: Plugin]>([:])
    /// Droplets with a Mount in flight.
    private let mounting = NIOLockedValueBox<Set<Int>>([])
    /// Records acknowledged (fsync'd) per volume: their sequence numbers.
    private let acknowledged = NIOLockedValueBox<[String: Set<Int>]>([:])

    init(lab: Lab, seed: UInt64) async throws {
        self.lab = lab
        self.seed = seed
        for droplet in Self.droplets { try await lab.addDroplet(droplet) }
        for volume in Self.volumes { try await lab.createVolume(volume) }
        for droplet in Self.droplets {
            let plugin = try await start(droplet)
            for volume in Self.volumes {
                let answer = try await plugin.call("VolumeDriver.Create", #"{"Name":"\#(volume)"}"#)
                guard (answer["Err"] as? String ?? "").isEmpty else { throw LabError("Create \(volume): \(answer)") }
            }
        }
    }

    func start(_ droplet: Int) async throws -> Plugin {
        let plugin = try await lab.startPlugin(droplet: droplet, environment: ["HANDOFF_TIMEOUT": "5s", "LOG_LEVEL": "info"])
        plugins.withLockedValue { $0[droplet] = plugin }
        return plugin
    }

    func plugin(_ droplet: Int) -> Plugin? { plugins.withLockedValue { $0[droplet] } }

    func note(_ change: (inout TortureReport) -> Void) { state.withLockedValue(change) }

    func violation(_ text: String) { note { $0.violations.append(text) } }

    /// One call to a droplet's plugin, timed: Docker gives every call 120 s.
    func call(_ droplet: Int, _ method: String, _ body: String) async -> (answer: [String: Any]?, error: String?) {
        guard let plugin = plugin(droplet) else { return (nil, "no plugin") }
        let started = ContinuousClock.now
        let answer = try? await plugin.call(method, body)
        let took = ContinuousClock.now - started
        note {
            if took > $0.slowestCall {
                $0.slowestCall = took
                $0.slowestCallName = "\(method) on \(droplet)"
            }
        }
        if took > .seconds(120) { violation("\(method) on \(droplet) took \(took), past Docker's 120 s") }
        guard let answer else { return (nil, "no answer (the plugin was killed)") }
        if let err = answer["Err"] as? String, !err.isEmpty {
            note { $0.failedCalls += 1 }
            return (answer, err)
        }
        return (answer, nil)
    }

    func run(for duration: Duration) async throws -> TortureReport {
        let end = ContinuousClock.now + duration
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, volume) in Self.volumes.enumerated() {
                group.addTask { try await self.workload(volume, seed: self.seed &+ UInt64(index), until: end) }
            }
            group.addTask { try await self.nemesis(seed: self.seed &+ 100, until: end) }
            group.addTask { try await self.watchSafety(until: end) }
            try await group.waitForAll()
        }
        try await windDown()
        return state.withLockedValue { $0 }
    }

    // MARK: The workload

    /// Mounts the volume on a random droplet, checks every acknowledged record, appends more (each fsync'd before
    /// it counts), unmounts; again until the end.
    func workload(_ volume: String, seed: UInt64, until end: ContinuousClock.Instant) async throws {
        var random = SeededGenerator(seed: seed)
        var last: Int?
        var sequence = 0
        var round = 0
        while ContinuousClock.now < end {
            round += 1
            let droplet = Self.droplets.randomElement(using: &random)!
            let id = "\(volume)-\(round)"
            mounting.withLockedValue { _ = $0.insert(droplet) }
            let (answer, error) = await call(droplet, "VolumeDriver.Mount", #"{"Name":"\#(volume)","ID":"\#(id)"}"#)
            mounting.withLockedValue { _ = $0.remove(droplet) }
            guard error == nil, let mountpoint = answer?["Mountpoint"] as? String else {
                // A Mount cut short by a kill may have taken effect: the engine's clean-up releases the id.
                if answer == nil { await release(volume, id: id, on: droplet) }
                try await Task.sleep(for: .milliseconds(50))
                continue
            }
            note {
                $0.mounts += 1
                if let last, last != droplet { $0.moves += 1 }
            }
            last = droplet
            verify(volume, at: mountpoint, on: droplet)
            for _ in 0..<Int.random(in: 1...5, using: &random) {
                sequence += 1
                if append(volume, sequence: sequence, random: &random, at: mountpoint) {
                    acknowledged.withLockedValue { _ = $0[volume, default: []].insert(sequence) }
                    note { $0.records += 1 }
                }
            }
            await release(volume, id: id, on: droplet)
        }
    }

    /// Unmounts until the droplet's plugin answers (it may be being restarted).
    func release(_ volume: String, id: String, on droplet: Int) async {
        for _ in 0..<600 {
            let (answer, error) = await call(droplet, "VolumeDriver.Unmount", #"{"Name":"\#(volume)","ID":"\#(id)"}"#)
            if answer != nil && (error == nil || error!.contains("keeps trying")) { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
        violation("Unmount of \(volume) (\(id)) on \(droplet) never succeeded")
    }

    /// A record: `<sequence> <checksum> <payload>`.
    static func line(_ volume: String, _ sequence: Int, _ payload: String) -> String {
        "\(sequence) \(checksum("\(volume):\(sequence):\(payload)")) \(payload)\n"
    }

    static func checksum(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(hash, radix: 16)
    }

    /// Appends one record and fsyncs it; true once it is on the device.
    func append(_ volume: String, sequence: Int, random: inout SeededGenerator, at mountpoint: String) -> Bool {
        let payload = (0..<16).map { _ in String(UInt8.random(in: 0...255, using: &random), radix: 16) }.joined()
        let fd = open(mountpoint + "/records.log", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            violation("cannot open the records of \(volume) at \(mountpoint): \(String(cString: strerror(errno)))")
            return false
        }
        defer { close(fd) }
        let bytes = Array(Self.line(volume, sequence, payload).utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            violation("cannot append to the records of \(volume): \(String(cString: strerror(errno)))")
            return false
        }
        return true
    }

    /// Every acknowledged record is there and intact.
    func verify(_ volume: String, at mountpoint: String, on droplet: Int) {
        let text = (try? String(contentsOfFile: mountpoint + "/records.log", encoding: .utf8)) ?? ""
        var found: Set<Int> = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard fields.count == 3, let sequence = Int(fields[0]), fields[1] == Self.checksum("\(volume):\(sequence):\(fields[2])")
            else {
                violation("a corrupt record in \(volume) on \(droplet): \(line.prefix(80))")
                continue
            }
            found.insert(sequence)
        }
        let missing = acknowledged.withLockedValue { $0[volume] ?? [] }.subtracting(found)
        if !missing.isEmpty { violation("\(volume) on \(droplet) lost acknowledged records \(missing.sorted().prefix(10))") }
    }

    // MARK: The nemesis

    func nemesis(seed: UInt64, until end: ContinuousClock.Instant) async throws {
        var random = SeededGenerator(seed: seed)
        while ContinuousClock.now < end {
            try await Task.sleep(for: .milliseconds(Int64.random(in: 1000...4000, using: &random)))
            guard ContinuousClock.now < end else { break }
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<4:
                let droplet = Self.droplets.randomElement(using: &random)!
                let duringMount = Bool.random(using: &random)
                if duringMount {
                    // Wait (a little) for a Mount in flight there, then kill in the middle of it.
                    for _ in 0..<50 where !mounting.withLockedValue({ $0.contains(droplet) }) {
                        try await Task.sleep(for: .milliseconds(20))
                    }
                    try await Task.sleep(for: .milliseconds(Int64.random(in: 0...300, using: &random)))
                }
                let inFlight = mounting.withLockedValue { $0.contains(droplet) }
                plugin(droplet)?.kill9()
                note {
                    $0.kills += 1
                    if inFlight { $0.killsDuringMount += 1 }
                }
                _ = try await start(droplet)
            case 4:
                lab.server.inject(Fault(.status(503), count: 3))
                note { $0.faults["503 burst", default: 0] += 1 }
            case 5:
                lab.server.inject(Fault(.status(500), count: 2))
                note { $0.faults["500 burst", default: 0] += 1 }
            case 6:
                lab.server.inject(Fault(.tooManyRequests(retryAfter: 1), count: 2))
                note { $0.faults["429 with Retry-After", default: 0] += 1 }
            case 7:
                lab.server.inject(Fault(.tooManyRequestsWithHeaders(["ratelimit-reset": "0"]), count: 1))
                note { $0.faults["429 without Retry-After", default: 0] += 1 }
            case 8:
                await lab.world.failNextActions(1)
                note { $0.faults["errored action", default: 0] += 1 }
            default:
                await lab.world.setActionLatency(.seconds(3))
                note { $0.faults["slow actions", default: 0] += 1 }
                try await Task.sleep(for: .seconds(3))
                await lab.world.setActionLatency(.milliseconds(200))
            }
        }
    }

    // MARK: Checks

    /// The volumes mounted under each droplet's mount root now.
    func mounted() -> [String: [Int]] {
        var found: [String: [Int]] = [:]
        for entry in Lab.mountinfo() {
            for droplet in Self.droplets {
                let root = "\(lab.root)/droplet-\(droplet)/mnt/"
                guard entry.mountpoint.hasPrefix(root) else { continue }
                let name = String(entry.mountpoint.dropFirst(root.count))
                if !(found[name]?.contains(droplet) ?? false) { found[name, default: []].append(droplet) }
            }
        }
        return found
    }

    /// Every 200 ms: no volume mounted on two droplets, none attached to two.
    func watchSafety(until end: ContinuousClock.Instant) async throws {
        while ContinuousClock.now < end {
            for (name, droplets) in mounted() where droplets.count > 1 {
                violation("\(name) is mounted on droplets \(droplets)")
            }
            for volume in await lab.world.listVolumes(name: nil, region: nil) where volume.dropletIDs.count > 1 {
                violation("\(volume.name) is attached to \(volume.dropletIDs)")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The end: every plugin alive; after the background releases, nothing mounted or attached (no reference is
    /// left: the workload released all it held).
    func windDown() async throws {
        for droplet in Self.droplets {
            guard let plugin = plugin(droplet) else { continue }
            let (answer, _) = await call(droplet, "VolumeDriver.Capabilities", "{}")
            if answer == nil { violation("the plugin on \(droplet) does not answer at the end:\n\(plugin.log.suffix(2000))") }
        }
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            let attached = await lab.world.listVolumes(name: nil, region: nil).filter { !$0.dropletIDs.isEmpty }
            if attached.isEmpty && mounted().isEmpty { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        let attached = await lab.world.listVolumes(name: nil, region: nil).filter { !$0.dropletIDs.isEmpty }
        violation("still attached 120 s after the last Unmount: \(attached.map { "\($0.name)@\($0.dropletIDs)" }); mounted: \(mounted())")
    }
}
