import DigitalOcean
import NIOConcurrencyHelpers
import Testing
import TestSupport
import VolumeService

/// A seam that never answers must not hang a test run: a test's time limit, like Docker giving up on a request,
/// cancels the task, and the cancellation has to reach the waiting call through every layer. These show it does, and
/// that nothing is left behind.
@Suite(.timeLimit(.minutes(5))) struct HungSeamTests {
    /// Passes calls through, except the one named, which never answers until its task is cancelled. Says when a
    /// call has reached it.
    final class HungAPI: ForwardingAPI {
        let base: any VolumeAPI
        let reached: AsyncStream<Void>
        private let reach: AsyncStream<Void>.Continuation

        init(base: any VolumeAPI) {
            self.base = base
            (reached, reach) = AsyncStream.makeStream()
        }

        func hang() async throws -> Never {
            reach.yield()
            try await Task.sleep(for: .seconds(86_400))
            throw CancellationError()
        }

        func attach(volumeID: String, dropletID: Int, region: String) async throws -> Action { try await hang() }
    }

    @Test func aMountWaitingOnAHungDigitalOceanEndsWhenItsTaskIsCancelled() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("data")
        let hung = HungAPI(base: harness.api)
        let node = try await harness.node(droplet: 1, api: hung)

        let mount = Task { try await node.service.mount(name: "data", id: "c1") }
        var reached = hung.reached.makeAsyncIterator()
        _ = await reached.next()
        mount.cancel()
        await #expect(throws: CancellationError.self) { try await mount.value }

        // Nothing left behind: no reference, no mount, and the volume attached nowhere.
        let record = await node.service.records["data"]
        #expect(record?.references.isEmpty != false && record?.mountpoint == nil)
        #expect(node.filesystem.mounted.isEmpty)
        #expect(try await harness.api.volumes(named: "data", region: "nyc1").first?.dropletIDs == [])
    }
}
