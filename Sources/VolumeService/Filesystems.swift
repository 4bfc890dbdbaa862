import Logging
import Synchronization
import Timekeeping

/// What a Mount learnt of a volume's filesystem, for its record.
struct MountedFilesystem: Sendable {
    var type: FilesystemType
    /// The filesystem's size as read before the mount.
    var bytes: UInt64?
    /// A growth tried on the way, and how it went.
    var growth: Growth?

    /// Notes it in the volume's record.
    func apply(to record: inout VolumeRecord) {
        record.seen?.fstype = type.rawValue
        record.seen?.filesystemBytes = bytes
        growth?.apply(to: &record)
    }
}

/// A growth of a filesystem to its device's size.
enum Growth: Sendable, Equatable {
    case grown(deviceBytes: UInt64)
    /// The message for Status (`last_error`).
    case failed(String)

    /// Notes it in the volume's record.
    func apply(to record: inout VolumeRecord) {
        switch self {
        case .grown(let bytes):
            record.lastError = nil
            record.seen?.sizeGiB = Int(bytes >> 30)
            record.seen?.filesystemBytes = bytes
        case .failed(let message):
            record.lastError = message
        }
    }
}

/// The filesystem on a volume's device: probed before every mount, made when the volume is truly blank and its
/// Create asked for one, grown to the volume's size (at Mount, and online when the device grows), and frozen for a
/// consistent snapshot. Returns what it learnt; the orchestration notes it in the registry.
final class Filesystems: Sendable {
    /// Below this, a device larger than its filesystem is not worth growing into (DigitalOcean grows by whole GiB).
    static let growthThreshold: UInt64 = 64 << 20

    private let configuration: ServiceConfiguration
    private let host: any HostFilesystem
    private let time: TimeSource
    private let logger: Logger
    /// Device sizes at which an online growth failed, by volume name: not tried again until the size changes.
    private let failedOnlineGrowth = Mutex<[String: UInt64]>([:])
    /// Filesystems frozen for a snapshot now, by volume name: an Unmount thaws them at once.
    private let activeFreezes = Mutex<[String: ThawOnce]>([:])

    init(configuration: ServiceConfiguration, host: any HostFilesystem, time: TimeSource, logger: Logger) {
        self.configuration = configuration
        self.host = host
        self.time = time
        self.logger = logger
    }

    /// Probes, formats a blank volume that asked for it, grows, and mounts `record`'s volume. Growth failures do not
    /// fail the Mount: they are logged and returned, for `lastError`.
    func mount(_ device: String, at mountpoint: String, record: VolumeRecord) async throws -> MountedFilesystem {
        let name = record.name
        let probed: String?
        do {
            probed = try await host.filesystemType(device: device)
        } catch {
            throw VolumeError(.mountFailed, "cannot read the filesystem of volume \(name) on \(device): \(error)")
        }
        let type: FilesystemType
        if let probed {
            guard let known = FilesystemType(rawValue: probed) else {
                throw VolumeError(
                    .mountFailed,
                    "volume \(name) holds \(probed), not an ext4 or xfs filesystem; nothing was mounted or written")
            }
            type = known
        } else {
            type = try await formatBlank(device, record: record)
        }
        var mounted = MountedFilesystem(type: type, bytes: record.seen?.filesystemBytes)
        do {
            mounted.bytes = try await host.sizes(device: device).filesystem
        } catch {
            logger.warning("Cannot read the filesystem's size", metadata: ["volume.name": "\(name)", "error": "\(error)"])
        }
        if type == .ext4 {
            mounted.growth = await grow(device, type: type, mountpoint: nil, filesystemBytes: mounted.bytes, name: name)
        }
        // An option for another filesystem (nobarrier from DEFAULT_MOUNTOPTS on an xfs volume) would fail the mount:
        // it is left out. Create refuses one given for the volume itself where the filesystem is known.
        let options = (record.mountOptions ?? configuration.defaults.mountOptions).filter { $0.onlyFor.map { $0 == type } ?? true }
        do {
            try await host.mount(device: device, at: mountpoint, type: type.rawValue, options: options)
        } catch {
            throw VolumeError(.mountFailed, "cannot mount volume \(name) (\(type) on \(device)) at \(mountpoint): \(error)")
        }
        if type == .xfs {
            mounted.growth = await grow(device, type: type, mountpoint: mountpoint, filesystemBytes: mounted.bytes, name: name)
        }
        do {
            try await prepareDataDirectory(record, at: mountpoint)
        } catch {
            try? await host.unmount(path: mountpoint)
            throw error
        }
        return mounted
    }

