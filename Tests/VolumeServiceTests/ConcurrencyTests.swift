import DOSimulator
import DigitalOcean
import Foundation
import NIOConcurrencyHelpers
import Testing
import TestSupport
import Timekeeping
@testable import VolumeService

/// Waits and writes that interleave: the per-volume lock gives up with its caller, and a record's holder never
/// writes back an older copy over what others wrote meanwhile.
@Suite(.timeLimit(.minutes(5))) struct ConcurrencyTests {

    @Test func aWaiterWhoseTaskIsCancelledLeavesTheLineAndTheNextOneGetsTheLock() async throws {
        let lock = AsyncKeyedLock()
        let release = AsyncStream<Void>.makeStream()
        let holder = Running { try await lock.withLock("v") { for await _ in release.stream {} } }
        try await waitUntil("the holder to take the lock", within: .seconds(60)) { lock.isLocked("v") }
        let cancelled = Running { try await lock.withLock("v") { "got it" } }
        let next = Running { try await lock.withLock("v") { "next" } }
        try await waitUntil("both to wait", within: .seconds(60)) { lock.waiters("v") == 2 }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value() }
        #expect(lock.waiters("v") == 1)
        release.continuation.finish()
        try await holder.value()
        #expect(try await next.value() == "next")
        #expect(!lock.isLocked("v"), "released by the last holder")
    }

    @Test func aWaiterGivesUpAtItsTasksDeadlineAndTheHolderGoesOn() async throws {
        let time = TestTime()
        let lock = AsyncKeyedLock(time: time.timeSource) { "volume \($0)" }
        let release = AsyncStream<Void>.makeStream()
        let holder = Running { try await lock.withLock("pgdata") { for await _ in release.stream {} } }
        try await waitUntil("the holder to take the lock", within: .seconds(60)) { lock.isLocked("pgdata") }
        let deadline = time.timeSource.now() + .seconds(110)
        let waiter = Running {
            try await Deadline.$current.withValue(deadline) { try await lock.withLock("pgdata") { "got it" } }
        }
        try await time.waitForSleepers(1, "the waiter's deadline")
        await time.advance(by: .seconds(109))
        #expect(!waiter.isFinished)
        await time.advance(by: .seconds(1))
        let error = await #expect(throws: VolumeError.self) { try await waiter.value() }
        #expect(error?.code == .busy)
        #expect(error?.message.contains("another operation on volume pgdata") == true, "\(String(describing: error))")
        #expect(lock.waiters("pgdata") == 0 && lock.isLocked("pgdata"), "the holder still holds it")
        release.continuation.finish()
        try await holder.value()
        #expect(!lock.isLocked("pgdata"))
    }

    /// A Mount queued behind a slow operation on the same volume (a snapshot DigitalOcean does not answer) ends by
    /// its own deadline, well inside Docker's two minutes, instead of waiting for it.
    @Test func aMountQueuedBehindASlowOperationEndsByItsDeadline() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        try await harness.createVolume("pgdata")
        let hanging = HangingSnapshotAPI(base: harness.api)
        let a = try await harness.node(droplet: 1, api: hanging) { $0.mountDeadline = .seconds(110) }
        try await a.service.create(name: "pgdata", options: [:])
        hanging.hang()
        let snapshot = Running { try await a.service.createSnapshot(volume: "pgdata", name: "slow") }
        try await waitUntil("the snapshot to be requested", within: .seconds(60)) { hanging.waiting > 0 }
        let sleepers = time.sleeperCount
        let mount = Running { try await a.service.mount(name: "pgdata", id: "c1") }
        try await time.waitForSleepers(sleepers + 1, "the Mount's deadline")
        await time.advance(by: .seconds(110))
        let error = await #expect(throws: VolumeError.self) { try await mount.value() }
        #expect(error?.code == .busy, "\(String(describing: error))")
        #expect(await a.service.records["pgdata"]?.references.isEmpty == true)
        #expect(await harness.attachments("pgdata").isEmpty)
        snapshot.cancel()
        _ = try await snapshot.result()
    }

    /// `snapshot list` while a Mount of the same volume waits for its attach: the count it learnt survives the
    /// Mount's end.
    @Test func aMountInFlightNeverWritesBackAnOlderRecord() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(actionLatency: .seconds(1), testTime: time)
        let volume = try await harness.createVolume("pgdata")
        for index in 1...3 { _ = try await harness.api.createSnapshot(volumeID: volume.id, name: "s\(index)", tags: []) }
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: [:])
        let sleepers = time.sleeperCount
        let mount = Running { try await a.service.mount(name: "pgdata", id: "c1") }
        try await time.waitForSleepers(sleepers + 2, "the attach and the Mount's poll")
        #expect(try await a.service.listSnapshots(volume: "pgdata").count == 3)
        #expect(await a.service.records["pgdata"]?.snapshotCount == 3)
        try await time.advance(until: "the Mount") { mount.isFinished }
        _ = try await mount.value()
        #expect(await a.service.records["pgdata"]?.snapshotCount == 3, "not undone by the Mount's older copy")
        #expect(try await a.service.get(name: "pgdata").status["snapshots"] == "3")
    }

    /// A plugin killed while its detach is under way, then asked to mount the volume again: the detach completes
    /// meanwhile, so the new Mount must not take the volume for attached and mount it. (Found by the model test.)
    @Test func aMountAfterARestartWaitsOutADetachStillUnderWay() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(actionLatency: .seconds(5), testTime: time)
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        _ = try await time.run("the first Mount") { try await a.service.mount(name: "pgdata", id: "c1") }
        let unmount = Running { try await a.service.unmount(name: "pgdata", id: "c1") }
        try await waitUntil("the detach to be under way", within: .seconds(60)) {
            await harness.world.actionLog.last.map { $0.type == "detach" && $0.status == .inProgress } ?? false
        }
        // The plugin dies here; the detach goes on at DigitalOcean. A new plugin starts from the same state.
        unmount.cancel()
        a.kill()
        _ = try await unmount.result()
        let restarted = try await harness.node(droplet: 1, filesystem: a.filesystem)
        try await restarted.service.reconcileWithHost()
        let mountpoint = try await time.run("the Mount after the restart") { try await restarted.service.mount(name: "pgdata", id: "c2") }
        try await time.advance(until: "every action to end") {
            await harness.world.actionLog.allSatisfy { $0.status != .inProgress }
        }
        #expect(a.filesystem.mounted[mountpoint] != nil)
        #expect(await harness.attachments("pgdata") == [1], "still attached under its mount")
    }

    /// A plugin killed just after sending an attach it had waited to send (behind another volume's attach, on the
    /// droplet's one action at a time): the plugin that starts next watches that attach until it completes, and
    /// releases it, however long the request waited for its turn. (Found by the model test.)
    @Test func anAttachSentLateIsReleasedAfterARestart() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(actionLatency: .seconds(8), testTime: time)
        try await harness.createVolume("first")
        try await harness.createVolume("second")
        let killable = KillableAPI(base: harness.api)
        let a = try await harness.node(droplet: 1, api: killable) { $0.actionTimeout = .seconds(10) }
        try await a.service.create(name: "first", options: [:])
        try await a.service.create(name: "second", options: [:])
        let first = Running { try await a.service.mount(name: "first", id: "c1") }
        try await time.advance(until: "the first attach to be sent") { await harness.world.actionLog.count == 1 }
        let second = Running { try await a.service.mount(name: "second", id: "c2") }
        // The second Mount notes its attach, then waits for the first attach to end before it sends its own.
        try await time.advance(until: "the second attach to be sent") { await harness.world.actionLog.count == 2 }
        killable.kill()
        a.kill()
        try await time.advance(until: "the killed plugin's Mounts to end") { first.isFinished && second.isFinished }
        let restarted = try await harness.node(droplet: 1, filesystem: a.filesystem) { $0.actionTimeout = .seconds(10) }
        try await restarted.service.reconcileWithHost()
        let release = Running { await restarted.service.releaseUnusedAttachments() }
        try await time.advance(until: "every action to end and the release to finish") {
            let done = await harness.world.actionLog.allSatisfy { $0.status != .inProgress }
            return done && release.isFinished
        }
        #expect(await harness.attachments("second").isEmpty, "attached with no container to hold it")
    }

    /// DigitalOcean down as the plugin starts: the release of what no container holds is tried again until it
    /// succeeds, instead of once. (Found by the model test.)
    @Test func unusedAttachmentsAreReleasedAfterAnOutageAtStartUp() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        let volume = try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: [:])
        _ = try await harness.api.attach(volumeID: volume.id, dropletID: 1, region: "nyc1")
        try await time.advance(until: "the attach by hand") { await harness.attachments("pgdata") == [1] }
        let outage = ListingOutageAPI(base: harness.api, failures: 3)
        let restarted = try await harness.node(droplet: 1, api: outage, filesystem: a.filesystem)
        let release = Running { await restarted.service.releaseUnusedAttachments() }
        try await time.advance(until: "the release", step: .seconds(1)) { release.isFinished }
        #expect(outage.listings == 4, "three failed listings, then the one that released it")
        #expect(await harness.attachments("pgdata").isEmpty)
    }
}

