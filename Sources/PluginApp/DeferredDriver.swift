import Synchronization
import VolumeService

/// A `VolumeDriver` whose real driver is built after the socket answers (Docker waits only about 12 s for a managed
/// plugin's socket), while the droplet's identity is read and the state reconciled.
///
/// The first build runs as the plugin starts (`PluginApp`'s long-running work asks for the driver). A call that comes while
/// a build is under way waits for it; a call that comes after a failed build builds again, in its own task, and the
/// calls that come meanwhile wait for that build. Once built, a call goes straight to the driver, and `whenBuilt()`
/// hands it to the plugin's long-running work.
public final class DeferredDriver<Built: VolumeDriver>: VolumeDriver {
    public typealias Builder = @Sendable () async throws -> Built

    private enum State {
        /// No build under way: none yet, or the last one failed with this error.
        case idle((any Error)?)
        case building([CheckedContinuation<Built, any Error>])
        case built(Built)
    }

    private enum Step { case ready(Built), build, wait }

    private let build: Builder
    private let state = Mutex(State.idle(nil))
    private let builtSignal = EventSignal()

    public init(build: @escaping Builder) {
        self.build = build
    }

    /// The built driver: at once when there is one, else after the build under way or a new one.
    public func driver() async throws -> Built {
        let step = state.withLock { state -> Step in
            switch state {
            case .built(let driver): return .ready(driver)
            case .building: return .wait
            case .idle:
                state = .building([])
                return .build
            }
        }
        switch step {
        case .ready(let driver): return driver
        case .build: return try await buildNow()
        case .wait:
            return try await withCheckedThrowingContinuation { continuation in
                let outcome = state.withLock { state -> Result<Built, any Error>? in
                    switch state {
                    case .building(var waiters):
                        waiters.append(continuation)
                        state = .building(waiters)
                        return nil
                    case .built(let driver): return .success(driver)
                    case .idle(let error): return .failure(error ?? CancellationError())
                    }
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        }
    }

    /// The driver once a build has succeeded; nil when the task is cancelled first.
    public func whenBuilt() async -> Built? {
        await builtSignal.wait(after: 0)
        return state.withLock { state in
            if case .built(let driver) = state { driver } else { nil }
        }
    }

    private func buildNow() async throws -> Built {
        let outcome: Result<Built, any Error>
        do { outcome = .success(try await build()) } catch { outcome = .failure(error) }
        let waiters = state.withLock { state -> [CheckedContinuation<Built, any Error>] in
            guard case .building(let waiters) = state else { return [] }
            switch outcome {
            case .success(let driver): state = .built(driver)
            case .failure(let error): state = .idle(error)
            }
            return waiters
        }
        if case .success = outcome { builtSignal.fire() }
        for waiter in waiters { waiter.resume(with: outcome) }
        return try outcome.get()
    }

    public func create(name: String, options: [String: String]) async throws {
        try await driver().create(name: name, options: options)
    }
    public func remove(name: String) async throws { try await driver().remove(name: name) }
    public func mount(name: String, id: String) async throws -> String { try await driver().mount(name: name, id: id) }
    public func unmount(name: String, id: String) async throws { try await driver().unmount(name: name, id: id) }
    public func path(name: String) async throws -> String { try await driver().path(name: name) }
    public func get(name: String) async throws -> VolumeInfo { try await driver().get(name: name) }
    public func list() async throws -> [VolumeInfo] { try await driver().list() }
    public var readyLookups: VolumeLookups? {
        state.withLock { state in
            if case .built(let driver) = state { driver.readyLookups } else { nil }
        }
    }
    public func createSnapshot(volume: String, name: String?) async throws -> SnapshotInfo {
        try await driver().createSnapshot(volume: volume, name: name)
    }
    public func listSnapshots(volume: String) async throws -> [SnapshotInfo] { try await driver().listSnapshots(volume: volume) }
    public func deleteSnapshot(volume: String, snapshot: String) async throws {
        try await driver().deleteSnapshot(volume: volume, snapshot: snapshot)
    }
    public func commit(volume: String, message: String) async throws -> CommitInfo {
        try await driver().commit(volume: volume, message: message)
    }
    public func log(volume: String) async throws -> [CommitInfo] { try await driver().log(volume: volume) }
    public func branches(volume: String) async throws -> [BranchInfo] { try await driver().branches(volume: volume) }
    public func checkout(volume: String, branch: String, create: Bool, from commit: String?) async throws -> BranchInfo {
        try await driver().checkout(volume: volume, branch: branch, create: create, from: commit)
    }
    public func reset(volume: String, to commit: String?) async throws -> String { try await driver().reset(volume: volume, to: commit) }
    public func deleteBranch(volume: String, branch: String) async throws -> String {
        try await driver().deleteBranch(volume: volume, branch: branch)
    }
}