    /// Makes the data directory a volume's containers see, when it shows one and it is missing, and gives it the
    /// volume's owner and mode (see `DataDirectory`). On a read-only mount it only has to be there.
    func prepareDataDirectory(_ record: VolumeRecord, at mountpoint: String) async throws {
        guard let shown = record.dataDirectory else { return }
        let readOnly = (record.mountOptions ?? configuration.defaults.mountOptions).contains(.ro)
        let path = record.shownPath(mountpoint)
        do {
            try await host.prepareDirectory(
                path, uid: readOnly ? nil : shown.uid, gid: readOnly ? nil : shown.gid, mode: readOnly ? nil : shown.mode)
        } catch {
            let hint = readOnly ? "; it is mounted read-only (mountopts=ro): mount it once read-write to make it" : ""
            throw VolumeError(.mountFailed, "cannot prepare the data directory of volume \(record.name) (\(path)): \(error)\(hint)")
        }
    }

    /// Makes the filesystem the volume's Create asked for, only when the device is truly blank and as large as the
    /// volume. Otherwise fails, having written nothing. Returns the filesystem made.
    func formatBlank(_ device: String, record: VolumeRecord) async throws -> FilesystemType {
        let name = record.name
        // The path on the droplet itself, where the user runs mkfs (DEVICE_DIR is where the plugin sees it).
        let link = "/dev/disk/by-id/" + VolumeNames.deviceLinkName(for: record.doName)
        guard let wanted = record.formatAs else {
            throw VolumeError(
                .blankDevice,
                "volume \(name) has no filesystem; do_storage formats a volume only when its Create asked for one, so "
                    + "nothing is lost by mistake: docker volume rm \(name), then docker volume create -d <driver> "
                    + "-o fstype=ext4 \(name); or format it from a droplet it is attached to (mkfs.ext4 \(link))")
        }
        let check: BlankCheck
        do {
            check = try await host.checkBlank(device: device)
        } catch {
            throw VolumeError(.mountFailed, "cannot read volume \(name) on \(device) to check it is blank: \(error)")
        }
        if let found = check.found {
            throw VolumeError(
                .blankDevice,
                "volume \(name) has no filesystem do_storage can mount, but it is not blank (\(found)), so it was not "
                    + "formatted and nothing was written; inspect it with wipefs \(link) from the droplet")
        }
        let expected = UInt64(record.seen?.sizeGiB ?? 0) << 30
        guard expected > 0, check.sizeBytes == expected else {
            throw VolumeError(
                .blankDevice,
                "the device of volume \(name) has \(check.sizeBytes) bytes, not the volume's \(record.seen?.sizeGiB ?? 0) "
                    + "GiB, so it is not the volume it should be: it was not formatted and nothing was written")
        }
        do {
            try await host.format(device: device, type: wanted, label: record.formatLabel)
        } catch {
            throw VolumeError(.mountFailed, "cannot format volume \(name) as \(wanted.rawValue): \(error)")
        }
        logger.notice(
            "Formatted a blank volume as its Create asked",
            metadata: ["volume.name": "\(name)", "fs.type": "\(wanted.rawValue)", "device.path": "\(device)"])
        return wanted
    }

    /// Grows the filesystem when the device is larger than `filesystemBytes` by more than the threshold: ext4
    /// unmounted (`mountpoint` nil), xfs and ext4 online. Returns how it went, nil when there was nothing to grow;
    /// a failure is logged and returned, never thrown. An online growth that failed is not tried again until the
    /// device's size changes.
    func grow(
        _ device: String, type: FilesystemType, mountpoint: String?, filesystemBytes: UInt64?, name: String
    ) async -> Growth? {
        let deviceBytes: UInt64
        do {
            // The filesystem's size as read before the mount: a mounted filesystem's superblock on the device may
            // lag behind the kernel's.
            deviceBytes = try await host.sizes(device: device).device
            guard let filesystemBytes, deviceBytes > filesystemBytes + Self.growthThreshold else { return nil }
        } catch {
            logger.warning("Cannot read the volume's sizes", metadata: ["volume.name": "\(name)", "error": "\(error)"])
            return nil
        }
        if mountpoint != nil, failedOnlineGrowth.withLock({ $0[name] }) == deviceBytes { return nil }
        do {
            try await host.grow(device: device, type: type, mountpoint: mountpoint)
            failedOnlineGrowth.withLock { $0[name] = nil }
            logger.notice(
                "Filesystem grown to the volume's size",
                metadata: [
                    "volume.name": "\(name)", "fs.type": "\(type.rawValue)", "size.gib": "\(deviceBytes >> 30)",
                    "online": "\(mountpoint != nil)",
                ])
            return .grown(deviceBytes: deviceBytes)
        } catch {
            let later = mountpoint != nil && type == .ext4 ? "; it grows at the volume's next Mount" : ""
            let failure = "cannot grow the \(type.rawValue) filesystem to \(deviceBytes >> 30) GiB: \(error)\(later)"
            if mountpoint != nil { failedOnlineGrowth.withLock { $0[name] = deviceBytes } }
            logger.warning("Cannot grow the filesystem", metadata: ["volume.name": "\(name)", "error": "\(failure)"])
            return .failed(failure)
        }
    }

