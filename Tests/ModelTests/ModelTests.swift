import DOSimulator
import DigitalOcean
import Foundation
import NIOConcurrencyHelpers
import TestSupport
import Testing
import Timekeeping
import VolumeService

/// A seeded, randomized search for interleavings: operation sequences over three droplets against the simulated
/// DigitalOcean, with plugins killed mid-operation and restarted from their state files, and DigitalOcean's faults.
/// After every step a reference model is checked. `MODEL_SEEDS` sets how many seeds run (500), `SEED=<n>` runs one
/// alone, and a failing seed prints its operations.
@Suite(.timeLimit(.minutes(20))) struct ModelTests {
    @Test func randomizedOperationsKeepEveryInvariant() async throws {
        let environment = ProcessInfo.processInfo.environment
        let first = environment["MODEL_FIRST_SEED"].flatMap(Int.init) ?? 1
        let seeds: [UInt64] =
            if let one = environment["SEED"].flatMap(UInt64.init) { [one] } else {
                Array(UInt64(first)...UInt64(first + (environment["MODEL_SEEDS"].flatMap(Int.init) ?? 500) - 1))
            }
        let totals = NIOLockedValueBox(Totals())
        let started = ContinuousClock.now
        // Two seeds at a time: each runs alone on its own clock and simulator.
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = seeds.makeIterator()
            for _ in 0..<2 {
                guard let seed = next.next() else { break }
                group.addTask { try await Self.check(seed: seed, into: totals) }
            }
            while try await group.next() != nil {
                guard let seed = next.next() else { continue }
                group.addTask { try await Self.check(seed: seed, into: totals) }
            }
        }
        let result = totals.withLockedValue { $0 }
        print(
            "model: \(result.seeds) seeds, \(result.operations) operations (\(result.byKind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))), "
                + "\(result.checks) invariant checks (\(result.byInvariant.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))), "
                + "\(result.failures.count) failing seeds, in \(Int((ContinuousClock.now - started).seconds)) s")
        #expect(result.failures.isEmpty, "failing seeds (re-run one with SEED=<n>): \(result.failures)")
    }

    static func check(seed: UInt64, into totals: NIOLockedValueBox<Totals>) async throws {
        var run: ModelRun
        do {
            run = try await ModelRun.run(seed: seed)
        } catch {
            run = ModelRun(seed: seed)
            run.violation = "the run stopped: \(error)"
        }
        totals.withLockedValue { $0.add(run) }
        if let violation = run.violation {
            print("model: seed \(seed) FAILED: \(violation)\n  operations:\n    " + run.log.joined(separator: "\n    "))
        }
    }
}

struct Totals {
    var seeds = 0
    var operations = 0
    var byKind: [String: Int] = [:]
    var checks = 0
    var byInvariant: [String: Int] = [:]
    var failures: [UInt64] = []

    mutating func add(_ run: ModelRun) {
        seeds += 1
        operations += run.operations
        byKind.merge(run.byKind, uniquingKeysWith: +)
        checks += run.checks.values.reduce(0, +)
        byInvariant.merge(run.checks, uniquingKeysWith: +)
        if run.violation != nil { failures.append(run.seed) }
    }
}

/// One operation of a step.
enum Operation: CustomStringConvertible, Sendable {
    case create(droplet: Int, volume: String, options: [String: String])
    case mount(droplet: Int, volume: String, id: String)
    case unmount(droplet: Int, volume: String, id: String)
    case remove(droplet: Int, volume: String)
    case snapshot(droplet: Int, volume: String, name: String)
    case deleteSnapshot(droplet: Int, volume: String, name: String)
    /// The droplet's plugin is killed after this much clock time, whatever it is doing, and started again.
    case kill(droplet: Int, after: Duration)
    case fault(String)

    var kind: String {
        switch self {
        case .create: "create"
        case .mount: "mount"
        case .unmount: "unmount"
        case .remove: "remove"
        case .snapshot: "snapshot"
        case .deleteSnapshot: "snapshot-delete"
        case .kill: "kill"
        case .fault: "fault"
        }
    }

