/// How the DigitalOcean client retries a call.
///
/// Transport errors, 429 and 5xx (but 501) are retried up to `maxRetries` times, waiting `initialBackoff` doubled at
/// each retry up to `maxBackoff`. A 429 waits what DigitalOcean asks (`Retry-After`, else until `ratelimit-reset`)
/// instead. No retry starts that would end past the call's deadline: the call fails at once with the last error.
public struct RetryPolicy: Sendable {
    /// Default 4.
    public var maxRetries: Int
    /// Default 500 ms.
    public var initialBackoff: Duration
    /// Default 30 s.
    public var maxBackoff: Duration
    /// Per request attempt. Default 15 s.
    public var attemptTimeout: Duration
    /// The whole call, retries and waits included. Default 60 s.
    public var deadline: Duration

    public init(
        maxRetries: Int = 4, initialBackoff: Duration = .milliseconds(500), maxBackoff: Duration = .seconds(30),
        attemptTimeout: Duration = .seconds(15), deadline: Duration = .seconds(60)
    ) {
        self.maxRetries = maxRetries
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.attemptTimeout = attemptTimeout
        self.deadline = deadline
    }

    /// The backoff before retry number `retry` (1-based).
    ///
    /// - Parameter retry: Which retry it is, from 1.
    /// - Returns: The wait: `initialBackoff`, doubled for each retry after the first, at most `maxBackoff`.
    public func backoff(retry: Int) -> Duration {
        var wait = initialBackoff
        for _ in 1..<max(retry, 1) {
            wait = wait * 2
            if wait >= maxBackoff { return maxBackoff }
        }
        return min(wait, maxBackoff)
    }
}
