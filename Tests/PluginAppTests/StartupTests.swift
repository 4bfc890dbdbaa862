import Foundation
import HostDevices
import Logging
import PluginApp
import Testing
import VolumePlugin
import VolumeService

/// The plugin's start-up when it fails: every request retries it, and a failed try leaves nothing behind.
@Suite(.timeLimit(.minutes(1))) struct StartupTests {
    /// Threads of this process named `name`.
    static func threads(named name: String) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter { task in
            (try? ProcFile.read("/proc/self/task/\(task)/comm"))?.trimmingCharacters(in: .whitespacesAndNewlines) == name
        }.count
    }

    /// A damaged state file makes every build of the service fail; each build opened a udev monitor with a thread of
    /// its own, which must end with the failed build, not pile up one per request.
    @Test func aFailedBuildLeavesNoUdevThreadBehind() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("startup-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/state", withIntermediateDirectories: true)
        try Data("{ not json".utf8).write(to: URL(fileURLWithPath: root + "/state/state.json"))
        var settings = PluginSettings()
        settings.accessToken = "dop_v1_test"
        settings.apiURL = "http://127.0.0.1:9"
        settings.dropletID = 1001
        settings.dropletRegion = "nyc1"
        settings.stateDirectory = root + "/state"
        settings.mountRoot = root + "/mnt"
        settings.deviceDirectory = root + "/by-id"
        let driver = PluginApp.makeDriver(settings: settings, logger: Logger(label: "test"))
        for _ in 0..<20 {
            let error = await #expect(throws: (any Error).self) { try await driver.list() }
            #expect(error.map { "\($0)" }?.contains("damaged") == true)
        }
        // Each failed build released its monitor; their threads end (awaited, with a deadline).
        let deadline = ContinuousClock.now + .seconds(10)
        var left = Self.threads(named: UdevMonitor.threadName)
        while left > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            left = Self.threads(named: UdevMonitor.threadName)
        }
        #expect(left == 0, "udev monitor threads still running after 20 failed builds: \(left)")
    }

    /// A unix socket at `path`, bound; listening when `listen` (a live server), else closed again (a stale file).
    static func bindSocket(_ path: String, listening: Bool) throws -> Int32 {
        guard let address = UnixSocket.address(path) else { throw CocoaError(.fileWriteInvalidFileName) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        let bound = UnixSocket.withSockaddr(address) { bind(fd, $0, $1) }
        guard fd >= 0, bound == 0 else { throw CocoaError(.fileWriteUnknown) }
        if listening { Glibc.listen(fd, 8) } else { close(fd) }
        return fd
    }

    /// A second instance (a command line run where it reads no arguments, a mistaken start) must not take the socket
    /// a live plugin serves; a stale socket file is replaced.
    @Test func aSocketALiveProcessServesIsNotTaken() throws {
        let folder = FileManager.default.temporaryDirectory.path + "/do-storage-socket-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let driver = UnconfiguredDriver(error: VolumeError(.notConfigured, "test"))
        let logger = Logger(label: "test")

        let live = folder + "/live.sock"
        let server = try Self.bindSocket(live, listening: true)
        defer { close(server) }
        let error = #expect(throws: SocketInUse.self) { _ = try PluginApp.makeApplication(driver: driver, socketPath: live, logger: logger) }
        #expect(error?.description.contains("another process already serves \(live)") == true)
        var status = stat()
        #expect(stat(live, &status) == 0, "the live socket's file is still there")

        let stale = folder + "/stale.sock"
        _ = try Self.bindSocket(stale, listening: false)
        _ = try PluginApp.makeApplication(driver: driver, socketPath: stale, logger: logger)
        #expect(stat(stale, &status) != 0, "a stale socket file is removed before the server binds")
    }
}
