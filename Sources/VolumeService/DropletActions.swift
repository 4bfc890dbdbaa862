import DigitalOcean
import Logging
import Timekeeping

/// DigitalOcean's actions on this droplet's volumes (attach, detach, resize): posted one at a time (DigitalOcean
/// allows one pending event per droplet), retried while the droplet has another pending, and followed to their end,
/// with the device they make appear or disappear.
struct DropletActions: Sendable {
    let configuration: ServiceConfiguration
    let api: any VolumeAPI
    let time: TimeSource
    let logger: Logger
    /// This droplet's own actions, one at a time.
    private let lock: AsyncKeyedLock

    init(configuration: ServiceConfiguration, api: any VolumeAPI, time: TimeSource, logger: Logger) {
        self.configuration = configuration
        self.api = api
        self.time = time
        self.logger = logger
        lock = AsyncKeyedLock(time: time) { "this droplet's \($0)" }
    }

    /// Runs `body` while no other action of this droplet's is posted or followed.
    func oneAtATime<T: Sendable>(
        isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T
    ) async throws -> T {
        try await lock.withLock("actions", body)
    }

    /// Posts an action, retrying while the droplet has a pending event. Other DigitalOcean errors are rethrown.
    func post(
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
    func wait(
        for action: Action, volumeID: String, watch: (any DeviceWatch)?, present: Bool, deadline: ContinuousClock.Instant,
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

    /// Polls an action until it is no longer in progress (at most the action timeout, five times over).
    func waitUntilFinished(actionID: Int, volumeID: String) async {
        let deadline = time.now().advanced(by: configuration.actionTimeout * 5)
        var interval = configuration.initialPollInterval
        while time.now() < deadline {
            do { try await time.sleep(interval) } catch { return }
            if let action = try? await api.action(volumeID: volumeID, actionID: actionID), action.status != .inProgress {
                return
            }
            interval = min(interval * 2, configuration.maxPollInterval)
        }
    }

    /// The device node of an attached volume, once its link appears; fails after `deviceTimeout`.
    func device(_ watch: any DeviceWatch, name: String) async throws -> String {
        let started = time.now()
        let deadline = time.limit(after: configuration.deviceTimeout, from: started)
        if await watch.wait(present: true, within: time.remaining(until: deadline)), let device = watch.current() {
            return device
        }
        throw VolumeError(
            .deviceTimeout,
            "volume \(name) is attached to this droplet but its device did not appear within "
                + "\(Int(started.duration(to: time.now()).seconds.rounded()))s in \(configuration.deviceDirectory); check that udev "
                + "is running and that DEVICE_DIR is the folder udev makes its scsi-0DO_Volume_ links in "
                + "(/dev/disk/by-id on a droplet)")
    }

    /// Where udev links the device of the DigitalOcean volume `doName`.
    func deviceLink(_ doName: String) -> String {
        configuration.deviceDirectory + "/" + VolumeNames.deviceLinkName(for: doName)
    }

    /// Grows a volume just made from a snapshot to the size its Create asked for (DigitalOcean makes it as large as
    /// the snapshot); its filesystem grows at the first Mount.
    func grow(_ volume: Volume, to size: Int, name: String) async throws -> Volume {
        guard size > volume.sizeGigabytes else { return volume }
        let deadline = time.limit(after: configuration.actionTimeout)
        do {
            let action = try await post("resize", name: name, deadline: deadline) {
                try await api.resize(volumeID: volume.id, sizeGigabytes: size, region: configuration.region)
            }
            try await wait(for: action, volumeID: volume.id, watch: nil, present: true, deadline: deadline, what: "resize", name: name)
        } catch let error as DOError {
            throw VolumeError(.cloud, "volume \(name) was made from its snapshot but could not be grown to \(size) GiB: \(error)")
        }
        var grown = volume
        grown.sizeGigabytes = size
        return grown
    }
}
