import Foundation
import NIOConcurrencyHelpers
import Timekeeping

/// Time that moves only when a test moves it, as swift-clocks' `TestClock` does, as a `TimeSource`: every sleep
/// waits until the test advances the clock past its end; `now` and `wallClock` read the clock. Hand `timeSource` to
/// everything under test (services, the simulator, device watchers), then advance it, instead of waiting on real
/// time and asserting margins.
public final class TestTime: Sendable {
    private struct Sleeper {
        var id: UInt64
        var end: Duration
        var owner: String?
        var continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var elapsed: Duration = .zero
        var nextID: UInt64 = 0
        var sleepers: [Sleeper] = []
        var waited: [String: Duration] = [:]
        /// Sleeps the clock has ended whose tasks have not run again yet.
        var waking = 0
        /// Pieces of `busy` work under way (outside their sleeps on the clock).
        var active = 0

        /// Moves time to `new`, counting the move as waited by every owner with a task asleep.
        mutating func move(to new: Duration) {
            guard new > elapsed else { return }
            for owner in Set(sleepers.compactMap(\.owner)) { waited[owner, default: .zero] += new - elapsed }
            elapsed = new
        }
    }

    /// Whose work a task does, for `waited(by:)`: set it around a piece of work (its child tasks inherit it).
    @TaskLocal public static var owner: String?
    /// Whether the task runs `busy` work.
    @TaskLocal static var inBusyWork = false
    private let state = NIOLockedValueBox(State())
    /// The monotonic instant the clock starts at.
    public let start: ContinuousClock.Instant
    /// The wall-clock date the clock starts at.
    public let epoch: Date

    public init(epoch: Date = Date()) {
        start = ContinuousClock.now
        self.epoch = epoch
    }

    /// How far the clock has been advanced.
    public var elapsed: Duration { state.withLockedValue { $0.elapsed } }

    /// How much clock time passed while some task of `owner`'s work slept: the time that work spent waiting on the
    /// clock, whatever the clock did while it ran (a machine busy with other work lets the clock move then).
    public func waited(by owner: String) -> Duration { state.withLockedValue { $0.waited[owner] ?? .zero } }

    /// How many tasks sleep on the clock now.
    public var sleeperCount: Int { state.withLockedValue { $0.sleepers.count } }

    public var timeSource: TimeSource {
        TimeSource(
            now: { [self] in start.advanced(by: elapsed) },
            sleep: { [self] duration in try await sleep(duration) },
            wallClock: { [self] in epoch.addingTimeInterval(elapsed.seconds) })
    }

