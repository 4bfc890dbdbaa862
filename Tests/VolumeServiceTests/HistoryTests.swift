import DOSimulator
import DigitalOcean
import Foundation
import Testing
import TestSupport
import VolumeService

/// A volume's history: commits are snapshots with a message, frozen where the volume is mounted, kept with their
/// tags on DigitalOcean, so every droplet reads the same log, and they outlive the volume they were taken of.
@Suite(.timeLimit(.minutes(5))) struct HistoryTests {
    @Test func aCommitIsAFrozenSnapshotWithItsMessageAndEveryDropletReadsTheLog() async throws {
        let time = TestTime()
        let harness = try ServiceHarness(testTime: time)
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: ["size": "1"])
        _ = try await time.run("the Mount") { try await a.service.mount(name: "pgdata", id: "c1") }

        let first = try await a.service.commit(volume: "pgdata", message: "import base schema")
        #expect(a.filesystem.freezeLog.count == 2 && a.filesystem.frozen.isEmpty, "frozen for the snapshot, then thawed")
        let second = try await a.service.commit(volume: "pgdata", message: "  add users table  ")
        let again = try await a.service.commit(volume: "pgdata", message: "import base schema")
        #expect(second.message == "add users table" && again.message == "import base schema (2)")
        #expect(first.branch == "main")

        let snapshot = try await harness.api.snapshot(id: first.id)
        #expect(snapshot.name == "import base schema")
        #expect(Set(snapshot.tags).isSuperset(of: ["do-storage-commit", "do-storage-name:pgdata", "do-storage-branch:main"]))
        #expect(try await a.service.listSnapshots(volume: "pgdata").first?.origin == "commit")

        // Newest first, on this droplet and on one that never knew the volume.
        let log = try await a.service.log(volume: "pgdata")
        #expect(log.map(\.id) == [again.id, second.id, first.id])
        let b = try await harness.node(droplet: 2)
        #expect(try await b.service.log(volume: "pgdata") == log)
        #expect(try await a.service.get(name: "pgdata").status["head"] == "\(again.id) import base schema (2)")
        #expect(try await a.service.get(name: "pgdata").status["branch"] == "main")
    }

    /// The log holds this volume's commits only (not its other snapshots, not another volume's commits), and keeps
    /// them after the volume they were taken of is deleted.
    @Test func theLogIsTheVolumesCommitsAndOutlivesItsVolume() async throws {
        let harness = try ServiceHarness()
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: ["size": "1", "onremove": "delete"])
        try await a.service.create(name: "other", options: ["size": "1"])
        let kept = try await a.service.commit(volume: "pgdata", message: "before the upgrade")
        _ = try await a.service.createSnapshot(volume: "pgdata", name: "by-hand")
        _ = try await a.service.commit(volume: "other", message: "not pgdata's")

        try await a.service.remove(name: "pgdata")
        #expect(await harness.world.listVolumes(name: "pgdata", region: "nyc1").isEmpty)
        #expect(try await a.service.log(volume: "pgdata") == [kept])
        #expect(try await a.service.log(volume: "never-made").isEmpty)
    }

    @Test(arguments: ["", "   ", "two\nlines", String(repeating: "x", count: 241)])
    func aBadMessageIsRefusedAndNothingIsTaken(message: String) async throws {
        let harness = try ServiceHarness()
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: ["size": "1"])
        await #expect { try await a.service.commit(volume: "pgdata", message: message) } throws: {
            ($0 as? VolumeError)?.code == .invalidOption && "\($0)".contains("-m \"what changed\"")
        }
        #expect(try await a.service.listSnapshots(volume: "pgdata").isEmpty)
    }

    @Test func aCommitOfAVolumeDigitalOceanDoesNotHaveSaysSo() async throws {
        let harness = try ServiceHarness()
        let a = try await harness.node(droplet: 1)
        await #expect { try await a.service.commit(volume: "nothing", message: "m") } throws: {
            ($0 as? VolumeError)?.code == .notFound
        }
        await #expect { try await a.service.log(volume: "bad/name") } throws: { ($0 as? VolumeError)?.code == .invalidName }
    }
}
