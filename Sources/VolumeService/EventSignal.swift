import NIOConcurrencyHelpers
import Timekeeping

/// A generation counter that tasks can wait on: `fire()` bumps it and wakes every waiter.
///
/// Waiting compares against a generation read earlier, so an event between reading the generation and starting
/// to wait is never lost. Thread safe; `fire()` may be called from any thread.
public final class EventSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var nextWaiter: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = NIOLockedValueBox(State())

    public init() {}

    public var generation: UInt64 { state.withLockedValue { $0.generation } }

    /// How many tasks wait for the next generation now.
    public var waiterCount: Int { state.withLockedValue { $0.waiters.count } }

    /// Starts a new generation and wakes every waiter.
    public func fire() {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.generation &+= 1
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the generation differs from `seen`, or when the task is cancelled.
    ///
    /// - Parameter seen: The generation the caller saw last.
    public func wait(after seen: UInt64) async {
        let id = state.withLockedValue { state -> UInt64 in
            state.nextWaiter &+= 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state -> Bool in
                    if state.generation != seen || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLockedValue { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }

    /// Returns true when the signal fired within `timeout`, false when the time ran out.
    ///
    /// - Parameters:
    ///   - seen: The generation the caller saw last.
    ///   - timeout: How long to wait at most.
    ///   - time: The clock to wait by.
    /// - Returns: Whether the signal fired in time.
    public func wait(after seen: UInt64, within timeout: Duration, time: TimeSource) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.wait(after: seen)
                return !Task.isCancelled
            }
            group.addTask {
                try? await time.sleep(timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}

