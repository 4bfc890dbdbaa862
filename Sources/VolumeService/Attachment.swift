import DigitalOcean
import Logging
import Synchronization
import Timekeeping

/// Attachment: bringing a volume to this droplet and releasing it again, the hand-off between droplets (with their
/// heartbeats), and the releases that must not be left undone: a failed Mount's, an Unmount's whose detach failed,
/// an attach a killed plugin sent. Notes in the volume's record what a plugin killed mid-way must find at its next
/// start (an attach or detach requested) and saves it before the request goes out.
final class Attachments: Sendable {
    private let configuration: ServiceConfiguration
    private let api: any VolumeAPI
    private let devices: any DeviceWatching
    private let registry: VolumeRegistry
    private let finder: VolumeFinder
    private let heartbeat: Heartbeat
    private let actions: DropletActions
    /// Each volume's sequences, shared with the orchestration: a release never runs beside a Mount of the volume.
    private let volumeLocks: AsyncKeyedLock
    private let time: TimeSource
    private let logger: Logger
    /// Releases to try again (`scheduleRelease`), taken by `retryReleases`.
    private let pendingReleases = Mutex<[PendingRelease]>([])
    private let releasesPending = EventSignal()

    init(
        configuration: ServiceConfiguration, api: any VolumeAPI, devices: any DeviceWatching, registry: VolumeRegistry,
        finder: VolumeFinder, heartbeat: Heartbeat, actions: DropletActions, volumeLocks: AsyncKeyedLock, time: TimeSource,
        logger: Logger
    ) {
        self.configuration = configuration
        self.api = api
        self.devices = devices
        self.registry = registry
        self.finder = finder
        self.heartbeat = heartbeat
        self.actions = actions
        self.volumeLocks = volumeLocks
        self.time = time
        self.logger = logger
    }

    /// Makes the volume attached here with its device present. Returns the volume as it is now, the device node, and
    /// whether this call attached it (so a failed mount can release it again).
    func bringHere(_ name: String) async throws -> (volume: Volume, device: String, attachedByUs: Bool) {
        let record = try registry.known(name)
        let me = configuration.dropletID
        var volume = try await finder.current(name)
        let watch = devices.watch(path: actions.deviceLink(volume.name))
        if volume.dropletIDs.contains(me), registry[name]?.detachRequested != nil {
            // A detach asked for before (by a plugin killed before it completed) may still be under way and would
            // take the disk from under this mount: it is seen through first, and the volume attached anew.
            logger.notice("A detach of the volume may still be under way; detaching before attaching again", metadata: ["volume.name": "\(name)"])
            try await detachHere(volumeID: volume.id, doName: volume.name, name: name)
            volume.dropletIDs = []
        }
        if volume.dropletIDs.contains(me) {
            logger.debug("Volume already attached here", metadata: ["volume.name": "\(name)"])
            return (volume, try await actions.device(watch, name: name), false)
        }
        await heartbeat.renewIfDue()
        if let other = volume.dropletIDs.first {
            volume = try await takeFrom(droplet: other, volume: volume, name: name, mode: record.takeover ?? configuration.takeover)
            // A droplet that held it to switch the volume's branch lets go of the branch it left: mount the current.
            if volume.tags.contains(History.branchedTag) {
                let now = try await finder.current(name)
                if now.id != volume.id {
                    guard now.dropletIDs.isEmpty else {
                        throw VolumeError(
                            .attachedElsewhere,
                            "volume \(name) changed branch while this Mount waited, and its current branch is attached to "
                                + "droplet \(now.dropletIDs[0]); try again once it is released there")
                    }
                    volume = now
                }
            }
        }
        // Written before the request: a plugin killed from here on finds it at its next start.
        registry.update(name) { $0.attachRequested = time.wallClock() }
        try await registry.save()
        let attached = try await actions.oneAtATime {
            try await attach(volume, watch: watch, name: name)
        }
        volume.dropletIDs = [me]
        do {
            return (volume, try await actions.device(watch, name: name), attached)
        } catch {
            if attached { await release(volumeID: volume.id, doName: volume.name, name: name) }
            throw error
        }
    }

