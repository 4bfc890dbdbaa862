import DigitalOcean
import Logging

/// A volume's life from Docker: Create (adopt or create on DigitalOcean, with options), the name mapping, and
/// Remove under its policy.
extension VolumeService {
    public func create(name: String, options: [String: String]) async throws {
        let options = try CreateOptions(parsing: options, defaultFilesystem: configuration.defaults.fstype)
        try await withinDockersDeadline { try await register(name, options: options, mayCreate: true) }
    }

    /// Makes `name` known here: adopts the DigitalOcean volume it maps to, or, with `mayCreate` and AUTO_CREATE,
    /// creates it.
    func register(_ name: String, options: CreateOptions, mayCreate: Bool) async throws {
        try VolumeNames.check(name)
        if let every = options.schedule?.every, every < configuration.snapshotMinInterval {
            throw VolumeError(
                .invalidOption,
                "snapshot_every=\(SnapshotSchedule.text(every)) is more often than this plugin allows "
                    + "(SNAPSHOT_MIN_INTERVAL=\(SnapshotSchedule.text(configuration.snapshotMinInterval)))")
        }
        try await volumeLocks.withLock(name) {
            // Docker retries Create, and swarm sends it for every task: a known volume is done.
            if registry[name] != nil { return }
            var (doName, existing) = try await finder.resolve(name)
            if existing == nil, let head = try await finder.branchedHead(of: name) {
                // A history whose first volume a reset replaced: its current branch.
                (doName, existing) = (head.name, head)
            }
            if let existing {
                if options.fromSnapshot != nil || options.cloneOf != nil,
                    !existing.tags.contains(where: { $0.hasPrefix(VolumeNames.originTagPrefix) })
                {
                    throw VolumeError(
                        .invalidOption,
                        "volume \(name) exists already on DigitalOcean (\(doName)), so it cannot be made from a snapshot; "
                            + "choose another name for the new volume")
                }
                try Provisioning.checkAdoption(existing, options: options, name: name)
                var existing = existing
                if let schedule = options.schedule, SnapshotSchedule(tags: existing.tags) != schedule {
                    existing.tags = try await provisioning.setSchedule(schedule, on: existing, name: name)
                }
                if let shown = DataDirectory(tags: existing.tags) {
                    let wanted = shown.overridden(by: options)
                    if wanted != shown {
                        // New owner or mode: applied at the volume's next Mount, on whichever droplet.
                        existing.tags = try await provisioning.retag(
                            existing, name: name, what: "data directory's owner and mode", replacing: wanted.tags,
                            DataDirectory.isOwnTag)
                    }
                }
                try await addRecord(name: name, doName: doName, volume: existing, options: options)
                logger.info("Volume registered", metadata: ["volume.name": "\(name)", "do.volume.id": "\(existing.id)"])
                return
            }
            guard mayCreate else { throw VolumeError(.notFound, "no such volume: \(name)") }
            guard configuration.defaults.autoCreate else {
                throw VolumeError(
                    .notFound,
                    "there is no DigitalOcean volume named \"\(doName)\" in region \(configuration.region); create it "
                        + "first, e.g. doctl compute volume create \(doName) --region \(configuration.region) "
                        + "--size 10GiB --fs-type ext4 (or set AUTO_CREATE=true to let do_storage create it)")
            }
            var options = options
            if options.onRemove == nil && VolumeNames.isAnonymous(name) {
                // Docker removes an anonymous volume with its container (run --rm, rm -v): one the plugin made for
                // it goes with it, instead of staying on DigitalOcean where nobody can name it.
                options.onRemove = .delete
            }
            var origin: Snapshot?
            var consistency: CloneConsistency?
            if let text = options.fromSnapshot {
                origin = try await snapshots.find(text)
            } else if let source = options.cloneOf {
                (origin, consistency) = try await snapshots.forClone(of: source, for: name, options: options)
            }
            var volume = try await provisioning.create(name: name, doName: doName, options: options, from: origin)
            if let size = options.sizeGiB { volume = try await actions.grow(volume, to: size, name: name) }
            try await addRecord(name: name, doName: doName, volume: volume, options: options)
            registry.update(name) { $0.cloneConsistency = consistency }
            if consistency != nil { try await registry.save() }
        }
    }

    public func remove(name: String) async throws {
        try await withinDockersDeadline { try await removeWithinDeadline(name: name) }
    }

    func removeWithinDeadline(name: String) async throws {
        try await volumeLocks.withLock(name) {
            guard let record = registry[name] else { return }
            if record.referenceCount > 0 {
                throw VolumeError(
                    .inUse,
                    "volume \(name) is in use by \(record.referenceCount) container mount(s) on this droplet; "
                        + "stop those containers first")
            }
            if let mountpoint = record.mountpoint {
                try await filesystems.unmountIfMounted(mountpoint, name: name)
                registry.update(name) { $0.mountpoint = nil }
            }
            if (record.onRemove ?? configuration.defaults.removePolicy) == .delete {
                try await provisioning.delete(name)
            } else if configuration.detachOnUnmount, record.seen?.attachedTo == configuration.dropletID
                || record.attachRequested != nil || registry[name]?.detachRequested != nil
            {
                // Its release may still be pending (a detach that failed at the last Unmount is retried in the
                // background, only while the volume is known here): once forgotten, nothing would release it.
                let volume = try await finder.current(name)
                if volume.dropletIDs.contains(configuration.dropletID) {
                    try await attachments.detachHere(volumeID: volume.id, doName: record.doName, name: name)
                }
            }
            registry.remove(name)
            try await registry.save()
            logger.info("Volume forgotten", metadata: ["volume.name": "\(name)"])
        }
    }

    /// Adds the volume to the registry under `name`, unless this droplet already knows it under another name.
    func addRecord(name: String, doName: String, volume: Volume, options: CreateOptions) async throws {
        if let other = registry.records.values.first(where: { $0.volumeID == volume.id || $0.doName == doName }) {
            throw VolumeError(
                .invalidName,
                "volume \(name) would be the DigitalOcean volume \(doName), which this droplet already knows as "
                    + "\"\(other.name)\"; use \(other.name) (one volume has one Docker name)")
        }
        var record = VolumeRecord(
            name: name, doName: doName, volumeID: volume.id, createdAt: time.wallClock(),
            mountOptions: options.mountOptions, onRemove: options.onRemove)
        record.formatAs = options.fstype
        record.formatLabel = options.label
        record.takeover = options.takeover
        record.saw(volume)
        registry.add(record)
        try await registry.save()
    }
}

extension VolumeRecord {
    /// Notes what DigitalOcean says of the volume now, for Status.
    mutating func saw(_ volume: Volume, device: String? = nil) {
        volumeID = volume.id
        seen = SeenVolume(
            sizeGiB: volume.sizeGigabytes, fstype: volume.filesystemType, attachedTo: volume.dropletIDs.first,
            device: device, createdByPlugin: volume.tags.contains(VolumeNames.markerTag))
        schedule = SnapshotSchedule(tags: volume.tags)
        dataDirectory = DataDirectory(tags: volume.tags)
        branch = volume.tags.contains(where: { $0.hasPrefix(History.branchTagPrefix) }) ? History.branch(of: volume) : nil
    }
}
