import DOSimulator
import DigitalOcean
import Foundation
import Subprocess
import Testing

/// Real-engine tests need, besides root and udev, Debian's dockerd and the plugin assembled by `plugin/build` in plugin/rootfs.
enum EngineE2E {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let pluginDirectory = repositoryRoot + "/plugin"
    static var available: Bool { E2E.required || (E2E.available && FileManager.default.isExecutableFile(atPath: "/usr/sbin/dockerd")) }

    static func checkPrerequisites() throws {
        try E2E.checkPrerequisites()
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/dockerd") else {
            throw LabError("real-engine tests need dockerd: apt-get install docker.io")
        }
        guard FileManager.default.fileExists(atPath: pluginDirectory + "/rootfs/usr/bin/do-storage") else {
            throw LabError("the plugin is not assembled: run plugin/build")
        }
    }
}

struct CommandResult: CustomStringConvertible {
    var status: Int32
    var output: String
    var error: String
    var description: String { "exit \(status)\nstdout: \(output)\nstderr: \(error)" }
}

/// Runs a command and returns what it printed. It is killed after `limit` (a guard against a hang: no command the
/// tests run takes near that), and then ends with status 124, as timeout(1) says.
func runCommand(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, limit: Duration = .seconds(300)
) async throws -> CommandResult {
    let env: Subprocess.Environment = environment.map { overrides in
        .inherit.updating(Dictionary(uniqueKeysWithValues: overrides.map { (Environment.Key(stringLiteral: $0.key), Optional($0.value)) }))
    } ?? .inherit
    let result = try await Subprocess.run(
        .path("/usr/bin/timeout"), arguments: Arguments(["--kill-after=10", "\(Int(limit.seconds))", executable] + arguments),
        environment: env,
        output: .string(limit: 4 << 20), error: .string(limit: 4 << 20))
    let status: Int32
    switch result.terminationStatus {
    case .exited(let code): status = code
    default: status = -1
    }
    return CommandResult(status: status, output: result.standardOutput, error: result.standardError)
}

/// One private dockerd, as one droplet. Stopped by its pid; its folders are removed afterwards.
final class Engine: @unchecked Sendable {
    let name: String
    let dataRoot: String
    let execRoot: String
    let socket: String
    let logPath: String
    private let process: Process

