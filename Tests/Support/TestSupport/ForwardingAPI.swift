import DigitalOcean
import VolumeService

/// A `VolumeAPI` fake that passes every call to `base` except those it implements itself: a test's fault in one
/// call, the real simulator behind the rest.
public protocol ForwardingAPI: VolumeAPI {
    var base: any VolumeAPI { get }
}

extension ForwardingAPI {
    public func volumes(named name: String?, region: String?) async throws -> [Volume] { try await base.volumes(named: name, region: region) }
    public func volume(id: String) async throws -> Volume { try await base.volume(id: id) }
    public func createVolume(_ request: VolumeCreateRequest) async throws -> Volume { try await base.createVolume(request) }
    public func deleteVolume(id: String) async throws { try await base.deleteVolume(id: id) }
    public func attach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        try await base.attach(volumeID: volumeID, dropletID: dropletID, region: region)
    }
    public func detach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        try await base.detach(volumeID: volumeID, dropletID: dropletID, region: region)
    }
    public func action(volumeID: String, actionID: Int) async throws -> Action {
        try await base.action(volumeID: volumeID, actionID: actionID)
    }
    public func droplet(id: Int) async throws -> Droplet { try await base.droplet(id: id) }
    public func createTag(name: String) async throws { try await base.createTag(name: name) }
    public func tag(dropletID: Int, with name: String) async throws { try await base.tag(dropletID: dropletID, with: name) }
    public func deleteTag(name: String) async throws { try await base.deleteTag(name: name) }
    public func tagVolume(id: String, with name: String) async throws { try await base.tagVolume(id: id, with: name) }
    public func untagVolume(id: String, from name: String) async throws { try await base.untagVolume(id: id, from: name) }
    public func resize(volumeID: String, sizeGigabytes: Int, region: String) async throws -> Action {
        try await base.resize(volumeID: volumeID, sizeGigabytes: sizeGigabytes, region: region)
    }
    public func createSnapshot(volumeID: String, name: String, tags: [String]) async throws -> Snapshot {
        try await base.createSnapshot(volumeID: volumeID, name: name, tags: tags)
    }
    public func snapshots(volumeID: String) async throws -> [Snapshot] { try await base.snapshots(volumeID: volumeID) }
    public func volumeSnapshots() async throws -> [Snapshot] { try await base.volumeSnapshots() }
    public func snapshot(id: String) async throws -> Snapshot { try await base.snapshot(id: id) }
    public func deleteSnapshot(id: String) async throws { try await base.deleteSnapshot(id: id) }
}
