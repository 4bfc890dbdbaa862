import DigitalOcean
import FoundationEssentials
import Timekeeping

/// Which scheduled snapshots to keep, as restic's and borg's `--keep-*` do: the newest `last` ones, and the newest
/// snapshot in each of the last `hourly` hours, `daily` days, `weekly` ISO weeks and `monthly` months that have
/// one (UTC). A snapshot kept by any rule is kept.
public struct SnapshotRetention: Sendable, Equatable, Codable {
    public enum Period: String, Sendable, Codable, CaseIterable {
        case last, hourly, daily, weekly, monthly
    }

    public struct Rule: Sendable, Equatable, Codable {
        public var period: Period
        public var count: Int
        public init(_ period: Period, _ count: Int) {
            self.period = period
            self.count = count
        }
    }

    /// The rules, in the order given.
    public var rules: [Rule]

    public init(_ rules: [Rule]) { self.rules = rules }

    /// `last:4,daily:7,weekly:4`. Each rule once, each count from 1 to 1,000; throws naming the bad part.
    ///
    /// - Parameter text: The `snapshot_keep` option's value.
    /// - Throws: `VolumeError` `.invalidOption`, naming the bad part.
    public init(parsing text: String) throws(VolumeError) {
        var rules: [Rule] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false).map({ $0.trimmedWhitespace }) {
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            guard pieces.count == 2, let period = Period(rawValue: pieces[0].lowercased()),
                let count = Int(pieces[1]), (1...1000).contains(count), !rules.contains(where: { $0.period == period })
            else {
                throw VolumeError(
                    .invalidOption,
                    "snapshot_keep=\(text): \"\(part)\" is not a rule; use comma-separated RULE:N with RULE one of "
                        + "last, hourly, daily, weekly, monthly (each once) and N from 1 to 1000, e.g. last:4,daily:7")
            }
            rules.append(Rule(period, count))
        }
        self.init(rules)
    }

    /// `last:4,daily:7`.
    public var description: String { rules.map { "\($0.period.rawValue):\($0.count)" }.joined(separator: ",") }

    /// As a tag (`:` and `-` only): `last-4:daily-7`.
    public var tagValue: String { rules.map { "\($0.period.rawValue)-\($0.count)" }.joined(separator: ":") }

    /// The rules a volume's tag records (`tagValue`); nil when the tag is not one.
    ///
    /// - Parameter tagValue: What `tagValue` wrote.
    public init?(tagValue: String) {
        let text = String(tagValue.map { $0 == ":" ? "," : $0 == "-" ? ":" : $0 })
        guard let parsed = try? SnapshotRetention(parsing: text) else { return nil }
        self = parsed
    }

    /// The ids of the snapshots to keep among `snapshots` (id, time taken).
    ///
    /// - Parameter snapshots: The schedule's snapshots: their ids and when they were taken.
    /// - Returns: The ids that a rule keeps; the others are to be deleted.
    public func keep(_ snapshots: [(id: String, time: Date)]) -> Set<String> {
        let newestFirst = snapshots.sorted { $0.time > $1.time }
        var kept: Set<String> = []
        for rule in rules {
            let (period, count) = (rule.period, rule.count)
            var buckets: Set<String> = []
            for snapshot in newestFirst {
                let bucket = period == .last ? snapshot.id : Self.bucket(snapshot.time, period)
                guard !buckets.contains(bucket) else { continue }
                guard buckets.count < count else { break }
                buckets.insert(bucket)
                kept.insert(snapshot.id)
            }
        }
        return kept
    }

    static func bucket(_ time: Date, _ period: Period) -> String {
        var calendar = Calendar(identifier: .iso8601)
        calendar.timeZone = .gmt
        let c = calendar.dateComponents([.year, .month, .day, .hour, .yearForWeekOfYear, .weekOfYear], from: time)
        switch period {
        case .last: return ""
        case .hourly: return "\(c.year ?? 0)-\(c.month ?? 0)-\(c.day ?? 0)T\(c.hour ?? 0)"
        case .daily: return "\(c.year ?? 0)-\(c.month ?? 0)-\(c.day ?? 0)"
        case .weekly: return "\(c.yearForWeekOfYear ?? 0)W\(c.weekOfYear ?? 0)"
        case .monthly: return "\(c.year ?? 0)-\(c.month ?? 0)"
        }
    }
}

