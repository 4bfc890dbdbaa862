import Configuration
import DigitalOcean
import FoundationEssentials
import Glibc
import Logging
import Timekeeping
import TypedErrors
import VolumeService

/// Every setting of the plugin, read from the environment (a managed plugin's `docker plugin set` values).
/// The README's configuration table lists the same names and defaults.
public struct PluginSettings: Sendable, Equatable {
    /// `ACCESS_TOKEN`: a DigitalOcean personal access token. Without it the plugin answers every call with an error
    /// saying how to set it.
    public var accessToken: String?
    /// `DO_API_URL`, default `https://api.digitalocean.com`.
    public var apiURL = "https://api.digitalocean.com"
    /// `DO_METADATA_URL`, default `http://169.254.169.254/metadata/v1`.
    public var metadataURL = "http://169.254.169.254/metadata/v1"
    /// `DROPLET_ID`: read from the metadata service when unset.
    public var dropletID: Int?
    /// `DROPLET_REGION`: read from the metadata service when unset.
    public var dropletRegion: String?
    /// `DEVICE_DIR`, default `/dev/disk/by-id`.
    public var deviceDirectory = "/dev/disk/by-id"
    /// `MOUNT_ROOT`, default `/mnt/volumes`.
    public var mountRoot = "/mnt/volumes"
    /// `STATE_DIR`, default `/var/lib/do-storage`.
    public var stateDirectory = "/var/lib/do-storage"
    /// `SOCKET_PATH`, default `/run/docker/plugins/do_storage.sock`.
    public var socketPath = "/run/docker/plugins/do_storage.sock"
    /// `DETACH_ON_UNMOUNT`, default true.
    public var detachOnUnmount = true
    /// `HANDOFF_TIMEOUT`, default 30 s, at most 45 s.
    public var handoffTimeout: Duration = .seconds(30)
    /// `TAKEOVER`, default lease.
    public var takeover: Takeover = .lease
    /// `LEASE_RENEW`, default 5m: how often a droplet holding volumes renews its heartbeat (3 DigitalOcean calls).
    public var leaseRenew: Duration = .seconds(300)
    /// `LEASE_TTL`, default 12m: a heartbeat older than this lets `lease` take the holder's volumes.
    public var leaseTTL: Duration = .seconds(720)
    /// `SNAPSHOT_MIN_INTERVAL`, default 15m: the shortest `snapshot_every` a volume may ask for.
    public var snapshotMinInterval: Duration = .seconds(900)
    /// `LOG_LEVEL`, default info.
    public var logLevel: Logger.Level = .info
    /// `AUTO_CREATE` (true), `DEFAULT_SIZE` (10GiB), `DEFAULT_FSTYPE` (ext4), `DEFAULT_MOUNTOPTS` (none),
    /// `REMOVE_POLICY` (retain).
    public var volumeDefaults = VolumeDefaults()

    /// The longest `HANDOFF_TIMEOUT`: the engine gives a Mount 2 minutes, and attaching needs time after the hand-off.
    public static let maxHandoffTimeout: Duration = .seconds(45)
    /// How far two droplets' clocks may disagree without a live holder ever looking dead.
    public static let clockSkewAllowance: Duration = .seconds(30)
    /// The shortest `LEASE_RENEW`: each renewal is 3 calls out of the token's 5,000 an hour.
    public static let minLeaseRenew: Duration = .seconds(10)

    public init() {}

