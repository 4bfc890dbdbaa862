import DigitalOcean
import Foundation
import Logging
import Timekeeping

/// An error the simulated API answers, with DigitalOcean's status, id and message.
public struct SimError: Error, Sendable, Equatable {
    public var status: Int
    public var id: String
    public var message: String

    public init(status: Int, id: String, message: String) {
        self.status = status
        self.id = id
        self.message = message
    }

    static func notFound() -> SimError {
        SimError(status: 404, id: "not_found", message: "The resource you were accessing could not be found.")
    }

    static func unprocessable(_ message: String) -> SimError {
        SimError(status: 422, id: "unprocessable_entity", message: message)
    }
}

/// How the simulated DigitalOcean behaves.
public struct SimulatorOptions: Sendable {
    /// The bearer token the API accepts.
    public var token: String
    /// How long an attach or detach action stays in progress. Default 500 ms.
    public var actionLatency: Duration
    /// How long after an attach completes the device appears. Default 0.
    public var deviceDelay: Duration
    /// Requests a minute before 429. DigitalOcean: 250.
    public var requestsPerMinute: Int
    /// Requests an hour before 429. DigitalOcean: 5000.
    public var requestsPerHour: Int
    /// Volumes one droplet may have attached. DigitalOcean: 15.
    public var volumesPerDroplet: Int
    /// The account's wall clock: the time on new volumes and snapshots.
    public var wallClock: @Sendable () -> Date
    /// How long a snapshot request takes beyond copying the volume (DigitalOcean answers once the snapshot is
    /// taken). Default 0.
    public var snapshotLatency: Duration
    /// The clock the simulated latencies run on: real by default, a test's clock to run them without waiting.
    public var time: TimeSource
    /// At most one snapshot of a volume in this time, by the account's wall clock. DigitalOcean: 10 minutes; tests
    /// that take several in a row lower it.
    public var snapshotInterval: Duration
    /// Custom-scoped tokens, with their scopes: a call that needs none of a token's scopes gets 403, as
    /// DigitalOcean answers. `token` has every scope.
    public var scopedTokens: [String: Set<String>]

    /// - Parameter wallClock: the account's wall clock; `time`'s when nil.
    public init(
        token: String, actionLatency: Duration = .milliseconds(500), deviceDelay: Duration = .zero,
        requestsPerMinute: Int = 250, requestsPerHour: Int = 5000, volumesPerDroplet: Int = 15,
        snapshotLatency: Duration = .zero, snapshotInterval: Duration = .seconds(600),
        scopedTokens: [String: Set<String>] = [:], time: TimeSource = .system, wallClock: (@Sendable () -> Date)? = nil
    ) {
        self.scopedTokens = scopedTokens
        self.snapshotInterval = snapshotInterval
        self.time = time
        self.wallClock = wallClock ?? time.wallClock
        self.snapshotLatency = snapshotLatency
        self.token = token
        self.actionLatency = actionLatency
        self.deviceDelay = deviceDelay
        self.requestsPerMinute = requestsPerMinute
        self.requestsPerHour = requestsPerHour
        self.volumesPerDroplet = volumesPerDroplet
    }
}

/// One simulated droplet.
public struct SimDroplet: Sendable, Equatable {
    public var id: Int
    public var name: String
    public var region: String
    /// "active" or "off".
    public var status: String
    /// Where this droplet's `scsi-0DO_Volume_<name>` links appear.
    public var deviceDirectory: String
}

/// An attach or detach as the simulator saw it, for tests and the demo.
public struct ActionLogEntry: Sendable, Equatable {
    public var actionID: Int
    /// "attach" or "detach".
    public var type: String
    public var volumeName: String
    public var dropletID: Int
    public var status: Action.Status
    public var started: ContinuousClock.Instant
    public var completed: ContinuousClock.Instant?
    /// When the attached device appeared on the droplet (attach only).
    public var deviceReady: ContinuousClock.Instant?
}

