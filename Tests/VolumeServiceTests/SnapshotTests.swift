import DOSimulator
import DigitalOcean
import Foundation
import NIOConcurrencyHelpers
import Testing
import TestSupport
import VolumeService

/// Volumes made from snapshots: `from_snapshot` (by id or name, grown to a larger size, refused smaller, in the
/// region only, ambiguous names listed) and `clone_of` (frozen when the source is mounted here, crash-consistent
/// otherwise, always thawed).
@Suite(.timeLimit(.minutes(5))) struct SnapshotTests {
    func snapshot(_ harness: ServiceHarness, of volume: String, named name: String) async throws -> Snapshot {
        let id = try #require(await harness.world.listVolumes(name: volume, region: nil).first).id
        return try await harness.api.createSnapshot(volumeID: id, name: name, tags: [])
    }

    @Test func restoreAsANewVolumeByNameOrIdAndGrowIt() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let taken = try await snapshot(harness, of: "pgdata", named: "pgdata-2026-11-20")
        let a = try await harness.node(droplet: 1)

        try await a.service.create(name: "restored", options: ["from_snapshot": "pgdata-2026-11-20"])
        let restored = try #require(await harness.world.listVolumes(name: "restored", region: "nyc1").first)
        #expect(restored.sizeGigabytes == 1 && restored.filesystemType == "ext4")
        #expect(restored.tags.contains("do-storage-origin:\(taken.id)"))
        _ = try await a.service.mount(name: "restored", id: "c1")
        #expect(a.filesystem.mounted.values.first?.fstype == "ext4", "the snapshot's filesystem")

        // By id, and larger than the snapshot: grown by a resize right after.
        try await a.service.create(name: "bigger", options: ["from_snapshot": taken.id, "size": "3GiB"])
        #expect(await harness.world.listVolumes(name: "bigger", region: "nyc1").first?.sizeGigabytes == 3)
        #expect(await a.service.records["bigger"]?.seen?.sizeGiB == 3)
        // Docker sends Create again (another node, a retry): the volume made from the snapshot is adopted.
        let b = try await harness.node(droplet: 2)
        try await b.service.create(name: "bigger", options: ["from_snapshot": taken.id, "size": "3GiB"])
    }

    @Test func badOriginsAreRefusedAndNothingIsCreated() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        try await harness.createVolume("other")
        _ = try await snapshot(harness, of: "pgdata", named: "nightly")
        let second = try await snapshot(harness, of: "other", named: "nightly")
        _ = try await harness.world.createVolume(VolumeCreateRequest(name: "faraway", sizeGigabytes: 2, region: "fra1"))
        let far = try await snapshot(harness, of: "faraway", named: "far")
        let big = try await harness.world.createVolume(VolumeCreateRequest(name: "big", sizeGigabytes: 4, region: "nyc1"))
        _ = try await harness.api.createSnapshot(volumeID: big.id, name: "big-1", tags: [])
        let a = try await harness.node(droplet: 1)

        let cases: [([String: String], String)] = [
            (["from_snapshot": "nightly"], "snapshot name \"nightly\" is used by snapshots of 2 volumes"),
            (["from_snapshot": "nightly"], "\(second.id) (of volume other)"),
            (["from_snapshot": "never-taken"], "there is no volume snapshot with the id or name \"never-taken\""),
            (["from_snapshot": far.id], "not in this droplet's region nyc1"),
            (["from_snapshot": "big-1", "size": "2"], "size=2GiB is smaller than snapshot big-1, which needs 4 GiB"),
            (["from_snapshot": "big-1", "fstype": "xfs"], "fstype and fslabel do not apply with from_snapshot"),
            (["from_snapshot": "big-1", "clone_of": "pgdata"], "from_snapshot and clone_of cannot go together"),
            (["clone_of": "ghost"], "there is no DigitalOcean volume ghost in region nyc1 to clone"),
            (["clone_of": "new"], "a volume cannot be its own clone"),
        ]
        for (options, expected) in cases {
            let error = await #expect(throws: VolumeError.self) { try await a.service.create(name: "new", options: options) }
            #expect(error?.message.contains(expected) == true, "\(options): \(String(describing: error))")
        }
        #expect(await harness.world.listVolumes(name: "new", region: nil).isEmpty)
        #expect(await a.service.records["new"] == nil)
        // An existing volume cannot be "made" from a snapshot.
        let error = await #expect(throws: VolumeError.self) {
            try await a.service.create(name: "other", options: ["from_snapshot": "big-1"])
        }
        #expect(error?.message.contains("exists already on DigitalOcean (other)") == true)
    }

    @Test func aCloneOfAVolumeMountedHereIsTakenFrozenAndThawed() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let mountpoint = try await a.service.mount(name: "pgdata", id: "c1")

        try await a.service.create(name: "pgdata-test", options: ["clone_of": "pgdata"])
        #expect(a.filesystem.freezeLog == ["freeze \(mountpoint)", "thaw \(mountpoint)"])
        #expect(a.filesystem.frozen.isEmpty)
        let source = try #require(await harness.world.listVolumes(name: "pgdata", region: nil).first)
        let snapshots = try await harness.world.listSnapshots(volumeID: source.id)
        #expect(snapshots.count == 1 && snapshots[0].name.hasPrefix("pgdata-test-clone-2"), "\(snapshots)")
        let clone = try #require(await harness.world.listVolumes(name: "pgdata-test", region: nil).first)
        #expect(clone.tags.contains("do-storage-origin:\(snapshots[0].id)"))

        let status = try await a.service.get(name: "pgdata-test").status
        #expect(status["clone_consistency"] == "frozen")
        let sourceStatus = try await a.service.get(name: "pgdata").status
        #expect(sourceStatus["snapshots"] == "1")
        #expect(sourceStatus["last_snapshot"]?.hasPrefix(snapshots[0].name + " at ") == true)
        _ = try await a.service.mount(name: "pgdata-test", id: "c2")
    }

    @Test func aCloneOfAVolumeNotMountedHereIsCrashConsistent() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2)
        _ = try await b.service.mount(name: "pgdata", id: "c1")

        try await a.service.create(name: "copy", options: ["clone_of": "pgdata"])
        #expect(a.filesystem.freezeLog.isEmpty && b.filesystem.freezeLog.isEmpty)
        #expect(try await a.service.get(name: "copy").status["clone_consistency"] == "crash")
        #expect(await harness.attachments("pgdata") == [2], "the source stays where it is")
    }

    /// DigitalOcean refuses the snapshot, or does not answer within the freeze limit: the filesystem is thawed
    /// all the same, and nothing is created.
    @Test func theFilesystemIsThawedWhenTheSnapshotFailsOrHangs() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        try await harness.createVolume("pgdata")
        let hanging = HangingSnapshotAPI(base: harness.api)
        let a = try await harness.node(droplet: 1, api: hanging) { $0.freezeLimit = .milliseconds(300) }
        let mountpoint = try await time.run("the Mount") { try await a.service.mount(name: "pgdata", id: "c1") }
        let source = try #require(await harness.world.listVolumes(name: "pgdata", region: nil).first)
        for index in 1...25 { _ = try await harness.api.createSnapshot(volumeID: source.id, name: "s\(index)", tags: []) }

        let refused = await #expect(throws: VolumeError.self) { try await a.service.create(name: "c1", options: ["clone_of": "pgdata"]) }
        #expect(refused?.message.contains("cannot take a snapshot of volume pgdata") == true, "\(String(describing: refused))")
        #expect(a.filesystem.frozen.isEmpty)

        hanging.hang()
        let sleepers = time.sleeperCount
        let create = Running { try await a.service.create(name: "c2", options: ["clone_of": "pgdata"]) }
        try await time.waitForSleepers(sleepers + 1, "the freeze limit's timer")
        #expect(a.filesystem.frozen == [mountpoint])
        await time.advance(by: .milliseconds(299))
        #expect(!create.isFinished && a.filesystem.frozen == [mountpoint], "frozen until the freeze limit")
        await time.advance(by: .milliseconds(1))
        // Ends with no more clock time: thawed at the freeze limit, the hanging request abandoned.
        let late = await #expect(throws: VolumeError.self) { try await create.value() }
        #expect(late?.message.contains("was abandoned: its filesystem was thawed before DigitalOcean answered") == true, "\(String(describing: late))")
        #expect(a.filesystem.frozen.isEmpty)
        #expect(a.filesystem.freezeLog == Array(repeating: ["freeze \(mountpoint)", "thaw \(mountpoint)"], count: 2).flatMap { $0 })
        #expect(await harness.world.listVolumes(name: "c1", region: nil).isEmpty)
        #expect(await harness.world.listVolumes(name: "c2", region: nil).isEmpty)
    }
}

