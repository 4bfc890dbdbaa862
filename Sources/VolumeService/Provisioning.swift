import DigitalOcean
import Logging

/// Volumes on DigitalOcean as Docker's Create and Remove need them: created (blank, or from a snapshot) with the
/// tags that carry the Docker name, the data directory and the schedule; an existing one checked against the
/// options given and retagged; deleted under the remove policy.
struct Provisioning: Sendable {
    let configuration: ServiceConfiguration
    let api: any VolumeAPI
    let registry: VolumeRegistry
    let finder: VolumeFinder
    let attachments: Attachments
    let logger: Logger

    /// Creates the volume in this droplet's region, formatted by DigitalOcean, with the marker tag and the tag that
    /// records the Docker name. When another droplet created it at the same moment (409), theirs is used.
    /// With `snapshot`, the volume is made from it: it holds the snapshot's filesystem and is as large as the
    /// snapshot's volume was (a larger `size` is reached by `grow` after), in this droplet's region only.
    func create(
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
            try Self.checkDataDirectoryOptions(options, origin: snapshot.tags, what: "from_snapshot=\(snapshot.name)")
            request.tags = (request.tags ?? []) + (DataDirectory(tags: snapshot.tags)?.overridden(by: options).tags ?? [])
                + [VolumeNames.originTagPrefix + snapshot.id]
        } else {
            request.tags = (request.tags ?? []) + DataDirectory().overridden(by: options).tags
        }
        do {
            let volume = try await api.createVolume(request)
            finder.forget(doName: doName)
            logger.info(
                "Volume created on DigitalOcean",
                metadata: [
                    "volume.name": "\(name)", "do.volume.id": "\(volume.id)", "do.volume.name": "\(doName)",
                    "size.gib": "\(volume.sizeGigabytes)", "fs.type": "\(volume.filesystemType)",
                    "do.snapshot.id": "\(snapshot?.id ?? "")",
                ])
            return volume
        } catch let error as DOError where error.code == .conflict {
            finder.forget(doName: doName)
            guard let volume = try await finder.lookUp(doName: doName) else {
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
    func delete(_ name: String) async throws {
        guard let record = registry[name] else { return }
        let volume: Volume
        do {
            volume = try await finder.current(name)
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
            try await attachments.detachHere(volumeID: volume.id, doName: record.doName, name: name)
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

    /// Puts a schedule on an existing volume: its tags change, so it follows the volume. Returns the new tags.
    func setSchedule(_ schedule: SnapshotSchedule, on volume: Volume, name: String) async throws -> [String] {
        try await retag(volume, name: name, what: "snapshot schedule", replacing: schedule.tags) {
            $0.hasPrefix(SnapshotSchedule.everyTagPrefix) || $0.hasPrefix(SnapshotSchedule.keepTagPrefix)
        }
    }

    /// Options that contradict an existing volume change nothing and fail.
    static func checkAdoption(_ volume: Volume, options: CreateOptions, name: String) throws {
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
    static func checkDataDirectoryOptions(_ options: CreateOptions, origin tags: [String], what: String) throws {
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
}
