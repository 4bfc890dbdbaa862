import DOSimulator
import DigitalOcean
import Foundation
import Testing
import TestSupport
import VolumeService

/// Create options, reading each and refusing bad ones with an error that says what to do.
@Suite(.timeLimit(.minutes(5))) struct CreateOptionsTests {
    @Test(arguments: [
        ("20", 20), ("20G", 20), ("20GiB", 20), ("20gb", 20), ("1T", 1024), ("1TiB", 1024), ("16TiB", 16384), ("1", 1),
    ])
    func sizes(text: String, gib: Int) throws {
        #expect(try CreateOptions(parsing: ["size": text]).sizeGiB == gib)
    }

    @Test(arguments: [
        (["size": "0"], "size=0"), (["size": "17T"], "size=17T"), (["size": "20MB"], "size=20MB"),
        (["size": "1.5G"], "size=1.5G"), (["size": "-2"], "size=-2"), (["fstype": "btrfs"], "fstype=btrfs"),
        (["fslabel": "seventeen-chars-x"], "at most 16"), (["fstype": "xfs", "fslabel": "thirteen-char"], "at most 12"),
        (["fslabel": "has space"], "fslabel=has space"), (["tags": "db,pr od"], "\"pr od\""),
        (["tags": "do-storage"], "not starting with"), (["mountopts": "noatime,exec"], "\"exec\""),
        (["fstype": "xfs", "mountopts": "nobarrier"], "ext4 only"), (["onremove": "shred"], "onremove=shred"),
        (["takeover": "sometimes"], "takeover=sometimes is not a takeover mode: use never, lease or always"),
        (["description": String(repeating: "d", count: 1025)], "at most 1024"),
    ])
    func badValuesNameTheOptionAndTheAcceptedForm(options: [String: String], expected: String) {
        let error = #expect(throws: VolumeError.self) { try CreateOptions(parsing: options) }
        #expect(error?.code == .invalidOption)
        #expect(error?.message.contains(expected) == true, "\(String(describing: error))")
    }

    @Test func anUnknownOptionListsTheAcceptedOnes() {
        let error = #expect(throws: VolumeError.self) { try CreateOptions(parsing: ["sise": "20"]) }
        #expect(error?.message == "unknown volume option \"sise\"; do_storage accepts "
            + "size, fstype, fslabel, description, tags, mountopts, onremove, takeover, from_snapshot, clone_of, "
            + "snapshot_every, snapshot_keep, uid, gid, mode")
    }

    @Test func everyOptionTogether() throws {
        let options = try CreateOptions(parsing: [
            "size": "20GiB", "fstype": "XFS", "fslabel": "pg", "description": "the database", "tags": "db, prod",
            "mountopts": "noatime,discard,noatime", "onremove": "delete", "takeover": "Always",
        ])
        #expect(options.sizeGiB == 20 && options.fstype == .xfs && options.label == "pg")
        #expect(options.description == "the database" && options.tags == ["db", "prod"])
        #expect(options.mountOptions == [.noatime, .discard] && options.onRemove == .delete)
        #expect(options.takeover == .always)
    }
}