/// Fails the first `failures` listings of every volume, as an outage would.
final class ListingOutageAPI: ForwardingAPI {
    let base: any VolumeAPI
    private let state: NIOLockedValueBox<(failures: Int, listings: Int)>

    init(base: any VolumeAPI, failures: Int) {
        self.base = base
        state = NIOLockedValueBox((failures, 0))
    }

    var listings: Int { state.withLockedValue { $0.listings } }

    func volumes(named name: String?, region: String?) async throws -> [Volume] {
        let fail = state.withLockedValue { state -> Bool in
            state.listings += 1
            guard state.failures > 0 else { return false }
            state.failures -= 1
            return true
        }
        if fail { throw DOError(code: .server, status: 503, message: "Service Unavailable", operation: "GET /v2/volumes") }
        return try await base.volumes(named: name, region: region)
    }
}

extension ConcurrencyTests {
    /// Remove right after an Unmount whose detach failed (its release pending in the background): the volume is
    /// released by the Remove, not left attached once forgotten. (Found by the model test.)
    @Test func removeReleasesAVolumeWhoseReleaseIsPending() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        try await harness.createVolume("pgdata")
        let flaky = FlakyDetachAPI(base: harness.api, failures: 1)
        let a = try await harness.node(droplet: 1, api: flaky)
        _ = try await time.run("the Mount") { try await a.service.mount(name: "pgdata", id: "c1") }
        let unmount = Running { try await a.service.unmount(name: "pgdata", id: "c1") }
        try await time.advance(until: "the Unmount") { unmount.isFinished }
        if case .failure(let error) = try await unmount.result() {
            #expect("\(error)".contains("keeps trying"), "\(error)")
        } else {
            Issue.record("the Unmount's detach was to fail")
        }
        _ = try await time.run("the Remove") { try await a.service.remove(name: "pgdata") }
        #expect(await a.service.records["pgdata"] == nil)
        #expect(await harness.attachments("pgdata").isEmpty, "released by the Remove")
    }
}

