import DOSimulator
import DigitalOcean
import Foundation
import Testing
import TestSupport
import VolumeService

/// Retention as restic's and borg's `--keep-*`, and schedules: stored on the volume, run where it is mounted,
/// frozen, deleting only what they made, never holding up an Unmount.
@Suite(.timeLimit(.minutes(5))) struct ScheduleTests {
    static let start = Date(timeIntervalSince1970: 1_795_000_000)  // 2026-11-18T...Z

    /// Every 6 hours for 60 days, newest last.
    static var sixHourly: [(id: String, time: Date)] {
        (0..<240).map { ("s\($0)", start.addingTimeInterval(Double($0) * 6 * 3600)) }
    }

    @Test func retentionKeepsWhatEachRuleAsks() throws {
        let all = Self.sixHourly
        let ids = all.map(\.id)
        #expect(try SnapshotRetention(parsing: "last:4").keep(all) == Set(ids.suffix(4)))
        // The newest of each of the last 7 days: one in every 4.
        let daily = try SnapshotRetention(parsing: "daily:7").keep(all)
        #expect(daily.count == 7)
        #expect(daily.contains(ids.last!))
        let weekly = try SnapshotRetention(parsing: "weekly:4").keep(all)
        #expect(weekly.count == 4)
        let combined = try SnapshotRetention(parsing: "last:4,daily:7,weekly:4").keep(all)
        #expect(combined == Set(ids.suffix(4)).union(daily).union(weekly))
        #expect(combined.count < 4 + 7 + 4, "rules overlap: the newest counts for each")
        #expect(try SnapshotRetention(parsing: "monthly:12").keep(all).count == 3, "60 days span 3 months")
        #expect(try SnapshotRetention(parsing: "hourly:2").keep(all) == Set(ids.suffix(2)))
        #expect(try SnapshotRetention(parsing: "last:1").keep([]) == [])
    }

    @Test(arguments: ["", "last", "last:0", "last:-1", "yearly:2", "last:2,last:3", "daily:x", "last:1001", "daily:7,"])
    func badRetentionRulesAreRefused(text: String) {
        let error = #expect(throws: VolumeError.self) { try SnapshotRetention(parsing: text) }
        #expect(error?.message.hasPrefix("snapshot_keep=\(text):") == true)
    }

    @Test func theScheduleTravelsAsTags() throws {
        let schedule = SnapshotSchedule(every: .seconds(6 * 3600), keep: try SnapshotRetention(parsing: "last:4,daily:7,weekly:4"))
        #expect(schedule.tags == ["do-storage-every:21600", "do-storage-keep:last-4:daily-7:weekly-4"])
        #expect(schedule.tags.allSatisfy { TagCreateRequest.isValid(name: $0) })
        #expect(SnapshotSchedule(tags: ["db"] + schedule.tags) == schedule)
        #expect(SnapshotSchedule(tags: ["do-storage-every:3600"])?.keep == SnapshotSchedule.defaultKeep)
        #expect(SnapshotSchedule(tags: ["db"]) == nil)
    }

    @Test func schedulesRunWhereTheVolumeIsMountedAndKeepOnlyWhatTheyShould() async throws {
        let clock = MovableWallClock()
        let harness = try ServiceHarness(clock: clock)
        let a = try await harness.node(droplet: 1, time: clock.timeSource)
        try await a.service.create(
            name: "pgdata", options: ["size": "1", "snapshot_every": "6h", "snapshot_keep": "last:3"])
        let volume = try #require(await harness.world.listVolumes(name: "pgdata", region: "nyc1").first)
        #expect(volume.tags.contains("do-storage-every:21600") && volume.tags.contains("do-storage-keep:last-3"))
        // A snapshot someone took by hand: never deleted by the schedule.
        let manual = try await harness.api.createSnapshot(volumeID: volume.id, name: "by-hand", tags: [])

        // Not mounted here: nothing happens.
        await a.service.snapshotSchedulesOnce()
        #expect(try await harness.world.listSnapshots(volumeID: volume.id).count == 1)

        let mountpoint = try await a.service.mount(name: "pgdata", id: "c1")
        var taken: [String] = []
        for _ in 1...5 {
            await a.service.snapshotSchedulesOnce()
            // Not due again until 6 hours have passed.
            await a.service.snapshotSchedulesOnce()
            clock.move(by: .seconds(6 * 3600))
            taken = try await harness.world.listSnapshots(volumeID: volume.id).map(\.name)
        }
        #expect(taken.count == 4, "the manual one and the newest 3 scheduled: \(taken)")
        #expect(taken.contains("by-hand"))
        #expect(a.filesystem.freezeLog.count == 10, "each scheduled snapshot frozen and thawed: \(a.filesystem.freezeLog)")
        #expect(a.filesystem.frozen.isEmpty)
        let status = try await a.service.get(name: "pgdata").status
        #expect(status["snapshot_every"] == "6h" && status["snapshot_keep"] == "last:3")
        #expect(status["snapshots"] == "4")
        #expect(status["last_snapshot"]?.hasPrefix("pgdata-") == true)
        _ = manual
        _ = mountpoint
    }

    @Test func schedulesAreCheckedAndFollowTheVolume() async throws {
        let harness = try ServiceHarness()
        let a = try await harness.node(droplet: 1)
        let tooOften = await #expect(throws: VolumeError.self) {
            try await a.service.create(name: "pgdata", options: ["snapshot_every": "5m"])
        }
        #expect(tooOften?.message.contains("more often than this plugin allows (SNAPSHOT_MIN_INTERVAL=15m)") == true)
        let keepAlone = await #expect(throws: VolumeError.self) {
            try await a.service.create(name: "pgdata", options: ["snapshot_keep": "last:2"])
        }
        #expect(keepAlone?.message.contains("snapshot_keep needs snapshot_every") == true)

        // An existing volume gets the schedule as tags; another droplet adopting it sees it without the options.
        try await harness.createVolume("logs")
        try await a.service.create(name: "logs", options: ["snapshot_every": "1d"])
        let tags = try #require(await harness.world.listVolumes(name: "logs", region: "nyc1").first).tags
        #expect(tags.contains("do-storage-every:86400") && tags.contains("do-storage-keep:last-10"))
        let b = try await harness.node(droplet: 2)
        try await b.service.create(name: "logs", options: [:])
        #expect(try await b.service.get(name: "logs").status["snapshot_every"] == "1d")
        // Changing it replaces the old tags.
        let c = try await harness.node(droplet: 3)
        try await c.service.create(name: "logs", options: ["snapshot_every": "12h", "snapshot_keep": "daily:3"])
        let changed = try #require(await harness.world.listVolumes(name: "logs", region: "nyc1").first).tags
        #expect(changed.filter { $0.hasPrefix("do-storage-every:") || $0.hasPrefix("do-storage-keep:") }
            == ["do-storage-every:43200", "do-storage-keep:daily-3"])
    }

    /// An Unmount while a scheduled snapshot holds the filesystem frozen thaws it at once and goes on; the snapshot
    /// is abandoned.
    @Test func anUnmountNeverWaitsForAScheduledSnapshot() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        let hanging = HangingSnapshotAPI(base: harness.api)
        let a = try await harness.node(droplet: 1, api: hanging) { $0.freezeLimit = .seconds(60) }
        try await a.service.create(name: "pgdata", options: ["snapshot_every": "1h"])
        _ = try await time.run("the Mount") { try await a.service.mount(name: "pgdata", id: "c1") }
        hanging.hang()
        let schedule = Task { await a.service.snapshotSchedulesOnce() }
        try await waitUntil("the filesystem to be frozen", within: .seconds(60)) { !a.filesystem.frozen.isEmpty }
        // The Unmount ends within its detach's clock time: it never waits for the 60 s freeze limit.
        let unmount = Running { try await a.service.unmount(name: "pgdata", id: "c1") }
        try await time.advance(until: "the Unmount's detach", virtualLimit: .seconds(30)) { unmount.isFinished }
        try await unmount.value()
        #expect(a.filesystem.frozen.isEmpty && a.filesystem.mounted.isEmpty)
        schedule.cancel()
        await schedule.value
        let lastError = try await a.service.get(name: "pgdata").status["last_error"] ?? ""
        #expect(lastError.contains("was abandoned"), "\(lastError)")
    }
}

