import DOSimulator
import DigitalOcean
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PluginApp
import TestSupport
import Timekeeping
import VolumeService

/// The simulator's routes called in process: the real DigitalOcean client, its retries and its reading of 429s,
/// over HummingbirdTesting's router framework instead of a socket.
/// A request under way is work the test clock waits for before it moves on.
struct RouterTransport: HTTPTransport {
    let client: any TestClientProtocol
    let time: TestTime
    static let baseURL = "http://do-sim"

    func send(_ request: TransportRequest) async throws -> TransportResponse {
        let uri = String(request.url.dropFirst(Self.baseURL.count))
        return try await time.busy {
            let response = try await client.executeRequest(
                uri: uri, method: request.method, headers: request.headers, body: request.body.map { ByteBuffer(bytes: $0) })
            return TransportResponse(status: response.status.code, headers: response.headers, body: Array(response.body.readableBytesView))
        }
    }
}

/// Whether a droplet's plugin process is alive. A killed plugin's leftovers (its background tasks) reach neither
/// DigitalOcean nor the host any more, as with a dead process.
final class Life: Sendable {
    private let alive = NIOLockedValueBox(true)
    func kill() { alive.withLockedValue { $0 = false } }
    var isAlive: Bool { alive.withLockedValue { $0 } }
    func check() throws { guard isAlive else { throw CancellationError() } }
}

/// A transport that stops with its plugin.
struct MortalTransport: HTTPTransport {
    let base: any HTTPTransport
    let life: Life
    func send(_ request: TransportRequest) async throws -> TransportResponse {
        guard life.isAlive else { throw TransportError(kind: .connect, message: "the plugin is dead") }
        return try await base.send(request)
    }
}

/// The host's filesystems as one plugin process sees them: the host's (shared with the process that replaces it),
/// out of reach once the process is dead.
struct MortalFilesystem: HostFilesystem {
    let base: FakeFilesystem
    let life: Life
    func filesystemType(device: String) async throws -> String? {
        try life.check()
        return try await base.filesystemType(device: device)
    }
    func mounts(under root: String) async throws -> [MountEntry] {
        try life.check()
        return try await base.mounts(under: root)
    }
    func mount(device: String, at path: String, type: String, options: [MountOption]) async throws {
        try life.check()
        try await base.mount(device: device, at: path, type: type, options: options)
    }
    func unmount(path: String) async throws {
        try life.check()
        try await base.unmount(path: path)
    }
    func checkBlank(device: String) async throws -> BlankCheck {
        try life.check()
        return try await base.checkBlank(device: device)
    }
    func format(device: String, type: FilesystemType, label: String?) async throws {
        try life.check()
        try await base.format(device: device, type: type, label: label)
    }
    func sizes(device: String) async throws -> (device: UInt64, filesystem: UInt64?) {
        try life.check()
        return try await base.sizes(device: device)
    }
    func grow(device: String, type: FilesystemType, mountpoint: String?) async throws {
        try life.check()
        try await base.grow(device: device, type: type, mountpoint: mountpoint)
    }
    func freeze(mountpoint: String) async throws {
        try life.check()
        try await base.freeze(mountpoint: mountpoint)
    }
    func thaw(mountpoint: String) async throws {
        try life.check()
        try await base.thaw(mountpoint: mountpoint)
    }
    func prepareDirectory(_ path: String, uid: UInt32?, gid: UInt32?, mode: UInt32?) async throws {
        try life.check()
        try await base.prepareDirectory(path, uid: uid, gid: gid, mode: mode)
    }
}

/// Three droplets on one simulated DigitalOcean, each with a plugin (a `VolumeService` over the real client) that
/// can be killed mid-operation and started again from its state file. Everything waits on one test clock.
final class Cluster: @unchecked Sendable {
    static let droplets = [1, 2, 3]
    static let token = "model-token"
    let root: String
    let time: TestTime
    let world: SimulatorWorld
    let server: SimulatorServer
    let client: any TestClientProtocol
    let signal: EventSignal
    let logger: Logger
    /// The host's filesystems, by droplet: they outlive the plugin.
    let hosts: [Int: FakeFilesystem]

    struct Plugin {
        var service: VolumeService
        var life: Life
        var heartbeat: Task<Void, Never>
    }
    private let plugins = NIOLockedValueBox<[Int: Plugin]>([:])
    /// Each plugin process's state folder, by droplet: a killed process's writes still under way land in its own
    /// folder, never in its successor's, as a dead process writes nothing.
    private let generations = NIOLockedValueBox<[Int: Int]>([:])