/// Passes calls through; once told to, snapshot requests never answer (until cancelled).
final class HangingSnapshotAPI: ForwardingAPI {
    let base: any VolumeAPI
    private let hanging = NIOLockedValueBox(false)

    init(base: any VolumeAPI) { self.base = base }

    private let waitingCount = NIOLockedValueBox(0)

    func hang() { hanging.withLockedValue { $0 = true } }

    /// Snapshot requests hanging now.
    var waiting: Int { waitingCount.withLockedValue { $0 } }

    func createSnapshot(volumeID: String, name: String, tags: [String]) async throws -> Snapshot {
        if hanging.withLockedValue({ $0 }) {
            waitingCount.withLockedValue { $0 += 1 }
            defer { waitingCount.withLockedValue { $0 -= 1 } }
            // Until cancelled: a request DigitalOcean never answers.
            let never = AsyncStream<Void>.makeStream()
            await withTaskCancellationHandler {
                for await _ in never.stream {}
            } onCancel: {
                never.continuation.finish()
            }
            throw CancellationError()
        }
        return try await base.createSnapshot(volumeID: volumeID, name: name, tags: tags)
    }
}

/// DigitalOcean's limits on snapshots, met through the plugin: each refusal says what it is and what to do.
@Suite(.timeLimit(.minutes(5))) struct SnapshotLimitTests {
    @Test func aSecondSnapshotWithinTenMinutesIsRefusedClearly() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time, snapshotInterval: .seconds(600))
        try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: [:])
        _ = try await a.service.createSnapshot(volume: "pgdata", name: "first")
        await time.advance(by: .seconds(599))
        let error = await #expect(throws: VolumeError.self) { try await a.service.createSnapshot(volume: "pgdata", name: "second") }
        #expect(error?.message.contains("at most one snapshot of a volume every 10 minutes") == true, "\(String(describing: error))")
        await time.advance(by: .seconds(1))
        _ = try await a.service.createSnapshot(volume: "pgdata", name: "second")
        #expect(try await a.service.listSnapshots(volume: "pgdata").map(\.name) == ["second", "first"])
    }

    @Test func theTwentySixthSnapshotIsRefusedClearly() async throws {
        let harness = try ServiceHarness()
        let volume = try await harness.createVolume("pgdata")
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: [:])
        for index in 1...25 { _ = try await harness.api.createSnapshot(volumeID: volume.id, name: "s\(index)", tags: []) }
        let error = await #expect(throws: VolumeError.self) { try await a.service.createSnapshot(volume: "pgdata", name: "s26") }
        #expect(error?.message.contains("already has 25 snapshots, the most allowed") == true, "\(String(describing: error))")
        #expect(try await harness.world.listSnapshots(volumeID: volume.id).count == 25)
    }
}