/// DigitalOcean keeps at most 25 snapshots per volume: a schedule at the cap makes room first, and one that cannot
/// says so in Status and does not freeze the filesystem for nothing.
@Suite(.timeLimit(.minutes(5))) struct ScheduleAtTheCapTests {
    func mounted(keep: String) async throws -> (ServiceHarness, ServiceHarness.Node, MovableWallClock, Volume) {
        let clock = MovableWallClock()
        let harness = try ServiceHarness(clock: clock)
        let a = try await harness.node(droplet: 1, time: clock.timeSource)
        try await a.service.create(name: "pgdata", options: ["snapshot_every": "6h", "snapshot_keep": keep])
        let volume = try #require(await harness.world.listVolumes(name: "pgdata", region: "nyc1").first)
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        return (harness, a, clock, volume)
    }

    @Test func atTheCapTheSchedulesOwnOldestGoesFirst() async throws {
        let (harness, a, clock, volume) = try await mounted(keep: "last:1")
        for index in 1...24 { _ = try await harness.api.createSnapshot(volumeID: volume.id, name: "by-hand-\(index)", tags: []) }
        await a.service.snapshotSchedulesOnce()
        let first = try await harness.world.listSnapshots(volumeID: volume.id)
        #expect(first.count == 25)
        for round in 1...3 {
            clock.move(by: .seconds(6 * 3600))
            await a.service.snapshotSchedulesOnce()
            let names = try await harness.world.listSnapshots(volumeID: volume.id).map(\.name)
            #expect(names.count == 25, "round \(round): \(names)")
            #expect(names.filter { $0.hasPrefix("by-hand-") }.count == 24, "round \(round)")
            #expect(!names.contains(first.last!.name), "round \(round): the previous scheduled one made room")
        }
        #expect(a.filesystem.freezeLog.count == 8, "one freeze and thaw per snapshot taken")
        let status = try await a.service.get(name: "pgdata").status
        #expect(status["last_error"] == "", "\(status)")
        #expect(status["snapshots"] == "25")
    }

    @Test func aCapFullOfManualSnapshotsIsShownAndFreezesNothing() async throws {
        let (harness, a, clock, volume) = try await mounted(keep: "last:3")
        var manual: [Snapshot] = []
        for index in 1...25 { manual.append(try await harness.api.createSnapshot(volumeID: volume.id, name: "by-hand-\(index)", tags: [])) }
        harness.api.calls.reset()
        await a.service.snapshotSchedulesOnce()
        let lastError = try await a.service.get(name: "pgdata").status["last_error"] ?? ""
        #expect(lastError.contains("has 25 snapshots, DigitalOcean's most"), "\(lastError)")
        #expect(lastError.contains("25 were taken by hand or for clones"), "\(lastError)")
        #expect(lastError.contains("do-storage snapshot delete pgdata NAME"), "\(lastError)")
        #expect(a.filesystem.freezeLog.isEmpty, "nothing frozen for a snapshot that cannot be taken")
        #expect(harness.api.calls.byName["POST /v2/volumes/{id}/snapshots"] == nil)
        // Not tried again at every check: once per period.
        await a.service.snapshotSchedulesOnce()
        #expect(harness.api.calls.byName["GET /v2/volumes/{id}/snapshots"] == 1)

        // Room made by hand: the next period's run takes it, and Status clears.
        _ = try await a.service.deleteSnapshot(volume: "pgdata", snapshot: manual[0].name)
        clock.move(by: .seconds(6 * 3600))
        await a.service.snapshotSchedulesOnce()
        #expect(try await harness.world.listSnapshots(volumeID: volume.id).count == 25)
        #expect(a.filesystem.freezeLog.count == 2)
        #expect(try await a.service.get(name: "pgdata").status["last_error"] == "")
    }

    @Test func aRetentionThatKeepsMoreThanTheCapIsShown() async throws {
        let (harness, a, clock, volume) = try await mounted(keep: "last:30")
        for _ in 1...25 {
            await a.service.snapshotSchedulesOnce()
            clock.move(by: .seconds(6 * 3600))
        }
        #expect(try await harness.world.listSnapshots(volumeID: volume.id).count == 25)
        await a.service.snapshotSchedulesOnce()
        let lastError = try await a.service.get(name: "pgdata").status["last_error"] ?? ""
        #expect(lastError.contains("25 are the schedule's, and snapshot_keep=last:30 keeps them all"), "\(lastError)")
        #expect(lastError.contains("keep fewer (snapshot_keep)"), "\(lastError)")
        #expect(a.filesystem.freezeLog.count == 50, "no freeze for the run that could not take one")
    }
}