/// Names that never alias: deterministic, the same on every droplet, and one Docker name per DigitalOcean volume.
@Suite(.timeLimit(.minutes(5))) struct VolumeNamesTests {
    @Test func mapping() {
        #expect(VolumeNames.candidates(for: "pgdata").preferred == "pgdata")
        #expect(VolumeNames.candidates(for: "mystack_pgdata").preferred == "mystack-pgdata")
        #expect(VolumeNames.candidates(for: "My.Data").preferred == "my-data")
        #expect(VolumeNames.candidates(for: "9lives").preferred == nil, "must start with a letter")
        let long = String(repeating: "a", count: 200)
        #expect(VolumeNames.candidates(for: long).preferred == nil)
        let hashed = VolumeNames.hashedName(for: long)
        #expect(hashed.count == 64 && DigitalOceanNames.isValidVolumeName(hashed))
        #expect(VolumeNames.hashedName(for: "9lives").hasPrefix("v9lives-"))
        #expect(VolumeNames.hashedName(for: "app_data") != VolumeNames.hashedName(for: "app-data"))
        #expect(VolumeNames.hashedName(for: "app_data") == VolumeNames.hashedName(for: "app_data"), "deterministic")
    }

    @Test func theNameTagRoundTrips() {
        for name in ["pgdata", "My.Data_1", String(repeating: "x", count: VolumeNames.maxDockerNameBytes)] {
            let tag = VolumeNames.nameTag(for: name)
            #expect(CreateOptions.isValidTag(tag))
            #expect(VolumeNames.dockerName(fromTags: ["db", tag]) == name)
        }
    }

    @Test(arguments: ["../etc", "a/b", "/abs", ".hidden", "..", "", "ünïcode", String(repeating: "x", count: 240)])
    func namesOutsideDockersRuleAreRefused(name: String) async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1)
        let error = await #expect(throws: VolumeError.self) { try await node.service.create(name: name, options: [:]) }
        #expect(error?.code == .invalidName)
        await #expect(throws: VolumeError.self) { try await node.service.get(name: name) }
        #expect(await harness.world.listVolumes(name: nil, region: nil).isEmpty)
    }
}