    init(
        root: String, time: TestTime, signal: EventSignal, world: SimulatorWorld, server: SimulatorServer,
        client: any TestClientProtocol
    ) {
        self.root = root
        self.signal = signal
        self.time = time
        self.world = world
        self.server = server
        self.client = client
        var logger = Logger(label: "model")
        // MODEL_LOG=debug (with SEED=<n>) shows what the plugins did.
        logger.logLevel = ProcessInfo.processInfo.environment["MODEL_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        self.logger = logger
        hosts = Dictionary(uniqueKeysWithValues: Self.droplets.map { ($0, FakeFilesystem()) })
    }

    /// Runs `body` with a cluster whose droplets' plugins are started.
    static func with<T: Sendable>(_ body: @Sendable (Cluster) async throws -> T) async throws -> T {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("model-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let time = TestTime()
        let signal = EventSignal()
        var simLogger = Logger(label: "do-sim")
        simLogger.logLevel = .critical
        let world = SimulatorWorld(
            options: SimulatorOptions(token: token, actionLatency: .seconds(1), snapshotInterval: .zero, time: time.timeSource),
            devices: FileDeviceBackend(dataDirectory: root + "/data", onChange: { signal.fire() }), logger: simLogger)
        for droplet in droplets {
            try await world.addDroplet(id: droplet, region: "nyc1", deviceDirectory: "\(root)/droplet-\(droplet)/by-id")
        }
        let server = SimulatorServer(world: world, logger: simLogger)
        return try await Application(router: server.router()).test(.router) { client in
            let cluster = Cluster(root: root, time: time, signal: signal, world: world, server: server, client: client)
            defer { cluster.stopAll() }
            for droplet in droplets { try await cluster.start(droplet) }
            return try await body(cluster)
        }
    }

    func configuration(_ droplet: Int) -> ServiceConfiguration {
        ServiceConfiguration(
            dropletID: droplet, region: "nyc1", deviceDirectory: "\(root)/droplet-\(droplet)/by-id",
            mountRoot: "\(root)/droplet-\(droplet)/mnt", handoffTimeout: .seconds(10), releaseRetryInterval: .seconds(5))
    }

    func stateDirectory(_ droplet: Int) -> String {
        "\(root)/droplet-\(droplet)/state-\(generations.withLockedValue { $0[droplet] ?? 0 })"
    }

    /// Starts droplet `droplet`'s plugin as the plugin starts: reconciled with the host, then serving.
    func start(_ droplet: Int) async throws {
        let life = Life()
        let client = DOClient(
            baseURL: RouterTransport.baseURL, token: Self.token,
            transport: MortalTransport(base: RouterTransport(client: self.client, time: time), life: life),
            time: time.timeSource, logger: logger)
        let configuration = configuration(droplet)
        let service = try VolumeService(
            configuration: configuration, api: client,
            devices: SignalDeviceWatcher(signal: signal, fallbackInterval: .seconds(2), time: time.timeSource) { path in
                FileManager.default.fileExists(atPath: path) ? path : nil
            },
            filesystem: MortalFilesystem(base: hosts[droplet]!, life: life),
            store: StateStore(directory: stateDirectory(droplet)), time: time.timeSource, logger: logger)
        try await service.reconcileWithHost()
        let heartbeat = Task {
            async let release: Void = service.releaseUnusedAttachments()
            async let retries: Void = service.retryReleases()
            await service.keepHeartbeat()
            await release
            await retries
        }
        plugins.withLockedValue { $0[droplet] = Plugin(service: service, life: life, heartbeat: heartbeat) }
    }

    /// Kills droplet `droplet`'s plugin: nothing it started reaches DigitalOcean, the host or its state file any
    /// more. The state file stays as it was at that moment, for the next process.
    func kill(_ droplet: Int) {
        guard let plugin = plugins.withLockedValue({ $0.removeValue(forKey: droplet) }) else { return }
        plugin.life.kill()
        plugin.heartbeat.cancel()
        let old = stateDirectory(droplet)
        generations.withLockedValue { $0[droplet, default: 0] += 1 }
        let new = stateDirectory(droplet)
        try? FileManager.default.createDirectory(atPath: new, withIntermediateDirectories: true)
        // Read through one descriptor: the file is replaced by rename while the dead process's last write lands.
        if let saved = try? Data(contentsOf: URL(fileURLWithPath: old + "/state.json")) {
            try? saved.write(to: URL(fileURLWithPath: new + "/state.json"))
        }
    }

    func stopAll() {
        for droplet in Self.droplets { kill(droplet) }
    }

    func service(_ droplet: Int) -> VolumeService? { plugins.withLockedValue { $0[droplet]?.service } }
}
