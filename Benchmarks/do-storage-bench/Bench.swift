import ArgumentParser
import CurlTransport
import DOSimulator
import DigitalOcean
import Foundation
import HostDevices
import Logging
import Subprocess
import PluginApp
import TestSupport
import VolumePlugin
import VolumeService

/// Prints the plugin's figures against the simulator with a fixed action latency: overhead per cold Mount beyond
/// the simulated latency and device appearance, DigitalOcean calls per cold Mount, and DigitalOcean calls made by
/// Get/List/Path. The production client (libcurl over loopback HTTP) and orchestration are measured; with
/// `--devices loop` (root) also real loop devices, udev, libblkid and mount(2).
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "do-storage-bench", abstract: "Measure do-storage against the DigitalOcean simulator.")

    @Option(help: "Cold mounts to measure.")
    var mounts = 20

    @Option(help: "Simulated action latency in milliseconds.")
    var latencyMs = 500

    @Option(help: "file (plain files, fake mounts; no root needed) or loop (real devices, udev and mount(2); root).")
    var devices = "file"

    @Option(help: "Get/List/Path calls to count DigitalOcean calls over.")
    var lookups = 1000

    @Option(help: "A do-storage binary (e.g. plugin/rootfs/usr/bin/do-storage): also measure its start-up and idle memory.")
    var pluginBinary: String?

    @Option(help: "Start-ups to measure with --plugin-binary.")
    var starts = 10

    @Option(help: "Volumes to mount at once on one droplet (DigitalOcean allows 15); 0 skips the step.")
    var atOnce = 15

    @Option(help: "Mount/Unmount cycles to run through --plugin-binary's socket, with --devices loop (root); 0 skips.")
    var soak = 0

    @Option(help: "Snapshots of a mounted volume to time the freeze window over, and scheduled snapshots to count calls over; 0 skips.")
    var snapshots = 10

    @Option(help: "Simulated time DigitalOcean takes to answer a snapshot request, in milliseconds.")
    var snapshotLatencyMs = 200

    @Option(help: "Requests per row of the load step against --plugin-binary's socket; 0 skips.")
    var loadRequests = 0

    @Option(help: "A bare Go net/http handler (scripts/bare-go-handler.go, built): the load step measures it too.")
    var bareGoBinary: String?

    @Option(help: "A light Go load client (scripts/load-go-client.go, built): the load step sends its requests with it.")
    var goClientBinary: String?

    @Option(help: "Rounds of each row of the load step, alternating the servers: the spread is over them.")
    var loadRounds = 3

    @Option(help: .hidden)
    var serveBareNio: String?

    func run() async throws {
        if let serveBareNio {
            try await BareNIOServer.serve(socket: serveBareNio)
            return
        }
        var simLogger = Logger(label: "do-sim")
        simLogger.logLevel = .critical
        var logger = Logger(label: "bench")
        logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .error
        let root = "/tmp/do-storage-bench-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let real = devices == "loop"
        guard real || devices == "file" else { throw ValidationError("--devices is file or loop") }

        let signal = EventSignal()
        let backend: any SimDeviceBackend =
            real ? LoopDeviceBackend(dataDirectory: root + "/data")
            : FileDeviceBackend(dataDirectory: root + "/data", onChange: { signal.fire() })
        let clock = MovableWallClock()
        let world = SimulatorWorld(
            options: SimulatorOptions(
                token: "bench-token", actionLatency: .milliseconds(latencyMs), snapshotLatency: .milliseconds(snapshotLatencyMs),
                snapshotInterval: .zero, wallClock: { clock.now }),
            devices: backend, logger: simLogger)
        try await world.addDroplet(id: 1, deviceDirectory: root + "/by-id")
        let server = SimulatorServer(world: world, logger: simLogger)
        let running = try await server.start()
        let client = DOClient(baseURL: running.apiURL, token: "bench-token", transport: CurlTransport(), logger: logger)

        let watcher: any DeviceWatching
        let filesystem: any HostFilesystem
        if real {
            watcher = try UdevDeviceWatcher(logger: logger)
            filesystem = LinuxFilesystem(logger: logger)
        } else {
            watcher = SignalDeviceWatcher(signal: signal) { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
            filesystem = FakeFilesystem()
        }
        let freezes = FreezeStopwatch(filesystem)
        let time = clock.timeSource
        let service = try VolumeService(
            configuration: ServiceConfiguration(dropletID: 1, region: "nyc1", deviceDirectory: root + "/by-id", mountRoot: root + "/mnt"),
            api: client, devices: watcher, filesystem: freezes, store: StateStore(directory: root + "/state"),
            time: time, logger: logger)

        do {
            if mounts > 0 { try await measure(world: world, server: server, service: service) }
            // Each step starts with the account's rate budget untouched, as a droplet that starts 15 containers would.
            server.resetRateLimits()
            if atOnce > 0 { try await measureScale(world: world, server: server, service: service) }
            server.resetRateLimits()
            if snapshots > 0 {
                try await measureSnapshots(world: world, server: server, service: service, freezes: freezes, clock: clock)
            }
            if let pluginBinary {
                if starts > 0 { try await measureProcess(pluginBinary, running: running, root: root) }
                if loadRequests > 0 { try await measureLoad(pluginBinary, running: running, world: world, root: root) }
                if soak > 0 {
                    guard real else { throw ValidationError("--soak needs --devices loop: the plugin mounts for real") }
                    try await measureSoak(pluginBinary, root: root, logger: simLogger)
                }
            }
        } catch {
            await world.shutdown()
            await running.stop()
            throw error
        }
        await world.shutdown()
        await running.stop()
    }

    func measure(world: SimulatorWorld, server: SimulatorServer, service: VolumeService) async throws {
        var overheads: [Double] = []
        var calls: [Int] = []
        var polls: [Int] = []
        for index in 0..<mounts {
            let name = "bench-\(index)"
            _ = try await world.createVolume(
                VolumeCreateRequest(name: name, sizeGigabytes: 1, region: "nyc1", filesystemType: "ext4"))
            try await service.create(name: name, options: [:])
            server.clearRecorded()
            let started = ContinuousClock.now
            _ = try await service.mount(name: name, id: "bench")
            let elapsed = ContinuousClock.now - started
            let exchanges = server.recorded
            guard let attach = await world.actionLog.last(where: { $0.type == "attach" && $0.volumeName == name }),
                let ready = attach.deviceReady
            else { throw ValidationError("the simulator did not record the attach of \(name)") }
            overheads.append((elapsed - (ready - attach.started)).milliseconds)
            let actionPolls = exchanges.filter { $0.method == "GET" && $0.path.contains("/actions/") }.count
            polls.append(actionPolls)
            calls.append(exchanges.count - actionPolls)
            try await service.unmount(name: name, id: "bench")
        }
        // Volumes the plugin creates (docker volume create -o size=1), then mounts for the first time.
        var createTimes: [Double] = []
        var firstMountOverheads: [Double] = []
        var createCalls: [Int] = []
        var createPolls: [Int] = []
        for index in 0..<mounts {
            let name = "made-\(index)"
            server.clearRecorded()
            let started = ContinuousClock.now
            try await service.create(name: name, options: ["size": "1"])
            let created = ContinuousClock.now
            _ = try await service.mount(name: name, id: "bench")
            let elapsed = ContinuousClock.now - created
            guard let attach = await world.actionLog.last(where: { $0.type == "attach" && $0.volumeName == name }),
                let ready = attach.deviceReady
            else { throw ValidationError("the simulator did not record the attach of \(name)") }
            createTimes.append((created - started).milliseconds)
            firstMountOverheads.append((elapsed - (ready - attach.started)).milliseconds)
            let exchanges = server.recorded
            let actionPolls = exchanges.filter { $0.method == "GET" && $0.path.contains("/actions/") }.count
            createPolls.append(actionPolls)
            createCalls.append(exchanges.count - actionPolls)
            try await service.unmount(name: name, id: "bench")
        }

        server.clearRecorded()
        let names = (0..<mounts).map { "bench-\($0)" }
        for index in 0..<lookups {
            let name = names[index % names.count]
            switch index % 3 {
            case 0: _ = try await service.get(name: name)
            case 1: _ = try await service.list()
            default: _ = try await service.path(name: name)
            }
        }
        let lookupCalls = server.recorded.count

        overheads.sort()
        print("do-storage benchmark — devices: \(devices), simulated action latency: \(latencyMs) ms, \(mounts) cold mounts")
        print(String(format: "cold Mount overhead beyond action latency + device appearance: median %.1f ms, p90 %.1f ms, max %.1f ms (target <= 20 ms)",
                     percentile(overheads, 0.5), percentile(overheads, 0.9), overheads.last ?? 0))
        print(String(format: "DigitalOcean calls per cold Mount: %.1f + %.1f action polls on average, at most %d + %d (target <= 3 plus polls)",
                     average(calls), average(polls), calls.max() ?? 0, polls.max() ?? 0))
        print("DigitalOcean calls made by \(lookups) Get/List/Path calls: \(lookupCalls) (target 0)")
        createTimes.sort()
        firstMountOverheads.sort()
        print(String(format: "create on DigitalOcean (docker volume create -o size=1; the simulator's formatting included): median %.1f ms, p90 %.1f ms",
                     percentile(createTimes, 0.5), percentile(createTimes, 0.9)))
        print(String(format: "first Mount of a created volume, beyond action latency + device appearance: median %.1f ms, p90 %.1f ms",
                     percentile(firstMountOverheads, 0.5), percentile(firstMountOverheads, 0.9)))
        print(String(format: "DigitalOcean calls for create + first Mount: %.1f + %.1f action polls on average, at most %d + %d",
                     average(createCalls), average(createPolls), createCalls.max() ?? 0, createPolls.max() ?? 0))
    }

    /// `atOnce` Mounts started together on one droplet: how long until all are mounted, against the floor of the
    /// droplet's attach actions one after another (DigitalOcean runs one action per droplet at a time); failures,
    /// 429s and calls; then one volume more than DigitalOcean allows.
    func measureScale(world: SimulatorWorld, server: SimulatorServer, service: VolumeService) async throws {
        let names = (0..<atOnce).map { "scale-\($0)" }
        for name in names + ["scale-extra"] {
            _ = try await world.createVolume(VolumeCreateRequest(name: name, sizeGigabytes: 1, region: "nyc1", filesystemType: "ext4"))
            try await service.create(name: name, options: [:])
        }
        server.clearRecorded()
        await world.clearActionLog()
        let started = ContinuousClock.now
        let failures = await withTaskGroup(of: Bool.self) { group in
            for name in names { group.addTask { (try? await service.mount(name: name, id: "scale")) == nil } }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        let elapsed = ContinuousClock.now - started
        let calls = server.recorded
        let floor = Double(atOnce) * Double(latencyMs) / 1000
        let attaches = await world.actionLog.filter { $0.type == "attach" }.count
        print(String(format: "%d volumes mounted at once on one droplet: %.2f s, %.3f× the floor of %d serialized attaches (%.2f s); %d failures, %d attach actions",
                     atOnce, elapsed.seconds, elapsed.seconds / floor, atOnce, floor, failures, attaches))
        print("  DigitalOcean calls: \(calls.count) (\(calls.filter { $0.status == 429 }.count) answered 429; DigitalOcean allows 250 a minute)")
        if atOnce == 15 {
            do {
                _ = try await service.mount(name: "scale-extra", id: "scale")
                print("  a 16th volume: mounted (DigitalOcean's limit was not enforced)")
            } catch {
                print("  a 16th volume: \(error)")
            }
        }
        for name in names { try await service.unmount(name: name, id: "scale") }
    }

    /// The plugin binary through its socket, Mount and Unmount of one volume `soak` times with real devices:
    /// resident memory and open file descriptors after a warm-up and at the end.
    func measureSoak(_ binary: String, root: String, logger: Logger) async throws {
        let world = SimulatorWorld(
            options: SimulatorOptions(
                token: "bench-token", actionLatency: .milliseconds(5), requestsPerMinute: 10_000_000,
                requestsPerHour: 100_000_000),
            devices: LoopDeviceBackend(dataDirectory: root + "/soak-data"), logger: logger)
        try await world.addDroplet(id: 1, deviceDirectory: root + "/soak-by-id")
        _ = try await world.createVolume(VolumeCreateRequest(name: "soak", sizeGigabytes: 1, region: "nyc1", filesystemType: "ext4"))
        let running = try await SimulatorServer(world: world, logger: logger).start()
        let socket = root + "/soak.sock"
        let (process, _) = try await startPlugin(
            binary, running: running, socket: socket, state: root + "/soak-state", mountRoot: root + "/soak-mnt",
            deviceDirectory: root + "/soak-by-id")
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        let pid = process.processIdentifier
        func call(_ method: String, _ body: String) async throws -> Bool {
            let result = try await Subprocess.run(
                .name("curl"),
                arguments: ["-sS", "--unix-socket", socket, "-X", "POST", "-d", body, "http://plugin/VolumeDriver.\(method)"],
                output: .string(limit: 1 << 16), error: .discarded)
            // Success is an answer whose Err is empty or absent.
            let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]
            return object.map { ($0["Err"] as? String ?? "").isEmpty } ?? false
        }
        func residentMB() -> Double {
            let rollup = (try? ProcFile.read("/proc/\(pid)/smaps_rollup")) ?? ""
            let line = rollup.split(separator: "\n").first { $0.hasPrefix("Rss:") } ?? ""
            return (Double(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
        }
        func openFiles() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }

        guard try await call("Create", #"{"Name":"soak","Opts":{}}"#) else { throw ValidationError("Create failed") }
        var failures = 0
        var samples: [(cycle: Int, rss: Double, files: Int)] = []
        let warmUp = min(50, soak)
        let soakStarted = ContinuousClock.now
        for cycle in 1...soak {
            if try await !call("Mount", #"{"Name":"soak","ID":"c"}"#) { failures += 1 }
            if try await !call("Unmount", #"{"Name":"soak","ID":"c"}"#) { failures += 1 }
            if cycle == warmUp || cycle % max(soak / 4, 1) == 0 { samples.append((cycle, residentMB(), openFiles())) }
        }
        let took = ContinuousClock.now - soakStarted
        await world.shutdown()
        await running.stop()
        let figures = samples.map { String(format: "%d: %.1f MB, %d fds", $0.cycle, $0.rss, $0.files) }.joined(separator: "; ")
        print(String(format: "soak: %d Mount/Unmount cycles of the plugin binary, real devices, 5 ms actions, %.1f s, %d failures", soak, took.seconds, failures))
        print("  resident memory and open files after cycle \(figures)")
        if let first = samples.first, let last = samples.last {
            print(String(format: "  growth after the warm-up: %+.2f MB, %+d file descriptors", last.rss - first.rss, last.files - first.files))
        }
    }

    /// Time from exec to an accepting socket, and resident memory once idle, of the real binary.
    func measureProcess(_ binary: String, running: RunningSimulator, root: String) async throws {
        var startups: [Double] = []
        var residents: [Double] = []
        var anonymous: [Double] = []
        for index in 0..<starts {
            let socket = "\(root)/p\(index).sock"
            let (process, startup) = try await startPlugin(
                binary, running: running, socket: socket, state: "\(root)/pstate\(index)", mountRoot: "\(root)/pmnt",
                deviceDirectory: root + "/by-id")
            defer {
                process.terminate()
                process.waitUntilExit()
            }
            startups.append(startup.milliseconds)
            // Idle: the background start-up (metadata, state, udev) is done and nothing is asked of it.
            try await Task.sleep(for: .seconds(1))
            let rollup = (try? ProcFile.read("/proc/\(process.processIdentifier)/smaps_rollup")) ?? ""
            func megabytes(_ field: String) -> Double? {
                guard let line = rollup.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
                    let kilobytes = Double(line.split(separator: " ").dropFirst().first ?? "")
                else { return nil }
                return kilobytes / 1024
            }
            if let rss = megabytes("Rss") { residents.append(rss) }
            if let anon = megabytes("Anonymous") { anonymous.append(anon) }
        }
        startups.sort()
        residents.sort()
        anonymous.sort()
        print(String(format: "process start to socket ready: median %.1f ms, max %.1f ms over %d starts (ceiling 25 ms)",
                     percentile(startups, 0.5), startups.last ?? 0, starts))
        print(String(format: "idle resident memory: median %.1f MB (ceiling 20 MB), of which %.1f MB anonymous; the rest is clean pages of the binary and libraries",
                     percentile(residents, 0.5), percentile(anonymous, 0.5)))
    }

    /// Starts the plugin binary against the simulator as droplet 1 and waits until its socket accepts. Returns the
    /// process (the caller stops it) and the time from exec to an accepting socket.
    func startPlugin(
        _ binary: String, running: RunningSimulator, socket: String, state: String, mountRoot: String, deviceDirectory: String,
        logLevel: String = "error"
    ) async throws -> (Process, Duration) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.environment = [
            "ACCESS_TOKEN": "bench-token", "DO_API_URL": running.apiURL, "DO_METADATA_URL": running.metadataURL(droplet: 1),
            "SOCKET_PATH": socket, "STATE_DIR": state, "MOUNT_ROOT": mountRoot, "DEVICE_DIR": deviceDirectory,
            "LOG_LEVEL": logLevel,
            // As the managed plugin's config.json sets it.
            "GNUTLS_NO_IMPLICIT_INIT": "1",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let started = ContinuousClock.now
        try process.run()
        while !UnixSocket.isServed(socket) {
            guard process.isRunning, ContinuousClock.now - started < .seconds(10) else {
                process.terminate()
                process.waitUntilExit()
                throw ValidationError("\(binary) did not open its socket")
            }
            try await Task.sleep(for: .microseconds(200))
        }
        return (process, ContinuousClock.now - started)
    }

    func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(Int((Double(sorted.count - 1) * p).rounded()), sorted.count - 1)]
    }

    func average(_ values: [Int]) -> Double { values.isEmpty ? 0 : Double(values.reduce(0, +)) / Double(values.count) }
}
