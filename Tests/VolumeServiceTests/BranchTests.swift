import DOSimulator
import DigitalOcean
import Foundation
import NIOConcurrencyHelpers
import Testing
import TestSupport
@testable import VolumeService

/// History in place: reset, checkout and branches on DigitalOcean's own volumes and snapshots, the same Docker name
/// all along, every droplet agreeing, and every interrupted step leaving the name on exactly one volume.
@Suite(.timeLimit(.minutes(5))) struct BranchTests {
    /// Writes `text` into the volume's device (its data, as the simulator copies it into snapshots).
    func write(_ text: String, _ node: ServiceHarness.Node, _ name: String) async throws {
        let device = try #require(await node.service.records[name]?.seen?.device)
        let handle = try #require(FileHandle(forWritingAtPath: device))
        try handle.seek(toOffset: 1 << 20)
        try handle.write(contentsOf: Data((text + "\n").utf8))
        try handle.close()
    }

    /// What `write` left on the volume the name mounts now (mounted for the read, then unmounted).
    func read(_ node: ServiceHarness.Node, _ name: String) async throws -> String {
        _ = try await node.service.mount(name: name, id: "reader")
        defer { Task { try? await node.service.unmount(name: name, id: "reader") } }
        let device = try #require(await node.service.records[name]?.seen?.device)
        let handle = try #require(FileHandle(forReadingAtPath: device))
        try handle.seek(toOffset: 1 << 20)
        let bytes = try handle.read(upToCount: 64) ?? Data()
        try handle.close()
        try await node.service.unmount(name: name, id: "reader")
        return String(decoding: bytes.prefix { $0 != 10 }, as: UTF8.self)
    }

    /// The volumes of `name`'s history on DigitalOcean, and which carry a head tag.
    func volumes(_ harness: ServiceHarness, _ name: String) async -> (all: [Volume], heads: [Volume]) {
        let all = await harness.world.listVolumes(name: nil, region: "nyc1").filter { $0.tags.contains("do-storage-name:\(name)") }
        return (all, all.filter { $0.tags.contains { $0.hasPrefix("do-storage-head:") } })
    }

    /// dvol's story: commit, a bad write, reset --hard brings the commit back; checkout -b, write, back to main shows
    /// main's data; a second droplet mounts whatever is current.
    @Test func dvolsStoryOnTwoDroplets() async throws {
        let harness = try ServiceHarness()
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: ["size": "1"])
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        try await write("base schema", a, "pgdata")
        let base = try await a.service.commit(volume: "pgdata", message: "import base schema")
        try await write("broken", a, "pgdata")
        await #expect { _ = try await a.service.reset(volume: "pgdata", to: nil) } throws: {
            ($0 as? VolumeError)?.code == .inUse && "\($0)".contains("mounted on this droplet")
        }
        try await a.service.unmount(name: "pgdata", id: "c1")

        let reset = try await a.service.reset(volume: "pgdata", to: "HEAD")
        #expect(reset.contains("reset to \(base.id)") && reset.contains("was deleted"), "\(reset)")
        #expect(try await read(a, "pgdata") == "base schema")
        var history = await volumes(harness, "pgdata")
        #expect(history.all.count == 1 && history.heads.count == 1, "the replaced volume is gone")
        #expect(history.all.allSatisfy { $0.dropletIDs.isEmpty }, "nothing left attached")
        #expect(try await a.service.log(volume: "pgdata").map(\.id) == [base.id])

        let tweak = try await a.service.checkout(volume: "pgdata", branch: "schema-tweaks", create: true, from: nil)
        #expect(tweak.current && tweak.name == "schema-tweaks")
        _ = try await a.service.mount(name: "pgdata", id: "c2")
        try await write("tweaked", a, "pgdata")
        try await a.service.unmount(name: "pgdata", id: "c2")
        #expect(try await a.service.get(name: "pgdata").status["branch"] == "schema-tweaks")
        _ = try await a.service.checkout(volume: "pgdata", branch: "main", create: false, from: nil)
        #expect(try await read(a, "pgdata") == "base schema")
        #expect(try await a.service.get(name: "pgdata").status["branch"] == "main")
        let branches = try await a.service.branches(volume: "pgdata")
        #expect(branches.map(\.name) == ["main", "schema-tweaks"] && branches.map(\.current) == [true, false])

        // A droplet that never knew the volume, and one that remembered the other branch, mount the current one.
        let b = try await harness.node(droplet: 2)
        #expect(try await read(b, "pgdata") == "base schema")
        _ = try await a.service.checkout(volume: "pgdata", branch: "schema-tweaks", create: false, from: nil)
        #expect(try await read(b, "pgdata") == "tweaked", "b remembered main's volume")
        history = await volumes(harness, "pgdata")
        #expect(history.all.count == 2 && history.heads.count == 1)
        #expect(try await b.service.branches(volume: "pgdata").first { $0.current }?.name == "schema-tweaks")

        // branch -d: not the current one; the other goes, its commits stay.
        await #expect { _ = try await a.service.deleteBranch(volume: "pgdata", branch: "schema-tweaks") } throws: {
            ($0 as? VolumeError)?.code == .inUse && "\($0)".contains("current branch")
        }
        _ = try await a.service.checkout(volume: "pgdata", branch: "main", create: false, from: nil)
        let deleted = try await a.service.deleteBranch(volume: "pgdata", branch: "schema-tweaks")
        #expect(deleted.contains("branch schema-tweaks deleted; its volume") && deleted.contains("was deleted"), "\(deleted)")
        #expect(await volumes(harness, "pgdata").all.count == 1)
        #expect(try await a.service.log(volume: "pgdata").map(\.id) == [base.id])
    }

    /// Reset to an older commit deletes the branch's newer commits; refusals say what to do.
    @Test func resetToAnOlderCommitAndTheRefusals() async throws {
        let harness = try ServiceHarness()
        let a = try await harness.node(droplet: 1)
        try await a.service.create(name: "pgdata", options: ["size": "1"])
        await #expect { _ = try await a.service.reset(volume: "pgdata", to: nil) } throws: { "\($0)".contains("commit first") }
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        try await write("one", a, "pgdata")
        let one = try await a.service.commit(volume: "pgdata", message: "one")
        try await write("two", a, "pgdata")
        _ = try await a.service.commit(volume: "pgdata", message: "two")
        try await a.service.unmount(name: "pgdata", id: "c1")
        // checkout -b --from an older commit: that commit's data, on the new branch; main keeps its own.
        _ = try await a.service.checkout(volume: "pgdata", branch: "from-one", create: true, from: one.id)
        #expect(try await read(a, "pgdata") == "one")
        _ = try await a.service.checkout(volume: "pgdata", branch: "main", create: false, from: nil)
        #expect(try await read(a, "pgdata") == "two")

        await #expect { _ = try await a.service.reset(volume: "pgdata", to: "0000") } throws: { "\($0)".contains("has no commit 0000") }
        let reset = try await a.service.reset(volume: "pgdata", to: one.id)
        #expect(reset.contains("1 newer commit(s) deleted"), "\(reset)")
        #expect(try await a.service.log(volume: "pgdata").map(\.id) == [one.id])
        #expect(try await read(a, "pgdata") == "one")
        await #expect { _ = try await a.service.checkout(volume: "pgdata", branch: "Bad_Name", create: true, from: nil) } throws: {
            ($0 as? VolumeError)?.code == .invalidOption && "\($0)".contains("not a branch name")
        }
        await #expect { _ = try await a.service.checkout(volume: "pgdata", branch: "nope", create: false, from: nil) } throws: {
            "\($0)".contains("has no branch nope") && "\($0)".contains("-b nope")
        }
        await #expect { _ = try await a.service.checkout(volume: "pgdata", branch: "main", create: true, from: nil) } throws: {
            "\($0)".contains("has a branch main already")
        }
        // In use on another droplet: refused, naming it.
        let b = try await harness.node(droplet: 2)
        _ = try await b.service.mount(name: "pgdata", id: "c9")
        await #expect { _ = try await a.service.reset(volume: "pgdata", to: nil) } throws: {
            ($0 as? VolumeError)?.code == .inUse && "\($0)".contains("attached to droplet 2")
        }
    }

    /// A volume do_storage did not make is kept when a reset replaces it, without the name's tags, and the command
    /// says so; a droplet that remembered it mounts the reset volume, not the kept one. (Found by the demo.)
    @Test func aVolumeMadeElsewhereIsKeptUntaggedAndNotMountedForTheName() async throws {
        let harness = try ServiceHarness()
        let original = try await harness.createVolume("legacy")
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2)
        try await a.service.create(name: "legacy", options: [:])
        _ = try await read(b, "legacy")  // b mounts it once, and remembers it
        _ = try await a.service.mount(name: "legacy", id: "c1")
        try await write("committed", a, "legacy")
        _ = try await a.service.commit(volume: "legacy", message: "before")
        try await write("oops", a, "legacy")
        try await a.service.unmount(name: "legacy", id: "c1")
        let reset = try await a.service.reset(volume: "legacy", to: nil)
        #expect(reset.contains("was kept, since do_storage did not make it"), "\(reset)")
        let kept = try await harness.api.volume(id: original.id)
        #expect(kept.tags == ["do-storage-branched"], "\(kept.tags)")
        #expect(await volumes(harness, "legacy").all.count == 1)
        #expect(try await read(b, "legacy") == "committed", "b remembered the kept volume")
    }

    /// Every interrupted step leaves the name on exactly one volume, and the next step settles the rest: a reset cut
    /// off before its new volume (nothing changed, nothing left attached), one cut off after it (the replaced one still
    /// there), a checkout whose last call failed (the old head tag still on).
    @Test func interruptedStepsLeaveOneHeadAndTheNextSettles() async throws {
        let harness = try ServiceHarness()
        let faults = FaultyAPI(base: harness.api)
        let a = try await harness.node(droplet: 1, api: faults)
        try await a.service.create(name: "pgdata", options: ["size": "1"])
        _ = try await a.service.mount(name: "pgdata", id: "c1")
        try await write("kept", a, "pgdata")
        _ = try await a.service.commit(volume: "pgdata", message: "kept")
        try await write("lost", a, "pgdata")
        try await a.service.unmount(name: "pgdata", id: "c1")
        let b = try await harness.node(droplet: 2)

        // Before the decisive call: nothing changed.
        faults.fail("createVolume")
        await #expect(throws: (any Error).self) { _ = try await a.service.reset(volume: "pgdata", to: nil) }
        var history = await volumes(harness, "pgdata")
        #expect(history.all.count == 1 && history.all.allSatisfy { $0.dropletIDs.isEmpty })
        #expect(try await read(b, "pgdata") == "lost")

        // After it: the new volume is current everywhere; the replaced one stays until the next step.
        faults.fail("deleteVolume")
        await #expect(throws: (any Error).self) { _ = try await a.service.reset(volume: "pgdata", to: nil) }
        history = await volumes(harness, "pgdata")
        #expect(history.all.count == 2 && history.heads.count == 2, "the new head is the higher")
        #expect(try await read(b, "pgdata") == "kept")
        // A checkout whose last call (the old head tag off) fails has still switched; the next step settles. (Its
        // first untag finishes the reset above: the new volume said which commit it was reset to.)
        faults.fail("untagVolume", skipping: 1)
        _ = try await a.service.checkout(volume: "pgdata", branch: "side", create: true, from: nil)
        history = await volumes(harness, "pgdata")
        #expect(history.all.count == 2 && history.heads.count == 2, "main's replaced volume gone; a stale head tag left")
        #expect(try await b.service.branches(volume: "pgdata").first { $0.current }?.name == "side")
        _ = try await a.service.checkout(volume: "pgdata", branch: "main", create: false, from: nil)
        history = await volumes(harness, "pgdata")
        #expect(history.heads.count == 1, "stale head tags settled")
        #expect(history.all.count == 2, "main's replaced volume settled: main and side remain")
        #expect(try await read(b, "pgdata") == "kept")

        // A reset cut off while deleting the newer commits: the next step deletes them.
        let main = try await a.service.log(volume: "pgdata")
        _ = try await a.service.mount(name: "pgdata", id: "c2")
        _ = try await a.service.commit(volume: "pgdata", message: "newer")
        try await a.service.unmount(name: "pgdata", id: "c2")
        faults.fail("deleteSnapshot")
        await #expect(throws: (any Error).self) { _ = try await a.service.reset(volume: "pgdata", to: main.first?.id) }
        #expect(try await a.service.log(volume: "pgdata").count == main.count + 1, "the newer commit is still there")
        _ = try await a.service.checkout(volume: "pgdata", branch: "main", create: false, from: nil)
        #expect(try await a.service.log(volume: "pgdata").map(\.id) == main.map(\.id), "the next step finished the reset")
    }

    /// checkout BRANCH whose last call (the old head tag off) fails, and branch -d cut off at its delete: one current
    /// branch either way, the hold let go, and the next step finishes.
    @Test func checkoutAndBranchDeleteInterrupted() async throws {
        let harness = try ServiceHarness()
        let faults = FaultyAPI(base: harness.api)
        let a = try await harness.node(droplet: 1, api: faults)
        try await a.service.create(name: "pgdata", options: ["size": "1"])
        _ = try await a.service.commit(volume: "pgdata", message: "base")
        _ = try await a.service.checkout(volume: "pgdata", branch: "side", create: true, from: nil)
        faults.fail("untagVolume")
        _ = try await a.service.checkout(volume: "pgdata", branch: "main", create: false, from: nil)
        var history = await volumes(harness, "pgdata")
        #expect(history.heads.count == 2, "the old head tag is still on")
        #expect(try await a.service.branches(volume: "pgdata").first { $0.current }?.name == "main", "the higher head wins")

        faults.fail("deleteVolume")
        await #expect(throws: (any Error).self) { _ = try await a.service.deleteBranch(volume: "pgdata", branch: "side") }
        history = await volumes(harness, "pgdata")
        #expect(history.all.count == 2 && history.heads.count == 1, "nothing deleted; the stale head settled")
        #expect(history.all.allSatisfy { $0.dropletIDs.isEmpty }, "the hold let go")
        _ = try await a.service.deleteBranch(volume: "pgdata", branch: "side")
        #expect(await volumes(harness, "pgdata").all.count == 1)
        #expect(try await a.service.branches(volume: "pgdata").map(\.name) == ["main"])
    }

    /// A branch's volume name that another Docker volume's volume holds is refused, not reused; checkout BRANCH cut
    /// off at its decisive tag changes nothing. Either way the hold is let go.
    @Test func aTakenBranchNameAndAFailedSwitchChangeNothing() async throws {
        let harness = try ServiceHarness()
        let faults = FaultyAPI(base: harness.api)
        let a = try await harness.node(droplet: 1, api: faults)
        try await a.service.create(name: "pgdata", options: ["size": "1"])
        _ = try await a.service.commit(volume: "pgdata", message: "base")
        let taken = History.volumeName(doName: "pgdata", branch: "x", generation: 2)
        _ = try await harness.world.createVolume(
            VolumeCreateRequest(name: taken, sizeGigabytes: 1, region: "nyc1", tags: ["do-storage-name:other"]))
        await #expect { _ = try await a.service.checkout(volume: "pgdata", branch: "x", create: true, from: nil) } throws: {
            ($0 as? VolumeError)?.code == .invalidName && "\($0)".contains("\"other\"")
        }
        var history = await volumes(harness, "pgdata")
        #expect(history.all.count == 1 && history.heads.count == 1 && history.all[0].dropletIDs.isEmpty)

        _ = try await a.service.checkout(volume: "pgdata", branch: "y", create: true, from: nil)
        faults.fail("tagVolume")
        await #expect(throws: (any Error).self) { _ = try await a.service.checkout(volume: "pgdata", branch: "main", create: false, from: nil) }
        history = await volumes(harness, "pgdata")
        #expect(history.heads.count == 1 && history.all.allSatisfy { $0.dropletIDs.isEmpty })
        #expect(try await a.service.branches(volume: "pgdata").first { $0.current }?.name == "y")
    }

    /// A plugin killed right after a step's decisive call (every later call lost): the name maps to the new branch
    /// on every droplet, and the restarted plugin releases the volume the step held, though its record has moved on.
    @Test func aPluginKilledAfterTheDecisiveCallLeavesTheNewBranchAndReleasesWhatItHeld() async throws {
        let harness = try ServiceHarness()
        let dying = KillableAPI(base: harness.api)
        let a = try await harness.node(droplet: 1, api: dying)
        try await a.service.create(name: "pgdata", options: ["size": "1"])
        _ = try await a.service.commit(volume: "pgdata", message: "base")
        let held = try #require(await a.service.records["pgdata"]?.volumeID)
        dying.killAfterNextCreate()
        // What it answers no longer matters: nothing it does after the new volume reaches DigitalOcean.
        _ = try? await a.service.checkout(volume: "pgdata", branch: "side", create: true, from: nil)
        a.kill()
        #expect(try await harness.api.volume(id: held).dropletIDs == [1], "the killed step left its hold")
        let b = try await harness.node(droplet: 2)
        #expect(try await b.service.branches(volume: "pgdata").first { $0.current }?.name == "side")

        let restarted = try await harness.node(droplet: 1)
        #expect(await restarted.service.records["pgdata"]?.volumeID != held, "the record moved to the new branch")
        await restarted.service.releaseUnusedAttachments()
        #expect(try await harness.api.volume(id: held).dropletIDs.isEmpty, "released at the next start")
        _ = try await restarted.service.checkout(volume: "pgdata", branch: "main", create: false, from: nil)
        #expect(await volumes(harness, "pgdata").heads.count == 1)
    }

    /// Two droplets switching the same volume at once: one wins, the other fails clearly, one head.
    @Test func twoDropletsSwitchingAtOnce() async throws {
        let harness = try ServiceHarness(actionLatency: .milliseconds(200))
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2)
        try await a.service.create(name: "pgdata", options: ["size": "1"])
        _ = try await a.service.commit(volume: "pgdata", message: "base")
        _ = try await b.service.branches(volume: "pgdata")
        async let first = Result(catching: { try await a.service.checkout(volume: "pgdata", branch: "from-a", create: true, from: nil) })
        async let second = Result(catching: { try await b.service.checkout(volume: "pgdata", branch: "from-b", create: true, from: nil) })
        let results = await [first, second]
        let failures = results.compactMap { if case .failure(let error) = $0 { "\(error)" } else { nil } }
        #expect(failures.count == 1, "\(failures)")
        #expect(failures.allSatisfy { $0.contains("attached to droplet") }, "\(failures)")
        let history = await volumes(harness, "pgdata")
        #expect(history.heads.count == 1 && history.all.allSatisfy { $0.dropletIDs.isEmpty }, "nothing left half-done")
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

