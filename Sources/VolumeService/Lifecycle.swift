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
        try checkDockerName(name)
        if let every = options.schedule?.every, every < configuration.snapshotMinInterval {
            throw VolumeError(
                .invalidOption,
                "snapshot_every=\(SnapshotSchedule.text(every)) is more often than this plugin allows "
                    + "(SNAPSHOT_MIN_INTERVAL=\(SnapshotSchedule.text(configuration.snapshotMinInterval)))")
        }
        try await volumeLocks.withLock(name) {
            // Docker retries Create, and swarm sends it for every task: a known volume is done.
            if registry[name] != nil { return }
            let (doName, existing) = try await resolve(name)
            if let existing {
                if options.fromSnapshot != nil || options.cloneOf != nil,
                    !existing.tags.contains(where: { $0.hasPrefix(VolumeNames.originTagPrefix) })
                {
                    throw VolumeError(
                        .invalidOption,
                        "volume \(name) exists already on DigitalOcean (\(doName)), so it cannot be made from a snapshot; "
                            + "choose another name for the new volume")
                }
                try checkAdoption(existing, options: options, name: name)
                var existing = existing
                if let schedule = options.schedule, SnapshotSchedule(tags: existing.tags) != schedule {
                    existing.tags = try await setSchedule(schedule, on: existing, name: name)
                }
                if let shown = DataDirectory(tags: existing.tags) {
                    let wanted = shown.overridden(by: options)
                    if wanted != shown {
                        // New owner or mode: applied at the volume's next Mount, on whichever droplet.
                        existing.tags = try await retag(
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
                origin = try await findSnapshot(text)
            } else if let source = options.cloneOf {
                (origin, consistency) = try await cloneSnapshot(of: source, for: name, options: options)
            }
            var volume = try await createOnDigitalOcean(name: name, doName: doName, options: options, from: origin)
            if let size = options.sizeGiB { volume = try await grow(volume, to: size, name: name) }
            try await addRecord(name: name, doName: doName, volume: volume, options: options)
            registry.update(name) { $0.cloneConsistency = consistency }
            if consistency != nil { try await persist() }
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
                try await unmountIfMounted(mountpoint, name: name)
                registry.update(name) { $0.mountpoint = nil }
            }
            if (record.onRemove ?? configuration.defaults.removePolicy) == .delete {
                try await deleteOnDigitalOcean(name)
            } else if configuration.detachOnUnmount, record.seen?.attachedTo == configuration.dropletID
                || record.attachRequested != nil || registry[name]?.detachRequested != nil
            {
                // Its release may still be pending (a detach that failed at the last Unmount is retried in the
                // background, only while the volume is known here): once forgotten, nothing would release it.
                let volume = try await currentVolume(name)
                if volume.dropletIDs.contains(configuration.dropletID) {
                    try await detachHere(volumeID: volume.id, doName: record.doName, name: name)
                }
            }
            registry.remove(name)
            try await persist()
            logger.info("Volume forgotten", metadata: ["volume.name": "\(name)"])
        }
    }

    // MARK: Names

    /// The DigitalOcean name for a Docker name, and the volume by that name when there is one (see `VolumeNames`).
    /// A name taken by another Docker name's volume is refused when the Docker name is used as it is, and skipped
    /// for the hashed name otherwise.
    func resolve(_ name: String) async throws -> (doName: String, volume: Volume?) {
        let (preferred, hashed) = VolumeNames.candidates(for: name)
        if let preferred {
            let volume = try await lookUp(doName: preferred, name: name)
            let owner = volume.flatMap { VolumeNames.dockerName(fromTags: $0.tags) }
            if owner == nil || owner == name { return (preferred, volume) }
            if VolumeNames.isUsedAsIs(name), let owner {
                throw VolumeError(
                    .invalidName,
                    "the DigitalOcean volume \(preferred) belongs to the Docker volume \"\(owner)\"; use that name, or "
                        + "choose another name for a new volume")
            }
        }
        let volume = try await lookUp(doName: hashed, name: name)
        if let owner = volume.flatMap({ VolumeNames.dockerName(fromTags: $0.tags) }), owner != name {
            throw VolumeError(
                .invalidName,
                "the Docker names \"\(name)\" and \"\(owner)\" both map to the DigitalOcean volume \(hashed); "
                    + "choose another name")
        }
        return (hashed, volume)
    }

    func checkDockerName(_ name: String) throws {
        guard VolumeNames.isValidDockerName(name) else {
            throw VolumeError(
                .invalidName,
                "\"\(name)\" is not a volume name: use letters, digits, \"_\", \".\" and \"-\", starting with a letter "
                    + "or digit, at most \(VolumeNames.maxDockerNameBytes) characters")
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
        try await persist()
    }

    /// Options that contradict an existing volume change nothing and fail.
    func checkAdoption(_ volume: Volume, options: CreateOptions, name: String) throws {
        // A smaller size is the one it was made with before a resize (compose files keep it): that is no contradiction.
        if let size = options.sizeGiB, size > volume.sizeGigabytes {
            throw VolumeError(
                .invalidOption,
                "size=\(size)GiB contradicts the existing DigitalOcean volume \(volume.name), which has "
                    + "\(volume.sizeGigabytes) GiB and is never resized silently; grow it with doctl compute "
                    + "volume-action resize (do_storage then grows its filesystem), or leave size out to use it")
        }
        if let existing = FilesystemType(rawValue: volume.filesystemType),
            let option = options.mountOptions?.first(where: { $0.onlyFor.map { $0 != existing } ?? false })
        {
            throw VolumeError(
                .invalidOption,
                "mountopts=\(options.mountOptions!.map(\.rawValue).joined(separator: ",")): \"\(option.rawValue)\" applies to "
                    + "\(option.onlyFor!.rawValue) only, and the existing DigitalOcean volume \(volume.name) is \(existing.rawValue); "
                    + "leave it out")
        }
        if options.setsDataDirectory, DataDirectory(tags: volume.tags) == nil {
            throw VolumeError(
                .invalidOption,
                "uid, gid and mode apply to volumes do_storage makes, whose containers see a data directory of their "
                    + "own; the existing DigitalOcean volume \(volume.name) shows its filesystem's root as it holds it, "
                    + "and do_storage changes nothing there: leave the options out, and set the owner from a container "
                    + "(docker run --rm -v \(name):/v busybox chown 1000:1000 /v)")
        }
        if let fstype = options.fstype, !volume.filesystemType.isEmpty, fstype.rawValue != volume.filesystemType {
            throw VolumeError(
                .invalidOption,
                "fstype=\(fstype.rawValue) contradicts the existing DigitalOcean volume \(volume.name), formatted "
                    + "\(volume.filesystemType); leave fstype out to use it")
        }
    }

    /// uid, gid and mode for a volume made from a snapshot whose volume showed its filesystem's root: refused.
    func checkDataDirectoryOptions(_ options: CreateOptions, origin tags: [String], what: String) throws {
        guard options.setsDataDirectory, DataDirectory(tags: tags) == nil else { return }
        throw VolumeError(
            .invalidOption,
            "uid, gid and mode do not apply with \(what): the new volume holds a filesystem whose root its containers "
                + "see as it is (its origin was not made by do_storage), and do_storage changes nothing there; leave "
                + "them out")
    }

    /// Replaces the volume's tags that `isReplaced` picks with `tags`, on DigitalOcean. Returns the new tags.
    func retag(
        _ volume: Volume, name: String, what: String, replacing tags: [String], _ isReplaced: (String) -> Bool
    ) async throws -> [String] {
        let old = volume.tags.filter(isReplaced)
        try await cloud("set the \(what) of volume \(name)") {
            for tag in tags where !volume.tags.contains(tag) {
                try await api.createTag(name: tag)
                try await api.tagVolume(id: volume.id, with: tag)
            }
            for tag in old where !tags.contains(tag) {
                try await api.untagVolume(id: volume.id, from: tag)
            }
        }
        return volume.tags.filter { !old.contains($0) } + tags
    }

    // MARK: DigitalOcean

    /// Creates the volume in this droplet's region, formatted by DigitalOcean, with the marker tag and the tag that
    /// records the Docker name. When another droplet created it at the same moment (409), theirs is used.
    /// With `snapshot`, the volume is made from it: it holds the snapshot's filesystem and is as large as the
    /// snapshot's volume was (a larger `size` is reached by `grow` after), in this droplet's region only.
    func createOnDigitalOcean(
        name: String, doName: String, options: CreateOptions, from snapshot: Snapshot? = nil
    ) async throws -> Volume {
        let defaults = configuration.defaults
        let fstype = options.fstype ?? defaults.fstype
        var request = VolumeCreateRequest(
            name: doName, sizeGigabytes: options.sizeGiB ?? defaults.sizeGiB, region: configuration.region,
            description: options.description, filesystemType: fstype.rawValue, filesystemLabel: options.label,
            tags: options.tags + [VolumeNames.markerTag, VolumeNames.nameTag(for: name)] + (options.schedule?.tags ?? []))
        if let snapshot {
            guard snapshot.regions.contains(configuration.region) else {
                throw VolumeError(
                    .invalidOption,
                    "snapshot \(snapshot.name) (\(snapshot.id)) is in \(snapshot.regions.joined(separator: ", ")), not in this "
                        + "droplet's region \(configuration.region); a volume is made from a snapshot in its own region")
            }
            if let size = options.sizeGiB, size < snapshot.minDiskSize {
                throw VolumeError(
                    .invalidOption,
                    "size=\(size)GiB is smaller than snapshot \(snapshot.name), which needs \(snapshot.minDiskSize) GiB; "
                        + "leave size out, or give at least \(snapshot.minDiskSize)GiB")
            }
            request.sizeGigabytes = snapshot.minDiskSize
            request.snapshotID = snapshot.id
            request.filesystemType = nil
            request.filesystemLabel = nil
            // The new volume shows what its origin showed: the data directory (with the owner and mode given now,
            // or the origin's), or its filesystem's root.
            try checkDataDirectoryOptions(options, origin: snapshot.tags, what: "from_snapshot=\(snapshot.name)")
            request.tags = (request.tags ?? []) + (DataDirectory(tags: snapshot.tags)?.overridden(by: options).tags ?? [])
                + [VolumeNames.originTagPrefix + snapshot.id]
        } else {
            request.tags = (request.tags ?? []) + DataDirectory().overridden(by: options).tags
        }
        do {
            let volume = try await api.createVolume(request)
            negativeLookups.forget(doName)
            logger.info(
                "Volume created on DigitalOcean",
                metadata: [
                    "volume.name": "\(name)", "do.volume.id": "\(volume.id)", "do.volume.name": "\(doName)",
                    "size.gib": "\(volume.sizeGigabytes)", "fs.type": "\(volume.filesystemType)",
                    "do.snapshot.id": "\(snapshot?.id ?? "")",
                ])
            return volume
        } catch let error as DOError where error.code == .conflict {
            negativeLookups.forget(doName)
            guard let volume = try await lookUp(doName: doName, name: name) else {
                throw VolumeError(.cloud, "cannot create volume \(name): \(error)")
            }
            let owner = VolumeNames.dockerName(fromTags: volume.tags)
            guard owner == nil || owner == name else {
                throw VolumeError(
                    .invalidName, "the DigitalOcean volume \(doName) was just created for the Docker volume \"\(owner ?? "")\"")
            }
            logger.info("Volume created by another droplet meanwhile; using it", metadata: ["volume.name": "\(name)"])
            return volume
        } catch let error as DOError {
            throw VolumeError(.cloud, "cannot create volume \(name) (\(doName), \(request.sizeGigabytes) GiB) on DigitalOcean: \(error)")
        }
    }

    /// Detaches the volume from this droplet if it is attached here, then deletes it on DigitalOcean. Only volumes
    /// this plugin created, or given `onremove=delete`; another droplet's attachment refuses. Snapshots stay.
    func deleteOnDigitalOcean(_ name: String) async throws {
        guard let record = registry[name] else { return }
        let volume: Volume
        do {
            volume = try await currentVolume(name)
        } catch let error as VolumeError where error.code == .notFound {
            logger.notice("Volume already gone from DigitalOcean", metadata: ["volume.name": "\(name)"])
            return
        }
        let marked = volume.tags.contains(VolumeNames.markerTag)
        guard marked || record.onRemove == .delete else {
            logger.notice(
                "REMOVE_POLICY=delete spares a volume this plugin did not create; it stays on DigitalOcean",
                metadata: ["volume.name": "\(name)", "do.volume.id": "\(volume.id)"])
            return
        }
        if let other = volume.dropletIDs.first, other != configuration.dropletID {
            throw VolumeError(
                .inUse,
                "volume \(name) is attached to droplet \(other), so it is not deleted; stop the containers using it "
                    + "there first (docker ps --filter volume=\(name) on droplet \(other))")
        }
        if volume.dropletIDs.contains(configuration.dropletID) {
            try await detachHere(volumeID: volume.id, doName: record.doName, name: name)
        }
        do {
            try await api.deleteVolume(id: volume.id)
        } catch let error as DOError where error.code == .notFound {
            return
        } catch let error as DOError {
            throw VolumeError(.cloud, "cannot delete volume \(name) on DigitalOcean: \(error)")
        }
        logger.notice("Volume deleted on DigitalOcean", metadata: ["volume.name": "\(name)", "do.volume.id": "\(volume.id)"])
    }

    /// Grows a volume just made from a snapshot to the size its Create asked for (DigitalOcean makes it as large as
    /// the snapshot); its filesystem grows at the first Mount.
    func grow(_ volume: Volume, to size: Int, name: String) async throws -> Volume {
        guard size > volume.sizeGigabytes else { return volume }
        let deadline = limit(after: configuration.actionTimeout)
        do {
            let action = try await postAction("resize", name: name, deadline: deadline) {
                try await api.resize(volumeID: volume.id, sizeGigabytes: size, region: configuration.region)
            }
            try await waitForAction(action, volumeID: volume.id, watch: nil, present: true, deadline: deadline, what: "resize", name: name)
        } catch let error as DOError {
            throw VolumeError(.cloud, "volume \(name) was made from its snapshot but could not be grown to \(size) GiB: \(error)")
        }
        var grown = volume
        grown.sizeGigabytes = size
        return grown
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
    }
}
