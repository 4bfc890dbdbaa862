import DigitalOcean
import FoundationEssentials
import Logging
import Timekeeping
import Synchronization

/// A droplet's heartbeat: the tag `do-storage-lease-<droplet id>-<Unix seconds>` on the droplet, put there by its
/// plugin while it holds volumes. Other droplets read it in the droplet object they already fetch before a hand-off.
public enum LeaseTag {
    public static let prefix = "do-storage-lease-"

    /// The tag for a heartbeat of `droplet` at `time`.
    ///
    /// - Parameters:
    ///   - droplet: The droplet's id.
    ///   - time: When the heartbeat was renewed.
    /// - Returns: The tag's name, `do-storage-lease-<droplet>-<Unix seconds>`.
    public static func name(droplet: Int, at time: Date) -> String {
        prefix + "\(droplet)-\(Int(time.timeIntervalSince1970.rounded(.down)))"
    }

    /// The newest heartbeat of `droplet` among its tags; nil when it has none.
    ///
    /// - Parameters:
    ///   - tags: A droplet's tags.
    ///   - droplet: The droplet's id.
    /// - Returns: When its newest heartbeat tag was renewed.
    public static func heartbeat(in tags: [String], droplet: Int) -> Date? {
        let own = prefix + "\(droplet)-"
        return tags.compactMap { tag -> Date? in
            guard tag.hasPrefix(own), let seconds = Int(tag.dropFirst(own.count)), seconds >= 0 else { return nil }
            return Date(timeIntervalSince1970: TimeInterval(seconds))
        }.max()
    }
}

/// This droplet's heartbeat as the state file keeps it, so a restarted plugin renews the same lease.
public struct LeaseState: Codable, Sendable, Equatable {
    /// The heartbeat tag on the droplet now.
    public var tag: String?
    /// When it was put there (wall clock).
    public var renewedAt: Date?
    /// Earlier heartbeat tags whose deletion failed; one is deleted per renewal.
    public var leftovers: [String] = []

    public init(tag: String? = nil, renewedAt: Date? = nil, leftovers: [String] = []) {
        self.tag = tag
        self.renewedAt = renewedAt
        self.leftovers = leftovers
    }
}

/// What a droplet holding a volume is, as far as a hand-off cares.
enum Holder {
    /// DigitalOcean no longer knows it: its volumes were detached with it.
    case destroyed
    /// It exists; its status and heartbeat tell whether its plugin is alive.
    case droplet(Droplet)
    /// It could not be read (DigitalOcean unreachable): assume it is alive.
    case unknown

    /// Whether it is powered on ("new" or "active"); an unknown holder counts as running.
    var isRunning: Bool {
        switch self {
        case .destroyed: false
        case .droplet(let droplet): droplet.status == "active" || droplet.status == "new"
        case .unknown: true
        }
    }

    var status: String {
        switch self {
        case .destroyed: "destroyed"
        case .droplet(let droplet): droplet.status
        case .unknown: "unknown"
        }
    }
}

/// The heartbeat: renewed every `leaseRenew` while this droplet holds a volume, with at most three DigitalOcean
/// calls whatever the number of volumes (create the new tag, tag the droplet, delete the previous tag), and none
/// while it holds nothing. The tag survives restarts, since the registry saves it. Also reads other droplets'
/// heartbeats for a hand-off.
final class Heartbeat: Sendable {
    private let configuration: ServiceConfiguration
    private let api: any VolumeAPI
    private let registry: VolumeRegistry
    private let time: TimeSource
    private let logger: Logger
    /// One renewal or take-down at a time.
    private let lock: AsyncKeyedLock
    /// Mounts between their first DigitalOcean call and their end: the droplet holds (or is about to hold) a volume.
    private let mountsInFlight = Mutex(0)

    init(configuration: ServiceConfiguration, api: any VolumeAPI, registry: VolumeRegistry, time: TimeSource, logger: Logger) {
        self.configuration = configuration
        self.api = api
        self.registry = registry
        self.time = time
        self.logger = logger
        lock = AsyncKeyedLock(time: time) { "this droplet's \($0)" }
    }

    /// Runs a Mount's work on DigitalOcean and the host: while it runs, the droplet counts as holding a volume.
    func whileMounting<T: Sendable>(isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T) async throws -> T {
        mountsInFlight.withLock { $0 += 1 }
        defer { mountsInFlight.withLock { $0 -= 1 } }
        return try await body()
    }

    /// Whether a volume is attached or mounted here (as last seen), or a Mount is bringing one here.
    var holdsVolumes: Bool {
        mountsInFlight.withLock { $0 } > 0
            || registry.records.values.contains {
                $0.seen?.attachedTo == configuration.dropletID || $0.mountpoint != nil || !$0.references.isEmpty
            }
    }