/// Fails one call of the method named by `fail`: the next, or the one after `skipping` others.
final class FaultyAPI: ForwardingAPI {
    let base: any VolumeAPI
    private let next = NIOLockedValueBox<(method: String, skip: Int)?>(nil)

    init(base: any VolumeAPI) { self.base = base }

    func fail(_ method: String, skipping: Int = 0) { next.withLockedValue { $0 = (method, skipping) } }

    private func check(_ method: String) throws {
        try next.withLockedValue {
            guard let fault = $0, fault.method == method else { return }
            guard fault.skip == 0 else { return $0 = (method, fault.skip - 1) }
            $0 = nil
            throw DOError(code: .server, status: 500, message: "injected fault in \(method)", operation: method)
        }
    }

    func createVolume(_ request: VolumeCreateRequest) async throws -> Volume {
        try check("createVolume")
        return try await base.createVolume(request)
    }
    func deleteVolume(id: String) async throws {
        try check("deleteVolume")
        try await base.deleteVolume(id: id)
    }
    func untagVolume(id: String, from name: String) async throws {
        try check("untagVolume")
        try await base.untagVolume(id: id, from: name)
    }
    func deleteSnapshot(id: String) async throws {
        try check("deleteSnapshot")
        try await base.deleteSnapshot(id: id)
    }
    func tagVolume(id: String, with name: String) async throws {
        try check("tagVolume")
        try await base.tagVolume(id: id, with: name)
    }
}
