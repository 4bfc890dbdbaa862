import DigitalOcean
import Logging
import Timekeeping

/// Bringing a volume to this droplet and releasing it: DigitalOcean actions, the hand-off between droplets, and the
/// device that follows an attach.
extension VolumeService {
    /// Makes the volume attached here with its device present. Returns the volume as it is now, the device node, and
    /// whether this call attached it (so a failed mount can release it again).
    func bringHere(_ name: String) async throws -> (volume: Volume, device: String, attachedByUs: Bool) {
        let record = try knownRecord(name)
        let me = configuration.dropletID
        var volume = try await currentVolume(name)
        let watch = devices.watch(path: deviceLink(record.doName))
        if volume.dropletIDs.contains(me), registry[name]?.detachRequested != nil {
            // A detach asked for before (by a plugin killed before it completed) may still be under way and would
            // take the disk from under this mount: it is seen through first, and the volume attached anew.
            logger.notice("A detach of the volume may still be under way; detaching before attaching again", metadata: ["volume.name": "\(name)"])
            try await detachHere(volumeID: volume.id, doName: record.doName, name: name)
            volume.dropletIDs = []
        }
        if volume.dropletIDs.contains(me) {
            logger.debug("Volume already attached here", metadata: ["volume.name": "\(name)"])
            return (volume, try await waitForDevice(watch, name: name), false)
        }
        await renewHeartbeatIfDue()
        if let other = volume.dropletIDs.first {
            volume = try await takeFrom(droplet: other, volume: volume, name: name, mode: record.takeover ?? configuration.takeover)
        }
        // Written before the request: a plugin killed from here on finds it at its next start.
        registry.update(name) { $0.attachRequested = time.wallClock() }
        try await persist()
        let attached = try await dropletLock.withLock("actions") {
            try await attach(volume, watch: watch, name: name)
        }
        volume.dropletIDs = [me]
        do {
            return (volume, try await waitForDevice(watch, name: name), attached)
        } catch {
            if attached { await release(volumeID: volume.id, doName: record.doName, name: name) }
            throw error
        }
    }

    /// Detaches the volume from this droplet and waits until the action completes and the device is gone.
    /// Already detached is success.
    /// The request is noted in the volume's record before it is sent, and cleared once the volume is detached: a
    /// plugin killed meanwhile knows at its next Mount that a detach may still be under way.
    func detachHere(volumeID: String, doName: String, name: String) async throws {
        let me = configuration.dropletID
        let watch = devices.watch(path: deviceLink(doName))
        if registry.update(name, { $0.detachRequested = time.wallClock() }) != nil {
            try await persist()
        }
        try await dropletLock.withLock("actions") {
            let deadline = limit(after: configuration.actionTimeout)
            let action: Action
            do {
                action = try await postAction("detach", name: name, deadline: deadline) {
                    try await api.detach(volumeID: volumeID, dropletID: me, region: configuration.region)
                }
            } catch let error as DOError where error.reason == .attachmentNotFound {
                logger.debug("Volume was not attached here", metadata: ["volume.name": "\(name)"])
                return
            } catch let error as DOError {
                throw VolumeError(.cloud, "cannot detach volume \(name) from this droplet: \(error)")
            }
            try await waitForAction(action, volumeID: volumeID, watch: watch, present: false, deadline: deadline, what: "detach", name: name)
            if !(await watch.wait(present: false, within: remaining(until: limit(after: configuration.deviceTimeout)))) {
                logger.warning("Device still present after the detach completed", metadata: ["volume.name": "\(name)"])
            }
        }
        if registry[name]?.detachRequested != nil {
            registry.update(name) { $0.detachRequested = nil }
            try await persist()
        }
        logger.info("Volume detached", metadata: ["volume.name": "\(name)", "droplet.id": "\(me)"])
    }

    // MARK: Steps

    /// The volume as DigitalOcean has it now: by id when known, else by name (a volume deleted and re-created
    /// out of band gets a new id, so a 404 by id falls back to the name).
    func currentVolume(_ name: String) async throws -> Volume {
        let record = try knownRecord(name)
        if let id = record.volumeID {
            do {
                return try await api.volume(id: id)
            } catch let error as DOError where error.code == .notFound {
                logger.notice("Volume id no longer exists; looking the name up again", metadata: ["volume.name": "\(name)"])
                registry.update(name) { $0.volumeID = nil }
                negativeLookups.forget(record.doName)
            } catch let error as DOError {
                throw VolumeError(.cloud, "cannot read volume \(name) from DigitalOcean: \(error)")
            }
        }
        let doName = record.doName
        guard let volume = try await lookUp(doName: doName, name: name) else {
            throw VolumeError(
                .notFound,
                "the DigitalOcean volume \(doName) does not exist in region \(configuration.region); "
                    + "create it, or docker volume rm \(name)")
        }
        registry.update(name) { $0.volumeID = volume.id }
        return volume
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
        let holder = await holder(other)
        if !holder.isRunning {
            logger.warning(
                "The droplet holding the volume is not running; detaching it from there",
                metadata: ["volume.name": "\(name)", "droplet.id": "\(other)", "droplet.status": "\(holder.status)"])
            return try await forceDetach(volume, from: other, name: name)
        }
        let age = heartbeatAge(of: holder, droplet: other)
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
        let deadline = limit(after: configuration.handoffTimeout, from: started)
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
        let deadline = limit(after: configuration.actionTimeout)
        do {
            let action = try await postAction("detach", name: name, deadline: deadline) {
                try await api.detach(volumeID: volume.id, dropletID: other, region: configuration.region)
            }
            try await waitForAction(action, volumeID: volume.id, watch: nil, present: false, deadline: deadline, what: "detach", name: name)
        } catch let error as DOError where error.reason == .attachmentNotFound || error.code == .notFound {
            // Released meanwhile, or the droplet is gone and its volumes with it.
        } catch let error as DOError {
            throw VolumeError(.cloud, "cannot detach volume \(name) from droplet \(other): \(error)")
        }
        var released = volume
        released.dropletIDs = []
        return released
    }