    var droplet: Int? {
        switch self {
        case .create(let droplet, _, _), .mount(let droplet, _, _), .unmount(let droplet, _, _), .remove(let droplet, _),
            .snapshot(let droplet, _, _), .deleteSnapshot(let droplet, _, _), .kill(let droplet, _):
            droplet
        case .fault: nil
        }
    }

    var description: String {
        switch self {
        case .create(let d, let v, let o): "create \(v) on \(d) \(o.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))"
        case .mount(let d, let v, let id): "mount \(v) on \(d) as \(id)"
        case .unmount(let d, let v, let id): "unmount \(v) on \(d) as \(id)"
        case .remove(let d, let v): "remove \(v) on \(d)"
        case .snapshot(let d, let v, let n): "snapshot \(v) on \(d) as \(n)"
        case .deleteSnapshot(let d, let v, let n): "snapshot delete \(n) of \(v) on \(d)"
        case .kill(let d, let after): "kill the plugin on \(d) after \(after)"
        case .fault(let what): "fault: \(what)"
        }
    }
}

/// One seed's run: the operations, the model, the checks.
struct ModelRun: Sendable {
    static let volumes = ["v0", "v1", "v2", "v3"]
    static let steps = 24
    /// How long one step may take in real time before the run counts as hung: generous, for a machine busy with
    /// release builds and real engines beside the test.
    static let realLimit: Duration = .seconds(300)
    /// How much clock time a step may take: a day. On a busy machine the clock moves while work that does not wait
    /// runs, so clock time bounds nothing here; the operations' own waits are checked against their deadlines.
    static let virtualLimit: Duration = .seconds(86_400)
    let seed: UInt64
    var log: [String] = []
    var operations = 0
    var byKind: [String: Int] = [:]
    var checks: [String: Int] = [:]
    var violation: String?

    /// Mount ids held, by droplet and volume, as the model expects them.
    var references: [Int: [String: Set<String>]] = [:]
    var snapshots: [String: [String]] = [:]
    var nextID = 0

    static func run(seed: UInt64) async throws -> ModelRun {
        try await Cluster.with { cluster in
            var run = ModelRun(seed: seed)
            var random = SeededGenerator(seed: seed)
            // Two volumes exist on DigitalOcean before any plugin hears of them: made by hand, ext4 and xfs.
            _ = try await cluster.world.createVolume(
                VolumeCreateRequest(name: "v0", sizeGigabytes: 1, region: "nyc1", filesystemType: "ext4"))
            _ = try await cluster.world.createVolume(
                VolumeCreateRequest(name: "v1", sizeGigabytes: 1, region: "nyc1", filesystemType: "xfs"))
            for step in 0..<steps {
                let batch = run.generate(&random)
                run.log.append("step \(step): " + batch.map(\.description).joined(separator: " | "))
                try await run.perform(batch, in: cluster, step: step)
                if run.violation != nil { return run }
                await run.checkInvariants(cluster, quiet: false)
                if run.violation != nil { return run }
            }
            try await run.windDown(cluster)
            return run
        }
    }

    // MARK: Generating