    /// Reads the settings. Throws a `SettingsError` naming the variable when a value is malformed.
    public init(reader: ConfigReader) throws {
        if let token = reader.string(forKey: "access.token", isSecret: true)?.trimmedWhitespace,
            !token.isEmpty
        {
            accessToken = token
        }
        apiURL = try Self.url(reader.string(forKey: "do.api.url"), "DO_API_URL") ?? apiURL
        metadataURL = try Self.url(reader.string(forKey: "do.metadata.url"), "DO_METADATA_URL") ?? metadataURL
        if let text = Self.nonEmpty(reader.string(forKey: "droplet.id")) {
            guard let id = Int(text), id > 0 else {
                throw SettingsError("DROPLET_ID", "DROPLET_ID must be a droplet's numeric id, not \"\(text)\"")
            }
            dropletID = id
        }
        dropletRegion = Self.nonEmpty(reader.string(forKey: "droplet.region"))
        deviceDirectory = try Self.path(reader.string(forKey: "device.dir"), "DEVICE_DIR") ?? deviceDirectory
        mountRoot = try Self.path(reader.string(forKey: "mount.root"), "MOUNT_ROOT") ?? mountRoot
        stateDirectory = try Self.path(reader.string(forKey: "state.dir"), "STATE_DIR") ?? stateDirectory
        socketPath = try Self.path(reader.string(forKey: "socket.path"), "SOCKET_PATH") ?? socketPath
        if let text = Self.nonEmpty(reader.string(forKey: "detach.on.unmount")) {
            detachOnUnmount = try Self.bool(text, "DETACH_ON_UNMOUNT")
        }
        if let text = Self.nonEmpty(reader.string(forKey: "handoff.timeout")) {
            handoffTimeout = try Self.duration(text, "HANDOFF_TIMEOUT")
            if handoffTimeout > Self.maxHandoffTimeout {
                throw SettingsError(
                    "HANDOFF_TIMEOUT", "HANDOFF_TIMEOUT=\(text) is too long: Docker gives a mount 2 minutes in all, so the hand-off may "
                        + "take at most \(Int(Self.maxHandoffTimeout.seconds))s")
            }
        }
        if let text = Self.nonEmpty(reader.string(forKey: "takeover")) {
            guard let value = Takeover(rawValue: text.lowercased()) else {
                throw SettingsError("TAKEOVER", "TAKEOVER must be never, lease or always, not \"\(text)\"")
            }
            takeover = value
        }
        if let text = Self.nonEmpty(reader.string(forKey: "lease.renew")) {
            leaseRenew = try Self.duration(text, "LEASE_RENEW")
            guard leaseRenew >= Self.minLeaseRenew else {
                throw SettingsError(
                    "LEASE_RENEW", "LEASE_RENEW=\(text) is too short: each renewal costs 3 DigitalOcean calls; use at least "
                        + "\(Int(Self.minLeaseRenew.seconds))s (default 5m)")
            }
        }
        if let text = Self.nonEmpty(reader.string(forKey: "lease.ttl")) {
            leaseTTL = try Self.duration(text, "LEASE_TTL")
        }
        let shortest = leaseRenew * 2 + Self.clockSkewAllowance
        guard leaseTTL >= shortest else {
            throw SettingsError(
                "LEASE_TTL", "LEASE_TTL (\(Int(leaseTTL.seconds))s) must be at least twice LEASE_RENEW (\(Int(leaseRenew.seconds))s) "
                    + "plus 30s, i.e. \(Int(shortest.seconds))s, so that a live droplet that misses one renewal, or "
                    + "whose clock is 30s off, is never taken over")
        }
        if let text = Self.nonEmpty(reader.string(forKey: "snapshot.min.interval")) {
            snapshotMinInterval = try Self.duration(text, "SNAPSHOT_MIN_INTERVAL")
            guard snapshotMinInterval >= .seconds(10) else {
                throw SettingsError("SNAPSHOT_MIN_INTERVAL", "SNAPSHOT_MIN_INTERVAL=\(text) is too short: use at least 10s (default 15m)")
            }
        }
        if let text = Self.nonEmpty(reader.string(forKey: "auto.create")) {
            volumeDefaults.autoCreate = try Self.bool(text, "AUTO_CREATE")
        }
        if let text = Self.nonEmpty(reader.string(forKey: "default.size")) {
            guard let size = CreateOptions.gibibytes(text), CreateOptions.sizeRange.contains(size) else {
                throw SettingsError("DEFAULT_SIZE", "DEFAULT_SIZE must be a size from 1GiB to 16TiB such as 10GiB or 1TiB, not \"\(text)\"")
            }
            volumeDefaults.sizeGiB = size
        }
        if let text = Self.nonEmpty(reader.string(forKey: "default.fstype")) {
            guard let type = FilesystemType(rawValue: text.lowercased()) else {
                throw SettingsError("DEFAULT_FSTYPE", "DEFAULT_FSTYPE must be ext4 or xfs, not \"\(text)\"")
            }
            volumeDefaults.fstype = type
        }
        if let text = Self.nonEmpty(reader.string(forKey: "default.mountopts")) {
            do {
                volumeDefaults.mountOptions = try MountOption.parseList(text, option: "DEFAULT_MOUNTOPTS", fstype: nil)
            } catch {
                throw SettingsError("DEFAULT_MOUNTOPTS", error.message)
            }
        }
        if let text = Self.nonEmpty(reader.string(forKey: "remove.policy")) {
            guard let policy = RemovePolicy(rawValue: text.lowercased()) else {
                throw SettingsError("REMOVE_POLICY", "REMOVE_POLICY must be retain or delete, not \"\(text)\"")
            }
            volumeDefaults.removePolicy = policy
        }
        if let text = Self.nonEmpty(reader.string(forKey: "log.level")) {
            guard let level = Logger.Level(rawValue: text.lowercased()) else {
                throw SettingsError(
                    "LOG_LEVEL", "LOG_LEVEL must be one of trace, debug, info, notice, warning, error, critical, not \"\(text)\"")
            }
            logLevel = level
        }
    }

