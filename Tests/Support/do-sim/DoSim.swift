import ArgumentParser
import DOSimulator
import DigitalOcean
import Foundation
import Logging
import UnixSignals

/// The DigitalOcean simulator as a daemon, for the demo and the lab.
@main
struct DoSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "do-sim",
        abstract: "A local DigitalOcean block-storage API, metadata service and volume devices, for tests and demos.")

    @Option(help: "Address to listen on (loopback only).")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one (printed on start).")
    var port = 0

    @Option(help: "The bearer token the API accepts.")
    var token: String

    @Option(help: "How long attach and detach actions take, e.g. 500ms or 2s.")
    var actionLatency = "500ms"

    @Option(help: "API requests a minute before 429 (DigitalOcean: 250).")
    var requestsPerMinute = 250

    @Option(help: "At most one snapshot of a volume in this time, e.g. 10m (DigitalOcean) or 0s.")
    var snapshotInterval = "10m"

    @Option(
        name: .customLong("droplet"),
        help: "A droplet as ID:REGION:DEVICE_DIR (repeat for several), e.g. 1001:nyc1:/srv/sim/d1/by-id.")
    var droplets: [String] = []

    @Option(
        name: .customLong("volume"),
        help: "A volume to create at start as NAME:SIZE_GIB[:FS] (repeat), e.g. pgdata:1:ext4.")
    var volumes: [String] = []

    @Option(help: "Where volumes' backing files live.")
    var dataDir = "/var/lib/do-sim"

    @Flag(help: "Use real loop block devices (needs root) instead of plain files.")
    var loop = false

    @Option(help: "Write the listening port to this file once ready.")
    var portFile: String?

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardOutput(label: $0) }
        let logger = Logger(label: "do-sim")
        guard let latency = Duration(parsing: actionLatency) else {
            throw ValidationError("--action-latency must look like 500ms or 2s")
        }
        guard let snapshotInterval = Duration(parsing: snapshotInterval) else {
            throw ValidationError("--snapshot-interval must look like 10m or 0s")
        }
        let backend: any SimDeviceBackend =
            loop ? LoopDeviceBackend(dataDirectory: dataDir) : FileDeviceBackend(dataDirectory: dataDir)
        let world = SimulatorWorld(
            options: SimulatorOptions(
                token: token, actionLatency: latency, requestsPerMinute: requestsPerMinute,
                snapshotInterval: snapshotInterval),
            devices: backend, logger: logger)
        var firstRegion = "nyc1"
        for (index, spec) in droplets.enumerated() {
            let parts = spec.split(separator: ":", maxSplits: 2).map(String.init)
            guard parts.count == 3, let id = Int(parts[0]) else {
                throw ValidationError("--droplet must be ID:REGION:DEVICE_DIR, not \(spec)")
            }
            if index == 0 { firstRegion = parts[1] }
            try await world.addDroplet(id: id, region: parts[1], deviceDirectory: parts[2])
        }
        for spec in volumes {
            let parts = spec.split(separator: ":").map(String.init)
            guard parts.count >= 2, let size = Int(parts[1]) else {
                throw ValidationError("--volume must be NAME:SIZE_GIB[:FS], not \(spec)")
            }
            do {
                _ = try await world.createVolume(
                    VolumeCreateRequest(
                        name: parts[0], sizeGigabytes: size, region: firstRegion,
                        filesystemType: parts.count > 2 ? parts[2] : nil))
            } catch {
                throw ValidationError("cannot create volume \(parts[0]): \(error.message)")
            }
        }
        let server = SimulatorServer(world: world, logger: logger)
        let running = try await server.start(host: host, port: port)
        logger.info("do-sim listening", metadata: ["api.url": "\(running.apiURL)"])
        if let portFile { try String(running.port).write(toFile: portFile, atomically: true, encoding: .utf8) }
        // Serve until SIGTERM or SIGINT, then release every device.
        for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) { break }
        logger.info("do-sim stopping")
        await world.shutdown()
        await running.stop()
    }
}
