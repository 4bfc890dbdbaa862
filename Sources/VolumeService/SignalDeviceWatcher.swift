import Logging
import Timekeeping

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
    private let logger: Logger?

    /// A watcher woken by `signal` (udev's events), that also re-checks every `fallbackInterval`.
    ///
    /// - Parameters:
    ///   - signal: Fired on every device event.
    ///   - fallbackInterval: How often a watch looks again without an event.
    ///   - time: The clock to wait by.
    ///   - logger: told (warning) when a change was found by the re-check rather than an event: events are not
    ///     arriving.
    ///   - resolve: the device node `path` leads to when it is usable, else nil.
    public init(
        signal: EventSignal, fallbackInterval: Duration = .seconds(2), time: TimeSource = .system, logger: Logger? = nil,
        resolve: @escaping @Sendable (String) -> String?
    ) {
        self.signal = signal
        self.resolve = resolve
        self.fallbackInterval = fallbackInterval
        self.time = time
        self.logger = logger
    }

    public var eventCount: UInt64 { signal.generation }

    // DeviceWatching: documented on the protocol.
    public func nextEvent(after count: UInt64) async -> UInt64 {
        await signal.wait(after: count)
        return signal.generation
    }

    public func watch(path: String) -> any DeviceWatch {
        Watch(path: path, signal: signal, resolve: resolve, fallbackInterval: fallbackInterval, time: time, logger: logger)
    }

    struct Watch: DeviceWatch {
        let path: String
        let signal: EventSignal
        let resolve: @Sendable (String) -> String?
        let fallbackInterval: Duration
        let time: TimeSource
        let logger: Logger?

        func current() -> String? { resolve(path) }

        func wait(present: Bool, within timeout: Duration) async -> Bool {
            let deadline = time.now().advanced(by: timeout)
            var recheck = false
            while true {
                let seen = signal.generation
                if (resolve(path) != nil) == present {
                    if recheck {
                        logger?.warning(
                            "Device change found by re-check, not by a udev event: is udev running and /dev shared?",
                            metadata: ["device.path": "\(path)"])
                    }
                    return true
                }
                let remaining = time.now().duration(to: deadline)
                if remaining <= .zero || Task.isCancelled { return false }
                let slice = min(remaining, fallbackInterval)
                let fired = await signal.wait(after: seen, within: slice, time: time)
                recheck = !fired && slice == fallbackInterval
            }
        }
    }
}