    /// The settings from this process's environment.
    public static func fromEnvironment(_ environment: [String: String]? = nil) throws -> PluginSettings {
        let provider =
            environment.map { EnvironmentVariablesProvider(environmentVariables: $0, secretsSpecifier: .specific(["ACCESS_TOKEN"])) }
            ?? EnvironmentVariablesProvider(secretsSpecifier: .specific(["ACCESS_TOKEN"]))
        return try PluginSettings(reader: ConfigReader(provider: provider))
    }

    // MARK: Parsing

    static func nonEmpty(_ text: String?) -> String? {
        guard let text = text?.trimmedWhitespace, !text.isEmpty else { return nil }
        return text
    }

    static func url(_ text: String?, _ name: String) throws -> String? {
        guard let text = nonEmpty(text) else { return nil }
        guard text.hasPrefix("http://") || text.hasPrefix("https://"), text.count > 8 else {
            throw SettingsError(name, "\(name) must be an http:// or https:// URL, not \"\(text)\"")
        }
        return text.hasSuffix("/") ? String(text.dropLast()) : text
    }

    static func path(_ text: String?, _ name: String) throws -> String? {
        guard let text = nonEmpty(text) else { return nil }
        guard text.hasPrefix("/") else { throw SettingsError(name, "\(name) must be an absolute path, not \"\(text)\"") }
        return text.count > 1 && text.hasSuffix("/") ? String(text.dropLast()) : text
    }

    static func bool(_ text: String, _ name: String) throws -> Bool {
        switch text.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw SettingsError(name, "\(name) must be true or false, not \"\(text)\"")
        }
    }

    /// `30` (seconds), `30s`, `500ms`, `2m`, `1h` (see `Duration(parsing:)`).
    public static func duration(_ text: String, _ name: String) throws -> Duration {
        guard let duration = Duration(parsing: text) else {
            throw SettingsError(name, "\(name) must be a duration such as 30, 30s, 500ms or 2m, not \"\(text)\"")
        }
        return duration
    }
}

/// A setting with a value the plugin cannot use: its code is the environment variable (`LEASE_TTL`), its message
/// says what the value must be.
public typealias SettingsError = CodedError<String>

extension CodedError where Code == String {
    /// The environment variable a `SettingsError` is about.
    public var setting: String { code }
}
