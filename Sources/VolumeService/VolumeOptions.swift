import DigitalOcean
import Timekeeping

/// A filesystem do_storage mounts, and DigitalOcean formats a new volume with.
public enum FilesystemType: String, Sendable, Codable, CaseIterable {
    case ext4, xfs

    /// The longest filesystem label, in bytes (DigitalOcean's and mkfs's limit).
    public var maxLabelBytes: Int { self == .ext4 ? 16 : 12 }
}

/// What `docker volume rm` does on DigitalOcean.
public enum RemovePolicy: String, Sendable, Codable, CaseIterable {
    /// Forget the volume on this droplet; it stays on DigitalOcean. The default.
    case retain
    /// Detach it and delete it on DigitalOcean (only volumes this plugin created, or given `onremove=delete`).
    case delete
}

/// Mount options a volume may ask for (`-o mountopts=`), and what each means to mount(2).
public enum MountOption: String, Sendable, Codable, CaseIterable {
    case ro, nosuid, nodev, noexec, noatime, nodiratime, relatime, strictatime, lazytime, discard, nobarrier

    /// Options only some filesystems take.
    public var onlyFor: FilesystemType? { self == .nobarrier ? .ext4 : nil }

    /// Parses `noatime,discard`: every name from the allow-list, none twice. Throws naming the first bad one.
    ///
    /// - Parameters:
    ///   - text: The option's value, names separated by commas.
    ///   - option: The option's name, for the error.
    ///   - fstype: The volume's filesystem, where known: options it does not take are refused.
    /// - Returns: The options, in the order given.
    /// - Throws: `VolumeError` `.invalidOption`, naming the bad name and the allowed ones.
    public static func parseList(_ text: String, option: String, fstype: FilesystemType?) throws(VolumeError) -> [MountOption] {
        var result: [MountOption] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: true).map({ $0.trimmedWhitespace }) {
            guard let value = MountOption(rawValue: item.lowercased()) else {
                throw VolumeError(
                    .invalidOption,
                    "\(option)=\(text): \"\(item)\" is not an allowed mount option; use a comma-separated list of "
                        + allCases.map(\.rawValue).joined(separator: ", "))
            }
            if let only = value.onlyFor, let fstype, fstype != only {
                throw VolumeError(.invalidOption, "\(option)=\(text): \"\(item)\" applies to \(only.rawValue) only, not \(fstype.rawValue)")
            }
            if !result.contains(value) { result.append(value) }
        }
        return result
    }
}

/// The plugin-wide defaults for new volumes (settable in config.json).
public struct VolumeDefaults: Sendable, Equatable {
    /// `AUTO_CREATE`: create a volume DigitalOcean lacks. Default true.
    public var autoCreate: Bool
    /// `DEFAULT_SIZE`. Default 10 GiB.
    public var sizeGiB: Int
    /// `DEFAULT_FSTYPE`. Default ext4.
    public var fstype: FilesystemType
    /// `DEFAULT_MOUNTOPTS`. Default none.
    public var mountOptions: [MountOption]
    /// `REMOVE_POLICY`. Default retain.
    public var removePolicy: RemovePolicy

    public init(
        autoCreate: Bool = true, sizeGiB: Int = 10, fstype: FilesystemType = .ext4, mountOptions: [MountOption] = [],
        removePolicy: RemovePolicy = .retain
    ) {
        self.autoCreate = autoCreate
        self.sizeGiB = sizeGiB
        self.fstype = fstype
        self.mountOptions = mountOptions
        self.removePolicy = removePolicy
    }
}

/// The options of `docker volume create -o KEY=VALUE` (compose `driver_opts:`, swarm `volume-opt=`), validated.
/// An option not given is nil: the plugin-wide default applies, or the existing volume's value.
public struct CreateOptions: Sendable, Equatable {
    public var sizeGiB: Int?
    public var fstype: FilesystemType?
    public var label: String?
    public var description: String?
    public var tags: [String] = []
    public var mountOptions: [MountOption]?
    public var onRemove: RemovePolicy?
    /// What a Mount here does when the volume is attached to another droplet; nil: the plugin-wide `TAKEOVER`.
    public var takeover: Takeover?
    /// A new volume from this volume snapshot (its id, or its name).
    public var fromSnapshot: String?
    /// A new volume from a snapshot taken now of this Docker volume (frozen when it is mounted here).
    public var cloneOf: String?
    /// `snapshot_every` and `snapshot_keep`: snapshots on a schedule, with retention.
    public var schedule: SnapshotSchedule?
    /// `uid`, `gid` and `mode`: the owner and permission bits of the data directory a container sees (see
    /// `DataDirectory`).
    public var uid: UInt32?
    public var gid: UInt32?
    public var mode: UInt32?

