@_exported import TestClocks
import DOSimulator
import DigitalOcean
import Foundation
import Logging
import NIOConcurrencyHelpers
import VolumeService
import Timekeeping

/// One simulated DigitalOcean account and any number of droplets, each with its own `VolumeService`, fake
/// filesystem and device folder; devices are plain files and their changes fire the watchers at once.
public final class ServiceHarness: Sendable {
    public let root: String
    public let world: SimulatorWorld
    public let api: InProcessAPI
    public let signal = EventSignal()
    /// The clock the simulator and every node wait on; nil: real time.
    public let testTime: TestTime?

    /// - Parameters:
    ///   - actionLatency: how long simulated actions take (on `testTime` when given, else real time).
    ///   - clock: the account's wall clock, for the times on volumes and snapshots; the real one when nil.
    ///   - testTime: a clock the test moves, for the simulator and every node: waits, deadlines and retries run
    ///     only as far as the test advances it.
    ///   - snapshotInterval: at most one snapshot of a volume in this time (DigitalOcean: 10 minutes); none by default.
    public init(
        actionLatency: Duration = .milliseconds(30), clock: MovableWallClock? = nil, testTime: TestTime? = nil,
        snapshotInterval: Duration = .zero
    ) throws {
        self.testTime = testTime
        root = FileManager.default.temporaryDirectory.appendingPathComponent("do-storage-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let signal = self.signal
        var wallClock: (@Sendable () -> Date)?
        if let clock { wallClock = { clock.now } }
        world = SimulatorWorld(
            options: SimulatorOptions(
                token: "test-token", actionLatency: actionLatency, snapshotInterval: snapshotInterval,
                time: testTime?.timeSource ?? .system,
                wallClock: wallClock),
            devices: FileDeviceBackend(dataDirectory: root + "/data", onChange: { signal.fire() }),
            logger: Logger(label: "do-sim"))
        api = InProcessAPI(world: world)
    }

    /// Each node's retries of failed releases, as the plugin runs them beside its server: ended with the harness.
    private let retries = NIOLockedValueBox<[Task<Void, Never>]>([])

    deinit {
        retries.withLockedValue { $0.forEach { $0.cancel() } }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// A droplet in the world, with a service for it.
    public struct Node: Sendable {
        public let service: VolumeService
        public let filesystem: FakeFilesystem
        public let configuration: ServiceConfiguration
        /// The node's retries of failed releases, as the plugin runs them beside its server.
        let retries: Task<Void, Never>

        /// Stops the node's background work, as killing its plugin does (its requests under way are the test's to
        /// cancel).
        public func kill() { retries.cancel() }
    }

    public func node(
        droplet: Int, api: (any VolumeAPI)? = nil, filesystem: FakeFilesystem = FakeFilesystem(),
        time: TimeSource? = nil, configure: (inout ServiceConfiguration) -> Void = { _ in }
    ) async throws -> Node {
        let time = time ?? testTime?.timeSource ?? .system
        var configuration = try await configuration(droplet: droplet)
        configure(&configuration)
        let service = try VolumeService(
            configuration: configuration, api: api ?? self.api, devices: devices(time: time),
            filesystem: filesystem, store: store(droplet: droplet), time: time, logger: Logger(label: "test"))
        let background = Task { await service.retryReleases() }
        retries.withLockedValue { $0.append(background) }
        return Node(service: service, filesystem: filesystem, configuration: configuration, retries: background)
    }

    /// The settings of a droplet in the world (added when it is not there yet), as `node` gives its service.
    public func configuration(droplet: Int) async throws -> ServiceConfiguration {
        let deviceDirectory = "\(root)/droplet-\(droplet)/by-id"
        if (try? await world.droplet(id: droplet)) == nil {
            try await world.addDroplet(id: droplet, region: "nyc1", deviceDirectory: deviceDirectory)
        }
        return ServiceConfiguration(
            dropletID: droplet, region: "nyc1", deviceDirectory: deviceDirectory,
            mountRoot: "\(root)/droplet-\(droplet)/mnt", handoffTimeout: .seconds(2),
            initialPollInterval: .milliseconds(20), maxPollInterval: .milliseconds(200), actionTimeout: .seconds(10),
            deviceTimeout: .seconds(5))
    }

    /// The device watcher of every droplet: the world's devices are files, and their changes fire it at once.
    public func devices(time: TimeSource? = nil) -> SignalDeviceWatcher {
        SignalDeviceWatcher(signal: signal, fallbackInterval: .milliseconds(500), time: time ?? testTime?.timeSource ?? .system) { path in
            FileManager.default.fileExists(atPath: path) ? path : nil
        }
    }

    /// Where a droplet's plugin keeps its state.
    public func store(droplet: Int) -> StateStore {
        StateStore(directory: "\(root)/droplet-\(droplet)/state")
    }

    @discardableResult
    public func createVolume(_ name: String, filesystem: String? = "ext4") async throws -> Volume {
        do {
            return try await world.createVolume(
                VolumeCreateRequest(name: name, sizeGigabytes: 1, region: "nyc1", filesystemType: filesystem))
        } catch {
            throw FakeError(message: error.message)
        }
    }

    /// Resizes the volume on DigitalOcean (as the control panel or doctl does) and waits until its device grew.
    public func resize(_ name: String, toGigabytes size: Int) async throws {
        guard let volume = await world.listVolumes(name: name, region: "nyc1").first else {
            throw FakeError(message: "no volume \(name)")
        }
        do {
            _ = try await world.startAction(
                volumeID: volume.id, request: VolumeActionRequest(type: "resize", region: "nyc1", sizeGigabytes: size))
        } catch {
            throw FakeError(message: error.message)
        }
        let backing = root + "/data/\(volume.id).img"
        try await waitUntil("the device of \(name) to grow", within: .seconds(10)) {
            FakeFilesystem.size(backing) == UInt64(size) << 30
        }
    }

    /// Where the volume is attached now.
    public func attachments(_ name: String) async -> [Int] {
        await world.listVolumes(name: name, region: "nyc1").first?.dropletIDs ?? []
    }
}

/// Awaits a condition, checking it every 5 ms; throws naming `what` when it does not hold within `limit`.
public func waitUntil(_ what: String, within limit: Duration, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + limit
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw FakeError(message: "timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// Real monotonic time and waits, with a wall clock the test moves: a droplet's clock that is off, or hours of
/// heartbeats without waiting for them.
public final class MovableWallClock: Sendable {
    private let offset = NIOLockedValueBox<TimeInterval>(0)

    public init() {}

    /// Moves the wall clock forward (or back) by `duration`.
    public func move(by duration: Duration) { offset.withLockedValue { $0 += duration.seconds } }

    public var now: Date { Date().addingTimeInterval(offset.withLockedValue { $0 }) }

    public var timeSource: TimeSource {
        TimeSource(now: { ContinuousClock.now }, sleep: { try await Task.sleep(for: $0) }, wallClock: { self.now })
    }
}
