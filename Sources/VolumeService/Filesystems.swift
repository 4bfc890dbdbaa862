import Logging

/// The filesystem on a volume's device: probed before every mount, made when the volume is truly blank and its
/// Create asked for one, and grown to the volume's size (at Mount, and online when the device grows).
extension VolumeService {
    /// Below this, a device larger than its filesystem is not worth growing into (DigitalOcean grows by whole GiB).
    static let growthThreshold: UInt64 = 64 << 20

    /// Probes, formats a blank volume that asked for it, grows, and mounts. Growth failures do not fail the Mount:
    /// they are logged and kept in `lastError`.
    func mountDevice(_ device: String, at mountpoint: String, name: String) async throws {
        let record = try knownRecord(name)
        let probed: String?
        do {
            probed = try await filesystem.filesystemType(device: device)
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
        registry.update(name) { $0.seen?.fstype = type.rawValue }
        do {
            let bytes = try await filesystem.sizes(device: device).filesystem
            registry.update(name) { $0.seen?.filesystemBytes = bytes }
        } catch {
            logger.warning("Cannot read the filesystem's size", metadata: ["volume.name": "\(name)", "error": "\(error)"])
        }
        if type == .ext4 { await growIfNeeded(device, type: type, mountpoint: nil, name: name) }
        // An option for another filesystem (nobarrier from DEFAULT_MOUNTOPTS on an xfs volume) would fail the mount:
        // it is left out. Create refuses one given for the volume itself where the filesystem is known.
        let options = (record.mountOptions ?? configuration.defaults.mountOptions).filter { $0.onlyFor.map { $0 == type } ?? true }
        do {
            try await filesystem.mount(device: device, at: mountpoint, type: type.rawValue, options: options)
        } catch {
            throw VolumeError(.mountFailed, "cannot mount volume \(name) (\(type) on \(device)) at \(mountpoint): \(error)")
        }
        if type == .xfs { await growIfNeeded(device, type: type, mountpoint: mountpoint, name: name) }
        do {
            try await prepareDataDirectory(registry[name] ?? record, at: mountpoint)
        } catch {
            try? await filesystem.unmount(path: mountpoint)
            throw error
        }
    }

    /// Makes the data directory a volume's containers see, when it shows one and it is missing, and gives it the
    /// volume's owner and mode (see `DataDirectory`). On a read-only mount it only has to be there.
    func prepareDataDirectory(_ record: VolumeRecord, at mountpoint: String) async throws {
        guard let shown = record.dataDirectory else { return }
        let readOnly = (record.mountOptions ?? configuration.defaults.mountOptions).contains(.ro)
        let path = record.shownPath(mountpoint)
        do {
            try await filesystem.prepareDirectory(
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
            check = try await filesystem.checkBlank(device: device)
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
            try await filesystem.format(device: device, type: wanted, label: record.formatLabel)
        } catch {
            throw VolumeError(.mountFailed, "cannot format volume \(name) as \(wanted.rawValue): \(error)")
        }
        logger.notice(
            "Formatted a blank volume as its Create asked",
            metadata: ["volume.name": "\(name)", "fs.type": "\(wanted.rawValue)", "device.path": "\(device)"])
        return wanted
    }

    /// Grows the filesystem when the device is larger by more than the threshold: ext4 unmounted (`mountpoint`
    /// nil), xfs and ext4 online. A failure is logged and kept in `lastError`, never thrown.
    func growIfNeeded(_ device: String, type: FilesystemType, mountpoint: String?, name: String) async {
        let deviceBytes: UInt64
        do {
            // The filesystem's size as read before the mount: a mounted filesystem's superblock on the device may
            // lag behind the kernel's.
            deviceBytes = try await filesystem.sizes(device: device).device
            guard let filesystemBytes = registry[name]?.seen?.filesystemBytes, deviceBytes > filesystemBytes + Self.growthThreshold
            else { return }
        } catch {
            logger.warning("Cannot read the volume's sizes", metadata: ["volume.name": "\(name)", "error": "\(error)"])
            return
        }
        if mountpoint != nil, failedOnlineGrowth[name] == deviceBytes { return }
        do {
            try await filesystem.grow(device: device, type: type, mountpoint: mountpoint)
            failedOnlineGrowth[name] = nil
            registry.update(name) { record in
                record.lastError = nil
                record.seen?.sizeGiB = Int(deviceBytes >> 30)
                record.seen?.filesystemBytes = deviceBytes
            }
            logger.notice(
                "Filesystem grown to the volume's size",
                metadata: [
                    "volume.name": "\(name)", "fs.type": "\(type.rawValue)", "size.gib": "\(deviceBytes >> 30)",
                    "online": "\(mountpoint != nil)",
                ])
        } catch {
            let later = mountpoint != nil && type == .ext4 ? "; it grows at the volume's next Mount" : ""
            let failure = "cannot grow the \(type.rawValue) filesystem to \(deviceBytes >> 30) GiB: \(error)\(later)"
            registry.update(name) { $0.lastError = failure }
            if mountpoint != nil { failedOnlineGrowth[name] = deviceBytes }
            logger.warning("Cannot grow the filesystem", metadata: ["volume.name": "\(name)", "error": "\(failure)"])
        }
    }

    /// Grows mounted volumes whose devices grew (a resize on DigitalOcean), on each device event, until cancelled.
    /// Start it once with the service; it never makes a Mount or Unmount wait longer than one growth.
    public func growOnDeviceEvents() async {
        var count = devices.eventCount
        while !Task.isCancelled {
            count = await devices.nextEvent(after: count)
            if Task.isCancelled { return }
            for name in registry.records.keys.sorted() where registry[name]?.mountpoint != nil {
                // Only cancellation ends the wait for the lock, and with it the loop.
                try? await volumeLocks.withLock(name) {
                    guard let before = registry[name], let mountpoint = before.mountpoint,
                        let device = before.seen?.device, let type = before.seen.flatMap({ FilesystemType(rawValue: $0.fstype) })
                    else { return }
                    await growIfNeeded(device, type: type, mountpoint: mountpoint, name: name)
                    guard registry[name] != before else { return }
                    do {
                        try await persist()
                    } catch {
                        logger.warning("Cannot save the state after a growth", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }
}
