import NIOConcurrencyHelpers

/// A FIFO mutual-exclusion lock per key for async code. Actors re-enter at every `await`; this serialises whole
/// sequences (attach → wait → mount) per volume, and the droplet's own actions.
public final class AsyncKeyedLock: Sendable {
    private struct Entry {
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    public init() {}

    /// Runs `body` while holding the lock for `key`. Waiters are served in arrival order.
    ///
    /// - Parameters:
    ///   - key: What to lock: a volume's name, say.
    ///   - isolation: The caller's actor, which `body` runs on.
    ///   - body: The work to do while holding the lock.
    /// - Returns: What `body` returns.
    /// - Throws: What `body` throws; the lock is released either way.
    public func withLock<T: Sendable>(
        _ key: String, isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T
    ) async rethrows -> T {
        await lock(key)
        defer { unlock(key) }
        return try await body()
    }

    /// Whether someone holds the lock for `key` now.
    ///
    /// - Parameter key: What may be locked.
    /// - Returns: Whether the lock is held.
    public func isLocked(_ key: String) -> Bool {
        entries.withLockedValue { $0[key] != nil }
    }

    private func lock(_ key: String) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = entries.withLockedValue { entries -> Bool in
                if entries[key] == nil {
                    entries[key] = Entry()
                    return true
                }
                entries[key]!.waiters.append(continuation)
                return false
            }
            if acquired { continuation.resume() }
        }
    }

    private func unlock(_ key: String) {
        let next = entries.withLockedValue { entries -> CheckedContinuation<Void, Never>? in
            guard var entry = entries[key] else { return nil }
            if entry.waiters.isEmpty {
                entries[key] = nil
                return nil
            }
            let next = entry.waiters.removeFirst()
            entries[key] = entry
            return next
        }
        next?.resume()
    }
}