/// The simulated DigitalOcean account: volumes, droplets, asynchronous actions and the devices they make.
/// The HTTP layer (`SimulatorServer`) and in-process tests both drive it.
public actor SimulatorWorld {
    public nonisolated let options: SimulatorOptions
    /// How long after an attach completes the device appears; starts as `options.deviceDelay`.
    public private(set) var deviceDelay: Duration
    /// How long an action stays in progress; starts as `options.actionLatency`.
    public private(set) var actionLatency: Duration
    let devices: any SimDeviceBackend
    let logger: Logger

    struct StoredVolume {
        var volume: Volume
        var order: Int
    }

    var volumes: [String: StoredVolume] = [:]
    var droplets: [Int: SimDroplet] = [:]
    /// Volume snapshots by id, with their order of creation.
    var snapshots: [String: (snapshot: Snapshot, order: Int)] = [:]
    /// Tags by name, with the droplets that carry each, in the order they were tagged.
    var tags: [String: [Int]] = [:]
    var actions: [Int: (action: Action, volumeID: String)] = [:]
    var pendingByDroplet: [Int: Int] = [:]
    /// One attach or detach at a time per volume too: a second droplet's attach while the first is under way is
    /// refused as DigitalOcean refuses overlapping events, instead of both completing.
    var pendingByVolume: [String: Int] = [:]
    var nextActionID = 36_804_636
    var nextOrder = 0
    var erroredActionsToCome = 0
    var closed = false
    public private(set) var actionLog: [ActionLogEntry] = []

    public static let regions: [String: String] = [
        "nyc1": "New York 1", "nyc3": "New York 3", "sfo3": "San Francisco 3", "ams3": "Amsterdam 3",
        "fra1": "Frankfurt 1", "lon1": "London 1", "sgp1": "Singapore 1", "tor1": "Toronto 1",
    ]

    public init(options: SimulatorOptions, devices: any SimDeviceBackend, logger: Logger = Logger(label: "do-sim")) {
        self.options = options
        self.deviceDelay = options.deviceDelay
        self.actionLatency = options.actionLatency
        self.devices = devices
        self.logger = logger
    }

    // MARK: Test and lab controls

    /// Adds a droplet whose device links appear in `deviceDirectory` (made at its first attach, as udev does).
    public func addDroplet(id: Int, name: String? = nil, region: String = "nyc1", deviceDirectory: String) throws {
        droplets[id] = SimDroplet(
            id: id, name: name ?? "droplet-\(id)", region: region, status: "active", deviceDirectory: deviceDirectory)
    }

    /// Destroys a droplet; as on DigitalOcean, its volumes are detached with it.
    public func removeDroplet(id: Int) async {
        guard let droplet = droplets.removeValue(forKey: id) else { return }
        for name in tags.keys { tags[name]?.removeAll { $0 == id } }
        for (volumeID, stored) in volumes where stored.volume.dropletIDs.contains(id) {
            volumes[volumeID]?.volume.dropletIDs = []
            try? await devices.detach(volumeID: volumeID, name: stored.volume.name, droplet: droplet)
        }
    }

    public func setDropletStatus(id: Int, status: String) {
        droplets[id]?.status = status
    }

    /// The next `count` actions end `errored` instead of `completed`, changing nothing.
    public func failNextActions(_ count: Int) {
        erroredActionsToCome = count
    }

    public func setDeviceDelay(_ delay: Duration) {
        deviceDelay = delay
    }

    /// How long actions started from now on stay in progress (slow actions); starts as `options.actionLatency`.
    public func setActionLatency(_ latency: Duration) {
        actionLatency = latency
    }

    public func clearActionLog() {
        actionLog = []
    }

    /// Detaches every volume and removes every device (the lab's tear-down).
    public func shutdown() async {
        closed = true
        for (id, stored) in volumes {
            for dropletID in stored.volume.dropletIDs {
                if let droplet = droplets[dropletID] {
                    try? await devices.detach(volumeID: id, name: stored.volume.name, droplet: droplet)
                }
            }
            volumes[id]?.volume.dropletIDs = []
        }
    }

    // MARK: Droplets

    public func droplet(id: Int) throws(SimError) -> SimDroplet {
        guard let droplet = droplets[id] else { throw .notFound() }
        return droplet
    }

    /// The droplet's tags, as its object lists them.
    public func dropletTags(id: Int) -> [String] {
        tags.filter { $0.value.contains(id) }.map(\.key).sorted()
    }

    /// Every tag in the account.
    public var tagNames: [String] { tags.keys.sorted() }

    // MARK: Tags

    public func createTag(name: String) throws(SimError) {
        try Self.checkTagName(name)
        if tags[name] == nil { tags[name] = [] }
    }

    /// Tags droplets and volumes (other resource types are accepted and not recorded). 404 when the tag or a
    /// resource does not exist.
    public func tag(name: String, resources: [TagResourcesRequest.Resource]) throws(SimError) {
        guard tags[name] != nil else { throw .notFound() }
        for resource in resources {
            switch resource.resourceType {
            case "droplet":
                guard let id = Int(resource.resourceID), droplets[id] != nil else { throw .notFound() }
                if tags[name]?.contains(id) == false { tags[name]?.append(id) }
            case "volume":
                guard let volume = volumes[resource.resourceID]?.volume else { throw .notFound() }
                if !volume.tags.contains(name) { volumes[resource.resourceID]?.volume.tags.append(name) }
            default:
                break
            }
        }
    }

    public func untag(name: String, resources: [TagResourcesRequest.Resource]) throws(SimError) {
        guard tags[name] != nil else { throw .notFound() }
        for resource in resources {
            switch resource.resourceType {
            case "droplet": tags[name]?.removeAll { String($0) == resource.resourceID }
            case "volume": volumes[resource.resourceID]?.volume.tags.removeAll { $0 == name }
            default: break
            }
        }
    }

    public func deleteTag(name: String) throws(SimError) {
        guard tags.removeValue(forKey: name) != nil else { throw .notFound() }
        for id in volumes.keys { volumes[id]?.volume.tags.removeAll { $0 == name } }
    }

    /// Replaces a droplet's tags that start with `prefix` by `replacement` (tests: a heartbeat from the past).
    public func setDropletTags(id: Int, prefix: String, to replacement: [String]) {
        for name in tags.keys where name.hasPrefix(prefix) { tags[name]?.removeAll { $0 == id } }
        for name in replacement { tags[name, default: []].append(id) }
    }

    static func checkTagName(_ name: String) throws(SimError) {
        guard TagCreateRequest.isValid(name: name) else {
            throw SimError(
                status: 400, id: "bad_request",
                message: "tag names must be 1-255 characters of letters, numbers, colons, dashes and underscores")
        }
    }

    public func dropletVolumeIDs(id: Int) -> [String] {
        volumes.values.filter { $0.volume.dropletIDs.contains(id) }.sorted { $0.order < $1.order }.map(\.volume.id)
    }

    // MARK: Volumes

    public func listVolumes(name: String?, region: String?) -> [Volume] {
        volumes.values
            .filter { name == nil || $0.volume.name == name }
            .filter { region == nil || $0.volume.region.slug == region }
            .sorted { $0.order < $1.order }
            .map(\.volume)
    }

    public func volume(id: String) throws(SimError) -> Volume {
        guard let stored = volumes[id] else { throw .notFound() }
        return stored.volume
    }

    public func createVolume(_ request: VolumeCreateRequest) async throws(SimError) -> Volume {
        guard DigitalOceanNames.isValidVolumeName(request.name) else {
            throw .unprocessable("failed to create volume: invalid volume name. names must be lowercase and alphanumeric")
        }
        guard let regionName = Self.regions[request.region] else {
            throw .unprocessable("failed to create volume: invalid region \"\(request.region)\"")
        }
        guard (1...16384).contains(request.sizeGigabytes) else {
            throw .unprocessable("failed to create volume: size_gigabytes must be between 1 and 16384")
        }
        let filesystem = request.filesystemType.flatMap { $0.isEmpty ? nil : $0 }
        if let filesystem, filesystem != "ext4", filesystem != "xfs" {
            throw .unprocessable("failed to create volume: invalid filesystem type \"\(filesystem)\", use ext4 or xfs")
        }
        if volumes.values.contains(where: { $0.volume.name == request.name && $0.volume.region.slug == request.region }) {
            throw SimError(
                status: 409, id: "conflict",
                message: "a volume with the name \(request.name) already exists in \(request.region)")
        }

        let label = request.filesystemLabel.flatMap { $0.isEmpty ? nil : $0 } ?? ""
        var size = request.sizeGigabytes
        var source: Snapshot?
        if let snapshotID = request.snapshotID, !snapshotID.isEmpty {
            guard let found = snapshots[snapshotID]?.snapshot else {
                throw .unprocessable("failed to create volume: snapshot \(snapshotID) not found")
            }
            guard found.regions.contains(request.region) else {
                throw .unprocessable("failed to create volume: snapshot \(snapshotID) is not available in \(request.region)")
            }
            // DigitalOcean ignores size_gigabytes here: the volume is as large as the snapshot's volume was.
            size = found.minDiskSize
            source = found
        }
        let volume = Volume(
            id: UUID().uuidString.lowercased(), name: request.name,
            region: Region(
                name: regionName, slug: request.region, sizes: ["s-1vcpu-1gb", "s-2vcpu-4gb"],
                features: ["private_networking", "backups", "ipv6", "metadata", "storage"]),
            dropletIDs: [], description: request.description ?? "", sizeGigabytes: size,
            createdAt: options.wallClock().formatted(.iso8601),
            filesystemType: source.flatMap { volumes[$0.resourceID]?.volume.filesystemType } ?? filesystem ?? "",
            filesystemLabel: label, tags: request.tags ?? [])
        // Stored before the device is made (the actor re-enters there), so a create of the same name meanwhile meets
        // the 409, and a lookup finds this one, as on DigitalOcean.
        nextOrder += 1
        volumes[volume.id] = StoredVolume(volume: volume, order: nextOrder)
        // Tags given at creation exist from then on, as on DigitalOcean.
        for tag in volume.tags where tags[tag] == nil { tags[tag] = [] }
        do {
            if let source {
                try await devices.restore(snapshotID: source.id, volumeID: volume.id, sizeGigabytes: size)
            } else {
                try await devices.create(
                    volumeID: volume.id, name: volume.name, sizeGigabytes: volume.sizeGigabytes, filesystem: filesystem,
                    label: label)
            }
        } catch {
            volumes[volume.id] = nil
            logger.error("Cannot create the volume's backing file", metadata: ["error": "\(error)"])
            throw SimError(status: 500, id: "server_error", message: "Server was unable to give you a response.")
        }
        return volume
    }

    public func deleteVolume(id: String) async throws(SimError) {
        guard let stored = volumes[id] else { throw .notFound() }
        guard stored.volume.dropletIDs.isEmpty else {
            throw SimError(
                status: 409, id: "conflict",
                message: "A volume that's attached to a Droplet cannot be deleted. Please detach it first before deleting.")
        }
        volumes[id] = nil
        try? await devices.delete(volumeID: id, name: stored.volume.name)
    }

    public func deleteVolume(name: String, region: String) async throws(SimError) {
        guard let stored = volumes.values.first(where: { $0.volume.name == name && $0.volume.region.slug == region })
        else { throw .notFound() }
        try await deleteVolume(id: stored.volume.id)
    }

    // MARK: Snapshots

    /// At most this many snapshots per volume, as on DigitalOcean.
    public static let snapshotsPerVolume = 25
    /// The refusal of a snapshot taken sooner than `snapshotInterval` after the volume's last one.
    public static let snapshotRateMessage = "snapshot rate limit exceeded: a volume can be snapshotted once every 10 minutes"
    var lastSnapshotTaken: [String: Date] = [:]

    /// How long each snapshot request took here, copy and `snapshotLatency` included, oldest first.
    public private(set) var snapshotDurations: [Duration] = []

    /// Takes a snapshot of the volume's content as it is now.
    public func createSnapshot(volumeID: String, request: SnapshotCreateRequest) async throws(SimError) -> Snapshot {
        let started = options.time.now()
        defer { snapshotDurations.append(started.duration(to: options.time.now())) }
        guard let stored = volumes[volumeID] else { throw .notFound() }
        guard !request.name.isEmpty else { throw SimError(status: 400, id: "bad_request", message: "name is required") }
        let siblings = snapshots.values.filter { $0.snapshot.resourceID == volumeID }
        if siblings.contains(where: { $0.snapshot.name == request.name }) {
            throw SimError(status: 409, id: "conflict", message: "a snapshot with the name \(request.name) already exists")
        }
        guard siblings.count < Self.snapshotsPerVolume else {
            throw .unprocessable("volume \(volumeID) already has \(Self.snapshotsPerVolume) snapshots, the most allowed")
        }
        let now = options.wallClock()
        if let last = lastSnapshotTaken[volumeID], now.timeIntervalSince(last) < options.snapshotInterval.seconds {
            throw .unprocessable(Self.snapshotRateMessage)
        }
        lastSnapshotTaken[volumeID] = now
        var snapshot = Snapshot(
            id: UUID().uuidString.lowercased(), name: request.name, createdAt: now.formatted(.iso8601),
            regions: [stored.volume.region.slug], minDiskSize: stored.volume.sizeGigabytes, sizeGigabytes: 0,
            resourceID: volumeID, tags: request.tags ?? [])
        nextOrder += 1
        let order = nextOrder
        snapshots[snapshot.id] = (snapshot, order)
        do {
            let bytes = try await devices.snapshot(volumeID: volumeID, snapshotID: snapshot.id)
            snapshot.sizeGigabytes = (Double(bytes) / Double(1 << 30) * 100).rounded(.up) / 100
            snapshots[snapshot.id] = (snapshot, order)
        } catch {
            snapshots[snapshot.id] = nil
            logger.error("Cannot copy the volume for a snapshot", metadata: ["error": "\(error)"])
            throw SimError(status: 500, id: "server_error", message: "Server was unable to give you a response.")
        }
        if options.snapshotLatency > .zero { try? await options.time.sleep(options.snapshotLatency) }
        return snapshot
    }

    /// The snapshots of one volume (nil: of every volume), oldest first.
    public func listSnapshots(volumeID: String?) throws(SimError) -> [Snapshot] {
        if let volumeID, volumes[volumeID] == nil { throw .notFound() }
        return snapshots.values.filter { volumeID == nil || $0.snapshot.resourceID == volumeID }
            .sorted { $0.order < $1.order }.map(\.snapshot)
    }

    public func snapshot(id: String) throws(SimError) -> Snapshot {
        guard let found = snapshots[id] else { throw .notFound() }
        return found.snapshot
    }

    public func deleteSnapshot(id: String) async throws(SimError) {
        guard snapshots.removeValue(forKey: id) != nil else { throw .notFound() }
        try? await devices.deleteSnapshot(snapshotID: id)
    }

    // MARK: Actions

    /// Starts an action on a volume (by id, or by `volume_name` + `region` when `volumeID` is nil).
    public func startAction(volumeID: String?, request: VolumeActionRequest) throws(SimError) -> Action {
        let stored: StoredVolume
        if let volumeID {
            guard let found = volumes[volumeID] else { throw .notFound() }
            stored = found
        } else {
            guard let name = request.volumeName, let region = request.region,
                let found = volumes.values.first(where: { $0.volume.name == name && $0.volume.region.slug == region })
            else { throw .notFound() }
            stored = found
        }
        let volume = stored.volume
        switch request.type {
        case "attach", "detach":
            guard let dropletID = request.dropletID else {
                throw .unprocessable("droplet_id is required")
            }
            guard let droplet = droplets[dropletID] else { throw .notFound() }
            if request.type == "attach" {
                if !volume.dropletIDs.isEmpty {
                    throw .unprocessable("This volume is already attached to a Droplet. Detach it before attaching it elsewhere.")
                }
                if droplet.region != volume.region.slug {
                    throw .unprocessable("The volume and the Droplet must be in the same region.")
                }
                if dropletVolumeIDs(id: dropletID).count >= options.volumesPerDroplet {
                    throw .unprocessable("cannot attach more volumes to the Droplet")
                }
            } else if !volume.dropletIDs.contains(dropletID) {
                throw .unprocessable("Attachment not found")
            }
            if pendingByDroplet[dropletID] != nil {
                throw .unprocessable("Droplet already has a pending event.")
            }
            if pendingByVolume[volume.id] != nil {
                throw .unprocessable("Volume already has a pending event.")
            }
            return begin(type: request.type, volume: volume, droplet: droplet)
        case "resize":
            guard let size = request.sizeGigabytes, size > volume.sizeGigabytes, size <= 16384 else {
                throw .unprocessable("new size must be larger than the current size and at most 16384")
            }
            if pendingByVolume[volume.id] != nil {
                throw .unprocessable("Volume already has a pending event.")
            }
            // In progress for the action latency, as on DigitalOcean: the size changes when it completes.
            return begin(type: "resize", volume: volume, droplet: nil, size: size)
        default:
            throw .unprocessable("unknown action type \"\(request.type)\"; use attach, detach or resize")
        }
    }

    public func action(id: Int, volumeID: String?) throws(SimError) -> Action {
        guard let entry = actions[id], volumeID == nil || entry.volumeID == volumeID else { throw .notFound() }
        return entry.action
    }

    /// Starts an action that stays in progress for the action latency. `droplet` is nil for a resize, which holds
    /// only the volume.
    private func begin(type: String, volume: Volume, droplet: SimDroplet?, size: Int? = nil) -> Action {
        nextActionID += 1
        let action = Action(
            id: nextActionID, status: .inProgress, type: "\(type)_volume", startedAt: options.wallClock().formatted(.iso8601),
            resourceType: "volume", regionSlug: volume.region.slug)
        actions[action.id] = (action, volume.id)
        if let droplet { pendingByDroplet[droplet.id] = action.id }
        pendingByVolume[volume.id] = action.id
        actionLog.append(
            ActionLogEntry(
                actionID: action.id, type: type, volumeName: volume.name, dropletID: droplet?.id ?? 0, status: .inProgress,
                started: options.time.now()))
        logger.info(
            "Action started",
            metadata: [
                "do.action.id": "\(action.id)", "type": "\(type)", "volume.name": "\(volume.name)",
                "droplet.id": "\(droplet.map { String($0.id) } ?? "")",
            ])
        let latency = actionLatency
        let time = options.time
        Task {
            try? await time.sleep(latency)
            if let droplet {
                await self.finish(actionID: action.id, type: type, volumeID: volume.id, dropletID: droplet.id)
            } else if let size {
                await self.finishResize(actionID: action.id, volumeID: volume.id, size: size)
            }
        }
        return action
    }

    /// Whether this action is one of those `failNextActions` asked to end errored.
    private func erroredAsTold(_ actionID: Int) -> Bool {
        guard erroredActionsToCome > 0 else { return false }
        erroredActionsToCome -= 1
        return true
    }

    private func finishResize(actionID: Int, volumeID: String, size: Int) async {
        defer { pendingByVolume[volumeID] = nil }
        guard volumes[volumeID] != nil, !erroredAsTold(actionID) else {
            setStatus(actionID, .errored)
            return
        }
        volumes[volumeID]?.volume.sizeGigabytes = size
        // The storage grows as the action completes; an attached device reports its new capacity.
        do {
            try await devices.resize(volumeID: volumeID, sizeGigabytes: size)
        } catch {
            logger.error("Cannot grow the volume's storage", metadata: ["error": "\(error)"])
        }
        setStatus(actionID, .completed)
    }

    private func finish(actionID: Int, type: String, volumeID: String, dropletID: Int) async {
        defer {
            pendingByDroplet[dropletID] = nil
            pendingByVolume[volumeID] = nil
        }
        guard let droplet = droplets[dropletID], let stored = volumes[volumeID], !erroredAsTold(actionID) else {
            setStatus(actionID, .errored)
            return
        }
        let name = stored.volume.name
        if type == "attach" {
            volumes[volumeID]?.volume.dropletIDs = [dropletID]
            setStatus(actionID, .completed)
            pendingByDroplet[dropletID] = nil
            pendingByVolume[volumeID] = nil
            if deviceDelay > .zero { try? await options.time.sleep(deviceDelay) }
            // Detached again, or shut down, meanwhile: no device.
            guard !closed, volumes[volumeID]?.volume.dropletIDs == [dropletID] else { return }
            do {
                try await devices.attach(volumeID: volumeID, name: name, droplet: droplet)
                if let index = actionLog.lastIndex(where: { $0.actionID == actionID }) {
                    actionLog[index].deviceReady = options.time.now()
                }
            } catch {
                logger.error("Cannot make the device", metadata: ["volume.name": "\(name)", "error": "\(error)"])
            }
        } else {
            volumes[volumeID]?.volume.dropletIDs = []
            setStatus(actionID, .completed)
            pendingByDroplet[dropletID] = nil
            pendingByVolume[volumeID] = nil
            do {
                try await devices.detach(volumeID: volumeID, name: name, droplet: droplet)
            } catch {
                logger.error("Cannot remove the device", metadata: ["volume.name": "\(name)", "error": "\(error)"])
            }
        }
    }

    private func setStatus(_ actionID: Int, _ status: Action.Status) {
        guard var entry = actions[actionID] else { return }
        entry.action.status = status
        entry.action.completedAt = options.wallClock().formatted(.iso8601)
        actions[actionID] = entry
        if let index = actionLog.lastIndex(where: { $0.actionID == actionID }) {
            actionLog[index].status = status
            actionLog[index].completed = options.time.now()
        }
        logger.info("Action finished", metadata: ["do.action.id": "\(actionID)", "status": "\(status.rawValue)"])
    }
}
