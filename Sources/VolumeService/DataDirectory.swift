/// What a container sees of a volume's filesystem.
///
/// A volume do_storage makes shows its container the directory `data` at the filesystem's root, made at the first
/// Mount: empty at first use, as a Docker local volume is, so that Docker copies an image's files into it and
/// programs that want an empty data directory (Postgres' initdb, MySQL's --initialize) take it. The filesystem's own
/// `lost+found`, which mkfs puts at the root and `e2fsck` puts back, stays out of sight. Such a volume carries the
/// tag `do-storage-data` on DigitalOcean, and its owner and mode as tags too (`do-storage-uid:1000`,
/// `do-storage-gid:1000`, `do-storage-mode:0750`), so every droplet shows it the same way.
///
/// A volume without the tag (made by hand, by doctl, by another plugin, or by do_storage before it showed the data
/// directory) shows its filesystem's root, exactly as it holds it.
public struct DataDirectory: Sendable, Codable, Equatable {
    /// The directory's name at the filesystem's root.
    public static let name = "data"
    /// The tag that says the volume shows its data directory.
    public static let tag = "do-storage-data"
    static let uidTagPrefix = "do-storage-uid:"
    static let gidTagPrefix = "do-storage-gid:"
    static let modeTagPrefix = "do-storage-mode:"
    /// The mode of a data directory made without `-o mode=`: a Docker local volume's.
    public static let defaultMode: UInt32 = 0o755

    /// `-o uid=`: the directory's owner, applied at every Mount; nil: root at first, then whatever a container set.
    public var uid: UInt32?
    /// `-o gid=`: the directory's group, the same way.
    public var gid: UInt32?
    /// `-o mode=`: the directory's permission bits, the same way; nil: 0755 at first.
    public var mode: UInt32?

    public init(uid: UInt32? = nil, gid: UInt32? = nil, mode: UInt32? = nil) {
        self.uid = uid
        self.gid = gid
        self.mode = mode
    }

    /// The volume's data directory as its DigitalOcean tags describe it; nil when it shows its filesystem's root.
    ///
    /// - Parameter tags: A DigitalOcean volume's (or volume snapshot's) tags.
    public init?(tags: [String]) {
        guard tags.contains(Self.tag) else { return nil }
        func value(_ prefix: String, radix: Int) -> UInt32? {
            tags.first { $0.hasPrefix(prefix) }.flatMap { UInt32($0.dropFirst(prefix.count), radix: radix) }
        }
        uid = value(Self.uidTagPrefix, radix: 10)
        gid = value(Self.gidTagPrefix, radix: 10)
        mode = value(Self.modeTagPrefix, radix: 8).map { $0 & 0o7777 }
    }

    /// The tags that record it on DigitalOcean.
    public var tags: [String] {
        [Self.tag] + [uid.map { Self.uidTagPrefix + String($0) }, gid.map { Self.gidTagPrefix + String($0) },
                      mode.map { Self.modeTagPrefix + Self.octal($0) }].compactMap { $0 }
    }

    /// Whether a tag is one of these.
    static func isOwnTag(_ tag: String) -> Bool {
        tag == Self.tag || tag.hasPrefix(uidTagPrefix) || tag.hasPrefix(gidTagPrefix) || tag.hasPrefix(modeTagPrefix)
    }

    /// This, with what `options` says instead where it says something.
    func overridden(by options: CreateOptions) -> DataDirectory {
        DataDirectory(uid: options.uid ?? uid, gid: options.gid ?? gid, mode: options.mode ?? mode)
    }

    /// `0750`: permission bits as `chmod` and `-o mode=` write them.
    public static func octal(_ mode: UInt32) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// The owner and mode as Status shows them: `1000:1000 0750`, with `-` for what a container decides.
    var statusText: String {
        "\(uid.map(String.init) ?? "-"):\(gid.map(String.init) ?? "-") \(mode.map(Self.octal) ?? "-")"
    }
}

extension VolumeRecord {
    /// What Docker gets as the volume's path when its filesystem is mounted at `mountpoint`: the data directory, or
    /// the filesystem's root.
    func shownPath(_ mountpoint: String) -> String {
        dataDirectory == nil ? mountpoint : mountpoint + "/" + DataDirectory.name
    }
}