    /// Detaches the volume from this droplet and waits until the action completes and the device is gone.
    /// Already detached is success.
    /// The request is noted in the volume's record before it is sent, and cleared once the volume is detached: a
    /// plugin killed meanwhile knows at its next Mount that a detach may still be under way.
    func detachHere(volumeID: String, doName: String, name: String) async throws {
        let me = configuration.dropletID
        let watch = devices.watch(path: actions.deviceLink(doName))
        if registry.update(name, { $0.detachRequested = time.wallClock() }) != nil {
            try await registry.save()
        }
        try await actions.oneAtATime {
            let deadline = time.limit(after: configuration.actionTimeout)
            let action: Action
            do {
                action = try await actions.post("detach", name: name, deadline: deadline) {
                    try await api.detach(volumeID: volumeID, dropletID: me, region: configuration.region)
                }
            } catch let error as DOError where error.reason == .attachmentNotFound {
                logger.debug("Volume was not attached here", metadata: ["volume.name": "\(name)"])
                return
            } catch let error as DOError {
                throw VolumeError(.cloud, "cannot detach volume \(name) from this droplet: \(error)")
            }
            try await actions.wait(for: action, volumeID: volumeID, watch: watch, present: false, deadline: deadline, what: "detach", name: name)
            if !(await watch.wait(present: false, within: time.remaining(until: time.limit(after: configuration.deviceTimeout)))) {
                logger.warning("Device still present after the detach completed", metadata: ["volume.name": "\(name)"])
            }
        }
        if registry[name]?.detachRequested != nil {
            registry.update(name) { $0.detachRequested = nil }
            try await registry.save()
        }
        logger.info("Volume detached", metadata: ["volume.name": "\(name)", "droplet.id": "\(me)"])
    }

    /// Attached elsewhere. `always` detaches it from there at once. A holder that is powered off or destroyed
    /// cannot be using the volume, so it is detached from there at once in every mode. Under `lease`, so is a holder
    /// whose heartbeat is older than `leaseTTL`. Otherwise: wait for the other droplet to let go, then fail naming it.
    func takeFrom(droplet other: Int, volume: Volume, name: String, mode: Takeover) async throws -> Volume {
        if mode == .always {
            logger.warning(
                "Taking the volume from another droplet (takeover always); a container there loses its disk",
                metadata: ["volume.name": "\(name)", "droplet.id": "\(other)"])
            return try await forceDetach(volume, from: other, name: name)
        }
        let holder = await heartbeat.holder(other)
        if !holder.isRunning {
            logger.warning(
                "The droplet holding the volume is not running; detaching it from there",
                metadata: ["volume.name": "\(name)", "droplet.id": "\(other)", "droplet.status": "\(holder.status)"])
            return try await forceDetach(volume, from: other, name: name)
        }
        let age = heartbeat.age(of: holder, droplet: other)
        if mode == .lease, let age, age > configuration.leaseTTL {
            logger.warning(
                "The plugin on the droplet holding the volume has missed its heartbeat; taking the volume from there",
                metadata: [
                    "volume.name": "\(name)", "droplet.id": "\(other)", "lease.age.s": "\(Int(age.seconds))",
                    "lease.ttl.s": "\(Int(configuration.leaseTTL.seconds))",
                ])
            return try await forceDetach(volume, from: other, name: name)
        }
        logger.info(
            "Volume is attached to another droplet; waiting for it to be released",
            metadata: ["volume.name": "\(name)", "droplet.id": "\(other)", "lease.age.s": "\(age.map { "\(Int($0.seconds))" } ?? "none")"])
        let started = time.now()
        let deadline = time.limit(after: configuration.handoffTimeout, from: started)
        var interval = Duration.milliseconds(500)
        var current = other
        while true {
            let remaining = time.now().duration(to: deadline)
            if remaining <= .zero { break }
            try await time.sleep(min(interval, remaining))
            // Grows gently: each poll is one call out of the account's 250 a minute, and the holder may let go
            // at any moment.
            interval = min(interval * 3 / 2, .seconds(2))
            let now = try await cloud("read volume \(name)") { try await api.volume(id: volume.id) }
            guard let holderNow = now.dropletIDs.first else {
                logger.info(
                    "Volume released by the other droplet",
                    metadata: [
                        "volume.name": "\(name)", "droplet.id": "\(current)",
                        "wait.ms": "\(Int(started.duration(to: time.now()).milliseconds))",
                    ])
                return now
            }
            if holderNow == configuration.dropletID { return now }
            current = holderNow
        }
        let waited = Int(started.duration(to: time.now()).seconds.rounded())
        let stop = "stop the container using it on droplet \(current) (docker ps --filter volume=\(name))"
        let force = "or create the volume with -o takeover=always (or set TAKEOVER=always) to detach it by force (a "
            + "container still using it there loses its disk)"
        let why: String
        switch (mode, age) {
        case (.lease, let age?) where current == other:
            why = "its do_storage plugin is alive (heartbeat \(Int(max(age.seconds, 0)))s ago, taken over only after "
                + "\(Int(configuration.leaseTTL.seconds))s without one)"
        case (.lease, nil) where current == other:
            why = "it shows no do_storage heartbeat (an older plugin, or attached by hand), so it is treated as in use"
        default:
            why = "TAKEOVER is never"
        }
        throw VolumeError(
            .attachedElsewhere,
            "volume \(name) is attached to droplet \(current) and was not released within \(waited)s; \(why). "
                + "\(stop), \(force)")
    }