    mutating func generate(_ random: inout SeededGenerator) -> [Operation] {
        let count = Int.random(in: 1...3, using: &random)
        var batch: [Operation] = []
        var killed: Set<Int> = []
        for _ in 0..<count {
            let droplet = Cluster.droplets.randomElement(using: &random)!
            let volume = Self.volumes.randomElement(using: &random)!
            let roll = Int.random(in: 0..<100, using: &random)
            switch roll {
            case 0..<34:
                nextID += 1
                batch.append(.mount(droplet: droplet, volume: volume, id: "m\(nextID)"))
            case 34..<58:
                let held = Cluster.droplets.flatMap { d in (references[d] ?? [:]).flatMap { v, ids in ids.map { (d, v, $0) } } }
                if let (d, v, id) = held.randomElement(using: &random) {
                    batch.append(.unmount(droplet: d, volume: v, id: id))
                } else {
                    nextID += 1
                    batch.append(.mount(droplet: droplet, volume: volume, id: "m\(nextID)"))
                }
            case 58..<68:
                var options: [String: String] = [:]
                switch Int.random(in: 0..<6, using: &random) {
                case 0: options["size"] = "2"
                case 1: options["fstype"] = "xfs"
                case 2: options["clone_of"] = Self.volumes.filter { $0 != volume }.randomElement(using: &random)!
                case 3:
                    if let name = snapshots.values.joined().randomElement(using: &random) { options["from_snapshot"] = name }
                case 4: options["snapshot_every"] = "1h"
                default: break
                }
                batch.append(.create(droplet: droplet, volume: volume, options: options))
            case 68..<72:
                batch.append(.remove(droplet: droplet, volume: volume))
            case 72..<80:
                nextID += 1
                batch.append(.snapshot(droplet: droplet, volume: volume, name: "\(volume)-s\(nextID)"))
            case 80..<83:
                if let name = snapshots[volume]?.randomElement(using: &random) {
                    batch.append(.deleteSnapshot(droplet: droplet, volume: volume, name: name))
                }
            case 83..<90:
                if !killed.contains(droplet) {
                    killed.insert(droplet)
                    batch.append(.kill(droplet: droplet, after: .milliseconds(Int64.random(in: 0...8000, using: &random))))
                }
            default:
                let faults = [
                    "429 with Retry-After", "429 without Retry-After", "500 burst", "503 burst", "errored action",
                    "slow actions",
                ]
                batch.append(.fault(faults.randomElement(using: &random)!))
            }
        }
        return batch
    }

    // MARK: Performing

    struct Outcome: Sendable {
        var error: String?
        var elapsed: Duration
    }

    mutating func perform(_ batch: [Operation], in cluster: Cluster, step: Int) async throws {
        // Faults first: they meet the operations of this step.
        var slow = false
        for case .fault(let what) in batch {
            switch what {
            case "429 with Retry-After": cluster.server.inject(Fault(.tooManyRequests(retryAfter: [1, 5, 30].randomElement()!), count: 2))
            case "429 without Retry-After": cluster.server.inject(Fault(.tooManyRequestsWithHeaders([:]), count: 1))
            case "500 burst": cluster.server.inject(Fault(.status(500), count: 3))
            case "503 burst": cluster.server.inject(Fault(.status(503), count: 6))
            case "errored action": await cluster.world.failNextActions(1)
            default:
                slow = true
                await cluster.world.setActionLatency(.seconds(25))
            }
        }
        let time = cluster.time
        var running: [(Operation, Running<Outcome>)] = []
        let kills = batch.compactMap { operation -> (Int, Duration)? in
            if case .kill(let droplet, let after) = operation { return (droplet, after) }
            return nil
        }
        for operation in batch {
            if case .fault = operation { continue }
            if case .kill = operation { continue }
            guard let droplet = operation.droplet, let service = cluster.service(droplet) else { continue }
            let owner = "seed \(seed) step \(step) #\(running.count)"
            running.append((operation, Running { await TestTime.$owner.withValue(owner) { await Self.execute(operation, on: service, time: time, owner: owner) } }))
        }
        // Kills: each after its clock time, cutting short what that droplet was doing; its plugin starts again
        // from its state file once everything it had started has ended.
        var cut: Set<Int> = []
        let stepStarted = time.elapsed
        for (droplet, after) in kills.sorted(by: { $0.1 < $1.1 }) {
            try await time.advance(until: "the kill of \(droplet)'s plugin", step: .seconds(1), virtualLimit: after + .seconds(1), realLimit: Self.realLimit) {
                time.elapsed - stepStarted >= after || running.allSatisfy { $0.1.isFinished }
            }
            // What had not ended before the kill is cut short: it may or may not have happened.
            let unfinished = running.indices.filter { running[$0].0.droplet == droplet && !running[$0].1.isFinished }
            cluster.kill(droplet)
            for index in unfinished {
                running[index].1.cancel()
                cut.insert(index)
            }
        }
        do {
            try await time.advance(until: "step \(step)'s operations", step: .seconds(1), virtualLimit: Self.virtualLimit, realLimit: Self.realLimit) {
                running.allSatisfy { $0.1.isFinished }
            }
        } catch {
            violation = "step \(step): \(error) (unfinished: \(running.filter { !$0.1.isFinished }.map(\.0)))"
            for (_, task) in running { task.cancel() }
            return
        }
        if slow { await cluster.world.setActionLatency(.seconds(1)) }
        for (droplet, _) in kills { try await cluster.start(droplet) }

        for (index, (operation, task)) in running.enumerated() {
            operations += 1
            byKind[operation.kind, default: 0] += 1
            let outcome = try await task.value(within: Self.realLimit)
            await apply(operation, outcome, cutShort: cut.contains(index), cluster: cluster)
        }
        for operation in batch where operation.kind == "kill" || operation.kind == "fault" {
            operations += 1
            byKind[operation.kind, default: 0] += 1
        }
    }

