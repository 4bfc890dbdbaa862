import NIOConcurrencyHelpers
import Timekeeping

/// A FIFO mutual-exclusion lock per key for async code. Actors re-enter at every `await`; this serialises whole
/// sequences (attach → wait → mount) per volume, and the droplet's own actions.
///
/// A waiter gives up when its task is cancelled, or when the task's deadline (`Deadline.current`: a Mount's) passes
/// first: a Mount queued behind a slow one ends by its own deadline, and the lock is never taken by a caller that has
/// gone.
public final class AsyncKeyedLock: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        /// The held keys, each with its waiters in arrival order.
        var held: [String: [Waiter]] = [:]
        var nextID: UInt64 = 0
    }
    private let state = NIOLockedValueBox(State())
    private let time: TimeSource
    private let describe: @Sendable (String) -> String

    /// - Parameters:
    ///   - time: The clock deadlines are read and waited on.
    ///   - describe: What holding `key` means, for the error of a waiter whose deadline passed: "volume pgdata".
    public init(time: TimeSource = .system, describe: @escaping @Sendable (String) -> String = { $0 }) {
        self.time = time
        self.describe = describe
    }

    /// Runs `body` while holding the lock for `key`. Waiters are served in arrival order.
    ///
    /// - Parameters:
    ///   - key: What to lock: a volume's name, say.
    ///   - isolation: The caller's actor, which `body` runs on.
    ///   - body: The work to do while holding the lock.
    /// - Returns: What `body` returns.
    /// - Throws: `CancellationError` when the task is cancelled while waiting; `VolumeError` `.busy` when the task's
    ///   deadline passes while waiting; else what `body` throws. The lock is released either way.
    public func withLock<T: Sendable>(
        _ key: String, isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T
    ) async throws -> T {
        try await lock(key)
        defer { unlock(key) }
        return try await body()
    }

    /// Whether someone holds the lock for `key` now.
    ///
    /// - Parameter key: What may be locked.
    /// - Returns: Whether the lock is held.
    public func isLocked(_ key: String) -> Bool {
        state.withLockedValue { $0.held[key] != nil }
    }

    /// How many callers wait for `key` now (tests).
    public func waiters(_ key: String) -> Int {
        state.withLockedValue { $0.held[key]?.count ?? 0 }
    }

    private func lock(_ key: String) async throws {
        try Task.checkCancellation()
        let free = state.withLockedValue { state -> Bool in
            guard state.held[key] == nil else { return false }
            state.held[key] = []
            return true
        }
        if free { return }
        guard let deadline = Deadline.current else { return try await wait(key) }
        let time = self.time
        // The wait raced against the deadline; a grant that comes as the timer wins is handed back.
        let acquired = await withTaskGroup(of: Result<Bool, any Error>.self) { group -> Result<Void, any Error> in
            group.addTask {
                do {
                    try await self.wait(key)
                    return .success(true)
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                let remaining = time.now().duration(to: deadline)
                if remaining > .zero { try? await time.sleep(remaining) }
                return .success(false)
            }
            let first = await group.next() ?? .success(false)
            group.cancelAll()
            while let other = await group.next() {
                if case .success(true) = other { unlock(key) }
            }
            switch first {
            case .success(true): return .success(())
            case .failure(let error): return .failure(error)
            case .success(false):
                if Task.isCancelled { return .failure(CancellationError()) }
                return .failure(
                    VolumeError(
                        .busy,
                        "gave up waiting for another operation on \(describe(key)) to finish: the request's deadline "
                            + "passed first; try again once it has finished"))
            }
        }
        try acquired.get()
    }

    /// Waits in line for `key`; throws `CancellationError` (and leaves the line) when the task is cancelled first.
    private func wait(_ key: String) async throws {
        let id = state.withLockedValue { state -> UInt64 in
            state.nextID &+= 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLockedValue { state -> Result<Void, any Error>? in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    guard state.held[key] != nil else {
                        state.held[key] = []
                        return .success(())
                    }
                    state.held[key]!.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state -> Waiter? in
                guard let index = state.held[key]?.firstIndex(where: { $0.id == id }) else { return nil }
                return state.held[key]!.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    private func unlock(_ key: String) {
        let next = state.withLockedValue { state -> Waiter? in
            guard var waiters = state.held[key] else { return nil }
            if waiters.isEmpty {
                state.held[key] = nil
                return nil
            }
            let next = waiters.removeFirst()
            state.held[key] = waiters
            return next
        }
        next?.continuation.resume()
    }
}