/// Create, adopt and remove against the simulator.
@Suite(.timeLimit(.minutes(5))) struct LifecycleTests {
    func volume(_ harness: ServiceHarness, _ name: String) async -> Volume? {
        await harness.world.listVolumes(name: name, region: "nyc1").first
    }

    @Test func createMakesTheVolumeWithEveryOption() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1)
        try await node.service.create(
            name: "pgdata",
            options: ["size": "20GiB", "fstype": "xfs", "fslabel": "pg", "description": "db", "tags": "db,prod"])
        let created = try #require(await volume(harness, "pgdata"))
        #expect(created.sizeGigabytes == 20 && created.filesystemType == "xfs" && created.filesystemLabel == "pg")
        #expect(created.description == "db" && created.region.slug == "nyc1")
        #expect(created.tags == ["db", "prod", "do-storage", "do-storage-name:pgdata", "do-storage-data"])
        // Status without a DigitalOcean call.
        harness.api.calls.reset()
        let status = try await node.service.get(name: "pgdata").status
        #expect(harness.api.calls.total == 0)
        #expect(status == [
            "do_id": created.id, "do_name": "pgdata", "region": "nyc1", "size_gib": "20", "fstype": "xfs",
            "attached_to": "", "device": "", "mounts": "0", "created_by_plugin": "true", "last_error": "",
            "snapshots": "", "last_snapshot": "", "snapshot_every": "", "snapshot_keep": "",
            "branch": "main", "head": "",
            "container_sees": "data directory (data/ of the filesystem, owner:group mode -:- -)",
        ])
    }

    @Test func defaultsApplyAndMountOptionsReachTheMount() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1) {
            $0.defaults = VolumeDefaults(sizeGiB: 3, fstype: .xfs, mountOptions: [.nodiratime])
        }
        try await node.service.create(name: "a", options: [:])
        try await node.service.create(name: "b", options: ["mountopts": "ro,nosuid"])
        #expect(await volume(harness, "a")?.sizeGigabytes == 3)
        #expect(await volume(harness, "a")?.filesystemType == "xfs")
        let a = try await node.service.mount(name: "a", id: "c1")
        let b = try await node.service.mount(name: "b", id: "c2")
        #expect(a == node.configuration.mountRoot + "/a/data" && b == node.configuration.mountRoot + "/b/data")
        #expect(node.filesystem.mountOptions[node.configuration.mountRoot + "/a"] == [.nodiratime])
        #expect(node.filesystem.mountOptions[node.configuration.mountRoot + "/b"] == [.ro, .nosuid])
        let status = try await node.service.get(name: "b").status
        #expect(status["attached_to"] == "1" && status["mounts"] == "1" && status["device"]?.isEmpty == false)
        try await node.service.unmount(name: "b", id: "c2")
        let after = try await node.service.get(name: "b").status
        #expect(after["attached_to"] == "" && after["device"] == "" && after["mounts"] == "0")
    }

    @Test func autoCreateOffKeepsTheClearError() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1) { $0.defaults.autoCreate = false }
        let error = await #expect(throws: VolumeError.self) { try await node.service.create(name: "pgdata", options: [:]) }
        #expect(error?.code == .notFound)
        #expect(error?.message.contains("doctl compute volume create pgdata --region nyc1") == true)
        #expect(await volume(harness, "pgdata") == nil)
    }

    @Test func twoDropletsCreatingOneNameEndWithOneVolume() async throws {
        let harness = try ServiceHarness()
        let a = try await harness.node(droplet: 1)
        let b = try await harness.node(droplet: 2)
        for round in 0..<5 {
            let name = "race\(round)"
            async let first: Void = a.service.create(name: name, options: ["size": "2"])
            async let second: Void = b.service.create(name: name, options: ["size": "2"])
            _ = try await (first, second)
            #expect(await harness.world.listVolumes(name: name, region: "nyc1").count == 1)
            let idA = try await a.service.get(name: name).status["do_id"]
            let idB = try await b.service.get(name: name).status["do_id"]
            #expect(idA == idB && idA?.isEmpty == false)
        }
    }

    @Test func adoptingWithContradictingOptionsChangesNothing() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")  // 1 GiB, ext4, made out of band
        let node = try await harness.node(droplet: 1)
        let size = await #expect(throws: VolumeError.self) { try await node.service.create(name: "pgdata", options: ["size": "2"]) }
        #expect(size?.message.contains("has 1 GiB and is never resized silently") == true)
        let fstype = await #expect(throws: VolumeError.self) { try await node.service.create(name: "pgdata", options: ["fstype": "xfs"]) }
        #expect(fstype?.message.contains("formatted ext4") == true)
        #expect(await node.service.records.isEmpty)
        try await node.service.create(name: "pgdata", options: ["size": "1GiB", "fstype": "ext4"])
        #expect(try await node.service.get(name: "pgdata").status["created_by_plugin"] == "false")
        #expect(await harness.world.listVolumes(name: nil, region: nil).count == 1)
    }

    @Test func oneVolumeHasOneDockerNameOnADroplet() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1)
        try await node.service.create(name: "app_data", options: [:])
        #expect(await volume(harness, "app-data")?.tags.contains("do-storage-name:app_data") == true)
        let error = await #expect(throws: VolumeError.self) { try await node.service.create(name: "app-data", options: [:]) }
        #expect(error?.code == .invalidName)
        #expect(error?.message.contains("app_data") == true, "\(String(describing: error))")
        // Another droplet maps it back the same way, and refuses the alias too.
        let other = try await harness.node(droplet: 2)
        try await other.service.create(name: "app_data", options: [:])
        #expect(try await other.service.get(name: "app_data").status["do_name"] == "app-data")
        let alias = await #expect(throws: VolumeError.self) { try await other.service.create(name: "app-data", options: [:]) }
        #expect(alias?.message.contains("belongs to the Docker volume \"app_data\"") == true, "\(String(describing: alias))")
    }

    @Test func aMappedNameTakenByAnotherDockerNameGetsTheHashedName() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1)
        try await node.service.create(name: "my-data", options: [:])
        try await node.service.create(name: "My.Data", options: [:])
        let hashed = VolumeNames.hashedName(for: "My.Data")
        #expect(try await node.service.get(name: "My.Data").status["do_name"] == hashed)
        #expect(await volume(harness, hashed)?.tags.contains("do-storage-name:My:Data") == true)
        #expect(await harness.world.listVolumes(name: nil, region: nil).count == 2)
        // Long names and names DigitalOcean cannot take are hashed, each its own volume, mounted under its own name.
        let long = String(repeating: "v", count: 200)
        try await node.service.create(name: long, options: [:])
        try await node.service.create(name: "a..b", options: [:])
        let mountpoint = try await node.service.mount(name: "a..b", id: "c1")
        #expect(mountpoint == node.configuration.mountRoot + "/a..b/data")
        #expect(try await node.service.get(name: long).status["do_name"] == VolumeNames.hashedName(for: long))
    }

    @Test func removeRetainsByDefault() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1)
        try await node.service.create(name: "pgdata", options: [:])
        try await node.service.remove(name: "pgdata")
        #expect(await node.service.records.isEmpty)
        #expect(await volume(harness, "pgdata") != nil)
    }

    /// Docker's anonymous volumes (run -v /data) are created and, made by the plugin, deleted with their container.
    @Test func anAnonymousVolumeGoesWithItsContainer() async throws {
        let harness = try ServiceHarness()
        let node = try await harness.node(droplet: 1)
        let anonymous = String(repeating: "0123456789abcdef", count: 4)
        try await node.service.create(name: anonymous, options: [:])
        let doName = VolumeNames.hashedName(for: anonymous)
        #expect(await volume(harness, doName) != nil)
        _ = try await node.service.mount(name: anonymous, id: "c1")
        try await node.service.unmount(name: anonymous, id: "c1")
        try await node.service.remove(name: anonymous)
        #expect(await volume(harness, doName) == nil)
    }

    @Test func removeDeletesWhatThePluginCreatedUnderPolicyDelete() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("handmade")
        let node = try await harness.node(droplet: 1) { $0.defaults.removePolicy = .delete }
        try await node.service.create(name: "made", options: [:])
        try await node.service.create(name: "handmade", options: [:])
        _ = try await node.service.mount(name: "made", id: "c1")
        let busy = await #expect(throws: VolumeError.self) { try await node.service.remove(name: "made") }
        #expect(busy?.code == .inUse)
        #expect(await volume(harness, "made") != nil)
        try await node.service.unmount(name: "made", id: "c1")
        try await node.service.remove(name: "made")
        #expect(await volume(harness, "made") == nil, "deleted on DigitalOcean")
        try await node.service.remove(name: "handmade")
        #expect(await volume(harness, "handmade") != nil, "a volume the plugin did not create is spared")
        #expect(await node.service.records.isEmpty)
    }

    @Test func explicitOnRemoveDeleteAndTheRefusals() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("handmade")
        let a = try await harness.node(droplet: 1) { $0.detachOnUnmount = false }
        let b = try await harness.node(droplet: 2)
        try await a.service.create(name: "handmade", options: ["onremove": "delete"])
        try await b.service.create(name: "handmade", options: ["onremove": "delete"])
        // Attached to droplet 1 (kept there: DETACH_ON_UNMOUNT=false), so droplet 2 refuses, naming droplet 1.
        _ = try await a.service.mount(name: "handmade", id: "c1")
        try await a.service.unmount(name: "handmade", id: "c1")
        #expect(await harness.attachments("handmade") == [1])
        let refused = await #expect(throws: VolumeError.self) { try await b.service.remove(name: "handmade") }
        #expect(refused?.message.contains("attached to droplet 1") == true)
        #expect(await b.service.records["handmade"] != nil, "still known after a refusal")
        // On droplet 1 it is unused: detached, then deleted.
        try await a.service.remove(name: "handmade")
        #expect(await volume(harness, "handmade") == nil)
        let log = await harness.world.actionLog.map { "\($0.type)@\($0.dropletID)" }
        #expect(log == ["attach@1", "detach@1"])
    }
}
