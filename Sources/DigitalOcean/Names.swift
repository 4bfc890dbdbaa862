/// DigitalOcean's rules for names.
public enum DigitalOceanNames {
    /// A volume name: `^[a-z][a-z0-9-]{0,63}$`.
    ///
    /// - Parameter name: A name to give a DigitalOcean volume.
    /// - Returns: Whether DigitalOcean takes it.
    public static func isValidVolumeName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= 64, isLower(first) else { return false }
        return bytes.allSatisfy { isLower($0) || isDigit($0) || $0 == UInt8(ascii: "-") }
    }

    /// The device link a droplet gets for an attached volume, under `/dev/disk/by-id`.
    ///
    /// - Parameter name: The DigitalOcean volume's name.
    /// - Returns: The link's name in `/dev/disk/by-id`.
    public static func deviceLinkName(forVolume name: String) -> String { "scsi-0DO_Volume_\(name)" }

    private static func isLower(_ byte: UInt8) -> Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) }
    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
}
