import DOSimulator
import DigitalOcean
import Foundation
import Testing
import TestSupport
import VolumeService

/// What a container sees: a volume do_storage makes shows its data directory, empty at first use, with the owner and
/// mode its Create gave, on every droplet; a volume made elsewhere shows its filesystem's root as it is.
@Suite(.timeLimit(.minutes(5))) struct DataDirectoryTests {
    func volume(_ harness: ServiceHarness, _ name: String) async throws -> Volume {
        try #require(await harness.world.listVolumes(name: name, region: "nyc1").first)
    }

    @Test func ownershipOptionsAreRead() throws {
        let options = try CreateOptions(parsing: ["uid": "1000", "gid": " 0 ", "mode": "0750"])
        #expect(options.uid == 1000 && options.gid == 0 && options.mode == 0o750)
        #expect(try CreateOptions(parsing: ["mode": "2775"]).mode == 0o2775)
        #expect(try CreateOptions(parsing: ["mode": "700"]).mode == 0o700)
        #expect(try CreateOptions(parsing: ["uid": "4294967294"]).uid == 4_294_967_294)
        #expect(try !CreateOptions(parsing: ["size": "2"]).setsDataDirectory)
    }

    @Test(arguments: [
        (["uid": "postgres"], "uid=postgres is not a user id: use a number from 0 to 4294967294"),
        (["uid": "-1"], "uid=-1 is not a user id"), (["uid": "4294967295"], "uid=4294967295 is not a user id"),
        (["uid": ""], "uid= is not a user id"), (["gid": "1.5"], "gid=1.5 is not a group id"),
        (["gid": "99999999999"], "gid=99999999999 is not a group id"),
        (["mode": "999"], "mode=999 is not a permission mode: use 3 or 4 octal digits"),
        (["mode": "75"], "mode=75 is not a permission mode"), (["mode": "07550"], "mode=07550 is not a permission mode"),
        (["mode": "rwxr-x---"], "mode=rwxr-x--- is not a permission mode"),
    ])
    func badOwnershipValuesNameTheOption(options: [String: String], expected: String) async throws {
        let error = #expect(throws: VolumeError.self) { try CreateOptions(parsing: options) }
        #expect(error?.code == .invalidOption)
        #expect(error?.message.contains(expected) == true, "\(String(describing: error))")
        // Nothing is made on DigitalOcean.
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1)
        await #expect(throws: VolumeError.self) { try await node.service.create(name: "owned", options: options) }
        #expect(await harness.world.listVolumes(name: nil, region: nil).isEmpty)
        #expect(await node.service.records.isEmpty)
    }

    @Test func aNewVolumeShowsItsDataDirectoryWithItsOwnerOnEveryDroplet() async throws {
        let harness = try ServiceHarness()
        let first = try await harness.node(droplet: 1)
        let second = try await harness.node(droplet: 2)
        try await first.service.create(name: "grafana", options: ["uid": "472", "gid": "0", "mode": "0770"])
        let made = try await volume(harness, "grafana")
        #expect(made.tags == [
            "do-storage", "do-storage-name:grafana", "do-storage-data", "do-storage-uid:472", "do-storage-gid:0",
            "do-storage-mode:0770",
        ])

        let path = try await first.service.mount(name: "grafana", id: "c1")
        let root = first.configuration.mountRoot + "/grafana"
        #expect(path == root + "/data")
        #expect(first.filesystem.mounted[root] != nil, "the filesystem is mounted at the volume's folder")
        #expect(first.filesystem.directories[path] == DataDirectory(uid: 472, gid: 0, mode: 0o770))
        #expect(try await first.service.path(name: "grafana") == path)
        #expect(try await first.service.get(name: "grafana").mountpoint == path)
        #expect(try await first.service.list().first?.mountpoint == path)
        let status = try await first.service.get(name: "grafana").status
        #expect(status["container_sees"] == "data directory (data/ of the filesystem, owner:group mode 472:0 0770)")
        try await first.service.unmount(name: "grafana", id: "c1")
        #expect(try await first.service.path(name: "grafana") == "")

        // Another droplet, which only learns of the volume at its Mount, applies the same owner and mode.
        let there = try await second.service.mount(name: "grafana", id: "c2")
        #expect(there == second.configuration.mountRoot + "/grafana/data")
        #expect(second.filesystem.directories[there] == DataDirectory(uid: 472, gid: 0, mode: 0o770))
    }

    @Test func withoutOptionsTheDirectoryIsRootsAndLeftToItsContainers() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1)
        try await node.service.create(name: "plain", options: [:])
        #expect(try await volume(harness, "plain").tags.contains("do-storage-data"))
        let path = try await node.service.mount(name: "plain", id: "c1")
        #expect(node.filesystem.directories[path] == DataDirectory(uid: 0, gid: 0, mode: 0o755))
        #expect(try await node.service.get(name: "plain").status["container_sees"]
            == "data directory (data/ of the filesystem, owner:group mode -:- -)")
    }

    @Test func aVolumeMadeElsewhereShowsItsRootAndRefusesOwnershipOptions() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("legacy")
        let node = try await harness.node(droplet: 1)
        let error = await #expect(throws: VolumeError.self) { try await node.service.create(name: "legacy", options: ["uid": "1000"]) }
        #expect(error?.code == .invalidOption)
        #expect(error?.message.contains("shows its filesystem's root as it holds it") == true, "\(String(describing: error))")
        #expect(error?.message.contains("chown 1000:1000 /v") == true)
        #expect(await node.service.records.isEmpty, "nothing registered")
        #expect(try await volume(harness, "legacy").tags.isEmpty, "nothing changed on DigitalOcean")

        try await node.service.create(name: "legacy", options: [:])
        let path = try await node.service.mount(name: "legacy", id: "c1")
        #expect(path == node.configuration.mountRoot + "/legacy")
        #expect(node.filesystem.directories.isEmpty, "nothing made in its filesystem")
        #expect(try await node.service.get(name: "legacy").status["container_sees"] == "filesystem root (volume not made by do_storage)")
    }

    @Test func aLaterCreateChangesTheOwnerForItsNextMount() async throws {
        let harness = try ServiceHarness()
        let first = try await harness.node(droplet: 1)
        let second = try await harness.node(droplet: 2)
        try await first.service.create(name: "app", options: ["uid": "1000", "mode": "0700"])
        // Swarm sends Create with the same options from every node: nothing changes.
        try await second.service.create(name: "app", options: ["uid": "1000", "mode": "0700"])
        #expect(try await volume(harness, "app").tags.contains("do-storage-uid:1000"))
        try await second.service.remove(name: "app")
        try await second.service.create(name: "app", options: ["uid": "1001"])
        let tags = try await volume(harness, "app").tags
        #expect(tags.contains("do-storage-uid:1001") && !tags.contains("do-storage-uid:1000"))
        #expect(tags.contains("do-storage-mode:0700"), "what the later Create did not give stays")
        let path = try await second.service.mount(name: "app", id: "c1")
        #expect(second.filesystem.directories[path] == DataDirectory(uid: 1001, gid: 0, mode: 0o700))
    }

    @Test func snapshotsAndClonesCarryTheDataDirectory() async throws {
        let harness = try ServiceHarness(snapshotInterval: .zero)
        let node = try await harness.node(droplet: 1)
        try await node.service.create(name: "src", options: ["uid": "999"])
        _ = try await node.service.mount(name: "src", id: "c1")
        let snapshot = try await node.service.createSnapshot(volume: "src", name: "before")
        try await node.service.create(name: "restored", options: ["from_snapshot": snapshot.id, "mode": "0750"])
        let restored = try await volume(harness, "restored")
        #expect(DataDirectory(tags: restored.tags) == DataDirectory(uid: 999, mode: 0o750))
        try await node.service.create(name: "copy", options: ["clone_of": "src"])
        #expect(DataDirectory(tags: try await volume(harness, "copy").tags) == DataDirectory(uid: 999))
        let path = try await node.service.mount(name: "copy", id: "c2")
        #expect(path.hasSuffix("/copy/data"))

        // A clone of a volume made elsewhere shows its root, as its origin did, and takes no ownership options.
        try await harness.createVolume("legacy")
        try await node.service.create(name: "legacy", options: [:])
        let error = await #expect(throws: VolumeError.self) {
            try await node.service.create(name: "legacy-copy", options: ["clone_of": "legacy", "gid": "5"])
        }
        #expect(error?.message.contains("uid, gid and mode do not apply with clone_of=legacy") == true, "\(String(describing: error))")
        #expect(await harness.world.listVolumes(name: "legacy-copy", region: "nyc1").isEmpty)
        try await node.service.create(name: "legacy-copy", options: ["clone_of": "legacy"])
        #expect(DataDirectory(tags: try await volume(harness, "legacy-copy").tags) == nil)
    }

    @Test func aReadOnlyMountChangesNothingInTheFilesystem() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1)
        try await node.service.create(name: "ro", options: ["uid": "1000", "mountopts": "ro"])
        let path = try await node.service.mount(name: "ro", id: "c1")
        #expect(node.filesystem.directories[path] == DataDirectory(uid: 0, gid: 0, mode: 0o755), "the owner is not changed")
    }
}
