import DOSimulator
import DigitalOcean
import Foundation
import NIOConcurrencyHelpers
import Testing
import TestSupport
import VolumeService

/// The Mount/Unmount orchestration between droplets, over the in-process simulator.
@Suite(.timeLimit(.minutes(5))) struct MountFlowTests {
    @Test func volumeFollowsTheContainerFromDropletToDroplet() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2)
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        #expect(await harness.attachments("pgdata") == [1])
        try await a.service.unmount(name: "pgdata", id: "c1")
        #expect(await harness.attachments("pgdata").isEmpty)
        _ = try await b.service.mount(name: "pgdata", id: "c2")
        #expect(await harness.attachments("pgdata") == [2])
        let log = await harness.world.actionLog.map { "\($0.type)@\($0.dropletID)" }
        #expect(log == ["attach@1", "detach@1", "attach@2"])
    }

    /// B waits the whole hand-off time on the test clock, not a moment less, then fails naming the holder.
    @Test func takeoverNeverWaitsThenFailsNamingTheHolder() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2) { $0.handoffTimeout = .milliseconds(600) }
        let mountpoint = try await time.run("A's mount") { try await a.service.mount(name: "pgdata", id: "c1") }
        let started = time.elapsed
        let sleepers = time.sleeperCount
        let mountOnB = Running { try await b.service.mount(name: "pgdata", id: "c2") }
        try await time.waitForSleepers(sleepers + 1, "B's hand-off wait")
        await time.advance(by: .milliseconds(599))
        #expect(!mountOnB.isFinished, "still waiting before the hand-off time is up")
        await time.advance(by: .milliseconds(1))
        let error = await #expect(throws: VolumeError.self) { try await mountOnB.value() }
        #expect(time.elapsed - started == .milliseconds(600), "ended at the hand-off time, with no more clock time")
        #expect(error?.code == .attachedElsewhere)
        #expect(error?.message.contains("droplet 1") == true)
        #expect(error?.message.contains("TAKEOVER=always") == true)
        #expect(await harness.attachments("pgdata") == [1])
        #expect(a.filesystem.mounted[mountpoint] != nil, "droplet 1's mount is untouched")
        #expect(b.filesystem.mounted.isEmpty)
        #expect(await harness.world.actionLog.filter { $0.type == "detach" }.isEmpty)
    }

    @Test func takeoverNeverSucceedsWhenTheHolderReleasesDuringTheWait() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2) { $0.handoffTimeout = .seconds(10) }
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        async let mountOnB = b.service.mount(name: "pgdata", id: "c2")
        // B is waiting: A's container stops.
        try await a.service.unmount(name: "pgdata", id: "c1")
        let mountpoint = try await mountOnB
        #expect(b.filesystem.mounted[mountpoint] != nil)
        #expect(await harness.attachments("pgdata") == [2])
        let log = await harness.world.actionLog.map { "\($0.type)@\($0.dropletID)" }
        #expect(log == ["attach@1", "detach@1", "attach@2"], "the detach was A's own, not a theft")
    }

    @Test func getAndListAnswerWhileAMountWaits() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        try await harness.createVolume("other")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2) { $0.handoffTimeout = .seconds(10) }
        try await b.service.create(name: "other", options: [:])
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        harness.api.calls.reset()
        let finished = ManagedFlag()
        let waiting = Task {
            defer { finished.set() }
            return try await b.service.mount(name: "pgdata", id: "c2")
        }
        // B is waiting for A once it has asked DigitalOcean about the volume while A holds it.
        try await waitUntil("B to ask DigitalOcean about the volume", within: .seconds(60)) {
            harness.api.calls.byName["GET /v2/volumes/{id}"] != nil
        }
        #expect(try await b.service.get(name: "other").name == "other")
        #expect(try await b.service.list().map(\.name).sorted() == ["other", "pgdata"])
        #expect(try await b.service.path(name: "other") == "")
        #expect(!finished.isSet, "answered while the Mount was still waiting")
        try await a.service.unmount(name: "pgdata", id: "c1")
        _ = try await waiting.value
    }

    @Test func takeoverAlwaysDetachesFromTheHolder() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2) { $0.takeover = .always }
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        _ = try await b.service.mount(name: "pgdata", id: "c2")
        #expect(await harness.attachments("pgdata") == [2])
        let log = await harness.world.actionLog.map { "\($0.type)@\($0.dropletID)" }
        #expect(log == ["attach@1", "detach@1", "attach@2"])
    }

    @Test(arguments: ["off", "destroyed"])
    func aHolderThatIsNotRunningIsReleasedAtOnce(state: String) async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2) { $0.handoffTimeout = .seconds(30) }
        _ = try await time.run("A's mount") { try await a.service.mount(name: "pgdata", id: "c1") }
        // Droplet 1 is powered off (or destroyed) with the volume still attached: nothing there can use it.
        if state == "off" { await harness.world.setDropletStatus(id: 1, status: "off") } else { await harness.world.removeDroplet(id: 1) }
        let started = time.elapsed
        _ = try await time.run("B's mount") { try await b.service.mount(name: "pgdata", id: "c2") }
        #expect(time.elapsed - started < .seconds(5), "no hand-off wait: only the detach and attach")
        #expect(await harness.attachments("pgdata") == [2])
    }

    @Test func aRunningHolderIsNeverDetachedByTakeoverNever() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2) { $0.handoffTimeout = .milliseconds(300) }
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        await #expect(throws: VolumeError.self) { try await b.service.mount(name: "pgdata", id: "c2") }
        #expect(harness.api.calls.byName["GET /v2/droplets/{id}"] == 1)
        #expect(await harness.attachments("pgdata") == [1])
    }

    @Test func erroredAttachIsAClearErrorAndNothingIsLeftMounted() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        await harness.world.failNextActions(1)
        let error = await #expect(throws: VolumeError.self) { try await a.service.mount(name: "pgdata", id: "c1") }
        #expect(error?.code == .actionFailed)
        #expect(error?.message.contains("failed") == true)
        #expect(a.filesystem.mounted.isEmpty)
        #expect(await a.service.records["pgdata"]?.references.isEmpty == true)
        // The next Mount works.
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        #expect(await harness.attachments("pgdata") == [1])
    }

    @Test func pendingEventIsRetried() async throws {
        // The other action stays pending until the test clock passes 1 s: the Mount's first post meets it.
        let time = TestTime()
        let harness = try ServiceHarness(actionLatency: .seconds(1), testTime: time)
        try await harness.createVolume("pgdata")
        try await harness.createVolume("other")
        let a = try await harness.node(droplet: 1)
        // Someone else (the control panel, another tool) starts an action on the droplet first.
        let other = await harness.world.listVolumes(name: "other", region: "nyc1")[0]
        _ = try await harness.api.attach(volumeID: other.id, dropletID: 1, region: "nyc1")
        harness.api.calls.reset()
        _ = try await time.run("the Mount") { try await a.service.mount(name: "pgdata", id: "c1") }
        #expect(await harness.attachments("pgdata") == [1])
        let posts = harness.api.calls.byName["POST /v2/volumes/{id}/actions"] ?? 0
        #expect(posts >= 2 && posts <= 4, "retried while pending, with backoff, not in a storm: \(posts)")
    }

    /// One deadline for a whole Mount: slow actions make it fail by then, with nothing mounted or referenced, and
    /// the attachment it started is released once DigitalOcean completes it.
    @Test func aMountEndsByItsDeadlineAndLeavesNothingAttached() async throws {
        // Actions take 4 s of test-clock time; the Mount's deadline is 0.8 s.
        let time = TestTime()
        let harness = try ServiceHarness(actionLatency: .seconds(4), testTime: time)
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1) {
            $0.mountDeadline = .milliseconds(800)
            $0.releaseRetryInterval = .milliseconds(100)
        }
        try await a.service.create(name: "pgdata", options: [:])
        let mount = Running { try await a.service.mount(name: "pgdata", id: "c1") }
        // The attach is pending (the simulator's action) and the Mount polls it.
        try await time.waitForSleepers(2, "the Mount's poll of its attach")
        await time.advance(by: .milliseconds(799))
        #expect(!mount.isFinished, "still waiting before its deadline")
        await time.advance(by: .milliseconds(1))
        // Ends with no more clock time: by its deadline, not when the 4 s attach completes.
        let error = await #expect(throws: VolumeError.self) { try await mount.value() }
        #expect(error?.code == .actionFailed, "\(String(describing: error))")
        #expect(a.filesystem.mounted.isEmpty)
        #expect(await a.service.records["pgdata"]?.references.isEmpty == true)
        try await time.advance(until: "the attach to complete and be released") {
            let log = await harness.world.actionLog.map { "\($0.type)@\($0.dropletID):\($0.status)" }
            return log == ["attach@1:completed", "detach@1:completed"]
        }
        #expect(await harness.attachments("pgdata").isEmpty)
    }

    /// A device that never appears: the Mount fails by its deadline, and the volume it attached is released.
    @Test func aDeviceThatNeverAppearsIsReleasedAgain() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        try await harness.createVolume("pgdata")
        await harness.world.setDeviceDelay(.seconds(60))
        let a = try await harness.node(droplet: 1) {
            $0.mountDeadline = .seconds(1)
            $0.deviceTimeout = .seconds(20)
        }
        try await a.service.create(name: "pgdata", options: [:])
        let mount = Running { try await a.service.mount(name: "pgdata", id: "c1") }
        try await time.advance(until: "the attach to complete") { await harness.attachments("pgdata") == [1] }
        #expect(time.elapsed < .seconds(1))
        await time.advance(by: .seconds(1) - time.elapsed)
        // Ends with no more clock time: by its deadline, not the 20 s device timeout.
        let error = await #expect(throws: VolumeError.self) { try await mount.value() }
        #expect(error?.code == .deviceTimeout, "\(String(describing: error))")
        try await time.advance(until: "the attachment to be released") { await harness.attachments("pgdata").isEmpty }
        #expect(a.filesystem.mounted.isEmpty)
    }

    @Test func blankVolumeIsRefusedWithHowToFormatAndReleased() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("blank", filesystem: nil)
        let a = try await harness.node(droplet: 1)
        let error = await #expect(throws: VolumeError.self) { try await a.service.mount(name: "blank", id: "c1") }
        #expect(error?.code == .blankDevice)
        // The command names the link as it is on the droplet, whatever folder the plugin sees it in.
        #expect(error?.message.contains("mkfs.ext4 /dev/disk/by-id/scsi-0DO_Volume_blank)") == true, "\(String(describing: error))")
        #expect(await harness.attachments("blank").isEmpty, "the attach was rolled back")
    }

    @Test func failedMountRollsBackTheAttach() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        a.filesystem.failNextMount("wrong fs type")
        let error = await #expect(throws: VolumeError.self) { try await a.service.mount(name: "pgdata", id: "c1") }
        #expect(error?.code == .mountFailed)
        #expect(error?.message.contains("wrong fs type") == true)
        #expect(await harness.attachments("pgdata").isEmpty)
        #expect(await a.service.records["pgdata"]?.referenceCount == 0)
    }

    @Test func aFailedReleaseIsRetriedInTheBackground() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let flaky = FlakyDetachAPI(base: harness.api, failures: 2)
        let a = try await harness.node(droplet: 1, api: flaky) { $0.releaseRetryInterval = .milliseconds(50) }
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        let error = await #expect(throws: VolumeError.self) { try await a.service.unmount(name: "pgdata", id: "c1") }
        #expect(error?.message.contains("keeps trying") == true)
        #expect(a.filesystem.mounted.isEmpty, "unmounted all the same")
        try await waitUntil("the background release", within: .seconds(60)) { await harness.attachments("pgdata").isEmpty }
        #expect(flaky.detachCalls == 3, "two failures, then the background retry released it")
    }

    @Test func keepAttachedWhenDetachOnUnmountIsOff() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1) { $0.detachOnUnmount = false }
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        try await a.service.unmount(name: "pgdata", id: "c1")
        #expect(await harness.attachments("pgdata") == [1])
        #expect(a.filesystem.mounted.isEmpty)
        // Mounting again reuses the attachment: no new attach.
        _ = try await a.service.mount(name: "pgdata", id: "c2")
        #expect(await harness.world.actionLog.count == 1)
    }

    /// Docker asks Get before Create and drops Create's options when Get finds the volume: a volume this droplet
    /// does not know yet is "not found" to Get, and Create adopts it.
    @Test func volumeCreatedOnAnotherDropletIsAdoptedByCreate() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("shared")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2)
        try await a.service.create(name: "shared", options: [:])
        let unknown = await #expect(throws: VolumeError.self) { try await b.service.get(name: "shared") }
        #expect(unknown?.code == .notFound)
        try await b.service.create(name: "shared", options: ["size": "1"])
        #expect(try await b.service.get(name: "shared").status["do_id"] == a.service.get(name: "shared").status["do_id"])
        #expect(try await b.service.list().map(\.name) == ["shared"])
        #expect(await harness.world.listVolumes(name: nil, region: nil).count == 1)
    }

    @Test func composeUnderscoreNamesMapToDashes() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("myapp-pgdata")
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "myapp_pgdata", options: [:])
        let mountpoint = try await a.service.mount(name: "myapp_pgdata", id: "c1")
        #expect(mountpoint.hasSuffix("/myapp_pgdata"))
        #expect(await harness.attachments("myapp-pgdata") == [1])
    }

    @Test func coldMountSpendsAtMostThreeCallsPlusPolls() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: [:])
        harness.api.calls.reset()
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        let calls = harness.api.calls.byName
        #expect(calls["GET /v2/volumes/{id}"] == 1)
        #expect(calls["POST /v2/volumes/{id}/actions"] == 1)
        #expect(calls["GET /v2/volumes"] == nil)
        #expect((calls["GET /v2/volumes/{id}/actions/{action}"] ?? 0) >= 1)
    }

    @Test func getListPathNeverCallDigitalOceanForKnownVolumes() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: [:])
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        harness.api.calls.reset()
        for _ in 0..<100 {
            _ = try await a.service.get(name: "pgdata")
            _ = try await a.service.list()
            _ = try await a.service.path(name: "pgdata")
        }
        #expect(harness.api.calls.total == 0)
    }

    @Test func getNeverCallsDigitalOceanAndUnknownMountsAreLookedUpOnce() async throws {
        let harness = try ServiceHarness()
        let a = try await harness.node(droplet: 1)
        for _ in 0..<5 {
            await #expect(throws: VolumeError.self) { try await a.service.get(name: "ghost") }
        }
        #expect(harness.api.calls.total == 0)
        for index in 0..<5 {
            await #expect(throws: VolumeError.self) { try await a.service.mount(name: "ghost", id: "c\(index)") }
        }
        // Its name, and one listing of the region's branched histories (a reset may have replaced the volume the name
        // maps to), both remembered for the TTL.
        #expect(harness.api.calls.total == 2, "a Mount adopts, never creates; the miss is remembered")
        #expect(await harness.world.listVolumes(name: nil, region: nil).isEmpty)
    }

    @Test func outageNeverMakesAKnownVolumeUnknown() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        // Registered while DigitalOcean answered:
        let b = try await harness.node(droplet: 2)
        try await b.service.create(name: "pgdata", options: [:])
        // A fresh service over the same state with DigitalOcean down still knows the volume.
        let down = try VolumeService(
            configuration: b.configuration, api: FailingAPI(),
            devices: SignalDeviceWatcher(signal: harness.signal) { $0 }, filesystem: b.filesystem,
            store: StateStore(directory: "\(harness.root)/droplet-2/state"), logger: .init(label: "t"))
        #expect(try await down.get(name: "pgdata").name == "pgdata")
        let error = await #expect(throws: VolumeError.self) { try await down.mount(name: "pgdata", id: "x") }
        #expect(error?.code == .cloud)
    }

    @Test func reconcileDropsReferencesWhoseMountIsGoneAndUnmountsOrphans() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        try await harness.createVolume("logs")
        let a = try await harness.node(droplet: 1) { $0.detachOnUnmount = false }
        let pg = try await a.service.mount(name: "pgdata", id: "c1")
        _ = try await a.service.mount(name: "logs", id: "c2")
        // dockerd stopped and unmounted the propagated mount of pgdata.
        a.filesystem.forget(pg)
        let restarted = try VolumeService(
            configuration: a.configuration, api: harness.api,
            devices: SignalDeviceWatcher(signal: harness.signal) { $0 }, filesystem: a.filesystem,
            store: StateStore(directory: "\(harness.root)/droplet-1/state"), logger: .init(label: "t"))
        try await restarted.reconcileWithHost()
        let records = await restarted.records
        #expect(records["pgdata"]?.references.isEmpty == true)
        #expect(records["pgdata"]?.mountpoint == nil)
        #expect(records["logs"]?.references == ["c2": 1])
        // The next Mount re-establishes the mount without a new attach.
        _ = try await restarted.mount(name: "pgdata", id: "c3")
        #expect(a.filesystem.mounted[pg] != nil)
    }

    @Test func releaseUnusedAttachmentsDetachesWhatNoContainerHolds() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: [:])
        // A crash between attach and mount leaves it attached with no reference.
        let volume = await harness.world.listVolumes(name: "pgdata", region: "nyc1")[0]
        _ = try await harness.api.attach(volumeID: volume.id, dropletID: 1, region: "nyc1")
        try await waitUntil("the attach by hand", within: .seconds(60)) { await harness.attachments("pgdata") == [1] }
        await a.service.releaseUnusedAttachments()
        #expect(await harness.attachments("pgdata").isEmpty)
    }

    /// DigitalOcean's limit is 15 volumes per droplet: 15 Mounts at once all succeed, this droplet's actions one
    /// at a time; a 16th fails with the limit in plain words and leaves nothing attached or mounted.
    @Test func fifteenVolumesAtOnceAndTheSixteenthGetsDigitalOceansLimit() async throws {
        let harness = try ServiceHarness()
        let a = try await harness.node(droplet: 1)
        for index in 1...16 { try await harness.createVolume("vol\(index)") }
        try await withThrowingTaskGroup(of: String.self) { group in
            for index in 1...15 { group.addTask { try await a.service.mount(name: "vol\(index)", id: "c") } }
            for try await _ in group {}
        }
        #expect(a.filesystem.mounted.count == 15)
        #expect(await harness.world.dropletVolumeIDs(id: 1).count == 15)
        let log = await harness.world.actionLog
        #expect(log.count == 15 && log.allSatisfy { $0.type == "attach" && $0.status == .completed })
        // One action at a time on the droplet: each attach started after the one before it completed.
        let ordered = log.sorted { $0.started < $1.started }
        for (before, after) in zip(ordered, ordered.dropFirst()) { #expect(try #require(before.completed) <= after.started) }

        let error = await #expect(throws: VolumeError.self) { try await a.service.mount(name: "vol16", id: "c") }
        #expect(error?.message.contains("this droplet already has the most volumes DigitalOcean allows (15)") == true,
                "\(String(describing: error))")
        #expect(await harness.attachments("vol16").isEmpty)
        #expect(a.filesystem.mounted.count == 15)
        #expect(await a.service.records["vol16"]?.references.isEmpty == true)
    }

    /// Two droplets mount one volume at the same moment, round after round: exactly one wins each round, the other
    /// fails saying where the volume is, the winner's mount is never disturbed, and each round costs exactly one
    /// attach and one detach (the winner's release): no flapping.
    @Test func twoDropletsMountingOneVolumeAtOnceNeverFlap() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let nodes = [
            try await harness.node(droplet: 1) { $0.handoffTimeout = .milliseconds(200) },
            try await harness.node(droplet: 2) { $0.handoffTimeout = .milliseconds(200) },
        ]
        var wins = [0, 0]
        for round in 1...20 {
            await harness.world.clearActionLog()
            async let first = outcome { try await nodes[0].service.mount(name: "pgdata", id: "r\(round)") }
            async let second = outcome { try await nodes[1].service.mount(name: "pgdata", id: "r\(round)") }
            let results = await [first, second]
            let winners = results.indices.filter { (try? results[$0].get()) != nil }
            #expect(winners.count == 1, "round \(round): \(results)")
            guard let winner = winners.first else { continue }
            wins[winner] += 1
            let loser = 1 - winner
            guard case .failure(let failure) = results[loser] else { continue }
            let error = failure as? VolumeError
            #expect(error?.code == .attachedElsewhere, "round \(round): \(String(describing: error))")
            #expect(error?.message.contains("droplet \(winner + 1)") == true, "round \(round): \(String(describing: error))")
            #expect(await harness.attachments("pgdata") == [winner + 1])
            #expect(nodes[winner].filesystem.mounted.count == 1)
            #expect(nodes[loser].filesystem.mounted.isEmpty)
            #expect(await nodes[loser].service.records["pgdata"]?.references.isEmpty == true)

            try await nodes[winner].service.unmount(name: "pgdata", id: "r\(round)")
            let log = await harness.world.actionLog.map { "\($0.type)@\($0.dropletID):\($0.status)" }
            #expect(log == ["attach@\(winner + 1):completed", "detach@\(winner + 1):completed"], "round \(round)")
        }
        #expect(wins.reduce(0, +) == 20)
    }
}

