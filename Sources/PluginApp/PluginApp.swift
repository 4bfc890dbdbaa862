import CurlTransport
import DigitalOcean
import FoundationEssentials
import Glibc
import HostDevices
import Logging
import ServiceLifecycle
import VolumePlugin
import VolumeService

/// Builds the plugin from its settings and runs it: the concrete parts (libcurl, udev, mount(2)) are chosen here
/// and nowhere else.
public enum PluginApp {
    /// The error every call answers when ACCESS_TOKEN is missing.
    public static let missingTokenError = VolumeError(
        .notConfigured,
        "do_storage has no DigitalOcean access token: run docker plugin disable <plugin>, then docker plugin set "
            + "<plugin> ACCESS_TOKEN=<token>, then docker plugin enable <plugin> (a token with read and write scope, "
            + "from https://cloud.digitalocean.com/account/api/tokens)")

    /// The driver behind the socket: unconfigured without a token, else the real service, built as the plugin
    /// starts.
    public static func makeDriver(settings: PluginSettings, logger: Logger) -> any VolumeDriver {
        makeParts(settings: settings, logger: logger).driver
    }

    /// The driver behind the socket and the services that run beside the server: the service's long-running work
    /// (releasing unused attachments and retrying failed releases, growing on device events, the heartbeat, the
    /// snapshot schedules), which starts its build as the plugin starts, each ended by the graceful shutdown.
    static func makeParts(
        settings: PluginSettings, logger: Logger
    ) -> (driver: any VolumeDriver, services: [ServiceGroupConfiguration.ServiceConfiguration]) {
        guard let token = settings.accessToken else {
            logger.error("ACCESS_TOKEN is not set; every request will be answered with an error saying how to set it")
            return (UnconfiguredDriver(error: missingTokenError), [])
        }
        let transport = CurlTransport()
        let driver = DeferredDriver {
            try await buildService(settings: settings, token: token, transport: transport, logger: logger)
        }
        return (driver, services(for: driver))
    }

    /// The service's long-running work, by name: each runs until the plugin stops.
    public static let longRunningWork: [(name: String, run: @Sendable (VolumeService) async -> Void)] = [
        ("release unused attachments", { await $0.releaseUnusedAttachments() }),
        ("retry releases", { await $0.retryReleases() }),
        ("grow on device events", { await $0.growOnDeviceEvents() }),
        ("heartbeat", { await $0.keepHeartbeat() }),
        ("snapshot schedules", { await $0.runSnapshotSchedules() }),
    ]

    /// The services beside the server: each of `work`, which also starts `driver`'s build.
    public static func services(
        for driver: DeferredDriver<VolumeService>,
        work: [(name: String, run: @Sendable (VolumeService) async -> Void)] = longRunningWork
    ) -> [ServiceGroupConfiguration.ServiceConfiguration] {
        work.map { .init(service: ServiceWork(driver: driver, work: $0.run), serviceName: $0.name) }
    }

    static func buildService(
        settings: PluginSettings, token: String, transport: any HTTPTransport, logger: Logger
    ) async throws -> VolumeService {
        var identity = DropletIdentity(id: settings.dropletID ?? 0, region: settings.dropletRegion ?? "")
        if settings.dropletID == nil || settings.dropletRegion == nil {
            let metadata = try await MetadataClient(baseURL: settings.metadataURL, transport: transport).identity()
            identity = DropletIdentity(
                id: settings.dropletID ?? metadata.id, region: settings.dropletRegion ?? metadata.region)
        }
        logger.info("Droplet identified", metadata: ["droplet.id": "\(identity.id)", "droplet.region": "\(identity.region)"])
        let client = DOClient(
            baseURL: settings.apiURL, token: token, transport: transport, logger: logger)
        let devices = try UdevDeviceWatcher(logger: logger)
        let configuration = ServiceConfiguration(
            dropletID: identity.id, region: identity.region, deviceDirectory: settings.deviceDirectory,
            mountRoot: settings.mountRoot, detachOnUnmount: settings.detachOnUnmount,
            handoffTimeout: settings.handoffTimeout, takeover: settings.takeover, leaseRenew: settings.leaseRenew,
            leaseTTL: settings.leaseTTL, defaults: settings.volumeDefaults, snapshotMinInterval: settings.snapshotMinInterval)
        let service = try VolumeService(
            configuration: configuration, api: client, devices: devices, filesystem: LinuxFilesystem(logger: logger),
            store: StateStore(directory: settings.stateDirectory), logger: logger)
        try await service.reconcileWithHost()
        return service
    }

    /// Serves the VolumeDriver protocol on the settings' unix socket until SIGTERM or SIGINT: the server and the
    /// service's long-running work, one `ServiceGroup`.
    public static func run(settings: PluginSettings, logger: Logger) async throws {
        let (driver, services) = makeParts(settings: settings, logger: logger)
        // What the plugin creates is its own: the socket (it serves Remove and snapshot delete), the state directory
        // and file, the mount points.
        umask(0o077)
        let server = try await makeServer(driver: driver, socketPath: settings.socketPath, logger: logger)
        logger.info(
            "do_storage starting",
            metadata: [
                "socket.path": "\(settings.socketPath)", "do.api.url": "\(settings.apiURL)",
                "mount.root": "\(settings.mountRoot)", "takeover": "\(settings.takeover.rawValue)",
            ])
        // A graceful shutdown ends the services in reverse order: the long-running work first, the server last.
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: server, serviceName: "socket server")] + services,
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// The server on the unix socket, which is mode 0600 once it listens. A socket file that no process answers on
    /// is replaced (left by a killed plugin, or held by a child of one that never serves it); one that a live plugin
    /// answers on is not (a second instance would take Docker's requests from it).
    public static func makeServer(driver: any VolumeDriver, socketPath: String, logger: Logger) async throws -> PluginServer {
        let controller = VolumeDriverController(driver: driver, logger: logger)
        let directory = socketPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        if await UnixSocket.answers(socketPath, within: .seconds(2)) {
            throw SocketInUse(path: socketPath)
        }
        unlink(socketPath)
        return PluginServer(controller: controller, address: .unixSocket(socketPath)) { _ in
            Descriptors.closeOnExec()
            chmod(socketPath, 0o600)
            logger.info("Listening", metadata: ["socket.path": "\(socketPath)"])
        }
    }
}

/// Long-running work of the service, a service of the plugin's group: starts the service's build as the plugin
/// starts (the first to ask builds it, the others wait), then runs until the graceful shutdown cancels it. After a
/// failed build it waits for the build a later request makes.
struct ServiceWork: Service {
    let driver: DeferredDriver<VolumeService>
    let work: @Sendable (VolumeService) async -> Void

    func run() async {
        await cancelWhenGracefulShutdown { [driver, work] in
            _ = try? await driver.driver()
            guard let service = await driver.whenBuilt() else { return }
            await work(service)
        }
        // Work that ends early (nothing left to release) stays in the group until the shutdown: the group ends its
        // services in its own order, and takes one that ends meanwhile for a failure.
        try? await gracefulShutdown()
    }
}

/// Another process serves the plugin's socket.
public struct SocketInUse: Error, CustomStringConvertible, Sendable {
    public let path: String
    public var description: String {
        "another do_storage already answers on \(path); this one does not start (to run the command line, give it a "
            + "subcommand, e.g. do-storage snapshot list VOLUME)"
    }
}
