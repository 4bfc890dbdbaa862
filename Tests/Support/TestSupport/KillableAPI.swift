import DigitalOcean
import NIOConcurrencyHelpers
import VolumeService

/// A plugin's way to DigitalOcean that dies with it: after `kill()`, or right after the next volume it creates once
/// `killAfterNextCreate()` is called, every call fails as a lost connection, so nothing the killed plugin does
/// afterwards reaches DigitalOcean.
public final class KillableAPI: ForwardingAPI {
    public let base: any VolumeAPI
    private let state = NIOLockedValueBox((killed: false, afterCreate: false))

    public init(base: any VolumeAPI) { self.base = base }

    public func kill() { state.withLockedValue { $0.killed = true } }
    public func killAfterNextCreate() { state.withLockedValue { $0.afterCreate = true } }

    private func alive() throws {
        if state.withLockedValue({ $0.killed }) { throw DOError(code: .transport, status: nil, message: "killed", operation: "call") }
    }

    public func volumes(named name: String?, region: String?) async throws -> [Volume] {
        try alive()
        return try await base.volumes(named: name, region: region)
    }
    public func volume(id: String) async throws -> Volume {
        try alive()
        return try await base.volume(id: id)
    }
    public func createVolume(_ request: VolumeCreateRequest) async throws -> Volume {
        try alive()
        defer { state.withLockedValue { if $0.afterCreate { $0.killed = true } } }
        return try await base.createVolume(request)
    }
    public func attach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        try alive()
        return try await base.attach(volumeID: volumeID, dropletID: dropletID, region: region)
    }
    public func detach(volumeID: String, dropletID: Int, region: String) async throws -> Action {
        try alive()
        return try await base.detach(volumeID: volumeID, dropletID: dropletID, region: region)
    }
    public func action(volumeID: String, actionID: Int) async throws -> Action {
        try alive()
        return try await base.action(volumeID: volumeID, actionID: actionID)
    }
    public func tagVolume(id: String, with name: String) async throws {
        try alive()
        try await base.tagVolume(id: id, with: name)
    }
    public func untagVolume(id: String, from name: String) async throws {
        try alive()
        try await base.untagVolume(id: id, from: name)
    }
}
