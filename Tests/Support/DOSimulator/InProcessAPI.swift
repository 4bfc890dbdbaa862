import DigitalOcean
import NIOConcurrencyHelpers

/// The simulated API called in-process, with the errors the HTTP client would produce: fast, faithful fakes for
/// orchestration tests and benchmarks that do not need the network path.
public struct InProcessAPI: Sendable {
    public let world: SimulatorWorld
    /// Counts calls, for tests that assert on API usage.
    public let calls = CallCounter()
    /// How long tagging a droplet takes, on the world's clock (a slow heartbeat); zero by default.
    public let dropletTagLatency = NIOLockedValueBox<Duration>(.zero)

    public init(world: SimulatorWorld) {
        self.world = world
    }

    public func volumes(named name: String?, region: String?) async throws -> [Volume] {
        calls.add("GET /v2/volumes")
        return await world.listVolumes(name: name, region: region)
    }

    public func volume(id: String) async throws -> Volume {
        calls.add("GET /v2/volumes/{id}")
        return try await map("GET /v2/volumes/\(id)") { () async throws(SimError) in try await world.volume(id: id) }
    }

    public func createVolume(_ request: VolumeCreateRequest) async throws -> Volume {
        calls.add("POST /v2/volumes")
        return try await map("POST /v2/volumes") { () async throws(SimError) in try await world.createVolume(request) }
    }

    public func deleteVolume(id: String) async throws {
        calls.add("DELETE /v2/volumes/{id}")
        try await map("DELETE /v2/volumes/\(id)") { () async throws(SimError) in try await world.deleteVolume(id: id) }
    }

    public func attach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        calls.add("POST /v2/volumes/{id}/actions")
        return try await map("POST /v2/volumes/\(volumeID)/actions") { () async throws(SimError) in
            try await world.startAction(
                volumeID: volumeID, request: VolumeActionRequest(type: "attach", dropletID: dropletID, region: region))
        }
    }

    public func detach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        calls.add("POST /v2/volumes/{id}/actions")
        return try await map("POST /v2/volumes/\(volumeID)/actions") { () async throws(SimError) in
            try await world.startAction(
                volumeID: volumeID, request: VolumeActionRequest(type: "detach", dropletID: dropletID, region: region))
        }
    }

    public func action(volumeID: String, actionID: Int) async throws -> Action {
        calls.add("GET /v2/volumes/{id}/actions/{action}")
        return try await map("GET /v2/volumes/\(volumeID)/actions/\(actionID)") { () async throws(SimError) in
            try await world.action(id: actionID, volumeID: volumeID)
        }
    }

    public func droplet(id: Int) async throws -> Droplet {
        calls.add("GET /v2/droplets/{id}")
        let droplet = try await map("GET /v2/droplets/\(id)") { () async throws(SimError) in try await world.droplet(id: id) }
        return Droplet(
            id: droplet.id, name: droplet.name, status: droplet.status, volumeIDs: await world.dropletVolumeIDs(id: id),
            tags: await world.dropletTags(id: id))
    }

    public func createTag(name: String) async throws {
        calls.add("POST /v2/tags")
        try await map("POST /v2/tags") { () async throws(SimError) in try await world.createTag(name: name) }
    }

    public func tag(dropletID: Int, with name: String) async throws {
        calls.add("POST /v2/tags/{name}/resources")
        let latency = dropletTagLatency.withLockedValue { $0 }
        if latency > .zero { try await world.options.time.sleep(latency) }
        try await map("POST /v2/tags/\(name)/resources") { () async throws(SimError) in
            try await world.tag(name: name, resources: [.init(resourceID: String(dropletID), resourceType: "droplet")])
        }
    }

    public func tagVolume(id: String, with name: String) async throws {
        calls.add("POST /v2/tags/{name}/resources")
        try await map("POST /v2/tags/\(name)/resources") { () async throws(SimError) in
            try await world.tag(name: name, resources: [.init(resourceID: id, resourceType: "volume")])
        }
    }

    public func untagVolume(id: String, from name: String) async throws {
        calls.add("DELETE /v2/tags/{name}/resources")
        try await map("DELETE /v2/tags/\(name)/resources") { () async throws(SimError) in
            try await world.untag(name: name, resources: [.init(resourceID: id, resourceType: "volume")])
        }
    }

    public func deleteTag(name: String) async throws {
        calls.add("DELETE /v2/tags/{name}")
        try await map("DELETE /v2/tags/\(name)") { () async throws(SimError) in try await world.deleteTag(name: name) }
    }

    public func resize(volumeID: String, sizeGigabytes: Int, region: String) async throws -> Action {
        calls.add("POST /v2/volumes/{id}/actions")
        return try await map("POST /v2/volumes/\(volumeID)/actions") { () async throws(SimError) in
            try await world.startAction(
                volumeID: volumeID, request: VolumeActionRequest(type: "resize", region: region, sizeGigabytes: sizeGigabytes))
        }
    }

    public func createSnapshot(volumeID: String, name: String, tags: [String]) async throws -> Snapshot {
        calls.add("POST /v2/volumes/{id}/snapshots")
        return try await map("POST /v2/volumes/\(volumeID)/snapshots") { () async throws(SimError) in
            try await world.createSnapshot(volumeID: volumeID, request: SnapshotCreateRequest(name: name, tags: tags))
        }
    }

    public func snapshots(volumeID: String) async throws -> [Snapshot] {
        calls.add("GET /v2/volumes/{id}/snapshots")
        return try await map("GET /v2/volumes/\(volumeID)/snapshots") { () async throws(SimError) in
            try await world.listSnapshots(volumeID: volumeID)
        }
    }

    public func volumeSnapshots() async throws -> [Snapshot] {
        calls.add("GET /v2/snapshots")
        return try await map("GET /v2/snapshots") { () async throws(SimError) in try await world.listSnapshots(volumeID: nil) }
    }

    public func snapshot(id: String) async throws -> Snapshot {
        calls.add("GET /v2/snapshots/{id}")
        return try await map("GET /v2/snapshots/\(id)") { () async throws(SimError) in try await world.snapshot(id: id) }
    }

    public func deleteSnapshot(id: String) async throws {
        calls.add("DELETE /v2/snapshots/{id}")
        try await map("DELETE /v2/snapshots/\(id)") { () async throws(SimError) in try await world.deleteSnapshot(id: id) }
    }

    private func map<T>(_ operation: String, _ body: () async throws(SimError) -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            let code: DOError.Code =
                switch error.status {
                case 400: .invalidResponse
                case 404: .notFound
                case 409: .conflict
                case 422: .unprocessable
                default: .server
                }
            throw DOError(code: code, status: error.status, id: error.id, message: error.message, operation: operation)
        }
    }
}

/// A thread-safe tally of calls by name.
public final class CallCounter: Sendable {
    private let counts = NIOLockedValueBox<(byName: [String: Int], sequence: [String])>(([:], []))

    public init() {}

    public func add(_ name: String) {
        counts.withLockedValue {
            $0.byName[name, default: 0] += 1
            $0.sequence.append(name)
        }
    }
    public var total: Int { counts.withLockedValue { $0.byName.values.reduce(0, +) } }
    public var byName: [String: Int] { counts.withLockedValue { $0.byName } }
    /// Every call, in the order they were made.
    public var sequence: [String] { counts.withLockedValue { $0.sequence } }
    public func reset() { counts.withLockedValue { $0 = ([:], []) } }
}
