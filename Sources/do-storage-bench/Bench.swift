import ArgumentParser
import CurlTransport
import DOSimulator
import DigitalOcean
import Foundation
import HostDevices
import Logging
import TestSupport
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

    func run() async throws {
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
        let world = SimulatorWorld(
            options: SimulatorOptions(token: "bench-token", actionLatency: .milliseconds(latencyMs)),
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
        let service = try VolumeService(
            configuration: ServiceConfiguration(dropletID: 1, region: "nyc1", deviceDirectory: root + "/by-id", mountRoot: root + "/mnt"),
            api: client, devices: watcher, filesystem: filesystem, store: StateStore(directory: root + "/state"),
            logger: logger)

        do {
            try await measure(world: world, server: server, service: service)
            if let pluginBinary {
                try await measureProcess(pluginBinary, running: running, root: root)
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

    /// Time from exec to an accepting socket, and resident memory once idle, of the real binary.
    func measureProcess(_ binary: String, running: RunningSimulator, root: String) async throws {
        var startups: [Double] = []
        var residents: [Double] = []
        var anonymous: [Double] = []
        for index in 0..<starts {
            let socket = "\(root)/p\(index).sock"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.environment = [
                "ACCESS_TOKEN": "bench-token", "DO_API_URL": running.apiURL,
                "DO_METADATA_URL": running.metadataURL(droplet: 1), "SOCKET_PATH": socket,
                "STATE_DIR": "\(root)/pstate\(index)", "MOUNT_ROOT": "\(root)/pmnt", "DEVICE_DIR": root + "/by-id",
                "LOG_LEVEL": "error",
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            let started = ContinuousClock.now
            try process.run()
            defer {
                process.terminate()
                process.waitUntilExit()
            }
            while !Self.accepts(socket) {
                guard process.isRunning, ContinuousClock.now - started < .seconds(10) else {
                    throw ValidationError("\(binary) did not open its socket")
                }
                try await Task.sleep(for: .microseconds(200))
            }
            startups.append((ContinuousClock.now - started).milliseconds)
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

    static func accepts(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: bytes)
            buffer[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }

    func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(Int((Double(sorted.count - 1) * p).rounded()), sorted.count - 1)]
    }

    func average(_ values: [Int]) -> Double { values.isEmpty ? 0 : Double(values.reduce(0, +)) / Double(values.count) }
}
