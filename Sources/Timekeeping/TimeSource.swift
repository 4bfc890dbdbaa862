import FoundationEssentials
import Glibc

/// Where the clients and the orchestration get the time and wait, so tests can run waits on a clock they move.
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
}