    /// Attaches and waits for the action. Returns true when this call attached it.
    func attach(_ volume: Volume, watch: any DeviceWatch, name: String) async throws -> Bool {
        let me = configuration.dropletID
        let deadline = limit(after: configuration.actionTimeout)
        let action: Action
        do {
            action = try await postAction("attach", name: name, deadline: deadline) {
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
            try await waitForAction(action, volumeID: volume.id, watch: watch, present: true, deadline: deadline, what: "attach", name: name)
        } catch {
            // The attach may still complete: release it then, so nothing stays attached here without a user.
            scheduleRelease(name: name, volumeID: volume.id, doName: volume.name, pending: action.id)
            throw error
        }
        return true
    }

    /// Posts an action, retrying while the droplet has a pending event. Other DigitalOcean errors are rethrown.
    func postAction(
        _ what: String, name: String, deadline: ContinuousClock.Instant, _ post: () async throws -> Action
    ) async throws -> Action {
        var wait = Duration.milliseconds(500)
        while true {
            do {
                return try await post()
            } catch let error as DOError where error.reason == .pendingEvent {
                if time.now().advanced(by: wait) > deadline {
                    throw VolumeError(
                        .actionFailed,
                        "cannot \(what) volume \(name): the droplet kept another action pending (\(error.message)); "
                            + "try again when it has finished")
                }
                logger.info(
                    "Droplet has a pending event; retrying",
                    metadata: ["volume.name": "\(name)", "wait.ms": "\(Int(wait.milliseconds))"])
                try await time.sleep(wait)
                wait = min(wait * 2, .seconds(4))
            }
        }
    }

    /// Waits for an action to complete. Polls with a growing interval, and — when a device watch is given — asks
    /// once more the moment the device appears (or disappears), so the device event, not the poll interval, sets
    /// the pace.
    func waitForAction(
        _ action: Action, volumeID: String, watch: (any DeviceWatch)?, present: Bool, deadline: ContinuousClock.Instant,
        what: String, name: String
    ) async throws {
        let started = time.now()
        var current = action
        var interval = configuration.initialPollInterval
        var deviceSettled = false
        var polls = 0
        while true {
            switch current.status {
            case .completed:
                logger.info(
                    "Action completed",
                    metadata: [
                        "volume.name": "\(name)", "do.action.id": "\(action.id)", "do.action.type": "\(what)",
                        "polls": "\(polls)", "duration.ms": "\(Int(started.duration(to: time.now()).milliseconds))",
                    ])
                return
            case .errored:
                throw VolumeError(
                    .actionFailed,
                    "DigitalOcean reports that the \(what) of volume \(name) failed (action \(action.id)); try again, "
                        + "and if it keeps failing check the volume in the DigitalOcean control panel")
            case .inProgress:
                break
            }
            let remaining = time.now().duration(to: deadline)
            if remaining <= .zero {
                throw VolumeError(
                    .actionFailed,
                    "the \(what) of volume \(name) (action \(action.id)) did not finish within "
                        + "\(Int(started.duration(to: time.now()).seconds.rounded()))s; DigitalOcean may be slow: try again")
            }
            let wait = min(interval, remaining)
            if let watch, !deviceSettled {
                deviceSettled = await watch.wait(present: present, within: wait)
                // The watch answers at once once the task is cancelled: without this, a cancelled wait would poll
                // DigitalOcean in a tight loop until the action ended.
                try Task.checkCancellation()
            } else {
                try await time.sleep(wait)
            }
            current = try await cloud("check the \(what) of volume \(name)") {
                try await api.action(volumeID: volumeID, actionID: action.id)
            }
            polls += 1
            interval = min(interval * 2, configuration.maxPollInterval)
        }
    }

    func waitForDevice(_ watch: any DeviceWatch, name: String) async throws -> String {
        let started = time.now()
        let deadline = limit(after: configuration.deviceTimeout, from: started)
        if await watch.wait(present: true, within: remaining(until: deadline)), let device = watch.current() {
            return device
        }
        throw VolumeError(
            .deviceTimeout,
            "volume \(name) is attached to this droplet but its device did not appear within "
                + "\(Int(started.duration(to: time.now()).seconds.rounded()))s in \(configuration.deviceDirectory); check that udev "
                + "is running and that DEVICE_DIR is the folder udev makes its scsi-0DO_Volume_ links in "
                + "(/dev/disk/by-id on a droplet)")
    }

    /// `duration` after `start` (default now), or the Mount's deadline when that comes first.
    func limit(after duration: Duration, from start: ContinuousClock.Instant? = nil) -> ContinuousClock.Instant {
        Deadline.bounding((start ?? time.now()).advanced(by: duration))
    }

    /// The time left until `instant`; zero once it has passed.
    func remaining(until instant: ContinuousClock.Instant) -> Duration {
        max(time.now().duration(to: instant), .zero)
    }

    func deviceLink(_ doName: String) -> String {
        configuration.deviceDirectory + "/" + VolumeNames.deviceLinkName(for: doName)
    }
}