    /// Keeps the heartbeat until the task is cancelled. Start it once, after the registry agrees with the host.
    func keep() async {
        while !Task.isCancelled {
            // Nothing held and no heartbeat up: nothing to do, and no call.
            let wait = holdsVolumes || registry.lease != nil ? await beat() : configuration.leaseRenew
            do { try await time.sleep(wait) } catch { return }
        }
    }

    /// One step of the heartbeat: renews it when it is due and this droplet holds a volume, takes it down when this
    /// droplet holds none. Returns how long until the next step: what is left of the renewal interval, or at most a
    /// minute after a failed renewal.
    @discardableResult
    func beat() async -> Duration {
        // Only cancellation (the plugin stopping) ends the wait for the lock.
        (try? await lock.withLock("lease") {
            let renew = configuration.leaseRenew
            let now = time.wallClock()
            let lease = registry.lease ?? LeaseState()
            guard holdsVolumes else {
                if lease.tag != nil || !lease.leftovers.isEmpty { await takeDown() }
                return renew
            }
            if lease.tag != nil, let renewed = lease.renewedAt {
                let age = Duration.seconds(now.timeIntervalSince(renewed))
                if age >= .zero && age < renew { return renew - age }
            }
            let name = LeaseTag.name(droplet: configuration.dropletID, at: now)
            guard name != lease.tag else { return .seconds(1) }
            do {
                try await api.createTag(name: name)
                try await api.tag(dropletID: configuration.dropletID, with: name)
            } catch {
                logger.warning(
                    "Cannot renew this droplet's heartbeat; trying again soon",
                    metadata: ["lease.tag": "\(name)", "error": "\(error)"])
                return min(renew, .seconds(60))
            }
            registry.updateLease { lease in
                if let previous = lease.tag { lease.leftovers.append(previous) }
                lease.tag = name
                lease.renewedAt = now
            }
            if let oldest = registry.lease?.leftovers.first, await deleteTag(oldest) {
                registry.updateLease { $0.leftovers.removeAll { $0 == oldest } }
            }
            await saveLease()
            logger.debug("Heartbeat renewed", metadata: ["lease.tag": "\(name)"])
            return renew
        }) ?? configuration.leaseRenew
    }

    /// Renews the heartbeat when it is missing or due, before a Mount brings a volume here: another droplet that
    /// finds the volume attached here must find this plugin's heartbeat fresh, or it could take the volume from under
    /// the Mount (an old heartbeat this droplet could not take down, or the first one not yet written). A renewal
    /// that fails is retried by `keep`; the Mount goes on.
    func renewIfDue() async {
        if let lease = registry.lease, lease.tag != nil, let renewed = lease.renewedAt,
            Duration.seconds(time.wallClock().timeIntervalSince(renewed)) < configuration.leaseRenew
        {
            return
        }
        await beat()
    }

    /// Deletes the heartbeat and any leftovers: this droplet holds nothing, so it makes no more calls.
    private func takeDown() async {
        let lease = registry.lease ?? LeaseState()
        for tag in ([lease.tag].compactMap { $0 } + lease.leftovers) where await deleteTag(tag) {
            registry.updateLease { lease in
                if tag == lease.tag { lease.tag = nil } else { lease.leftovers.removeAll { $0 == tag } }
            }
        }
        await saveLease()
        logger.info("Heartbeat taken down: this droplet holds no volume")
    }

    /// Deletes a heartbeat tag; true when it is gone (already gone included).
    private func deleteTag(_ tag: String) async -> Bool {
        do {
            try await api.deleteTag(name: tag)
            return true
        } catch let error as DOError where error.code == .notFound {
            return true
        } catch {
            logger.warning("Cannot delete an old heartbeat tag; trying again later", metadata: ["lease.tag": "\(tag)", "error": "\(error)"])
            return false
        }
    }

    /// Saves the lease; a failure is logged, and the state is saved again with the next change (a restart that lost
    /// it renews with a new tag and leaves the old one to go stale: harmless, since it only ages).
    private func saveLease() async {
        do {
            try await registry.save()
        } catch {
            logger.warning("Cannot save the heartbeat in the state file", metadata: ["error": "\(error)"])
        }
    }

    /// The holder of a volume as DigitalOcean shows it.
    func holder(_ droplet: Int) async -> Holder {
        do {
            return .droplet(try await api.droplet(id: droplet))
        } catch let error as DOError where error.code == .notFound {
            return .destroyed
        } catch {
            logger.debug("Cannot read the holder droplet", metadata: ["droplet.id": "\(droplet)", "error": "\(error)"])
            return .unknown
        }
    }

    /// How old the holder's heartbeat is by this droplet's clock; nil when it has none.
    func age(of holder: Holder, droplet: Int) -> Duration? {
        guard case .droplet(let object) = holder, let beat = LeaseTag.heartbeat(in: object.tags, droplet: droplet) else {
            return nil
        }
        return .seconds(time.wallClock().timeIntervalSince(beat))
    }
}