    /// Whether something is mounted at `mountpoint`.
    func isMounted(_ mountpoint: String) async throws -> Bool {
        try await host.mounts(under: mountpoint).contains { $0.mountpoint == mountpoint }
    }

    /// Unmounts `mountpoint` when something is mounted there.
    func unmountIfMounted(_ mountpoint: String, name: String) async throws {
        guard try await isMounted(mountpoint) else { return }
        do {
            try await host.unmount(path: mountpoint)
        } catch {
            throw VolumeError(.unmountFailed, "cannot unmount volume \(name) at \(mountpoint): \(error)")
        }
    }

    // MARK: Freezing

    /// Thaws the filesystem of `name` at once if a snapshot holds it frozen: an Unmount does not wait for it.
    func thawNow(_ name: String) async {
        await activeFreezes.withLock { $0[name] }?.run()
    }

    /// Runs `body` with the filesystem at `mountpoint` frozen, and thaws it when `body` ends or at `freezeLimit`,
    /// whichever comes first: a request still running then is cancelled, and the snapshot fails (one made after
    /// the thaw would not be consistent: it is handed to `abandoned`, to be deleted).
    func frozen<T: Sendable>(
        _ mountpoint: String, name: String, _ body: @escaping @Sendable () async throws -> T,
        abandoned: (T) async -> Void
    ) async throws -> T {
        do {
            try await host.freeze(mountpoint: mountpoint)
        } catch {
            throw VolumeError(.cloud, "cannot freeze volume \(name) for a consistent snapshot: \(error)")
        }
        let started = time.now()
        let limit = configuration.freezeLimit
        let thawOnce = ThawOnce { await self.thaw(mountpoint, name: name) }
        activeFreezes.withLock { $0[name] = thawOnce }
        defer { activeFreezes.withLock { $0[name] = nil } }
        // The request against the freeze limit and an Unmount: whoever ends first thaws, and a request still
        // running then is cancelled.
        let time = self.time
        let result = await withTaskGroup(of: FreezeOutcome<T>.self) { group -> Result<T, any Error> in
            group.addTask {
                do {
                    let bound = Deadline.bounding(started.advanced(by: limit))
                    return .answered(.success(try await Deadline.$current.withValue(bound) { try await body() }))
                } catch {
                    return .answered(.failure(error))
                }
            }
            group.addTask {
                do { try await time.sleep(limit) } catch { return .stopped }
                return .thaw
            }
            group.addTask {
                await thawOnce.waitUntilThawed()
                return Task.isCancelled ? .stopped : .thaw
            }
            while let outcome = await group.next() {
                switch outcome {
                case .answered(let result):
                    group.cancelAll()
                    return result
                case .thaw:
                    await thawOnce.run()
                    group.cancelAll()
                case .stopped:
                    continue
                }
            }
            return .failure(CancellationError())
        }
        let inTime = await thawOnce.run()
        let frozenFor = started.duration(to: time.now())
        guard inTime else {
            if case .success(let late) = result { await abandoned(late) }
            throw VolumeError(
                .cloud,
                "the snapshot of volume \(name) was abandoned: its filesystem was thawed before DigitalOcean answered "
                    + "(after \(Int(frozenFor.seconds))s; at most \(Int(limit.seconds))s, or sooner when the volume is "
                    + "unmounted); try again")
        }
        logger.info(
            "Snapshot taken with the filesystem frozen",
            metadata: ["volume.name": "\(name)", "frozen.ms": "\(Int(frozenFor.milliseconds))"])
        return try result.get()
    }

    /// Thaws, retrying: a filesystem left frozen blocks every writer on it.
    func thaw(_ mountpoint: String, name: String) async {
        for attempt in 1...5 {
            do {
                try await host.thaw(mountpoint: mountpoint)
                return
            } catch {
                logger.error(
                    "Cannot thaw the filesystem; trying again",
                    metadata: ["volume.name": "\(name)", "attempt": "\(attempt)", "error": "\(error)"])
                // Kept trying even when the task is cancelled: a frozen filesystem must not stay so.
                try? await time.sleep(.milliseconds(100 * attempt))
            }
        }
    }
}

/// How a frozen request's race ended: its answer, the thaw, or a racer stopped.
private enum FreezeOutcome<T: Sendable>: Sendable {
    case answered(Result<T, any Error>)
    case thaw
    case stopped
}

/// Thaws once, from whichever of the request, the freeze limit and an Unmount gets there first.
actor ThawOnce {
    private var done = false
    private let thaw: @Sendable () async -> Void
    private let thawed = EventSignal()

    init(_ thaw: @escaping @Sendable () async -> Void) { self.thaw = thaw }

    /// Thaws unless already thawed; returns whether this call did it.
    @discardableResult
    func run() async -> Bool {
        guard !done else { return false }
        done = true
        await thaw()
        thawed.fire()
        return true
    }

    /// Returns once thawed, or when the task is cancelled.
    nonisolated func waitUntilThawed() async { await thawed.wait(after: 0) }
}
