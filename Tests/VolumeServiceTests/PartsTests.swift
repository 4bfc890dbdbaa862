import DOSimulator
import DigitalOcean
import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing
import TestSupport
@testable import VolumeService

/// Each part of the service alone, with fakes: the registry, names, the droplet's actions, attachment, the
/// heartbeat, filesystems, snapshots and provisioning. The orchestration's tests (MountFlowTests and the others)
/// show them together.
@Suite(.timeLimit(.minutes(5))) struct PartsTests {
    let logger = Logger(label: "test")

    /// A droplet's settings and an empty registry for it.
    func droplet(_ harness: ServiceHarness, _ id: Int = 1) async throws -> (ServiceConfiguration, VolumeRegistry) {
        let configuration = try await harness.configuration(droplet: id)
        return (configuration, try VolumeRegistry(store: harness.store(droplet: id), configuration: configuration))
    }

    func record(_ name: String, _ volume: Volume? = nil) -> VolumeRecord {
        var record = VolumeRecord(name: name, doName: volume?.name ?? name, createdAt: Date(timeIntervalSince1970: 0))
        if let volume { record.saw(volume) }
        return record
    }

    // MARK: VolumeRegistry

    /// The registry's transitions change a record in place, field by field: what another change set meanwhile
    /// stays, a name it does not know is left alone, and a heartbeat with nothing left is none.
    @Test func theRegistryChangesRecordsInPlace() async throws {
        let harness = try ServiceHarness()
        let (_, registry) = try await droplet(harness)
        registry.add(record("v"))
        registry.update("v") { $0.snapshotCount = 7 }
        let changed = registry.update("v") { $0.references["c", default: 0] += 1 }
        #expect(changed?.snapshotCount == 7 && changed?.references == ["c": 1])
        #expect(registry["v"] == changed)
        #expect(registry.update("w") { $0.snapshotCount = 1 } == nil)
        #expect(registry.records.keys.sorted() == ["v"])
        registry.updateLease { $0.tag = "do-storage-lease-1" }
        #expect(registry.lease?.tag == "do-storage-lease-1")
        registry.updateLease { $0.tag = nil }
        #expect(registry.lease == nil)
        registry.remove("v")
        #expect(registry.records.isEmpty)
    }

    /// Every change to the records publishes Get's answers again, under a new generation; the state it saves is
    /// what the next start loads; and saves asked for at once end with the newest on disk.
    @Test func theRegistryPublishesAndSavesWhatItHolds() async throws {
        let harness = try ServiceHarness()
        let (configuration, registry) = try await droplet(harness)
        let before = registry.lookups.generation
        registry.add(record("v"))
        #expect(registry.lookups.volume(named: "v")?.status["mounts"] == "0")
        registry.update("v") { $0.references["c"] = 1 }
        #expect(registry.lookups.volume(named: "v")?.status["mounts"] == "1")
        #expect(registry.lookups.generation == before + 2)
        await withTaskGroup(of: Void.self) { group in
            for count in 1...40 {
                group.addTask {
                    registry.update("v") { $0.snapshotCount = max($0.snapshotCount ?? 0, count) }
                    try? await registry.save()
                }
            }
        }
        #expect(registry["v"]?.snapshotCount == 40)
        let loaded = try VolumeRegistry(store: harness.store(droplet: 1), configuration: configuration)
        #expect(loaded.records == registry.records, "the last save holds every change")
        #expect(loaded.lookups.volume(named: "v")?.status["snapshots"] == "40")
    }

    // MARK: VolumeFinder

    /// A name DigitalOcean does not know is asked once within the TTL; a volume deleted and made again under its
    /// name is found by the name once its old id is gone, and the new id noted.
    @Test func theFinderRemembersMissesAndFollowsANewID() async throws {
        let harness = try ServiceHarness()
        let (configuration, registry) = try await droplet(harness)
        let finder = VolumeFinder(configuration: configuration, api: harness.api, registry: registry, time: .system, logger: logger)
        harness.api.calls.reset()
        #expect(try await finder.lookUp(doName: "nothing") == nil)
        #expect(try await finder.lookUp(doName: "nothing") == nil)
        #expect(harness.api.calls.byName["GET /v2/volumes"] == 1)
        let first = try await harness.createVolume("pgdata")
        registry.add(record("pgdata", first))
        try await harness.world.deleteVolume(id: first.id)
        let second = try await harness.createVolume("pgdata")
        #expect(try await finder.current("pgdata").id == second.id)
        #expect(registry["pgdata"]?.volumeID == second.id)
        await #expect(throws: VolumeError.self) { try await finder.current("unknown") }
    }

    // MARK: DropletActions

    /// An action refused while the droplet has another pending is posted again, waiting longer each time, until it
    /// goes through; one that errors at DigitalOcean fails saying so.
    @Test func actionsRetryAPendingEventAndReportAnError() async throws {
        let harness = try ServiceHarness()
        let time = ImmediateTime()
        let configuration = try await harness.configuration(droplet: 1)
        let actions = DropletActions(configuration: configuration, api: harness.api, time: time.timeSource, logger: logger)
        let refusals = NIOLockedValueBox(2)
        let action = try await actions.post("attach", name: "v", deadline: .now + .seconds(60)) {
            if refusals.withLockedValue({ count in defer { count -= 1 }; return count > 0 }) {
                throw DOError(code: .unprocessable, status: 422, message: "Droplet already has a pending event.", operation: "POST")
            }
            return Action(id: 7, status: .completed, type: "attach_volume")
        }
        #expect(action.id == 7)
        #expect(time.sleeps == [.milliseconds(500), .seconds(1)])
        let errored = Action(id: 8, status: .errored, type: "attach_volume")
        await #expect(throws: VolumeError.self) {
            try await actions.wait(
                for: errored, volumeID: "x", watch: nil, present: true, deadline: .now + .seconds(60), what: "attach", name: "v")
        }
    }

    // MARK: Attachments

    /// Bringing a volume here saves the attach request before DigitalOcean gets it (a plugin killed then finds it);
    /// the device appears; releasing it clears what it noted.
    @Test func attachmentsNoteTheRequestBeforeSendingIt() async throws {
        let harness = try ServiceHarness()
        let volume = try await harness.createVolume("pgdata")
        let (configuration, registry) = try await droplet(harness)
        let store = harness.store(droplet: 1)
        let seen = NIOLockedValueBox<Date?>(nil)
        let api = ObservingAPI(base: harness.api) { seen.withLockedValue { $0 = try? store.load().volumes["pgdata"]?.attachRequested } }
        let finder = VolumeFinder(configuration: configuration, api: api, registry: registry, time: .system, logger: logger)
        let attachments = Attachments(
            configuration: configuration, api: api, devices: harness.devices(), registry: registry, finder: finder,
            heartbeat: Heartbeat(configuration: configuration, api: api, registry: registry, time: .system, logger: logger),
            actions: DropletActions(configuration: configuration, api: api, time: .system, logger: logger),
            volumeLocks: AsyncKeyedLock(), time: .system, logger: logger)
        registry.add(record("pgdata", volume))
        let (attached, device, byUs) = try await attachments.bringHere("pgdata")
        #expect(seen.withLockedValue { $0 } != nil, "the request was on disk when DigitalOcean got it")
        #expect(byUs && attached.dropletIDs == [1] && FileManager.default.fileExists(atPath: device))
        #expect(await harness.attachments("pgdata") == [1])
        try await attachments.detachHere(volumeID: volume.id, doName: volume.name, name: "pgdata")
        #expect(await harness.attachments("pgdata").isEmpty)
        #expect(registry["pgdata"]?.detachRequested == nil)
        #expect(try store.load().volumes["pgdata"]?.detachRequested == nil)
    }

    // MARK: Heartbeat

    /// Holding nothing, a beat makes no call; while a Mount runs it puts this droplet's heartbeat up; holding
    /// nothing again, it takes it down.
    @Test func theHeartbeatBeatsOnlyWhileTheDropletHoldsAVolume() async throws {
        let harness = try ServiceHarness()
        let (configuration, registry) = try await droplet(harness)
        let heartbeat = Heartbeat(configuration: configuration, api: harness.api, registry: registry, time: .system, logger: logger)
        harness.api.calls.reset()
        #expect(await heartbeat.beat() == configuration.leaseRenew)
        #expect(harness.api.calls.total == 0)
        try await heartbeat.whileMounting {
            #expect(heartbeat.holdsVolumes)
            await heartbeat.beat()
        }
        let tag = try #require(registry.lease?.tag)
        #expect(await harness.world.dropletTags(id: 1) == [tag])
        #expect(!heartbeat.holdsVolumes)
        await heartbeat.beat()
        #expect(registry.lease == nil)
        #expect(await harness.world.dropletTags(id: 1).isEmpty)
        #expect(heartbeat.age(of: .destroyed, droplet: 2) == nil)
    }

    // MARK: Filesystems

    /// A device without a filesystem is not formatted unless its Create asked, and nothing is written; a device
    /// grown by more than the threshold grows its filesystem; an online growth that failed is not tried again at the
    /// same size.
    @Test func filesystemsFormatOnlyWhenAskedAndGrowOnce() async throws {
        let harness = try ServiceHarness()
        let host = FakeFilesystem()
        let configuration = try await harness.configuration(droplet: 1)
        let filesystems = Filesystems(configuration: configuration, host: host, time: .system, logger: logger)
        let blank = harness.root + "/blank.img"
        #expect(FileManager.default.createFile(atPath: blank, contents: nil))
        try FileHandle(forWritingAtPath: blank)!.truncate(atOffset: 1 << 30)
        var blankRecord = record("blank")
        blankRecord.seen = SeenVolume(sizeGiB: 1, fstype: "", attachedTo: 1, createdByPlugin: true)
        await #expect { try await filesystems.mount(blank, at: harness.root + "/mnt-blank", record: blankRecord) } throws: {
            ($0 as? VolumeError)?.code == .blankDevice
        }
        #expect(host.operations.isEmpty && host.mounted.isEmpty)
        blankRecord.formatAs = .xfs
        let mounted = try await filesystems.mount(blank, at: harness.root + "/mnt-blank", record: blankRecord)
        #expect(mounted.type == .xfs && mounted.growth == nil && host.operations == ["format xfs \(blank)"])

        try FileHandle(forWritingAtPath: blank)!.truncate(atOffset: 2 << 30)
        host.failNextGrowth("no space")
        let mountpoint = harness.root + "/mnt-blank"
        let failed = await filesystems.grow(blank, type: .xfs, mountpoint: mountpoint, filesystemBytes: 1 << 30, name: "blank")
        guard case .failed(let message) = failed else { Issue.record("expected a failed growth, got \(String(describing: failed))"); return }
        #expect(message.contains("no space"))
        #expect(await filesystems.grow(blank, type: .xfs, mountpoint: mountpoint, filesystemBytes: 1 << 30, name: "blank") == nil)
        #expect(host.operations.count == 2, "not tried again at the same size")
        try FileHandle(forWritingAtPath: blank)!.truncate(atOffset: 3 << 30)
        #expect(await filesystems.grow(blank, type: .xfs, mountpoint: mountpoint, filesystemBytes: 1 << 30, name: "blank")
            == .grown(deviceBytes: 3 << 30))
    }

    /// A request that outlasts the freeze limit finds the filesystem thawed at the limit, fails, and what it made
    /// late is handed back to be deleted.
    @Test func aFreezeEndsAtItsLimit() async throws {
        let harness = try ServiceHarness()
        let time = TestTime()
        let host = FakeFilesystem()
        var configuration = try await harness.configuration(droplet: 1)
        configuration.freezeLimit = .seconds(10)
        let filesystems = Filesystems(configuration: configuration, host: host, time: time.timeSource, logger: logger)
        try await host.mount(device: "/dev/v", at: "/mnt/v", type: "ext4", options: [])
        let abandoned = NIOLockedValueBox<[Int]>([])
        let clock = time.timeSource
        let frozen = Running {
            try await filesystems.frozen("/mnt/v", name: "v") {
                try? await clock.sleep(.seconds(30))
                return 7
            } abandoned: { late in
                abandoned.withLockedValue { $0.append(late) }
            }
        }
        try await time.waitForSleepers(2, "the request and the limit", within: .seconds(60))
        #expect(host.frozen == ["/mnt/v"])
        try await time.advance(until: "the freeze to end") { frozen.isFinished }
        await #expect(throws: VolumeError.self) { try await frozen.value() }
        #expect(host.frozen.isEmpty)
        #expect(abandoned.withLockedValue { $0 } == [7])
        #expect(time.elapsed < .seconds(30))
    }

    // MARK: Snapshots

    /// A snapshot name several volumes' snapshots share is refused, naming them; an id finds its snapshot.
    @Test func snapshotsFindByIDAndRefuseASharedName() async throws {
        let harness = try ServiceHarness()
        let a = try await harness.createVolume("a")
        let b = try await harness.createVolume("b")
        let mine = try await harness.api.createSnapshot(volumeID: a.id, name: "nightly", tags: [])
        _ = try await harness.api.createSnapshot(volumeID: b.id, name: "nightly", tags: [])
        let (configuration, registry) = try await droplet(harness)
        let finder = VolumeFinder(configuration: configuration, api: harness.api, registry: registry, time: .system, logger: logger)
        let snapshots = Snapshots(
            configuration: configuration, api: harness.api, registry: registry, finder: finder,
            filesystems: Filesystems(configuration: configuration, host: FakeFilesystem(), time: .system, logger: logger),
            volumeLocks: AsyncKeyedLock(), snapshotLocks: AsyncKeyedLock(), time: .system, logger: logger)
        #expect(try await snapshots.find(mine.id).id == mine.id)
        await #expect { try await snapshots.find("nightly") } throws: {
            "\($0)".contains("used by snapshots of 2 volumes") && "\($0)".contains("(of volume a)")
        }
        registry.add(record("a", a))
        _ = try await snapshots.create(volume: "a", name: "by-hand")
        #expect(registry["a"]?.snapshotCount == 1 && registry["a"]?.lastSnapshot?.hasPrefix("by-hand at ") == true)
    }

    // MARK: History

    /// Branch volumes' DigitalOcean names are valid for any Docker name and branch, and distinct for each name,
    /// branch and generation.
    @Test func branchVolumeNamesAreValidAndDistinct() {
        let long = String(repeating: "a", count: 64)
        var names: Set<String> = []
        for doName in ["pgdata", long, "v-0123abcd"] {
            for branch in ["main", "schema-tweaks", String(repeating: "b", count: 30)] {
                for generation in [2, 3, 999_999] {
                    let name = History.volumeName(doName: doName, branch: branch, generation: generation)
                    #expect(DigitalOceanNames.isValidVolumeName(name), "\(name)")
                    names.insert(name)
                }
            }
        }
        #expect(names.count == 27)
        #expect(throws: VolumeError.self) { try History.checkBranchName("-x") }
        #expect(throws: VolumeError.self) { try History.checkBranchName(String(repeating: "b", count: 31)) }
    }

    // MARK: Provisioning

    /// Options that contradict an existing volume are refused, naming the option; a volume made from a snapshot is
    /// at least the snapshot's size.
    @Test func provisioningRefusesContradictions() async throws {
        let harness = try ServiceHarness()
        let volume = try await harness.createVolume("pgdata")
        let bigger = try CreateOptions(parsing: ["size": "5GiB"], defaultFilesystem: .ext4)
        #expect { try Provisioning.checkAdoption(volume, options: bigger, name: "pgdata") } throws: { "\($0)".contains("size=5GiB") }
        let xfs = try CreateOptions(parsing: ["fstype": "xfs"], defaultFilesystem: .ext4)
        #expect { try Provisioning.checkAdoption(volume, options: xfs, name: "pgdata") } throws: { "\($0)".contains("fstype=xfs") }
        try Provisioning.checkAdoption(volume, options: CreateOptions(parsing: [:], defaultFilesystem: .ext4), name: "pgdata")

        let snapshot = try await harness.api.createSnapshot(volumeID: volume.id, name: "s", tags: [])
        let (configuration, registry) = try await droplet(harness)
        let finder = VolumeFinder(configuration: configuration, api: harness.api, registry: registry, time: .system, logger: logger)
        let provisioning = Provisioning(
            configuration: configuration, api: harness.api, registry: registry, finder: finder,
            attachments: Attachments(
                configuration: configuration, api: harness.api, devices: harness.devices(), registry: registry, finder: finder,
                heartbeat: Heartbeat(configuration: configuration, api: harness.api, registry: registry, time: .system, logger: logger),
                actions: DropletActions(configuration: configuration, api: harness.api, time: .system, logger: logger),
                volumeLocks: AsyncKeyedLock(), time: .system, logger: logger),
            logger: logger)
        let made = try await provisioning.create(
            name: "copy", doName: "copy", options: CreateOptions(parsing: [:], defaultFilesystem: .ext4), from: snapshot)
        #expect(made.sizeGigabytes == snapshot.minDiskSize && made.tags.contains(VolumeNames.originTagPrefix + snapshot.id))
    }
}

/// Runs `observe` as each attach request reaches DigitalOcean.
final class ObservingAPI: ForwardingAPI {
    let base: any VolumeAPI
    let observe: @Sendable () -> Void

    init(base: any VolumeAPI, observe: @escaping @Sendable () -> Void) {
        self.base = base
        self.observe = observe
    }

    func attach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        observe()
        return try await base.attach(volumeID: volumeID, dropletID: dropletID, region: region)
    }
}
