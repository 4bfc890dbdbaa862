import DigitalOcean

/// Names: Docker's on one side, DigitalOcean's on the other, and the tags that tie them.
///
/// A Docker name that is a valid DigitalOcean name is used as it is. Any other maps deterministically, the same on
/// every droplet: lowercased, `_` and `.` read as `-` (so compose's and stack's `<project>_<volume>` finds
/// `<project>-<volume>`). Where that is not a valid DigitalOcean name, or is the name of a volume recorded for
/// another Docker name, the name gets a suffix from a hash of the Docker name: `-` and 8 hex digits of its 64-bit
/// FNV-1a, after at most 55 characters of the mapped name (`v` in front when it does not start with a letter).
/// Volumes this plugin creates carry the Docker name in a tag (`do-storage-name:<name>`, with `.` written as `:`),
/// so every droplet maps them back.
public enum VolumeNames {
    /// The tag on every volume this plugin created.
    public static let markerTag = "do-storage"
    /// Tags that start so are the plugin's own; users cannot give them.
    public static let reservedTagPrefix = "do-storage"
    /// The tag that records the Docker name.
    static let nameTagPrefix = "do-storage-name:"
    /// The tag on a volume made from a snapshot: `do-storage-origin:<snapshot id>`.
    public static let originTagPrefix = "do-storage-origin:"
    /// The longest Docker name, in bytes: the name tag holds it within DigitalOcean's 255.
    public static let maxDockerNameBytes = 255 - nameTagPrefix.utf8.count

    /// Docker's rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), at most `maxDockerNameBytes`. Such a name cannot leave
    /// `MOUNT_ROOT`: it has no `/` and is never `.` or `..`.
    ///
    /// - Parameter name: A Docker volume name, as Docker sent it.
    /// - Returns: Whether the plugin takes the name.
    public static func isValidDockerName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= maxDockerNameBytes, isAlphanumeric(first) else { return false }
        return bytes.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    /// Docker's name for an anonymous volume: 64 lowercase hex digits.
    ///
    /// - Parameter name: A Docker volume name.
    /// - Returns: Whether Docker made the name up for an anonymous volume.
    public static func isAnonymous(_ name: String) -> Bool {
        name.utf8.count == 64 && name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// The DigitalOcean name to try first (nil when the mapped name is not a valid one), and the hashed name to use
    /// when the first is invalid or taken by another Docker name.
    ///
    /// - Parameter dockerName: A valid Docker volume name.
    /// - Returns: The mapped name, nil when it is no valid DigitalOcean name, and the hashed name.
    public static func candidates(for dockerName: String) -> (preferred: String?, hashed: String) {
        let mapped = self.mapped(dockerName)
        return (DigitalOceanNames.isValidVolumeName(mapped) ? mapped : nil, hashedName(for: dockerName))
    }

    /// Whether the Docker name is used on DigitalOcean as it is.
    ///
    /// - Parameter dockerName: A Docker volume name.
    /// - Returns: Whether the DigitalOcean volume has the same name.
    public static func isUsedAsIs(_ dockerName: String) -> Bool { DigitalOceanNames.isValidVolumeName(dockerName) }

    /// `<mapped name, at most 55>-<8 hex digits>`.
    ///
    /// - Parameter dockerName: A valid Docker volume name.
    /// - Returns: A valid DigitalOcean volume name that ends in the name's hash.
    public static func hashedName(for dockerName: String) -> String {
        var base = String(mapped(dockerName).prefix(55))
        if let first = base.utf8.first, !(first >= UInt8(ascii: "a") && first <= UInt8(ascii: "z")) {
            base = "v" + base.prefix(54)
        }
        let hex = String(fnv1a64(dockerName) >> 32, radix: 16)
        return base + "-" + String(repeating: "0", count: 8 - hex.count) + hex
    }

    /// The tag that records `dockerName` on its DigitalOcean volume.
    ///
    /// - Parameter dockerName: A valid Docker volume name.
    /// - Returns: The tag, within DigitalOcean's 255 characters.
    public static func nameTag(for dockerName: String) -> String {
        nameTagPrefix + String(dockerName.map { $0 == "." ? ":" : $0 })
    }

    /// The Docker name a volume's tags record, if any.
    ///
    /// - Parameter tags: A DigitalOcean volume's tags.
    /// - Returns: The Docker name its name tag records; nil when it has none.
    public static func dockerName(fromTags tags: [String]) -> String? {
        guard let tag = tags.first(where: { $0.hasPrefix(nameTagPrefix) }) else { return nil }
        return String(tag.dropFirst(nameTagPrefix.count).map { $0 == ":" ? "." : $0 })
    }

    /// The device link DigitalOcean gives an attached volume.
    ///
    /// - Parameter doName: The DigitalOcean volume's name.
    /// - Returns: The link's name in `/dev/disk/by-id`.
    public static func deviceLinkName(for doName: String) -> String { DigitalOceanNames.deviceLinkName(forVolume: doName) }

    // MARK: Helpers

    /// Lowercased, `_` and `.` read as `-`.
    static func mapped(_ dockerName: String) -> String {
        String(dockerName.lowercased().map { $0 == "_" || $0 == "." ? "-" : $0 })
    }

    static func fnv1a64(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
    }
}
