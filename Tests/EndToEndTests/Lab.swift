import DOSimulator
import DigitalOcean
import Foundation
import HostDevices
import VolumeService
import Logging
import Subprocess
import Testing

/// End-to-end tests need root, udev and loop devices. CI sets DO_STORAGE_E2E=1, which turns a missing prerequisite
/// into a failure instead of a skip.
enum E2E {
    static var required: Bool { ProcessInfo.processInfo.environment["DO_STORAGE_E2E"] == "1" }
    static var isRoot: Bool { geteuid() == 0 }
    /// udevd answers on its control socket (a stopped one leaves the socket file behind). Asked once per run, with a
    /// few tries: a ping can fail while udevd is busy with the other suites' devices.
    static let udevRunning: Bool = {
        for attempt in 0..<5 {
            if attempt > 0 { usleep(200_000) }
            let ping = Process()
            ping.executableURL = URL(fileURLWithPath: "/usr/bin/udevadm")
            ping.arguments = ["control", "--ping"]
            ping.standardOutput = FileHandle.nullDevice
            ping.standardError = FileHandle.nullDevice
            guard (try? ping.run()) != nil else { continue }
            ping.waitUntilExit()
            if ping.terminationStatus == 0 { return true }
        }
        return false
    }()
    static var available: Bool { required || (isRoot && udevRunning) }

    static func checkPrerequisites() throws {
        guard isRoot else { throw LabError("end-to-end tests need root (loop devices, mount(2))") }
        guard udevRunning else {
            throw LabError("end-to-end tests need udev: start /lib/systemd/systemd-udevd --daemon")
        }
    }
}

struct LabError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One simulated DigitalOcean with real loop devices, and do-storage processes as droplets. Everything it makes —
/// processes, mounts, loop devices, files — is removed by `close()`, which `withLab` runs even on failure.
final class Lab: @unchecked Sendable {
    static let token = "dop_v1_e2e-token-4f9c2b7d1a"
    let root: String
    let world: SimulatorWorld
    let server: SimulatorServer
    let running: RunningSimulator
    var plugins: [Plugin] = []

    static func withLab(actionLatency: Duration = .milliseconds(200), _ body: (Lab) async throws -> Void) async throws {
        try E2E.checkPrerequisites()
        let lab = try await Lab(actionLatency: actionLatency)
        do {
            try await body(lab)
        } catch {
            await lab.close()
            throw error
        }
        await lab.close()
    }

    /// A lab with droplet 1001, the volume `pgdata`, and a plugin on 1001 that has been sent Create for it.
    static func withPgdataOnOneDroplet(
        environment: [String: String] = [:], _ body: (Lab, Plugin) async throws -> Void
    ) async throws {
        try await withLab { lab in
            try await lab.addDroplet(1001)
            try await lab.createVolume("pgdata")
            let plugin = try await lab.startPlugin(droplet: 1001, environment: environment)
            _ = try await plugin.call("VolumeDriver.Create", #"{"Name":"pgdata"}"#)
            try await body(lab, plugin)
        }
    }

    private init(actionLatency: Duration) async throws {
        root = "/tmp/do-storage-e2e-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        var logger = Logger(label: "do-sim")
        logger.logLevel = .warning
        world = SimulatorWorld(
            options: SimulatorOptions(token: Lab.token, actionLatency: actionLatency, snapshotInterval: .zero),
            devices: LoopDeviceBackend(dataDirectory: root + "/data"), logger: logger)
        server = SimulatorServer(world: world, logger: logger)
        running = try await server.start()
    }

    func addDroplet(_ id: Int) async throws {
        try await world.addDroplet(id: id, region: "nyc1", deviceDirectory: "\(root)/droplet-\(id)/by-id")
    }

    @discardableResult
    func createVolume(_ name: String, filesystem: String? = "ext4") async throws -> Volume {
        do {
            return try await world.createVolume(
                VolumeCreateRequest(name: name, sizeGigabytes: 1, region: "nyc1", filesystemType: filesystem))
        } catch {
            throw LabError(error.message)
        }
    }

    /// Starts do-storage as droplet `droplet` and waits until its socket answers.
    func startPlugin(droplet: Int, environment extra: [String: String] = [:]) async throws -> Plugin {
        let base = "\(root)/droplet-\(droplet)"
        var environment = [
            "ACCESS_TOKEN": Lab.token, "DO_API_URL": running.apiURL, "DO_METADATA_URL": running.metadataURL(droplet: droplet),
            "DEVICE_DIR": base + "/by-id", "MOUNT_ROOT": base + "/mnt", "STATE_DIR": base + "/state",
            "SOCKET_PATH": base + "/plugin.sock", "LOG_LEVEL": "debug", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        ]
        environment.merge(extra) { $1 }
        let plugin = try Plugin(
            droplet: droplet, environment: environment, socket: environment["SOCKET_PATH"] ?? base + "/plugin.sock",
            log: base + "/plugin-\(plugins.count).log", mountRoot: environment["MOUNT_ROOT"] ?? base + "/mnt", stateDirectory: environment["STATE_DIR"] ?? base + "/state")
        plugins.append(plugin)
        try await plugin.waitUntilReady()
        return plugin
    }

    func attachments(_ name: String) async -> [Int] {
        await world.listVolumes(name: name, region: "nyc1").first?.dropletIDs ?? []
    }

    func close() async {
        for plugin in plugins { plugin.stop() }
        // Unmount whatever is still mounted under the lab, then release the loop devices and files.
        for entry in Self.mountinfo() where entry.mountpoint.hasPrefix(root + "/") {
            umount2(entry.mountpoint, Int32(MNT_DETACH))
        }
        await world.shutdown()
        await running.stop()
        try? FileManager.default.removeItem(atPath: root)
    }

    /// This process's mounts, read to the end (a /proc file).
    static func mountinfo() -> [MountEntry] {
        MountInfo.parse((try? ProcFile.read("/proc/self/mountinfo")) ?? "")
    }

    static func isMounted(_ path: String) -> Bool { mountinfo().contains { $0.mountpoint == path } }
}

/// One do-storage process.
final class Plugin: @unchecked Sendable {
    let droplet: Int
    let socket: String
    let logPath: String
    let mountRoot: String
    let stateDirectory: String
    private let process: Process

    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("do-storage")
    }

