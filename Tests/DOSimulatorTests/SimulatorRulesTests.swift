import DOSimulator
import DigitalOcean
import Foundation
import TestClocks
import Testing
import Timekeeping

/// The simulator's DigitalOcean rules, in process.
@Suite(.timeLimit(.minutes(5))) struct SimulatorRulesTests {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("sim-rules-\(UUID().uuidString)").path

    func world(
        latency: Duration = .milliseconds(20), volumesPerDroplet: Int = 15, time: TimeSource = .system
    ) async throws -> SimulatorWorld {
        let world = SimulatorWorld(
            options: SimulatorOptions(token: "t", actionLatency: latency, volumesPerDroplet: volumesPerDroplet, time: time),
            devices: FileDeviceBackend(dataDirectory: root + "/data"))
        try await world.addDroplet(id: 1, region: "nyc1", deviceDirectory: root + "/d1")
        try await world.addDroplet(id: 2, region: "nyc1", deviceDirectory: root + "/d2")
        try await world.addDroplet(id: 3, region: "fra1", deviceDirectory: root + "/d3")
        return world
    }

    func create(_ world: SimulatorWorld, _ name: String, region: String = "nyc1") async throws -> Volume {
        try await world.createVolume(VolumeCreateRequest(name: name, sizeGigabytes: 1, region: region, filesystemType: ""))
    }

    func attached(_ world: SimulatorWorld, _ id: String, to droplet: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while try await world.volume(id: id).dropletIDs != [droplet] {
            try #require(ContinuousClock.now < deadline, "volume \(id) not attached to \(droplet) within 60 s")
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// A snapshot holds the content at the moment it was taken; a volume made from it starts with that content and
    /// the snapshot's size, in the snapshot's region only; names are unique per volume; 25 per volume, at most one
    /// every 10 minutes.
    @Test func snapshotsHoldTheContentOfTheirMoment() async throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let time = TestTime()
        let world = try await world(time: time.timeSource)
        let volume = try await world.createVolume(VolumeCreateRequest(name: "pgdata", sizeGigabytes: 3, region: "nyc1"))
        let backing = root + "/data/\(volume.id).img"
        func write(_ text: String, to path: String) throws {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try handle.write(contentsOf: Data(text.utf8))
            try handle.close()
        }
        func head(_ path: String) throws -> String {
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            return String(decoding: try handle.read(upToCount: 6) ?? Data(), as: UTF8.self)
        }
        try write("before", to: backing)
        let snapshot = try await world.createSnapshot(volumeID: volume.id, request: .init(name: "nightly", tags: ["a"]))
        try write("after!", to: backing)
        #expect(snapshot.minDiskSize == 3 && snapshot.regions == ["nyc1"] && snapshot.resourceID == volume.id)

        let restored = try await world.createVolume(
            VolumeCreateRequest(name: "restored", sizeGigabytes: 1, region: "nyc1", snapshotID: snapshot.id))
        #expect(restored.sizeGigabytes == 3, "size_gigabytes is ignored: the snapshot's min_disk_size")
        #expect(try head(root + "/data/\(restored.id).img") == "before")
        #expect(try head(backing) == "after!")
        await #expect(throws: SimError.self) {
            try await world.createVolume(VolumeCreateRequest(name: "elsewhere", sizeGigabytes: 3, region: "fra1", snapshotID: snapshot.id))
        }

        let duplicate = await #expect(throws: SimError.self) {
            try await world.createSnapshot(volumeID: volume.id, request: .init(name: "nightly"))
        }
        #expect(duplicate?.status == 409)
        _ = try await world.createSnapshot(volumeID: restored.id, request: .init(name: "nightly"))
        #expect(try await world.listSnapshots(volumeID: volume.id).map(\.id) == [snapshot.id])
        #expect(try await world.listSnapshots(volumeID: nil).count == 2)
        await time.advance(by: .seconds(599))
        let tooSoon = await #expect(throws: SimError.self) {
            try await world.createSnapshot(volumeID: volume.id, request: .init(name: "s2"))
        }
        #expect(tooSoon == SimError(status: 422, id: "unprocessable_entity", message: SimulatorWorld.snapshotRateMessage))
        for index in 2...25 {
            await time.advance(by: .seconds(600))
            _ = try await world.createSnapshot(volumeID: volume.id, request: .init(name: "s\(index)"))
        }
        await time.advance(by: .seconds(600))
        let full = await #expect(throws: SimError.self) {
            try await world.createSnapshot(volumeID: volume.id, request: .init(name: "s26"))
        }
        #expect(full?.status == 422)
        try await world.deleteSnapshot(id: snapshot.id)
        await #expect(throws: SimError.self) { try await world.snapshot(id: snapshot.id) }
        #expect(!FileManager.default.fileExists(atPath: root + "/data/snapshots/\(snapshot.id).img"))
    }

    @Test func attachMakesTheDeviceAndDetachRemovesIt() async throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let world = try await world()
        let volume = try await create(world, "pgdata")
        let link = root + "/d1/scsi-0DO_Volume_pgdata"
        _ = try await world.startAction(volumeID: volume.id, request: .init(type: "attach", dropletID: 1, region: "nyc1"))
        try await attached(world, volume.id, to: 1)
        try await Self.waitFor(link, present: true)
        _ = try await world.startAction(volumeID: volume.id, request: .init(type: "detach", dropletID: 1, region: "nyc1"))
        try await Self.waitFor(link, present: false)
        #expect(try await world.volume(id: volume.id).dropletIDs.isEmpty)
    }

    /// Waits up to 10 s for the device link to appear or go; fails the test past that.
    static func waitFor(_ link: String, present: Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while FileManager.default.fileExists(atPath: link) != present {
            try #require(ContinuousClock.now < deadline, "\(link) did not \(present ? "appear" : "go") within 10 s")
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test func oneActionAtATimePerDroplet() async throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let world = try await world(latency: .seconds(5))
        let first = try await create(world, "first")
        let second = try await create(world, "second")
        _ = try await world.startAction(volumeID: first.id, request: .init(type: "attach", dropletID: 1, region: "nyc1"))
        let error = await #expect(throws: SimError.self) {
            try await world.startAction(volumeID: second.id, request: .init(type: "attach", dropletID: 1, region: "nyc1"))
        }
        #expect(error == SimError(status: 422, id: "unprocessable_entity", message: "Droplet already has a pending event."))
        // Another droplet is not held up.
        _ = try await world.startAction(volumeID: second.id, request: .init(type: "attach", dropletID: 2, region: "nyc1"))
        await world.shutdown()
    }

    @Test func attachRules() async throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let world = try await world()
        let volume = try await create(world, "pgdata")
        let elsewhere = await #expect(throws: SimError.self) {
            try await world.startAction(volumeID: volume.id, request: .init(type: "attach", dropletID: 3, region: "nyc1"))
        }
        #expect(elsewhere?.message.contains("same region") == true)
        let notAttached = await #expect(throws: SimError.self) {
            try await world.startAction(volumeID: volume.id, request: .init(type: "detach", dropletID: 1, region: "nyc1"))
        }
        #expect(notAttached?.message == "Attachment not found")
        _ = try await world.startAction(volumeID: volume.id, request: .init(type: "attach", dropletID: 1, region: "nyc1"))
        try await attached(world, volume.id, to: 1)
        let twice = await #expect(throws: SimError.self) {
            try await world.startAction(volumeID: volume.id, request: .init(type: "attach", dropletID: 2, region: "nyc1"))
        }
        #expect(twice?.status == 422)
        #expect(twice?.message.hasPrefix("This volume is already attached") == true)
        let deleteAttached = await #expect(throws: SimError.self) { try await world.deleteVolume(id: volume.id) }
        #expect(deleteAttached?.status == 409)
        #expect(deleteAttached?.message == "A volume that's attached to a Droplet cannot be deleted. Please detach it first before deleting.")
        let noDroplet = await #expect(throws: SimError.self) {
            try await world.startAction(volumeID: volume.id, request: .init(type: "detach", dropletID: 99, region: "nyc1"))
        }
        #expect(noDroplet?.status == 404)
    }

    @Test func fifteenVolumesPerDroplet() async throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let world = try await world(latency: .milliseconds(1), volumesPerDroplet: 15)
        for index in 0..<15 {
            let volume = try await create(world, "v\(index)")
            _ = try await world.startAction(volumeID: volume.id, request: .init(type: "attach", dropletID: 1, region: "nyc1"))
            try await attached(world, volume.id, to: 1)
        }
        let sixteenth = try await create(world, "v15")
        let error = await #expect(throws: SimError.self) {
            try await world.startAction(volumeID: sixteenth.id, request: .init(type: "attach", dropletID: 1, region: "nyc1"))
        }
        #expect(error?.message == "cannot attach more volumes to the Droplet")
        #expect(await world.dropletVolumeIDs(id: 1).count == 15)
    }

    @Test func createRules() async throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let world = try await world()
        _ = try await create(world, "pgdata")
        let cases: [(VolumeCreateRequest, Int, String)] = [
            (.init(name: "pgdata", sizeGigabytes: 1, region: "nyc1"), 409, "already exists"),
            (.init(name: "Bad_Name", sizeGigabytes: 1, region: "nyc1"), 422, "names must be lowercase and alphanumeric"),
            (.init(name: "ok", sizeGigabytes: 0, region: "nyc1"), 422, "size_gigabytes"),
            (.init(name: "ok", sizeGigabytes: 16385, region: "nyc1"), 422, "size_gigabytes"),
            (.init(name: "ok", sizeGigabytes: 1, region: "mars1"), 422, "invalid region"),
            (.init(name: "ok", sizeGigabytes: 1, region: "nyc1", filesystemType: "ntfs"), 422, "filesystem type"),
        ]
        for (request, status, message) in cases {
            let error = await #expect(throws: SimError.self) { try await world.createVolume(request) }
            #expect(error?.status == status)
            #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
        }
        // The same name in another region is another volume.
        _ = try await create(world, "pgdata", region: "fra1")
        #expect(await world.listVolumes(name: "pgdata", region: nil).count == 2)
    }

    /// A resize is an action in progress for the action latency, as on DigitalOcean: the size changes when it
    /// completes, a smaller size is refused, and an errored action changes nothing.
    @Test func resizeGrowsOnlyAndErroredActionsChangeNothing() async throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let time = TestTime()
        let world = try await world(latency: .seconds(2), time: time.timeSource)
        let volume = try await create(world, "pgdata")
        let resize = try await world.startAction(volumeID: volume.id, request: .init(type: "resize", region: "nyc1", sizeGigabytes: 5))
        #expect(resize.status == .inProgress && resize.type == "resize_volume")
        let pending = await #expect(throws: SimError.self) {
            try await world.startAction(volumeID: volume.id, request: .init(type: "resize", region: "nyc1", sizeGigabytes: 6))
        }
        #expect(pending?.message == "Volume already has a pending event.")
        await time.advance(by: .milliseconds(1999))
        #expect(try await world.volume(id: volume.id).sizeGigabytes == 1, "not grown before the action completes")
        await time.advance(by: .milliseconds(1))
        try await time.advance(until: "the resize to complete") {
            try await world.action(id: resize.id, volumeID: volume.id).status == .completed
        }
        #expect(try await world.volume(id: volume.id).sizeGigabytes == 5)
        await #expect(throws: SimError.self) {
            try await world.startAction(volumeID: volume.id, request: .init(type: "resize", region: "nyc1", sizeGigabytes: 2))
        }
        await world.failNextActions(1)
        let failed = try await world.startAction(volumeID: volume.id, request: .init(type: "resize", region: "nyc1", sizeGigabytes: 8))
        try await time.advance(until: "the resize to end") {
            try await world.action(id: failed.id, volumeID: nil).status != .inProgress
        }
        #expect(try await world.action(id: failed.id, volumeID: volume.id).status == .errored)
        #expect(try await world.volume(id: volume.id).sizeGigabytes == 5)
        await world.failNextActions(1)
        let attach = try await world.startAction(volumeID: volume.id, request: .init(type: "attach", dropletID: 1, region: "nyc1"))
        try await time.advance(until: "the attach to end") {
            try await world.action(id: attach.id, volumeID: nil).status != .inProgress
        }
        #expect(try await world.action(id: attach.id, volumeID: volume.id).status == .errored)
        #expect(try await world.volume(id: volume.id).dropletIDs.isEmpty)
    }

    @Test func dropletStatusCanBeSwitchedOff() async throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let world = try await world()
        await world.setDropletStatus(id: 2, status: "off")
        #expect(try await world.droplet(id: 2).status == "off")
        await #expect(throws: SimError.self) { try await world.droplet(id: 42) }
    }
}