    /// Detaches the volume from another droplet and waits for DigitalOcean to confirm.
    func forceDetach(_ volume: Volume, from other: Int, name: String) async throws -> Volume {
        let deadline = time.limit(after: configuration.actionTimeout)
        do {
            let action = try await actions.post("detach", name: name, deadline: deadline) {
                try await api.detach(volumeID: volume.id, dropletID: other, region: configuration.region)
            }
            try await actions.wait(for: action, volumeID: volume.id, watch: nil, present: false, deadline: deadline, what: "detach", name: name)
        } catch let error as DOError where error.reason == .attachmentNotFound || error.code == .notFound {
            // Released meanwhile, or the droplet is gone and its volumes with it.
        } catch let error as DOError {
            throw VolumeError(.cloud, "cannot detach volume \(name) from droplet \(other): \(error)")
        }
        var released = volume
        released.dropletIDs = []
        return released
    }

    /// Attaches and waits for the action (asking again the moment `watch`'s device appears, when there is one).
    /// Returns true when this call attached it.
    func attach(_ volume: Volume, watch: (any DeviceWatch)?, name: String) async throws -> Bool {
        let me = configuration.dropletID
        let deadline = time.limit(after: configuration.actionTimeout)
        let action: Action
        do {
            action = try await actions.post("attach", name: name, deadline: deadline) {
                try await api.attach(volumeID: volume.id, dropletID: me, region: configuration.region)
            }
        } catch let error as DOError where error.reason == .alreadyAttached {
            // A retried attach whose first try went through, or a race: fine if it is attached here.
            let now = try await cloud("read volume \(name)") { try await api.volume(id: volume.id) }
            if now.dropletIDs.contains(me) { return true }
            throw VolumeError(
                .attachedElsewhere,
                "volume \(name) was attached to droplet \(now.dropletIDs.first.map(String.init) ?? "?") meanwhile; "
                    + "try again once it is released there")
        } catch let error as DOError where error.reason == .dropletVolumeLimit {
            throw VolumeError(
                .cloud,
                "cannot attach volume \(name): this droplet already has the most volumes DigitalOcean allows (15); "
                    + "stop containers using other volumes here, or run this one on another droplet")
        } catch let error as DOError {
            throw VolumeError(.cloud, "cannot attach volume \(name) to this droplet: \(error)")
        }
        logger.info(
            "Attach started", metadata: ["volume.name": "\(name)", "do.action.id": "\(action.id)", "droplet.id": "\(me)"])
        do {
            try await actions.wait(for: action, volumeID: volume.id, watch: watch, present: true, deadline: deadline, what: "attach", name: name)
        } catch {
            // The attach may still complete: release it then, so nothing stays attached here without a user.
            scheduleRelease(name: name, volumeID: volume.id, doName: volume.name, pending: action.id)
            throw error
        }
        return true
    }

    // MARK: Releases

    /// Releases a volume a failed Mount attached: at once while the Mount's deadline leaves time, else (or when that
    /// fails) in the background, so no attachment is left without a user.
    func release(volumeID: String, doName: String, name: String) async {
        guard configuration.detachOnUnmount else { return }
        do {
            try await detachHere(volumeID: volumeID, doName: doName, name: name)
        } catch {
            logger.warning(
                "Cannot release the volume after a failed mount yet; retrying in the background",
                metadata: ["volume.name": "\(name)", "error": "\(error)"])
            scheduleRelease(name: name, volumeID: volumeID, doName: doName)
        }
    }

    /// A release to try again: an unused volume still attached here.
    struct PendingRelease: Sendable {
        var name: String
        var volumeID: String
        var doName: String
        /// An attach action still in progress: the release waits until it has finished (a detach before then finds
        /// nothing to detach, and the attach would complete after it).
        var pending: Int?
    }

    /// Asks `retryReleases` to keep trying to release an unused volume: after 5 s, doubling to 60 s, 8 tries (about 6
    /// minutes), stopping as soon as the volume is in use here again or released. Outside any Mount's deadline.
    func scheduleRelease(name: String, volumeID: String, doName: String, pending: Int? = nil) {
        pendingReleases.withLock { $0.append(PendingRelease(name: name, volumeID: volumeID, doName: doName, pending: pending)) }
        releasesPending.fire()
    }

    /// Runs the releases `scheduleRelease` asks for, each on its own, until cancelled (the plugin stopping).
    func retryReleases() async {
        await withDiscardingTaskGroup { group in
            var seen = releasesPending.generation
            while !Task.isCancelled {
                for release in pendingReleases.withLock({ taken in defer { taken = [] }; return taken }) {
                    group.addTask {
                        if let pending = release.pending {
                            await self.actions.waitUntilFinished(actionID: pending, volumeID: release.volumeID)
                        }
                        await self.retryRelease(name: release.name, volumeID: release.volumeID, doName: release.doName)
                    }
                }
                await releasesPending.wait(after: seen)
                seen = releasesPending.generation
            }
        }
    }