    /// Whether any of `uid`, `gid` and `mode` was given.
    public var setsDataDirectory: Bool { uid != nil || gid != nil || mode != nil }

    /// Every option's name, as the errors list them.
    public static let names = [
        "size", "fstype", "fslabel", "description", "tags", "mountopts", "onremove", "takeover", "from_snapshot", "clone_of",
        "snapshot_every", "snapshot_keep", "uid", "gid", "mode",
    ]

    /// The smallest and largest volume DigitalOcean makes, in GiB.
    public static let sizeRange = 1...16384

    public init() {}

    /// Reads and checks Docker's `Opts`. Throws a `VolumeError` (`.invalidOption`) naming the option, the value and
    /// the accepted form; an unknown option's error lists the accepted ones.
    ///
    /// - Parameters:
    ///   - options: `docker volume create -o key=value` options, as Docker sends them.
    ///   - defaultFilesystem: The filesystem when `fstype` is not given (the plugin's `DEFAULT_FSTYPE`).
    /// - Throws: `VolumeError` `.invalidOption`, naming the option, its bad value and what it takes.
    public init(parsing options: [String: String], defaultFilesystem: FilesystemType = .ext4) throws(VolumeError) {
        let unknown = options.keys.filter { !Self.names.contains($0.lowercased()) }.sorted()
        if let first = unknown.first {
            throw VolumeError(
                .invalidOption,
                "unknown volume option \"\(first)\"; do_storage accepts \(Self.names.joined(separator: ", "))")
        }
        var values: [String: String] = [:]
        for (key, value) in options { values[key.lowercased()] = value.trimmedWhitespace }

        if let text = values["size"] {
            guard let size = Self.gibibytes(text), Self.sizeRange.contains(size) else {
                throw VolumeError(
                    .invalidOption,
                    "size=\(text) is not a volume size: use whole GiB from 1 to 16384, as 20, 20G, 20GiB, 1T or 1TiB")
            }
            sizeGiB = size
        }
        if let text = values["fstype"] {
            guard let type = FilesystemType(rawValue: text.lowercased()) else {
                throw VolumeError(.invalidOption, "fstype=\(text) is not supported: use ext4 or xfs")
            }
            fstype = type
        }
        if let text = values["fslabel"] {
            let type = fstype ?? defaultFilesystem
            guard !text.isEmpty, text.utf8.count <= type.maxLabelBytes,
                text.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 32 && $0.value < 127 && $0 != "," })
            else {
                throw VolumeError(
                    .invalidOption,
                    "fslabel=\(text) is not a \(type.rawValue) label: at most \(type.maxLabelBytes) printable ASCII "
                        + "characters, no spaces or commas")
            }
            label = text
        }
        if let text = values["description"] {
            guard text.count <= 1024 else {
                throw VolumeError(.invalidOption, "description is \(text.count) characters long; DigitalOcean takes at most 1024")
            }
            description = text
        }
        if let text = values["tags"] {
            let items = text.split(separator: ",", omittingEmptySubsequences: true).map { $0.trimmedWhitespace }
            for tag in items where !Self.isValidTag(tag) || tag.hasPrefix(VolumeNames.reservedTagPrefix) {
                throw VolumeError(
                    .invalidOption,
                    "tags=\(text): \"\(tag)\" is not a DigitalOcean tag: letters, digits, \"_\", \"-\" and \":\", "
                        + "at most 255 characters, not starting with \"\(VolumeNames.reservedTagPrefix)\"")
            }
            tags = items
        }
        if let text = values["mountopts"] {
            mountOptions = try MountOption.parseList(text, option: "mountopts", fstype: fstype ?? defaultFilesystem)
        }
        if let text = values["onremove"] {
            guard let policy = RemovePolicy(rawValue: text.lowercased()) else {
                throw VolumeError(.invalidOption, "onremove=\(text) is not a remove policy: use retain or delete")
            }
            onRemove = policy
        }
        if let text = values["takeover"] {
            guard let mode = Takeover(rawValue: text.lowercased()) else {
                throw VolumeError(.invalidOption, "takeover=\(text) is not a takeover mode: use never, lease or always")
            }
            takeover = mode
        }
        if let text = values["from_snapshot"] {
            guard !text.isEmpty, text.utf8.count <= 255 else {
                throw VolumeError(.invalidOption, "from_snapshot needs a volume snapshot's id or name")
            }
            fromSnapshot = text
        }
        if let text = values["clone_of"] {
            guard VolumeNames.isValidDockerName(text) else {
                throw VolumeError(.invalidOption, "clone_of=\(text) is not a Docker volume name")
            }
            cloneOf = text
        }
        if let text = values["snapshot_every"] {
            guard let every = Duration(parsing: text), every > .zero, every <= .seconds(366 * 86400) else {
                throw VolumeError(.invalidOption, "snapshot_every=\(text) is not a duration: use e.g. 6h, 30m or 1d")
            }
            let keep = try values["snapshot_keep"].map { text throws(VolumeError) in try SnapshotRetention(parsing: text) }
            schedule = SnapshotSchedule(every: every, keep: keep ?? SnapshotSchedule.defaultKeep)
        } else if values["snapshot_keep"] != nil {
            throw VolumeError(.invalidOption, "snapshot_keep needs snapshot_every: how often to take the snapshots it keeps")
        }
        for option in ["uid", "gid"] {
            guard let text = values[option] else { continue }
            guard !text.isEmpty, text.count <= 10, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                let id = UInt32(text), id != UInt32.max
            else {
                let what = option == "uid" ? "user" : "group"
                throw VolumeError(
                    .invalidOption,
                    "\(option)=\(text) is not a \(what) id: use a number from 0 to 4294967294, as id -\(option.prefix(1)) prints it "
                        + "inside the container's image (names mean nothing on the host)")
            }
            if option == "uid" { uid = id } else { gid = id }
        }
        if let text = values["mode"] {
            guard (3...4).contains(text.count), text.utf8.allSatisfy({ $0 >= 48 && $0 <= 55 }), let bits = UInt32(text, radix: 8)
            else {
                throw VolumeError(
                    .invalidOption,
                    "mode=\(text) is not a permission mode: use 3 or 4 octal digits as chmod takes them, e.g. 0750, 0770 or 2775")
            }
            mode = bits
        }
        if fromSnapshot != nil || cloneOf != nil {
            let given = fromSnapshot != nil ? "from_snapshot" : "clone_of"
            if fromSnapshot != nil && cloneOf != nil {
                throw VolumeError(.invalidOption, "from_snapshot and clone_of cannot go together: a volume has one origin")
            }
            if fstype != nil || label != nil {
                throw VolumeError(
                    .invalidOption,
                    "fstype and fslabel do not apply with \(given): the new volume holds the snapshot's filesystem")
            }
        }
    }

    /// `20`, `20G`, `20GB`, `20GiB` (GiB), `1T`, `1TB`, `1TiB` (TiB); any case. Nil when it is none of these.
    ///
    /// - Parameter text: A size as a user writes it.
    /// - Returns: The size in GiB; nil when the text is no size.
    public static func gibibytes(_ text: String) -> Int? {
        let lower = text.lowercased()
        let units: [(suffix: String, scale: Int)] = [
            ("gib", 1), ("gb", 1), ("g", 1), ("tib", 1024), ("tb", 1024), ("t", 1024), ("", 1),
        ]
        for unit in units where lower.hasSuffix(unit.suffix) {
            let digits = lower.dropLast(unit.suffix.count).trimmedWhitespace
            guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), digits.count <= 9,
                let number = Int(digits)
            else { continue }
            return number * unit.scale
        }
        return nil
    }

    /// A DigitalOcean tag name: `^[a-zA-Z0-9_\-:]{1,255}$`.
    ///
    /// - Parameter tag: A tag a user gave.
    /// - Returns: Whether DigitalOcean takes it.
    public static func isValidTag(_ tag: String) -> Bool { TagCreateRequest.isValid(name: tag) }
}
