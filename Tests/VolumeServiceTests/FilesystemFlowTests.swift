import DOSimulator
import DigitalOcean
import Foundation
import Testing
import TestSupport
import VolumeService

/// What the service does with a volume's filesystem: formats only a blank volume whose Create asked for it, and
/// grows a volume resized on DigitalOcean, at Mount and online.
@Suite(.timeLimit(.minutes(5))) struct FilesystemFlowTests {
    /// The backing file of a volume, which the fake device links lead to.
    func backing(_ harness: ServiceHarness, _ name: String) async throws -> String {
        let volume = try #require(await harness.world.listVolumes(name: name, region: "nyc1").first)
        return harness.root + "/data/\(volume.id).img"
    }

    func write(_ text: String, to path: String, at offset: UInt64) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data(text.utf8))
        try handle.close()
    }

    @Test func aBlankVolumeIsFormattedOnlyWhenItsCreateAskedForIt() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("raw", filesystem: nil)
        try await harness.createVolume("asked", filesystem: nil)
        let node = try await harness.node(droplet: 1)
        try await node.service.create(name: "raw", options: [:])
        let refused = await #expect(throws: VolumeError.self) { try await node.service.mount(name: "raw", id: "c1") }
        #expect(refused?.code == .blankDevice)
        #expect(refused?.message.contains("-o fstype=ext4 raw") == true, "\(String(describing: refused))")

        try await node.service.create(name: "asked", options: ["fstype": "xfs", "fslabel": "logs"])
        let mountpoint = try await node.service.mount(name: "asked", id: "c1")
        #expect(node.filesystem.mounted[mountpoint]?.fstype == "xfs")
        try await node.service.unmount(name: "asked", id: "c1")
        _ = try await node.service.mount(name: "asked", id: "c2")
        #expect(node.filesystem.operations.filter { $0.hasPrefix("format") }.count == 1, "formatted once: \(node.filesystem.operations)")
        #expect(try await node.service.get(name: "asked").status["fstype"] == "xfs")
        #expect(await harness.attachments("raw").isEmpty, "the refused volume was released again")
    }

    @Test func aDeviceThatIsNotBlankOrNotTheVolumesSizeIsNeverFormatted() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("tail", filesystem: nil)
        try await harness.createVolume("sized", filesystem: nil)
        try await harness.createVolume("odd", filesystem: nil)
        try write("signature", to: try await backing(harness, "tail"), at: (1 << 30) - 32)
        let sized = try await backing(harness, "sized")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: sized))
        try handle.truncate(atOffset: 2 << 30)
        try handle.close()
        try write("LVM2_member", to: try await backing(harness, "odd"), at: 0)
        let node = try await harness.node(droplet: 1)
        for name in ["tail", "sized", "odd"] {
            try await node.service.create(name: name, options: ["fstype": "ext4"])
            let error = await #expect(throws: VolumeError.self) { try await node.service.mount(name: name, id: "c1") }
            #expect(error?.message.contains("nothing was") == true, "\(name): \(String(describing: error))")
        }
        #expect(node.filesystem.operations.isEmpty, "nothing formatted")
        #expect(node.filesystem.mounted.isEmpty)
    }

    @Test func aVolumeResizedWhileUnmountedGrowsAtItsNextMount() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("pgdata")
        let node = try await harness.node(droplet: 1)
        _ = try await node.service.mount(name: "pgdata", id: "c1")
        try await node.service.unmount(name: "pgdata", id: "c1")
        try await harness.resize("pgdata", toGigabytes: 3)
        _ = try await node.service.mount(name: "pgdata", id: "c2")
        let grown = node.filesystem.operations.filter { $0.hasPrefix("grow") }
        #expect(grown.count == 1 && grown[0].hasPrefix("grow ext4 ") && grown[0].hasSuffix(" -"), "offline: \(grown)")
        let status = try await node.service.get(name: "pgdata").status
        #expect(status["size_gib"] == "3" && status["last_error"] == "")
    }

    @Test func aMountedVolumeGrowsOnlineAndAFailureWaitsForTheNextMount() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("logs", filesystem: "xfs")
        try await harness.createVolume("db", filesystem: "ext4")
        let node = try await harness.node(droplet: 1)
        let growth = Task { await node.service.growOnDeviceEvents() }
        defer { growth.cancel() }
        let logs = try await node.service.mount(name: "logs", id: "c1")
        _ = try await node.service.mount(name: "db", id: "c2")

        try await harness.resize("logs", toGigabytes: 2)
        try await waitUntil("the online xfs growth", within: .seconds(10)) {
            node.filesystem.operations.contains { $0.hasPrefix("grow xfs ") && $0.hasSuffix(logs) }
        }
        try await waitUntil("Status to show 2 GiB", within: .seconds(10)) {
            try await node.service.get(name: "logs").status["size_gib"] == "2"
        }

        // ext4 online growth needs CAP_SYS_RESOURCE: when it fails, Status says so, and the next Mount grows it.
        node.filesystem.failNextGrowth("resize2fs: Operation not permitted While checking for on-line resizing support")
        try await harness.resize("db", toGigabytes: 2)
        try await waitUntil("Status to show the failed growth", within: .seconds(10)) {
            try await node.service.get(name: "db").status["last_error"]?.isEmpty == false
        }
        let failed = try await node.service.get(name: "db").status["last_error"] ?? ""
        #expect(failed.contains("Operation not permitted") && failed.contains("grows at the volume's next Mount"), "\(failed)")
        try await node.service.unmount(name: "db", id: "c2")
        _ = try await node.service.mount(name: "db", id: "c3")
        #expect(node.filesystem.operations.last?.hasPrefix("grow ext4 ") == true && node.filesystem.operations.last?.hasSuffix(" -") == true)
        let status = try await node.service.get(name: "db").status
        #expect(status["last_error"] == "" && status["size_gib"] == "2")
    }
}

/// Mount options that apply to one filesystem only (nobarrier: ext4).
@Suite(.timeLimit(.minutes(5))) struct MountOptionFilesystemTests {
    @Test func aPluginWideExt4OptionIsLeftOutForXfs() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("logs", filesystem: "xfs")
        try await harness.createVolume("pgdata", filesystem: "ext4")
        let node = try await harness.node(droplet: 1) { $0.defaults.mountOptions = [.noatime, .nobarrier] }
        let logs = try await node.service.mount(name: "logs", id: "c1")
        let pgdata = try await node.service.mount(name: "pgdata", id: "c1")
        #expect(node.filesystem.mountOptions[logs] == [.noatime])
        #expect(node.filesystem.mountOptions[pgdata] == [.noatime, .nobarrier])
    }

    @Test func anExt4OptionForAnExistingXfsVolumeIsRefusedAtCreate() async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("logs", filesystem: "xfs")
        let node = try await harness.node(droplet: 1)
        let error = await #expect(throws: VolumeError.self) {
            try await node.service.create(name: "logs", options: ["mountopts": "noatime,nobarrier"])
        }
        #expect(error?.code == .invalidOption)
        #expect(error?.message.contains("\"nobarrier\" applies to ext4 only, and the existing DigitalOcean volume logs is xfs") == true,
                "\(String(describing: error))")
        #expect(await node.service.records["logs"] == nil, "nothing registered")
        try await node.service.create(name: "logs", options: ["mountopts": "noatime"])
        _ = try await node.service.mount(name: "logs", id: "c1")
    }
}
