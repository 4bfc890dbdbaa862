import FoundationEssentials
import Glibc
import Synchronization

/// Where the clients and the orchestration get the time and wait, so tests can run waits in virtual time.
public struct TimeSource: Sendable {
    /// Monotonic now.
    public var now: @Sendable () -> ContinuousClock.Instant
    /// Waits for the duration; throws `CancellationError` when the task is cancelled.
    public var sleep: @Sendable (Duration) async throws -> Void
    /// Wall-clock now, for `ratelimit-reset` (Unix epoch seconds).
    public var wallClock: @Sendable () -> Date

    public init(
        now: @escaping @Sendable () -> ContinuousClock.Instant,
        sleep: @escaping @Sendable (Duration) async throws -> Void,
        wallClock: @escaping @Sendable () -> Date
    ) {
        self.now = now
        self.sleep = sleep
        self.wallClock = wallClock
    }

    /// The real clocks.
    public static let system = TimeSource(
        now: { ContinuousClock.now },
        sleep: { try await Task.sleep(for: $0) },
        wallClock: { Date() })

    /// A virtual clock: `sleep` returns at once and advances `now` by the duration; `slept` records every wait.
    /// Waits are awaited in order, so tests see the exact backoff a policy chose without spending that time.
    public static func virtual() -> (TimeSource, VirtualClockRecord) {
        let record = VirtualClockRecord()
        let start = ContinuousClock.now
        let epoch = Date()
        let source = TimeSource(
            now: { start.advanced(by: record.elapsed) },
            sleep: { duration in
                try Task.checkCancellation()
                record.advance(duration)
                await Task.yield()
            },
            wallClock: { epoch.addingTimeInterval(record.elapsed.seconds) })
        return (source, record)
    }
}

/// What a virtual `TimeSource` has been asked to wait.
public final class VirtualClockRecord: Sendable {
    private let state = Mutex<(elapsed: Duration, sleeps: [Duration])>((.zero, []))

    public var elapsed: Duration { state.withLock { $0.elapsed } }
    public var sleeps: [Duration] { state.withLock { $0.sleeps } }

    func advance(_ duration: Duration) {
        state.withLock {
            $0.elapsed += duration
            $0.sleeps.append(duration)
        }
    }
}