/// A volume's snapshot schedule: how often, and what to keep. Stored on the DigitalOcean volume as the tags
/// `do-storage-every:<seconds>` and `do-storage-keep:<rules>`, so it follows the volume to any droplet.
public struct SnapshotSchedule: Sendable, Equatable, Codable {
    public var every: Duration
    public var keep: SnapshotRetention

    /// Used when `snapshot_every` is given without `snapshot_keep`.
    public static let defaultKeep = SnapshotRetention([.init(.last, 10)])

    public static let everyTagPrefix = "do-storage-every:"
    public static let keepTagPrefix = "do-storage-keep:"
    /// On every snapshot a schedule takes: retention deletes only these.
    public static let scheduledTag = "do-storage-scheduled"

    public init(every: Duration, keep: SnapshotRetention) {
        self.every = every
        self.keep = keep
    }

    public var tags: [String] {
        [Self.everyTagPrefix + String(Int64(every.seconds)), Self.keepTagPrefix + keep.tagValue]
    }

    /// The schedule a volume's tags record, if any.
    ///
    /// - Parameter tags: A DigitalOcean volume's tags.
    public init?(tags: [String]) {
        guard let every = tags.first(where: { $0.hasPrefix(Self.everyTagPrefix) }),
            let seconds = Int64(every.dropFirst(Self.everyTagPrefix.count)), seconds > 0
        else { return nil }
        self.every = .seconds(seconds)
        keep = tags.first { $0.hasPrefix(Self.keepTagPrefix) }
            .flatMap { SnapshotRetention(tagValue: String($0.dropFirst(Self.keepTagPrefix.count))) } ?? Self.defaultKeep
    }

    /// `1d`, `6h`, `90m`, `45s`: the largest whole unit.
    ///
    /// - Parameter duration: A whole number of seconds.
    /// - Returns: The text, as `snapshot_every` takes it.
    public static func text(_ duration: Duration) -> String {
        let seconds = Int64(duration.seconds)
        if seconds % 86400 == 0 { return "\(seconds / 86400)d" }
        if seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }
}

/// A due schedule that cannot make room at the snapshot cap: nothing is frozen or taken.
struct ScheduleBlocked: Error {
    var message: String
}

/// Running schedules: on the droplet where a volume is mounted, a snapshot (frozen) each `every`, then retention
/// over the snapshots the schedule made. At most one snapshot of a volume in flight; a Mount or Unmount never
/// waits for one (an Unmount thaws a frozen filesystem at once and the snapshot is abandoned).
extension Snapshots {
    /// Checks the schedules of the volumes mounted here until the task is cancelled: every minute, or more often
    /// when `SNAPSHOT_MIN_INTERVAL` is short (a tenth of it, at least every second), so a snapshot is late by at
    /// most a tenth of its interval. A check makes no DigitalOcean call unless a snapshot is due.
    func runSchedules() async {
        let period = min(.seconds(60), max(.seconds(1), configuration.snapshotMinInterval / 10))
        while !Task.isCancelled {
            await schedulesOnce()
            do { try await time.sleep(period) } catch { return }
        }
    }

    /// Takes the snapshots that are due now.
    func schedulesOnce() async {
        let now = time.wallClock()
        let due = registry.records.values.filter { record in
            guard record.mountpoint != nil, let schedule = record.schedule else { return false }
            guard let last = record.lastScheduledAt else { return true }
            return now.timeIntervalSince(last) >= schedule.every.seconds
        }.map(\.name)
        for name in due {
            // Only cancellation (the plugin stopping) ends the wait for the lock.
            try? await snapshotLocks.withLock(name) { await runSchedule(name) }
        }
    }

