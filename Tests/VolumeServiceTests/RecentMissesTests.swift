import Foundation
import Testing
import TestSupport
@testable import VolumeService

/// Names DigitalOcean did not know are remembered for a while, and the memory of them stays bounded.
@Suite(.timeLimit(.minutes(5))) struct RecentMissesTests {
    @Test func aMissIsForgottenAfterItsTTL() {
        let start = ContinuousClock.now
        var misses = RecentMisses(ttl: .seconds(10), capacity: 100)
        misses.remember("a", now: start)
        #expect(misses.contains("a", now: start + .seconds(9)))
        #expect(!misses.contains("a", now: start + .seconds(10)))
        misses.remember("b", now: start + .seconds(11))
        #expect(misses.count == 1, "the expired name went when the next was remembered")
        misses.forget("b")
        #expect(misses.count == 0)
    }

    @Test func theOldestGoesFirstPastCapacity() {
        let start = ContinuousClock.now
        var misses = RecentMisses(ttl: .seconds(60), capacity: 3)
        for index in 0..<5 { misses.remember("n\(index)", now: start + .milliseconds(index)) }
        #expect(misses.count == 3)
        #expect(!misses.contains("n0", now: start + .seconds(1)) && !misses.contains("n1", now: start + .seconds(1)))
        #expect(misses.contains("n4", now: start + .seconds(1)))
    }

    /// Thousands of Mounts for names DigitalOcean does not have, within one TTL: each is looked up once, and the
    /// service remembers no more than its capacity.
    @Test func aStreamOfUnknownNamesKeepsTheServiceBounded() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1) { $0.negativeLookupTTL = .seconds(60) }
        for index in 0..<3000 {
            await #expect(throws: VolumeError.self) { try await node.service.mount(name: "missing-\(index)", id: "c") }
        }
        #expect(harness.api.calls.total == 3000 + 1, "each name, and one listing of the branched histories for the TTL")
        #expect(await node.service.finder.rememberedMisses <= 1024)
        // A remembered miss is answered without asking DigitalOcean again.
        harness.api.calls.reset()
        await #expect(throws: VolumeError.self) { try await node.service.mount(name: "missing-2999", id: "c") }
        #expect(harness.api.calls.total == 0)
    }
}
