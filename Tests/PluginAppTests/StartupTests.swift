import Foundation
import HostDevices
import Logging
import PluginApp
import Testing
import VolumePlugin
import VolumeService

/// The plugin's start-up when it fails: every request retries it, and a failed try leaves nothing behind.
@Suite(.timeLimit(.minutes(5))) struct StartupTests {
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

    /// Waits (60 s at most: a guard against a hang) until a plugin answers on `path`.
    static func waitUntilAnswering(_ path: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while await !UnixSocket.answers(path, within: .seconds(1)) {
            try #require(ContinuousClock.now < deadline, "no plugin answered on \(path) within 60 s")
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The descriptor flags of the sockets listening at `path` in this process (/proc/net/unix, flag
    /// __SO_ACCEPTCON), but `excluded`.
    static func listeningSocketFlags(_ path: String, excluding excluded: Int32) throws -> [Int32] {
        let table = try ProcFile.read("/proc/net/unix")
        var inodes: [String] = []
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            if fields.count == 8 && fields[7] == path && fields[3] == "00010000" { inodes.append("socket:[\(fields[6])]") }
        }
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap(Int32.init)
        return fds.filter { fd in
            guard fd != excluded, let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")
            else { return false }
            return inodes.contains(link)
        }.map { fcntl($0, F_GETFD) }
    }

    /// A second instance (a command line run where it reads no arguments, a mistaken start) must not take the socket
    /// a live plugin answers on. A stale socket file is replaced, and so is a listening socket nobody answers on (a
    /// child of a killed plugin that kept it): a restart after a crash always comes up. The socket is 0600 and never
    /// passes to a child.
    @Test func aSocketALivePluginAnswersOnIsNotTakenAndAnyOtherIs() async throws {
        let folder = FileManager.default.temporaryDirectory.path + "/do-storage-socket-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let driver = UnconfiguredDriver(error: VolumeError(.notConfigured, "test"))
        let logger = Logger(label: "test")

        // A listening socket that never answers, as a leftover child holds it: taken over.
        let path = folder + "/plugin.sock"
        let held = try Self.bindSocket(path, listening: true)
        defer { close(held) }
        let server = try await PluginApp.makeServer(driver: driver, socketPath: path, logger: logger)
        let running = Task { try await server.run() }
        defer { running.cancel() }
        try await Self.waitUntilAnswering(path)
        // Made 0600 as the server reports it listens (the plugin's umask keeps it private before that).
        var status = stat()
        let deadline = ContinuousClock.now + .seconds(60)
        while stat(path, &status) != 0 || status.st_mode & 0o777 != 0o600 {
            try #require(ContinuousClock.now < deadline, "mode \(String(status.st_mode & 0o777, radix: 8)) after 60 s, not 0600")
            try await Task.sleep(for: .milliseconds(5))
        }
        let flags = try Self.listeningSocketFlags(path, excluding: held)
        #expect(flags.count == 1 && flags.allSatisfy { $0 & FD_CLOEXEC != 0 }, "the listening socket does not pass to children: \(flags)")

        // Now a live plugin answers there: a second instance does not start.
        let error = await #expect(throws: SocketInUse.self) {
            _ = try await PluginApp.makeServer(driver: driver, socketPath: path, logger: logger)
        }
        #expect(error?.description.contains("another do_storage already answers on \(path)") == true)
        #expect(await UnixSocket.answers(path, within: .seconds(5)), "the live plugin still serves")

        let stale = folder + "/stale.sock"
        _ = try Self.bindSocket(stale, listening: false)
        _ = try await PluginApp.makeServer(driver: driver, socketPath: stale, logger: logger)
        #expect(stat(stale, &status) != 0, "a stale socket file is removed before the server binds")
    }
}
