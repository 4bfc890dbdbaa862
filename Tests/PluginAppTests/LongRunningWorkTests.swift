import DigitalOcean
import Logging
import PluginApp
import ServiceLifecycle
import Synchronization
import TestClocks
import TestSupport
import Testing
import VolumeService

/// The service's long-running work runs as services of the plugin's `ServiceGroup`, and each ends when the group
/// shuts down gracefully (SIGTERM), while it waits: on the test clock, which never moves here, for a device event, or
/// for a release to retry.
@Suite(.timeLimit(.minutes(5))) struct LongRunningWorkTests {
    /// DigitalOcean cannot be listed: releasing unused attachments waits to try again instead of ending at once.
    final class ListingOutageAPI: ForwardingAPI {
        let base: any VolumeAPI
        init(base: any VolumeAPI) { self.base = base }
        func volumes(named name: String?, region: String?) async throws -> [Volume] {
            throw DOError(code: .server, status: 503, message: "Service Unavailable", operation: "GET /v2/volumes")
        }
    }

    @Test(arguments: PluginApp.longRunningWork.map(\.name))
    func eachEndsOnTheGracefulShutdown(name: String) async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        let node = try await harness.node(droplet: 1001, api: ListingOutageAPI(base: harness.api))
        let driver = DeferredDriver { node.service }
        let work = try #require(PluginApp.longRunningWork.first { $0.name == name })
        let started = Mutex(false)
        let ended = Mutex(false)
        let run = work.run
        let watched: @Sendable (VolumeService) async -> Void = { service in
            started.withLock { $0 = true }
            await run(service)
            ended.withLock { $0 = true }
        }
        let services = PluginApp.services(for: driver, work: [(name, watched)])
        let group = ServiceGroup(configuration: .init(services: services, logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            switch name {
            case "grow on device events":
                try await waitUntil("the growth to wait for a device event", within: .seconds(60)) {
                    harness.signal.waiterCount > 0
                }
            case "retry releases":
                // Waits for a release to retry, which none asks for here.
                try await waitUntil("the retries to start", within: .seconds(60)) { started.withLock { $0 } }
            default:
                try await time.waitForSleepers(1, "the \(name) to wait")
            }
            #expect(!ended.withLock { $0 }, "the \(name) waits until the plugin stops")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(ended.withLock { $0 }, "the \(name) ended with the graceful shutdown")
    }
}
