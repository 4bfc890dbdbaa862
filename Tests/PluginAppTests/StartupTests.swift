import Foundation
import HostDevices
import Logging
import PluginApp
import Testing
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
}
