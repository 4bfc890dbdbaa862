/// Names DigitalOcean did not know, each answered "not found" for `ttl` after the miss without asking again.
/// Bounded: expired names are dropped as new ones come, and past `capacity` the oldest goes first, so a stream of
/// unknown names (a typo in a loop, a hostile client) cannot grow it.
struct RecentMisses: Sendable {
    let ttl: Duration
    let capacity: Int
    private var missed: [String: ContinuousClock.Instant] = [:]

    init(ttl: Duration, capacity: Int = 1024) {
        self.ttl = ttl
        self.capacity = max(capacity, 1)
    }

    /// How many names are remembered.
    var count: Int { missed.count }

    /// Whether `name` missed less than `ttl` before `now`.
    func contains(_ name: String, now: ContinuousClock.Instant) -> Bool {
        guard let when = missed[name] else { return false }
        return when.duration(to: now) < ttl
    }

    mutating func remember(_ name: String, now: ContinuousClock.Instant) {
        missed = missed.filter { $0.value.duration(to: now) < ttl }
        if missed.count >= capacity, let oldest = missed.min(by: { $0.value < $1.value })?.key {
            missed[oldest] = nil
        }
        missed[name] = now
    }

    mutating func forget(_ name: String) { missed[name] = nil }
}
