import DigitalOcean
import Timekeeping

/// Runs a DigitalOcean call, turning its failure into a `VolumeError` that says what was being done.
func cloud<T: Sendable>(_ what: String, _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as DOError {
        throw VolumeError(.cloud, "cannot \(what): \(error)")
    } catch let error as VolumeError {
        throw error
    } catch is CancellationError {
        throw VolumeError(.cloud, "cannot \(what): cancelled")
    } catch {
        throw VolumeError(.cloud, "cannot \(what): \(error)")
    }
}

extension TimeSource {
    /// `duration` after `start` (default now), or the Mount's deadline when that comes first.
    func limit(after duration: Duration, from start: ContinuousClock.Instant? = nil) -> ContinuousClock.Instant {
        Deadline.bounding((start ?? now()).advanced(by: duration))
    }

    /// The time left until `instant`; zero once it has passed.
    func remaining(until instant: ContinuousClock.Instant) -> Duration {
        max(now().duration(to: instant), .zero)
    }
}
