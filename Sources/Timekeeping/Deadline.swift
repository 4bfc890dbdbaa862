/// A deadline that bounds everything a task does, DigitalOcean calls included: the orchestration sets it for a
/// whole Mount (Docker gives a Mount 2 minutes), and every wait and call inside ends by it.
public enum Deadline {
    /// The deadline of the current task, if one was set (`Deadline.$current.withValue(...)`).
    @TaskLocal public static var current: ContinuousClock.Instant?

    /// The earlier of `instant` and the task's deadline.
    public static func bounding(_ instant: ContinuousClock.Instant) -> ContinuousClock.Instant {
        guard let current else { return instant }
        return min(instant, current)
    }
}