    static func execute(_ operation: Operation, on service: VolumeService, time: TestTime, owner: String) async -> Outcome {
        do {
            switch operation {
            case .create(_, let volume, let options): try await service.create(name: volume, options: options)
            case .mount(_, let volume, let id): _ = try await service.mount(name: volume, id: id)
            case .unmount(_, let volume, let id): try await service.unmount(name: volume, id: id)
            case .remove(_, let volume): try await service.remove(name: volume)
            case .snapshot(_, let volume, let name): _ = try await service.createSnapshot(volume: volume, name: name)
            case .deleteSnapshot(_, let volume, let name): try await service.deleteSnapshot(volume: volume, snapshot: name)
            case .kill, .fault: break
            }
            return Outcome(error: nil, elapsed: time.waited(by: owner))
        } catch {
            return Outcome(error: "\(error)", elapsed: time.waited(by: owner))
        }
    }

    /// What an operation's outcome means to the model. One cut short by a kill may have happened or not: the
    /// restarted plugin's registry says which.
    mutating func apply(_ operation: Operation, _ outcome: Outcome, cutShort: Bool, cluster: Cluster) async {
        // Docker gives every call two minutes; the plugin ends a Mount by its own deadline, 110 s.
        let limit: Duration = operation.kind == "mount" ? .seconds(110) : .seconds(120)
        count("every operation ends by its deadline")
        // What counts is the clock time the operation spent waiting (the clock may move while work that does not wait
        // runs on a busy machine); one clock step of slack.
        if !cutShort, outcome.elapsed > limit + .seconds(1) {
            violation = "\(operation) waited \(outcome.elapsed) of clock time, past its \(limit)"
            return
        }
        switch operation {
        case .mount(let droplet, let volume, let id):
            if cutShort {
                if await cluster.service(droplet)?.records[volume]?.references[id] != nil { references[droplet, default: [:]][volume, default: []].insert(id) }
            } else if outcome.error == nil {
                references[droplet, default: [:]][volume, default: []].insert(id)
            }
        case .unmount(let droplet, let volume, let id):
            if cutShort || outcome.error != nil {
                if await cluster.service(droplet)?.records[volume]?.references[id] == nil { references[droplet]?[volume]?.remove(id) }
            } else {
                references[droplet]?[volume]?.remove(id)
            }
        case .snapshot(_, let volume, let name):
            if outcome.error == nil { snapshots[volume, default: []].append(name) }
        case .deleteSnapshot(_, let volume, let name):
            if outcome.error == nil { snapshots[volume]?.removeAll { $0 == name } }
        default:
            break
        }
    }

    // MARK: Checking

    mutating func count(_ invariant: String) { checks[invariant, default: 0] += 1 }

