import CurlTransport
import DigitalOcean
import FoundationEssentials
import Glibc
import HostDevices
import Hummingbird
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

    /// The driver behind the socket: unconfigured without a token, else the real service built in the background.
    public static func makeDriver(settings: PluginSettings, logger: Logger) -> any VolumeDriver {
        guard let token = settings.accessToken else {
            logger.error("ACCESS_TOKEN is not set; every request will be answered with an error saying how to set it")
            return UnconfiguredDriver(error: missingTokenError)
        }
        let transport = CurlTransport()
        return DeferredDriver {
            let service = try await buildService(settings: settings, token: token, transport: transport, logger: logger)
            Task { await service.releaseUnusedAttachments() }
            Task { await service.growOnDeviceEvents() }
            Task { await service.keepHeartbeat() }
            Task { await service.runSnapshotSchedules() }
            return service
        }
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

    /// Serves the VolumeDriver protocol on the settings' unix socket until SIGTERM or SIGINT.
    public static func run(settings: PluginSettings, logger: Logger) async throws {
        let driver = makeDriver(settings: settings, logger: logger)
        // What the plugin creates is its own: the socket (it serves Remove and snapshot delete), the state directory
        // and file, the mount points.
        umask(0o077)
        let app = try await makeApplication(driver: driver, socketPath: settings.socketPath, logger: logger)
        logger.info(
            "do_storage starting",
            metadata: [
                "socket.path": "\(settings.socketPath)", "do.api.url": "\(settings.apiURL)",
                "mount.root": "\(settings.mountRoot)", "takeover": "\(settings.takeover.rawValue)",
            ])
        try await app.runService()
    }

    /// The HTTP application on the unix socket, which is mode 0600 once it listens. A socket file that no process
    /// answers on is replaced (left by a killed plugin, or held by a child of one that never serves it); one that a
    /// live plugin answers on is not (a second instance would take Docker's requests from it).
    public static func makeApplication(
        driver: any VolumeDriver, socketPath: String, logger: Logger
    ) async throws -> some ApplicationProtocol {
        let controller = VolumeDriverController(driver: driver, logger: logger)
        let directory = socketPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        if await UnixSocket.answers(socketPath, within: .seconds(2)) {
            throw SocketInUse(path: socketPath)
        }
        unlink(socketPath)
        return Application(
            router: Router(), server: controller.server, configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: "do_storage"),
            onServerRunning: { _ in
                Descriptors.closeOnExec()
                chmod(socketPath, 0o600)
                logger.info("Listening", metadata: ["socket.path": "\(socketPath)"])
            },
            logger: logger)
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