    init(droplet: Int, environment: [String: String], socket: String, log: String, mountRoot: String, stateDirectory: String) throws {
        self.droplet = droplet
        self.socket = socket
        self.logPath = log
        self.mountRoot = mountRoot
        self.stateDirectory = stateDirectory
        guard FileManager.default.isExecutableFile(atPath: Self.executable.path) else {
            throw LabError("do-storage is not built at \(Self.executable.path)")
        }
        try FileManager.default.createDirectory(
            atPath: (log as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: log))
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process = Process()
        process.executableURL = Self.executable
        process.environment = environment
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits (at most 10 s) until the socket answers Capabilities.
    func waitUntilReady() async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if process.isRunning, let answer = try? await call("VolumeDriver.Capabilities", "{}"), answer["Capabilities"] != nil {
                return
            }
            guard process.isRunning else { throw LabError("do-storage exited at start:\n\(log)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw LabError("do-storage did not open its socket within 10 s:\n\(log)")
    }

    /// Posts to the plugin's socket with curl and returns the JSON answer.
    func call(_ method: String, _ body: String) async throws -> [String: Any] {
        let result = try await Subprocess.run(
            .name("curl"),
            arguments: ["-s", "--max-time", "150", "--unix-socket", socket, "-X", "POST", "-d", body, "http://plugin/\(method)"],
            output: .string(limit: 1 << 20), error: .string(limit: 1 << 16))
        guard case .exited(0) = result.terminationStatus else {
            throw LabError("curl to \(socket) failed: \(result.standardError)")
        }
        let data = Data(result.standardOutput.utf8)
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LabError("\(method) answered \(result.standardOutput)")
        }
        return object
    }

    /// Mounts and returns the mount point; throws the plugin's Err.
    func mount(_ name: String, id: String) async throws -> String {
        let answer = try await call("VolumeDriver.Mount", "{\"Name\":\"\(name)\",\"ID\":\"\(id)\"}")
        if let err = answer["Err"] as? String, !err.isEmpty { throw LabError(err) }
        return answer["Mountpoint"] as? String ?? ""
    }

    func unmount(_ name: String, id: String) async throws {
        let answer = try await call("VolumeDriver.Unmount", "{\"Name\":\"\(name)\",\"ID\":\"\(id)\"}")
        if let err = answer["Err"] as? String, !err.isEmpty { throw LabError(err) }
    }

    /// The references the plugin persisted for a volume.
    func persistedReferences(_ name: String) throws -> [String: Int] {
        let data = try Data(contentsOf: URL(fileURLWithPath: stateDirectory + "/state.json"))
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        let volumes = object?["volumes"] as? [String: Any]
        let record = volumes?[name] as? [String: Any]
        return record?["references"] as? [String: Int] ?? [:]
    }

    func kill9() {
        guard process.isRunning else { return }
        Glibc.kill(pid, SIGKILL)
        process.waitUntilExit()
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        kill9()
    }
}
