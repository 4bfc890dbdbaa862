import Synchronization
import VolumeService

/// A `VolumeDriver` whose real driver is built in the background, so the socket answers at once (Docker waits only
/// about 12 s for a managed plugin's socket) while the droplet's identity is read and the state reconciled.
///
/// Every call waits for the build. When the build fails, calls answer its error and the next call tries again. Once
/// built, a call goes straight to the driver, without a hop through this actor.
public actor DeferredDriver: VolumeDriver {
    public typealias Builder = @Sendable () async throws -> any VolumeDriver
    private let build: Builder
    private var task: Task<any VolumeDriver, any Error>
    private let built = Mutex<(any VolumeDriver)?>(nil)

    public init(build: @escaping Builder) {
        self.build = build
        self.task = Task { try await build() }
    }

    /// The built driver, waiting for it when needed.
    public nonisolated func driver() async throws -> any VolumeDriver {
        if let driver = built.withLock({ $0 }) { return driver }
        return try await awaitBuild()
    }

    private func awaitBuild() async throws -> any VolumeDriver {
        // Captured before the await: the actor re-enters there, and another failed call may already have started
        // the next build.
        let current = task
        do {
            let driver = try await current.value
            built.withLock { $0 = driver }
            return driver
        } catch {
            if current == task { task = Task { [build] in try await build() } }
            throw error
        }
    }

    public nonisolated func create(name: String, options: [String: String]) async throws {
        try await driver().create(name: name, options: options)
    }
    public nonisolated func remove(name: String) async throws { try await driver().remove(name: name) }
    public nonisolated func mount(name: String, id: String) async throws -> String { try await driver().mount(name: name, id: id) }
    public nonisolated func unmount(name: String, id: String) async throws { try await driver().unmount(name: name, id: id) }
    public nonisolated func path(name: String) async throws -> String { try await driver().path(name: name) }
    public nonisolated func get(name: String) async throws -> VolumeInfo { try await driver().get(name: name) }
    public nonisolated func list() async throws -> [VolumeInfo] { try await driver().list() }
    public nonisolated var readyLookups: VolumeLookups? { built.withLock { $0 }?.readyLookups }
    public nonisolated func createSnapshot(volume: String, name: String?) async throws -> SnapshotInfo {
        try await driver().createSnapshot(volume: volume, name: name)
    }
    public nonisolated func listSnapshots(volume: String) async throws -> [SnapshotInfo] { try await driver().listSnapshots(volume: volume) }
    public nonisolated func deleteSnapshot(volume: String, snapshot: String) async throws {
        try await driver().deleteSnapshot(volume: volume, snapshot: snapshot)
    }
}