    /// The invariants, between steps. `quiet`: nothing runs any more, background releases included.
    mutating func checkInvariants(_ cluster: Cluster, quiet: Bool) async {
        let volumes = await cluster.world.listVolumes(name: nil, region: "nyc1")
        let byName = Dictionary(volumes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var mountedOn: [String: [Int]] = [:]
        for droplet in Cluster.droplets {
            guard let service = cluster.service(droplet) else { continue }
            let configuration = cluster.configuration(droplet)
            let records = await service.records
            let mounted = Set(cluster.hosts[droplet]!.mounted.keys)
            for mountpoint in mounted {
                let name = String(mountpoint.dropFirst(configuration.mountRoot.count + 1))
                mountedOn[name, default: []].append(droplet)
                count("nothing is mounted without a reference")
                if (records[name]?.referenceCount ?? 0) == 0 {
                    violation = "volume \(name) is mounted on droplet \(droplet) with no reference"
                    return
                }
                count("a mounted volume is attached there")
                let doName = records[name]?.doName ?? name
                if byName[doName]?.dropletIDs != [droplet] {
                    violation = "volume \(name) is mounted on droplet \(droplet) but attached to \(byName[doName]?.dropletIDs ?? [])"
                    return
                }
            }
            for name in Self.volumes {
                count("each droplet's references equal the model's")
                let held = Set(records[name]?.references.keys.map { $0 } ?? [])
                let expected = references[droplet]?[name] ?? []
                if held != expected {
                    violation = "droplet \(droplet) holds \(held.sorted()) of \(name), the model \(expected.sorted())"
                    return
                }
                count("a referenced volume is mounted")
                if !held.isEmpty && !mounted.contains(configuration.mountRoot + "/" + name) {
                    violation = "droplet \(droplet) holds references to \(name) but it is not mounted there"
                    return
                }
            }
            count("the state file always loads")
            do {
                let saved = try StateStore(directory: cluster.stateDirectory(droplet)).load()
                _ = saved
            } catch {
                violation = "droplet \(droplet)'s state file does not load: \(error)"
                return
            }
            for (name, record) in records where record.referenceCount > 0 {
                count("Status agrees with DigitalOcean")
                guard let volume = byName[record.doName] else {
                    violation = "droplet \(droplet) has \(name) mounted, but DigitalOcean has no volume \(record.doName)"
                    return
                }
                let status = (try? await service.get(name: name).status) ?? [:]
                if status["do_id"] != volume.id || status["attached_to"] != String(droplet) || status["fstype"] != volume.filesystemType
                    && !volume.filesystemType.isEmpty
                {
                    violation = "droplet \(droplet)'s Status of \(name) is \(status), DigitalOcean's volume \(volume)"
                    return
                }
            }
        }
        for (name, droplets) in mountedOn {
            count("a volume is never mounted on two droplets")
            if droplets.count > 1 {
                violation = "volume \(name) is mounted on droplets \(droplets)"
                return
            }
        }
        for volume in volumes {
            count("a volume is never attached to two droplets")
            if volume.dropletIDs.count > 1 {
                violation = "volume \(volume.name) is attached to \(volume.dropletIDs)"
                return
            }
            guard quiet, let droplet = volume.dropletIDs.first else { continue }
            count("nothing is attached without a reference")
            let held = await cluster.service(droplet)?.records.values.contains { $0.doName == volume.name && $0.referenceCount > 0 }
            if held != true {
                violation = "volume \(volume.name) is still attached to droplet \(droplet), which holds no reference to it"
                return
            }
        }
    }

    /// Every container stops: every reference is released, the background releases finish, and nothing is left
    /// attached or mounted.
    mutating func windDown(_ cluster: Cluster) async throws {
        for droplet in Cluster.droplets {
            for (volume, ids) in references[droplet] ?? [:] {
                for id in ids {
                    guard let service = cluster.service(droplet) else { continue }
                    let unmount = Running { try await service.unmount(name: volume, id: id) }
                    try await cluster.time.advance(until: "the final unmount", step: .seconds(1), virtualLimit: Self.virtualLimit, realLimit: Self.realLimit) {
                        unmount.isFinished
                    }
                    _ = try await unmount.result(within: Self.realLimit)
                    if await service.records[volume]?.references[id] == nil { references[droplet]?[volume]?.remove(id) }
                }
            }
        }
        // Background releases retry for about six minutes at most.
        let world = cluster.world
        do {
            try await cluster.time.advance(until: "every volume to be released", step: .seconds(1), virtualLimit: Self.virtualLimit, realLimit: Self.realLimit) {
                await world.listVolumes(name: nil, region: nil).allSatisfy(\.dropletIDs.isEmpty)
            }
        } catch {
            let left = await world.listVolumes(name: nil, region: nil).filter { !$0.dropletIDs.isEmpty }.map { "\($0.name)@\($0.dropletIDs)" }
            log.append("after 15 minutes still attached: \(left)")
        }
        await checkInvariants(cluster, quiet: true)
    }
}