    /// - Parameter execRoot: short (plugin sockets live under it and unix socket paths are limited to 108 bytes).
    init(name: String, dataRoot: String, execRoot: String, launcher: [String] = []) throws {
        self.name = name
        self.dataRoot = dataRoot
        self.execRoot = execRoot
        self.socket = execRoot + "/docker.sock"
        self.logPath = dataRoot + "/dockerd.log"
        try FileManager.default.createDirectory(atPath: dataRoot, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: execRoot, withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: logPath))
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let arguments = [
            "/usr/sbin/dockerd", "--data-root", dataRoot + "/data", "--exec-root", execRoot, "-H", "unix://" + socket,
            "--pidfile", execRoot + "/docker.pid", "--iptables=false", "--bridge=none", "--ip-masq=false",
            "--storage-driver=vfs", "--log-level=info",
        ]
        let command = launcher + arguments
        process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func waitUntilReady() async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            guard process.isRunning else { throw LabError("dockerd \(name) exited:\n\(log.suffix(3000))") }
            if let result = try? await docker("version", "--format", "{{.Server.Version}}"), result.status == 0 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw LabError("dockerd \(name) did not answer within 60 s:\n\(log.suffix(3000))")
    }

    @discardableResult
    func docker(_ arguments: String...) async throws -> CommandResult {
        try await docker(arguments)
    }

    @discardableResult
    func docker(_ arguments: [String]) async throws -> CommandResult {
        try await runCommand("docker", ["-H", "unix://" + socket] + arguments, environment: ["DOCKER_CONFIG": dataRoot + "/client"])
    }

    /// Runs docker and fails the test with its output when it fails.
    @discardableResult
    func must(_ arguments: String...) async throws -> String {
        try await must(arguments)
    }

    @discardableResult
    func must(_ arguments: [String]) async throws -> String {
        let result = try await docker(arguments)
        guard result.status == 0 else {
            throw LabError("docker \(arguments.joined(separator: " ")) on \(name) failed: \(result)")
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Imports a tiny image made of busybox as `bb:latest`.
    func importBusybox(tarball: String) async throws {
        try await must("import", tarball, "bb:latest")
    }

    /// The plugin's VolumeDriver requests as it logged them (its output goes to dockerd's log).
    func requests(_ method: String, volume: String, outcome: String = "ok") -> Int {
        log.split(separator: "\n").filter {
            $0.contains("VolumeDriver request") && $0.contains("request.method=\(method) ")
                && $0.contains("volume.name=\(volume)") && $0.contains("outcome=\(outcome)")
        }.count
    }

    func stop(keepFolders: Bool = false) async {
        if process.isRunning {
            process.terminate()
            let deadline = ContinuousClock.now + .seconds(30)
            while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }
        // containerd's shims and anything mounted under the engine's folders.
        for entry in Lab.mountinfo().reversed() where entry.mountpoint.hasPrefix(dataRoot + "/") || entry.mountpoint.hasPrefix(execRoot + "/") || entry.mountpoint == execRoot {
            umount2(entry.mountpoint, Int32(MNT_DETACH))
        }
        if keepFolders { return }
        try? FileManager.default.removeItem(atPath: execRoot)
        try? FileManager.default.removeItem(atPath: dataRoot)
    }
}

/// A simulated DigitalOcean plus private dockerd droplets running the real managed plugin.
final class EngineLab: @unchecked Sendable {
    let lab: Lab
    let id = String(UUID().uuidString.prefix(6)).lowercased()
    var engines: [Engine] = []
    let busyboxTarball: String
    let pluginName = "do_storage:latest"

    static func withLab(actionLatency: Duration = .milliseconds(300), _ body: (EngineLab) async throws -> Void) async throws {
        try EngineE2E.checkPrerequisites()
        try await Lab.withLab(actionLatency: actionLatency) { lab in
            let engineLab = try EngineLab(lab: lab)
            do {
                try await body(engineLab)
            } catch {
                await engineLab.close()
                throw error
            }
            await engineLab.close()
        }
    }

    private init(lab: Lab) throws {
        self.lab = lab
        busyboxTarball = lab.root + "/busybox.tar"
        pluginDirectory = lab.root + "/plugin"
        let image = lab.root + "/busybox-root"
        try FileManager.default.createDirectory(atPath: image + "/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/usr/bin/busybox", toPath: image + "/bin/busybox")
        for tool in ["sh", "cat", "echo", "ls", "sleep", "df", "touch", "mkdir", "test", "true", "mv", "stat", "chown", "id"] {
            try FileManager.default.createSymbolicLink(atPath: image + "/bin/" + tool, withDestinationPath: "busybox")
        }
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/bin/tar")
        tar.arguments = ["-C", image, "-cf", busyboxTarball, "."]
        try tar.run()
        tar.waitUntilExit()
        try Self.preparePlugin(at: pluginDirectory)
    }

    /// The plugin as the droplets here install it: plugin/build's rootfs and config.json, less CAP_SYS_RESOURCE
    /// (online ext4 growth) where this machine withholds it, as these build machines do from every process: runc
    /// refuses to start a plugin that asks for a capability it cannot grant. That is the only difference from a
    /// droplet.
    let pluginDirectory: String

    /// Whether this machine can grant CAP_SYS_RESOURCE (bit 24 of the bounding set).
    static var grantsSysResource: Bool {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("CapBnd:") } ?? ""
        let mask = UInt64(line.split(separator: "\t").last.map(String.init) ?? "", radix: 16) ?? 0
        return mask >> 24 & 1 == 1
    }

    static func preparePlugin(at directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let copy = Process()
        copy.executableURL = URL(fileURLWithPath: "/bin/cp")
        copy.arguments = ["-a", EngineE2E.pluginDirectory + "/rootfs", directory + "/rootfs"]
        try copy.run()
        copy.waitUntilExit()
        guard copy.terminationStatus == 0 else { throw LabError("cannot copy the plugin's rootfs") }
        let data = try Data(contentsOf: URL(fileURLWithPath: EngineE2E.pluginDirectory + "/config.json"))
        guard var config = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            var linux = config["linux"] as? [String: Any], let capabilities = linux["capabilities"] as? [String]
        else { throw LabError("plugin/config.json has no linux.capabilities") }
        if !grantsSysResource { linux["capabilities"] = capabilities.filter { $0 != "CAP_SYS_RESOURCE" } }
        config["linux"] = linux
        // Unescaped slashes: dockerd reads "docker.volumedriver/1.0" byte by byte, and "\\/" would hide the capability.
        try JSONSerialization.data(withJSONObject: config, options: [.withoutEscapingSlashes])
            .write(to: URL(fileURLWithPath: directory + "/config.json"))
    }

    /// The folder that stands for droplet `droplet`'s /dev/disk: every droplet here shares the host's /dev, so each
    /// gets its own folder under it, where the simulator makes that droplet's volume links (in `by-id`), and its
    /// plugin's DEVICE_DIR names it. The plugin sees it through its /dev mount, as it sees /dev/disk on a droplet;
    /// the folder is made by the first attach, as udev makes /dev/disk/by-id on a droplet.
    func diskDirectory(_ droplet: Int) -> String { "\(devDirectory)/droplet-\(droplet)/disk" }
    /// This lab's folder under /dev, removed by `close()`.
    var devDirectory: String { "/dev/do-storage-lab-\(id)" }

    /// Adds a droplet to the simulator and starts its dockerd, by default with the plugin created (not yet configured).
    func startDroplet(_ droplet: Int, launcher: [String] = [], createPlugin: Bool = true) async throws -> Engine {
        try await lab.world.addDroplet(id: droplet, region: "nyc1", deviceDirectory: diskDirectory(droplet) + "/by-id")
        let engine = try Engine(
            name: "droplet-\(droplet)", dataRoot: "\(lab.root)/engine-\(droplet)", execRoot: "/run/dx\(id)\(engines.count)",
            launcher: launcher)
        engines.append(engine)
        try await engine.waitUntilReady()
        try await engine.importBusybox(tarball: busyboxTarball)
        if createPlugin { try await engine.must("plugin", "create", pluginName, pluginDirectory) }
        return engine
    }

    /// The lab's settings for this droplet's plugin, as `docker plugin set` and `docker plugin install` take them.
    /// - Parameter api: the simulator's URL as the droplet reaches it (default: the lab's loopback address).
    func settings(droplet: Int, token: String? = Lab.token, api: String? = nil) -> [String] {
        let api = api ?? lab.running.apiURL
        var settings = [
            "DO_API_URL=\(api)", "DO_METADATA_URL=\(api)/droplets/\(droplet)/metadata/v1",
            "DEVICE_DIR=\(diskDirectory(droplet))/by-id", "LOG_LEVEL=debug",
        ]
        if let token { settings.append("ACCESS_TOKEN=\(token)") }
        return settings
    }

    /// `docker plugin set` of the lab's settings for this droplet, then enable.
    func configureAndEnable(_ engine: Engine, droplet: Int, token: String? = Lab.token, extra: [String] = []) async throws {
        try await engine.must(["plugin", "set", pluginName] + settings(droplet: droplet, token: token) + extra)
        try await engine.must("plugin", "enable", pluginName)
    }

    /// Stops dockerd (it stops containers, the plugin, and unmounts the propagated mounts) and starts it again on the
    /// same folders.
    func restart(_ engine: Engine) async throws -> Engine {
        await engine.stop(keepFolders: true)
        let again = try Engine(name: engine.name, dataRoot: engine.dataRoot, execRoot: engine.execRoot)
        engines[engines.firstIndex { $0 === engine }!] = again
        try await again.waitUntilReady()
        return again
    }

    // MARK: Swarm: engines in network namespaces

    /// Test hosts the lab made: network namespaces joined by a veth pair (192.168.77.1 and .2), each with a relay from
    /// its own 127.0.0.1:8080 to the simulator's unix socket, so all traffic stays inside the lab, and one carrying
    /// udevd's device events into it.
    var namespaces: [String] = []
    var relays: [Process] = []
    var simulatorSocket: RunningSimulator?

    static let simulatorPort = 8080

    func makeTestHosts(_ count: Int) async throws -> [String] {
        let socket = lab.root + "/sim.sock"
        simulatorSocket = try await lab.server.start(unixSocket: socket)
        let names = (1...count).map { "ds\(id)\($0)" }
        for name in names {
            try await ip("netns", "add", name)
            namespaces.append(name)
        }
        try await ip("link", "add", "v\(id)1", "type", "veth", "peer", "name", "v\(id)2")
        for (index, name) in names.enumerated() {
            let link = "v\(id)\(index + 1)"
            try await ip("link", "set", link, "netns", name)
            try await ip("-n", name, "addr", "add", "192.168.77.\(index + 1)/24", "dev", link)
            try await ip("-n", name, "link", "set", link, "up")
            try await ip("-n", name, "link", "set", "lo", "up")
            let relay = Process()
            relay.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            relay.arguments = [
                "--net=/var/run/netns/\(name)", "socat",
                "TCP-LISTEN:\(Self.simulatorPort),bind=127.0.0.1,reuseaddr,fork", "UNIX-CONNECT:\(socket)",
            ]
            relay.standardOutput = FileHandle.nullDevice
            relay.standardError = FileHandle.nullDevice
            try relay.run()
            relays.append(relay)
            try relayDeviceEvents(into: name)
        }
        return names
    }

    /// udevd announces devices in the initial network namespace only; on a droplet the plugin shares it. Each test
    /// host gets udevd's messages re-sent inside it (tools/uevent-relay.py), so its plugin hears them as on a droplet.
    func relayDeviceEvents(into namespace: String) throws {
        let script = EngineE2E.repositoryRoot + "/Tests/EndToEndTests/tools/uevent-relay.py"
        let pipe = Pipe()
        let receiver = Process()
        receiver.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        receiver.arguments = ["python3", script, "receive"]
        receiver.standardOutput = pipe
        let sender = Process()
        sender.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        sender.arguments = ["--net=/var/run/netns/\(namespace)", "/usr/bin/env", "python3", script, "send"]
        sender.standardInput = pipe
        try sender.run()
        relays.append(sender)
        try receiver.run()
        relays.append(receiver)
    }

    func ip(_ arguments: String...) async throws {
        let result = try await runCommand("ip", arguments)
        guard result.status == 0 else { throw LabError("ip \(arguments.joined(separator: " ")) failed: \(result)") }
    }

    /// A droplet whose dockerd runs in network namespace `namespace`, with a private mount namespace (its own
    /// /run/docker) and its own host name.
    func startDroplet(_ droplet: Int, namespace: String) async throws -> Engine {
        try await startDroplet(
            droplet,
            launcher: [
                "/usr/bin/nsenter", "--net=/var/run/netns/\(namespace)", "/usr/bin/unshare", "-m", "-u", "--propagation",
                "private", "/bin/sh", "-c",
                "hostname droplet-\(droplet) && mkdir -p /run/docker && mount -t tmpfs tmpfs /run/docker && exec \"$@\"", "sh",
            ])
    }

    /// Plugin settings for a droplet in a test host: the simulator through the host's relay.
    func configureAndEnableInTestHost(_ engine: Engine, droplet: Int, extra: [String] = []) async throws {
        let api = "http://127.0.0.1:\(Self.simulatorPort)"
        try await engine.must(["plugin", "set", pluginName] + settings(droplet: droplet, api: api) + extra)
        try await engine.must("plugin", "enable", pluginName)
    }

    // MARK: A registry on loopback

    var registry: Process?

    /// Starts Debian's docker-registry on 127.0.0.1 (Docker speaks plain HTTP to loopback registries), storing in
    /// the lab's folder, and returns its `host:port`.
    func startRegistry() async throws -> String {
        let executable = "/usr/bin/docker-registry"
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw LabError("the registry test needs Debian's docker-registry: apt-get install docker-registry")
        }
        let port = try Self.freeLoopbackPort()
        let folder = lab.root + "/registry"
        try FileManager.default.createDirectory(atPath: folder + "/data", withIntermediateDirectories: true)
        try """
            version: 0.1
            log:
              level: warn
            storage:
              filesystem:
                rootdirectory: \(folder)/data
            http:
              addr: 127.0.0.1:\(port)
            """.write(toFile: folder + "/config.yml", atomically: true, encoding: .utf8)
        try Data().write(to: URL(fileURLWithPath: folder + "/registry.log"))
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: folder + "/registry.log"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["serve", folder + "/config.yml"]
        process.standardOutput = log
        process.standardError = log
        try process.run()
        registry = process
        try await waitFor("docker-registry to listen on 127.0.0.1:\(port)") {
            guard process.isRunning else {
                let output = (try? String(contentsOfFile: folder + "/registry.log", encoding: .utf8)) ?? ""
                throw LabError("docker-registry exited:\n\(output.suffix(2000))")
            }
            return Self.acceptsOnLoopback(port)
        }
        return "127.0.0.1:\(port)"
    }

    static func loopbackAddress(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    /// A port no one listens on now, on 127.0.0.1.
    static func freeLoopbackPort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LabError("socket(2) failed") }
        defer { Glibc.close(fd) }
        var address = loopbackAddress(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw LabError("cannot bind a loopback port") }
        return UInt16(bigEndian: address.sin_port)
    }

    static func acceptsOnLoopback(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var address = loopbackAddress(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    func close() async {
        for engine in engines {
            // Containers first, then the plugin, so the plugin unmounts and releases its volumes.
            let ids = (try? await engine.docker("ps", "-aq"))?.output.split(separator: "\n").map(String.init) ?? []
            if !ids.isEmpty { _ = try? await engine.docker(["rm", "-f"] + ids) }
            await engine.stop()
        }
        for relay in relays where relay.isRunning {
            kill(relay.processIdentifier, SIGKILL)
            relay.waitUntilExit()
        }
        for name in namespaces { _ = try? await runCommand("ip", ["netns", "delete", name]) }
        if let registry, registry.isRunning {
            registry.terminate()
            registry.waitUntilExit()
        }
        await simulatorSocket?.stop()
        try? FileManager.default.removeItem(atPath: devDirectory)
    }
}