    func retryRelease(name: String, volumeID: String, doName: String) async {
        var wait = configuration.releaseRetryInterval
        for attempt in 1...8 {
            do { try await time.sleep(wait) } catch { return }
            // Cancelled (the plugin stopping): stop trying.
            guard let finished = try? await volumeLocks.withLock(name, { () -> Bool in
                guard let record = registry[name], record.references.isEmpty, record.mountpoint == nil else {
                    return true
                }
                do {
                    try await detachHere(volumeID: volumeID, doName: doName, name: name)
                    return true
                } catch {
                    logger.warning(
                        "Releasing the volume failed again",
                        metadata: ["volume.name": "\(name)", "attempt": "\(attempt)", "error": "\(error)"])
                    return false
                }
            }) else { return }
            if finished { return }
            wait = min(wait * 2, .seconds(60))
        }
        logger.error("Gave up releasing the volume; it stays attached to this droplet", metadata: ["volume.name": "\(name)"])
    }

    /// Releases volumes that DigitalOcean shows attached here but that no container here holds: a plugin killed
    /// between an attach and its mount, or during an unmount, or a droplet rebooted. An attach requested before the
    /// plugin stopped may complete after it starts again: such a volume is watched (with polls growing to
    /// `maxPollInterval`) until it is attached, then released, or until the request can no longer complete: it was
    /// sent by the Mount's deadline at the latest (after waiting its turn behind the droplet's other actions), and
    /// takes at most `actionTimeout`. Only
    /// volumes in the registry are touched, and only with DETACH_ON_UNMOUNT. When DigitalOcean cannot be listed or
    /// a detach fails (an outage at start-up), it tries again, waiting twice as long each time up to a minute, until
    /// it has succeeded: an attachment is never left dangling for want of one call. Safe to run while serving: each
    /// volume's lock is held while it is looked at. Call once at start.
    func releaseUnused() async {
        guard configuration.detachOnUnmount else { return }
        var wait = configuration.initialPollInterval
        var retry = configuration.releaseRetryInterval
        while true {
            if await !releaseUnusedOnce() {
                do { try await time.sleep(retry) } catch { return }
                retry = min(retry * 2, .seconds(60))
                continue
            }
            let now = time.wallClock()
            var waiting = false
            for (name, record) in registry.records {
                guard let requested = record.attachRequested, record.references.isEmpty, record.mountpoint == nil else {
                    continue
                }
                // The request is noted before the Mount waits for its turn on the droplet's actions, and sent before
                // the Mount's deadline: DigitalOcean has finished it an action's time after that at the latest.
                if Duration.seconds(now.timeIntervalSince(requested)) > configuration.mountDeadline + configuration.actionTimeout {
                    // It never happened, or was released above.
                    registry.update(name) { $0.attachRequested = nil }
                    await registry.saveOrWarn(logger)
                } else {
                    waiting = true
                }
            }
            guard waiting else { return }
            do { try await time.sleep(wait) } catch { return }
            wait = min(wait * 2, configuration.maxPollInterval)
        }
    }

    /// One look: returns false when DigitalOcean could not be listed or a release failed, to be tried again.
    func releaseUnusedOnce() async -> Bool {
        let attachedHere: [Volume]
        do {
            attachedHere = try await api.volumes(named: nil, region: configuration.region)
                .filter { $0.dropletIDs.contains(configuration.dropletID) }
        } catch {
            logger.warning("Cannot list volumes to release unused attachments; trying again", metadata: ["error": "\(error)"])
            return false
        }
        var released = true
        for volume in attachedHere {
            // The record's volume, or another volume of its history a step held here (a branch it left).
            guard let name = registry.records.first(where: { $0.value.volumeID == volume.id || $0.value.doName == volume.name })?.key
                ?? VolumeNames.dockerName(fromTags: volume.tags).flatMap({ registry[$0] != nil ? $0 : nil })
            else { continue }
            try? await volumeLocks.withLock(name) {
                guard let record = registry[name], record.references.isEmpty, record.mountpoint == nil else { return }
                logger.notice("Releasing an attachment no container holds", metadata: ["volume.name": "\(name)"])
                do {
                    try await detachHere(volumeID: volume.id, doName: volume.name, name: name)
                    registry.update(name) { record in
                        record.attachRequested = nil
                        record.seen?.attachedTo = nil
                        record.seen?.device = nil
                    }
                    try await registry.save()
                } catch {
                    logger.warning("Cannot release attachment; trying again", metadata: ["volume.name": "\(name)", "error": "\(error)"])
                    released = false
                }
            }
        }
        return released
    }
}