    /// Sleeps until the clock has been advanced by `duration`; throws `CancellationError` when the task is
    /// cancelled first.
    public func sleep(_ duration: Duration) async throws {
        try Task.checkCancellation()
        guard duration > .zero else {
            await Task.yield()
            return
        }
        let id = state.withLockedValue { state -> UInt64 in
            state.nextID &+= 1
            return state.nextID
        }
        // Busy work that sleeps on the clock holds it back only while it runs.
        let busy = Self.inBusyWork
        if busy { state.withLockedValue { $0.active -= 1 } }
        defer { if busy { state.withLockedValue { $0.active += 1 } } }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let cancelled = state.withLockedValue { state -> Bool in
                    if Task.isCancelled { return true }
                    state.sleepers.append(
                        Sleeper(id: id, end: state.elapsed + duration, owner: Self.owner, continuation: continuation))
                    return false
                }
                if cancelled { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            let sleeper = state.withLockedValue { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
        // Woken by `advance`: this task runs again.
        state.withLockedValue { $0.waking -= 1 }
    }

    /// Runs `body` as work the clock waits for before it moves on in `advance(until:)` (a request under way to
    /// the simulator, say), except while `body` sleeps on the clock.
    public func busy<T: Sendable>(_ body: () async throws -> T) async rethrows -> T {
        state.withLockedValue { $0.active += 1 }
        defer { state.withLockedValue { $0.active -= 1 } }
        return try await Self.$inBusyWork.withValue(true) { try await body() }
    }

    /// Moves time forward by `duration`, waking each sleep whose end it passes, earliest first, and letting each
    /// woken task run before moving on.
    public func advance(by duration: Duration) async {
        let target = elapsed + duration
        while true {
            let next = state.withLockedValue { state -> Sleeper? in
                guard let index = state.sleepers.indices.filter({ state.sleepers[$0].end <= target })
                    .min(by: { state.sleepers[$0].end < state.sleepers[$1].end })
                else {
                    state.move(to: target)
                    return nil
                }
                state.move(to: state.sleepers[index].end)
                state.waking += 1
                return state.sleepers.remove(at: index)
            }
            guard let next else { break }
            next.continuation.resume()
            await Self.letOthersRun()
        }
        await Self.letOthersRun()
    }

    /// Whether some task is sleeping on the clock now, after letting ready tasks run.
    public func hasSleepers() async -> Bool {
        await Self.letOthersRun()
        return sleeperCount > 0
    }

    /// Awaits, in real time (at most `limit`: a guard against a hang, not a margin), until at least `count` tasks
    /// sleep on the clock: the code under test has reached its waits.
    public func waitForSleepers(_ count: Int = 1, _ what: String = "a wait", within limit: Duration = .seconds(300)) async throws {
        let deadline = ContinuousClock.now + limit
        while sleeperCount < count {
            guard ContinuousClock.now < deadline else { throw TestTimeError("nothing reached \(what) within \(limit)") }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Advances the clock until `condition` holds, letting the code under test run between moves; fails after
    /// `virtualLimit` of clock time (what it waits for never came) or `realLimit` of real time (a hang). The clock
    /// moves only when the tasks sleeping on it have stayed the same for a moment of real time (nothing is on its way
    /// to a new wait), every task it woke has run again and no `busy` work is under way, and then to the earliest end
    /// among them, by `step` at most: work that runs outside the clock (files written, programs run) sees little clock time pass, also on a
    /// machine so busy that a woken task waits long for a thread. Use it where the outcome holds in every order of
    /// the moves: a test asserts the outcome, not the timing.
    public func advance(
        until what: String, step: Duration = .milliseconds(100), virtualLimit: Duration = .seconds(3600),
        realLimit: Duration = .seconds(300), _ condition: () async throws -> Bool
    ) async throws {
        let realDeadline = ContinuousClock.now + realLimit
        let virtualDeadline = elapsed + virtualLimit
        while try await !condition() {
            guard elapsed < virtualDeadline else {
                throw TestTimeError("\(what) did not happen within \(virtualLimit) of test-clock time")
            }
            guard ContinuousClock.now < realDeadline else {
                throw TestTimeError("\(what) did not happen within \(realLimit) of real time")
            }
            let before = sleeperIDs
            await Self.letOthersRun()
            try await Task.sleep(for: .microseconds(500))
            guard !before.isEmpty, sleeperIDs == before, settled, try await !condition() else { continue }
            let next = state.withLockedValue { state in state.sleepers.map(\.end).min() ?? state.elapsed }
            await advance(by: min(max(next - elapsed, .zero), step))
        }
    }

    /// Whether every task the clock woke has run again and no busy work is under way.
    private var settled: Bool { state.withLockedValue { $0.waking <= 0 && $0.active <= 0 } }

    /// The tasks sleeping now, by the ids of their sleeps.
    private var sleeperIDs: Set<UInt64> { state.withLockedValue { Set($0.sleepers.map(\.id)) } }

    /// Yields often enough for woken tasks, and those they wake, to reach their next suspension.
    static func letOthersRun() async {
        for _ in 0..<20 { await Task.yield() }
    }
}

public struct TestTimeError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A `TimeSource` whose sleeps return at once, moving its time on by what was asked: the exact waits a retry
/// policy chooses, without spending them. For code with one waiter at a time (a client's retries); concurrent
/// waits belong on `TestTime`.
public final class ImmediateTime: Sendable {
    private let state = NIOLockedValueBox<(elapsed: Duration, sleeps: [Duration])>((.zero, []))
    private let start = ContinuousClock.now
    private let epoch = Date()

    public init() {}

    /// Every wait asked for, in order.
    public var sleeps: [Duration] { state.withLockedValue { $0.sleeps } }
    public var elapsed: Duration { state.withLockedValue { $0.elapsed } }

    public var timeSource: TimeSource {
        TimeSource(
            now: { [self] in start.advanced(by: elapsed) },
            sleep: { [self] duration in
                try Task.checkCancellation()
                state.withLockedValue {
                    $0.elapsed += duration
                    $0.sleeps.append(duration)
                }
                await Task.yield()
            },
            wallClock: { [self] in epoch.addingTimeInterval(elapsed.seconds) })
    }
}

/// Work started in a task of its own, whose end a test can look for without awaiting it: run it, move a clock, see
/// whether it has ended yet.
public final class Running<T: Sendable>: Sendable {
    private let outcome = NIOLockedValueBox<Result<T, any Error>?>(nil)
    private let task = NIOLockedValueBox<Task<Void, Never>?>(nil)

    public init(_ body: @escaping @Sendable () async throws -> T) {
        let outcome = self.outcome
        task.withLockedValue {
            $0 = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                outcome.withLockedValue { $0 = result }
            }
        }
    }

    public var isFinished: Bool { outcome.withLockedValue { $0 != nil } }

    /// Its outcome, awaited in real time for at most `limit` (a guard against a hang, not a margin) without moving
    /// any test clock: work that ends without more clock time has ended within it.
    public func result(within limit: Duration = .seconds(300)) async throws -> Result<T, any Error> {
        let deadline = ContinuousClock.now + limit
        while true {
            if let result = outcome.withLockedValue({ $0 }) { return result }
            guard ContinuousClock.now < deadline else { throw TestTimeError("the work did not end within \(limit) of real time") }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Its value, or its error; see `result(within:)`.
    public func value(within limit: Duration = .seconds(300)) async throws -> T {
        try await result(within: limit).get()
    }

    public func cancel() { task.withLockedValue { $0?.cancel() } }
}

extension TestTime {
    /// Runs `body`, advancing the clock in steps until it ends: for work whose outcome, not its timing, is under test
    /// (a Mount that must succeed, whatever its polls).
    public func run<T: Sendable>(
        _ what: String, step: Duration = .milliseconds(100), _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let running = Running(body)
        try await advance(until: what, step: step) { running.isFinished }
        return try await running.value()
    }
}