    /// One volume's scheduled snapshot and its retention. Failures are logged and shown in Status (`last_error`).
    /// Runs outside the volume's lock, so a Mount or Unmount never waits for it; what it learnt is written to the
    /// record under the lock at the end.
    func runSchedule(_ name: String) async {
        guard let record = registry[name], let schedule = record.schedule, record.mountpoint != nil else { return }
        let update: (inout VolumeRecord) -> Void
        do {
            let volume = try await finder.current(name)
            let now = time.wallClock()
            let existing = try await cloud("list the snapshots of volume \(name)") { try await api.snapshots(volumeID: volume.id) }
            let scheduled = existing.filter { $0.tags.contains(SnapshotSchedule.scheduledTag) }
            if let last = scheduled.compactMap({ Self.date($0.createdAt) }).max(), now.timeIntervalSince(last) < schedule.every.seconds {
                // Another droplet took it before the volume moved here.
                update = { $0.lastScheduledAt = last }
            } else {
                // What retention drops once the new snapshot exists: at DigitalOcean's cap it is deleted first, to
                // make room, else after the new one is taken.
                let newest = "(new)"
                let keep = schedule.keep.keep(
                    scheduled.map { ($0.id, Self.date($0.createdAt) ?? now) } + [(newest, now)])
                let dropped = scheduled.filter { !keep.contains($0.id) }
                let atCap = existing.count >= Self.snapshotsPerVolume
                if atCap && existing.count - dropped.count >= Self.snapshotsPerVolume {
                    throw ScheduleBlocked(message: Self.noRoom(name, schedule: schedule, existing: existing, scheduled: scheduled))
                }
                var deleted = 0
                if atCap { deleted = try await deleteScheduled(dropped, of: name) }
                let (taken, _) = try await takeSnapshot(
                    of: volume, volume: name, name: "\(name)-\(Self.snapshotTime(now))", tags: [SnapshotSchedule.scheduledTag])
                if !atCap { deleted = try await deleteScheduled(dropped, of: name) }
                logger.info(
                    "Scheduled snapshot taken",
                    metadata: ["volume.name": "\(name)", "do.snapshot.id": "\(taken.id)", "deleted": "\(deleted)"])
                let count = existing.count + 1 - deleted
                update = {
                    $0.snapshotCount = count
                    $0.lastScheduledAt = now
                    if $0.lastError?.hasPrefix(Self.scheduleErrorPrefix) == true { $0.lastError = nil }
                }
            }
        } catch let blocked as ScheduleBlocked {
            // Nothing was frozen or taken; tried again a period later (or at once when the volume moves), not at every
            // check.
            logger.warning("Scheduled snapshot cannot be taken", metadata: ["volume.name": "\(name)", "reason": "\(blocked.message)"])
            let now = time.wallClock()
            update = {
                $0.lastError = blocked.message
                $0.lastScheduledAt = now
            }
        } catch {
            logger.warning("Scheduled snapshot failed", metadata: ["volume.name": "\(name)", "error": "\(error)"])
            let message = "\(Self.scheduleErrorPrefix) failed: \(error)"
            update = { $0.lastError = message }
        }
        try? await volumeLocks.withLock(name) {
            guard registry.update(name, update) != nil else { return }
            await registry.saveOrWarn(logger)
        }
    }

    /// At most this many snapshots per volume: DigitalOcean's limit.
    static let snapshotsPerVolume = 25
    static let scheduleErrorPrefix = "scheduled snapshot"

    /// Deletes the schedule's own snapshots that retention drops; returns how many are gone.
    func deleteScheduled(_ snapshots: [Snapshot], of name: String) async throws -> Int {
        var deleted = 0
        for snapshot in snapshots {
            do {
                try await api.deleteSnapshot(id: snapshot.id)
            } catch let error as DOError where error.code == .notFound {
                // Gone already.
            } catch let error as DOError {
                throw VolumeError(.cloud, "cannot delete scheduled snapshot \(snapshot.name) of volume \(name): \(error)")
            }
            deleted += 1
        }
        return deleted
    }

    /// Why a schedule at the cap cannot make room, and what to do.
    static func noRoom(_ name: String, schedule: SnapshotSchedule, existing: [Snapshot], scheduled: [Snapshot]) -> String {
        let others = existing.count - scheduled.count
        var parts: [String] = []
        if !scheduled.isEmpty {
            parts.append("\(scheduled.count) are the schedule's, and snapshot_keep=\(schedule.keep.description) keeps them all")
        }
        if others > 0 { parts.append("\(others) were taken by hand or for clones, and the schedule never deletes those") }
        return "\(scheduleErrorPrefix) not taken: volume \(name) has \(existing.count) snapshots, DigitalOcean's most; "
            + parts.joined(separator: "; ") + ". Delete some (do-storage snapshot list \(name), then do-storage snapshot "
            + "delete \(name) NAME)" + (scheduled.isEmpty ? "" : " or keep fewer (snapshot_keep)")
    }

    /// A DigitalOcean time (RFC 3339, with or without fractional seconds).
    static func date(_ text: String) -> Date? {
        (try? Date.ISO8601FormatStyle().parse(text)) ?? (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
    }
}
