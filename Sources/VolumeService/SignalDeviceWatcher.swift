import DigitalOcean

/// A `DeviceWatching` driven by an `EventSignal` that fires on every device event (udev in production).
///
/// Each event re-checks the watched path with `resolve`. As a safety net against a monitor that hears nothing,
/// the path is also re-checked every `fallbackInterval` (default 2 s), so a silent monitor costs latency, never a
/// timeout.
public struct SignalDeviceWatcher: DeviceWatching {
    private let signal: EventSignal
    private let resolve: @Sendable (String) -> String?
    private let fallbackInterval: Duration
    private let time: TimeSource

    /// - Parameter resolve: the device node `path` leads to when it is usable, else nil.
    public init(
        signal: EventSignal, fallbackInterval: Duration = .seconds(2), time: TimeSource = .system,
        resolve: @escaping @Sendable (String) -> String?
    ) {
        self.signal = signal
        self.resolve = resolve
        self.fallbackInterval = fallbackInterval
        self.time = time
    }

    public func watch(path: String) -> any DeviceWatch {
        Watch(path: path, signal: signal, resolve: resolve, fallbackInterval: fallbackInterval, time: time)
    }

    struct Watch: DeviceWatch {
        let path: String
        let signal: EventSignal
        let resolve: @Sendable (String) -> String?
        let fallbackInterval: Duration
        let time: TimeSource

        func current() -> String? { resolve(path) }

        func wait(present: Bool, within timeout: Duration) async -> Bool {
            let deadline = time.now().advanced(by: timeout)
            while true {
                let seen = signal.generation
                if (resolve(path) != nil) == present { return true }
                let remaining = time.now().duration(to: deadline)
                if remaining <= .zero || Task.isCancelled { return false }
                _ = await signal.wait(after: seen, within: min(remaining, fallbackInterval), time: time)
            }
        }
    }
}
