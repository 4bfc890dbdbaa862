import DOSimulator
import DigitalOcean
import Foundation
import Testing
import TestSupport
import VolumeService

/// Heartbeats and `TAKEOVER=lease`: a droplet whose plugin is alive keeps its volumes, one whose heartbeat stopped
/// loses them to the droplet that needs them, and the heartbeat's cost stays within the API budget.
@Suite(.timeLimit(.minutes(5))) struct LeaseTests {
    /// Two droplets; A holds `pgdata` mounted. B's hand-off wait is short.
    func holdingOnA(
        _ harness: ServiceHarness, configureB: (inout ServiceConfiguration) -> Void = { _ in }
    ) async throws -> (a: ServiceHarness.Node, b: ServiceHarness.Node) {
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2) {
            $0.handoffTimeout = .milliseconds(400)
            configureB(&$0)
        }
        if let time = harness.testTime {
            _ = try await time.run("A's mount") { try await a.service.mount(name: "pgdata", id: "c1") }
        } else {
            _ = try await a.service.mount(name: "pgdata", id: "c1")
        }
        try await waitUntil("A's heartbeat", within: .seconds(60)) {
            await LeaseTag.heartbeat(in: harness.world.dropletTags(id: 1), droplet: 1) != nil
        }
        return (a, b)
    }

    /// Makes droplet 1's heartbeat look `age` old to a droplet whose clock is right.
    func setHeartbeat(_ harness: ServiceHarness, droplet: Int = 1, age: Duration, now: Date = Date()) async {
        let beat = now.addingTimeInterval(-age.seconds)
        await harness.world.setDropletTags(id: droplet, prefix: LeaseTag.prefix, to: [LeaseTag.name(droplet: droplet, at: beat)])
    }

    @Test func aHolderWhosePluginIsAliveKeepsTheVolumeAndTheErrorSaysSo() async throws {
        let harness = try ServiceHarness()
        let (a, b) = try await holdingOnA(harness)
        let error = await #expect(throws: VolumeError.self) { try await b.service.mount(name: "pgdata", id: "c2") }
        #expect(error?.code == .attachedElsewhere)
        #expect(error?.message.contains("attached to droplet 1") == true, "\(String(describing: error))")
        #expect(error?.message.contains("its do_storage plugin is alive (heartbeat ") == true, "\(String(describing: error))")
        #expect(error?.message.contains("takeover=always") == true)
        #expect(await harness.attachments("pgdata") == [1])
        #expect(a.filesystem.mounted.count == 1)
    }

    @Test func aHolderWhoseHeartbeatStoppedIsTakenOver() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        let (_, b) = try await holdingOnA(harness) { $0.handoffTimeout = .seconds(30) }
        // A's plugin died 13 minutes ago (LEASE_TTL is 12): its heartbeat stopped then.
        await setHeartbeat(harness, age: .seconds(780), now: time.timeSource.wallClock())
        let started = time.elapsed
        _ = try await time.run("B's mount") { try await b.service.mount(name: "pgdata", id: "c2") }
        #expect(time.elapsed - started < .seconds(5), "taken at once, not after the hand-off wait")
        #expect(await harness.attachments("pgdata") == [2])
        let log = await harness.world.actionLog.map { "\($0.type)@\($0.dropletID)" }
        #expect(log == ["attach@1", "detach@1", "attach@2"])
    }

    /// A droplet that brings a volume here has a fresh heartbeat before it asks for the attach: another droplet that
    /// finds the volume attached here must not take an old heartbeat (one this droplet could not take down) for a
    /// dead plugin and take the volume from under the Mount.
    @Test func aMountRenewsTheHeartbeatBeforeItAttaches() async throws {
        let harness = try ServiceHarness(testTime: TestTime())
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let time = try #require(harness.testTime)
        await setHeartbeat(harness, age: .seconds(3600), now: time.timeSource.wallClock())
        harness.api.calls.reset()
        // DigitalOcean is slow to tag the droplet: the attach must still come after it.
        harness.api.dropletTagLatency.withLockedValue { $0 = .seconds(2) }
        _ = try await time.run("the Mount") { try await a.service.mount(name: "pgdata", id: "c1") }
        let calls = harness.api.calls.sequence
        let attach = try #require(calls.firstIndex(of: "POST /v2/volumes/{id}/actions"))
        let beat = try #require(calls.firstIndex(of: "POST /v2/tags/{name}/resources"), "\(calls)")
        #expect(beat < attach, "heartbeat first: \(calls)")
        #expect(await harness.world.actionLog.map(\.type) == ["attach"])
        let beatAt = try #require(await LeaseTag.heartbeat(in: harness.world.dropletTags(id: 1), droplet: 1))
        #expect(time.timeSource.wallClock().timeIntervalSince(beatAt) < 60, "the heartbeat DigitalOcean shows is the fresh one")
    }

    /// A live holder renews every 5 minutes; seen by a droplet whose clock is 30 s ahead of its own, its heartbeat
    /// is at most 5m30s old, or 10m30s when one renewal failed. A clock behind makes it look newer, even from
    /// the future. None of these is taken over.
    @Test(arguments: [330, 629, -30, -3600])
    func clocksUpTo30sOffNeverMakeALiveHolderLookDead(apparentAge: Int) async throws {
        let harness = try ServiceHarness()
        let (_, b) = try await holdingOnA(harness)
        await setHeartbeat(harness, age: .seconds(apparentAge))
        let error = await #expect(throws: VolumeError.self) { try await b.service.mount(name: "pgdata", id: "c2") }
        #expect(error?.code == .attachedElsewhere)
        #expect(await harness.attachments("pgdata") == [1])
    }

    @Test func aHolderWithoutAnyHeartbeatIsTreatedAsAlive() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let b = try await harness.node(droplet: 2) { $0.handoffTimeout = .milliseconds(300) }
        try await harness.world.addDroplet(id: 1, deviceDirectory: harness.root + "/by-hand")
        // Attached by hand (doctl) to a droplet that runs no do_storage.
        let volume = await harness.world.listVolumes(name: "pgdata", region: "nyc1")[0]
        _ = try await harness.api.attach(volumeID: volume.id, dropletID: 1, region: "nyc1")
        try await waitUntil("the attach by hand", within: .seconds(60)) { await harness.attachments("pgdata") == [1] }
        let error = await #expect(throws: VolumeError.self) { try await b.service.mount(name: "pgdata", id: "c2") }
        #expect(error?.message.contains("shows no do_storage heartbeat") == true, "\(String(describing: error))")
        #expect(await harness.attachments("pgdata") == [1])
    }

    @Test func aVolumesTakeoverOptionOverridesThePluginWideMode() async throws {
        let harness = try ServiceHarness()
        let (_, b) = try await holdingOnA(harness)
        await setHeartbeat(harness, age: .seconds(3600))
        // Stale holder, but this volume says never: B waits and fails.
        try await b.service.create(name: "pgdata", options: ["takeover": "never"])
        let error = await #expect(throws: VolumeError.self) { try await b.service.mount(name: "pgdata", id: "c2") }
        #expect(error?.message.contains("TAKEOVER is never") == true, "\(String(describing: error))")
        #expect(await harness.attachments("pgdata") == [1])

        // A fresh holder, and a volume that says always: taken at once.
        try await harness.createVolume("scratch")
        let a2 = try await harness.node(droplet: 1)
        _ = try await a2.service.mount(name: "scratch", id: "c3")
        _ = await a2.service.heartbeat()
        try await b.service.create(name: "scratch", options: ["takeover": "always"])
        _ = try await b.service.mount(name: "scratch", id: "c4")
        #expect(await harness.attachments("scratch") == [2])
    }

    /// Fifteen volumes held for an hour: one renewal every 5 minutes, each of at most 3 calls (≤ 1 a minute), one
    /// heartbeat tag on the droplet and in the account at any time. A restarted plugin renews the same lease, and a
    /// droplet that holds nothing takes its heartbeat down and then makes no call at all.
    @Test func theHeartbeatStaysWithinItsBudgetSurvivesRestartsAndCleansUp() async throws {
        let harness = try ServiceHarness()
        let clock = MovableWallClock()
        var a = try await harness.node(droplet: 1, time: clock.timeSource)
        for index in 1...15 {
            try await harness.createVolume("vol\(index)")
            _ = try await a.service.mount(name: "vol\(index)", id: "c\(index)")
        }
        await a.service.heartbeat()
        let leaseTags = { await harness.world.tagNames.filter { $0.hasPrefix(LeaseTag.prefix) } }
        #expect(await leaseTags().count == 1)

        harness.api.calls.reset()
        var renewals = 0
        for minute in 1...60 {
            clock.move(by: .seconds(60))
            let before = harness.api.calls.total
            await a.service.heartbeat()
            let calls = harness.api.calls.total - before
            #expect(calls == 0 || calls == 3, "minute \(minute): \(harness.api.calls.byName)")
            if calls > 0 { renewals += 1 }
            #expect(await leaseTags().count == 1)
            #expect(await harness.world.dropletTags(id: 1).filter { $0.hasPrefix(LeaseTag.prefix) }.count == 1)
            if minute == 30 {
                // The plugin restarts: the same state file, the same lease.
                a = try await harness.node(droplet: 1, time: clock.timeSource)
            }
        }
        #expect(renewals == 12)
        #expect(harness.api.calls.total <= 60, "at most one call a minute on average: \(harness.api.calls.byName)")
        let beat = try #require(LeaseTag.heartbeat(in: await harness.world.dropletTags(id: 1), droplet: 1))
        #expect(clock.now.timeIntervalSince(beat) < 300)

        for index in 1...15 { try await a.service.unmount(name: "vol\(index)", id: "c\(index)") }
        #expect(await harness.world.dropletVolumeIDs(id: 1).isEmpty)
        harness.api.calls.reset()
        await a.service.heartbeat()
        #expect(harness.api.calls.byName == ["DELETE /v2/tags/{name}": 1], "taken down with one call")
        #expect(await leaseTags().isEmpty)
        for _ in 1...60 {
            clock.move(by: .seconds(60))
            await a.service.heartbeat()
        }
        #expect(harness.api.calls.total == 1, "no call while holding nothing: \(harness.api.calls.byName)")
    }

    @Test func theHeartbeatTagRoundTrips() {
        let time = Date(timeIntervalSince1970: 1_795_000_000)
        let tag = LeaseTag.name(droplet: 1001, at: time)
        #expect(tag == "do-storage-lease-1001-1795000000")
        #expect(TagCreateRequest.isValid(name: tag))
        #expect(LeaseTag.heartbeat(in: ["prod", tag, "do-storage-lease-1001-17", "do-storage-lease-10012-1795000999"], droplet: 1001) == time)
        #expect(LeaseTag.heartbeat(in: ["do-storage-lease-1001-x", "do-storage-lease-1001--5"], droplet: 1001) == nil)
    }
}