/// Fails the first `failures` detaches as an outage would, then passes through.
final class FlakyDetachAPI: ForwardingAPI {
    let base: any VolumeAPI
    private let state: NIOLockedValueBox<(failures: Int, calls: Int)>

    init(base: any VolumeAPI, failures: Int) {
        self.base = base
        self.state = NIOLockedValueBox((failures, 0))
    }

    var detachCalls: Int { state.withLockedValue { $0.calls } }

    func detach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        let fail = state.withLockedValue { state -> Bool in
            state.calls += 1
            guard state.failures > 0 else { return false }
            state.failures -= 1
            return true
        }
        if fail { throw DOError(code: .server, status: 503, message: "Service Unavailable", operation: "POST") }
        return try await base.detach(volumeID: volumeID, dropletID: dropletID, region: region)
    }
}

final class ManagedFlag: Sendable {
    private let value = NIOLockedValueBox(false)
    func set() { value.withLockedValue { $0 = true } }
    var isSet: Bool { value.withLockedValue { $0 } }
}

/// DigitalOcean unreachable.
struct FailingAPI: VolumeAPI {
    func fail() -> DOError { DOError(code: .transport, message: "Couldn't connect to server", operation: "GET") }
    func volumes(named name: String?, region: String?) async throws -> [Volume] { throw fail() }
    func volume(id: String) async throws -> Volume { throw fail() }
    func createVolume(_ request: VolumeCreateRequest) async throws -> Volume { throw fail() }
    func deleteVolume(id: String) async throws { throw fail() }
    func attach(volumeID: String, dropletID: Int, region: String) async throws -> Action { throw fail() }
    func detach(volumeID: String, dropletID: Int, region: String) async throws -> Action { throw fail() }
    func action(volumeID: String, actionID: Int) async throws -> Action { throw fail() }
    func droplet(id: Int) async throws -> Droplet { throw fail() }
    func createTag(name: String) async throws { throw fail() }
    func tag(dropletID: Int, with name: String) async throws { throw fail() }
    func deleteTag(name: String) async throws { throw fail() }
    func tagVolume(id: String, with name: String) async throws { throw fail() }
    func untagVolume(id: String, from name: String) async throws { throw fail() }
    func resize(volumeID: String, sizeGigabytes: Int, region: String) async throws -> Action { throw fail() }
    func createSnapshot(volumeID: String, name: String, tags: [String]) async throws -> Snapshot { throw fail() }
    func snapshots(volumeID: String) async throws -> [Snapshot] { throw fail() }
    func volumeSnapshots() async throws -> [Snapshot] { throw fail() }
    func snapshot(id: String) async throws -> Snapshot { throw fail() }
    func deleteSnapshot(id: String) async throws { throw fail() }
}

/// The result of an async call, success or error.
func outcome<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}
