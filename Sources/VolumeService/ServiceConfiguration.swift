/// What to do with a volume that is attached to another droplet when a container here wants it.
public enum Takeover: String, Sendable, Codable, CaseIterable {
    /// Wait up to the hand-off timeout for the other droplet to release it, then fail.
    case never
    /// As `never` while the other droplet's plugin keeps its heartbeat; once the heartbeat is older than the lease's
    /// time to live (its plugin, engine or network is dead), detach it from there and take it. The default.
    case lease
    /// Detach it from the other droplet at once (the old do_storage behaviour: a container there loses its disk).
    case always
}

/// The orchestration's settings. Defaults are those documented in the README.
public struct ServiceConfiguration: Sendable {
    public var dropletID: Int
    public var region: String
    /// Where `scsi-0DO_Volume_<name>` links appear. Default `/dev/disk/by-id`.
    public var deviceDirectory: String
    /// Where volumes are mounted, one folder per volume. Default `/mnt/volumes`.
    public var mountRoot: String
    /// Detach on the last unmount so another droplet can take the volume. Default true.
    public var detachOnUnmount: Bool
    /// How long a Mount waits for another droplet to release the volume. Default 30 s.
    public var handoffTimeout: Duration
    /// Default `.lease`; a volume's `-o takeover=` overrides it.
    public var takeover: Takeover
    /// How often a droplet holding volumes renews its heartbeat (3 DigitalOcean calls). Default 5 minutes.
    public var leaseRenew: Duration
    /// How old another droplet's heartbeat must be before `lease` takes its volumes. Default 12 minutes: two
    /// renewals, plus 30 s for clocks that disagree, plus slack.
    public var leaseTTL: Duration
    /// First wait between action polls; doubles up to `maxPollInterval`. Defaults 250 ms and 4 s.
    public var initialPollInterval: Duration
    public var maxPollInterval: Duration
    /// How long an attach or detach may take, action and device together. Default 60 s.
    public var actionTimeout: Duration
    /// How long a device may take to appear once its attach completed. Default 20 s.
    public var deviceTimeout: Duration
    /// How long a name DigitalOcean did not know is answered "not found" without asking again. Default 10 s.
    public var negativeLookupTTL: Duration
    /// First wait before retrying a release that failed at unmount; doubles up to 60 s. Default 5 s.
    public var releaseRetryInterval: Duration
    /// Defaults for new volumes: auto-create, size, filesystem, mount options, remove policy.
    public var defaults: VolumeDefaults
    /// How long a whole Mount may take, hand-off, actions, device and filesystem included, before it fails and
    /// cleans up. Default 110 s: Docker gives a Mount 2 minutes.
    public var mountDeadline: Duration
    /// The longest a filesystem stays frozen for a consistent snapshot; it is thawed then whatever the snapshot
    /// request is doing, and the snapshot fails. Default 30 s.
    public var freezeLimit: Duration
    /// The shortest `snapshot_every` a volume may ask for (`SNAPSHOT_MIN_INTERVAL`). Default 15 minutes.
    public var snapshotMinInterval: Duration

    public init(
        dropletID: Int, region: String, deviceDirectory: String = "/dev/disk/by-id", mountRoot: String = "/mnt/volumes",
        detachOnUnmount: Bool = true, handoffTimeout: Duration = .seconds(30), takeover: Takeover = .lease,
        leaseRenew: Duration = .seconds(300), leaseTTL: Duration = .seconds(720),
        initialPollInterval: Duration = .milliseconds(250), maxPollInterval: Duration = .seconds(4),
        actionTimeout: Duration = .seconds(60), deviceTimeout: Duration = .seconds(20),
        negativeLookupTTL: Duration = .seconds(10), releaseRetryInterval: Duration = .seconds(5),
        defaults: VolumeDefaults = VolumeDefaults(), mountDeadline: Duration = .seconds(110),
        freezeLimit: Duration = .seconds(30), snapshotMinInterval: Duration = .seconds(900)
    ) {
        self.dropletID = dropletID
        self.region = region
        self.deviceDirectory = deviceDirectory
        self.mountRoot = mountRoot
        self.detachOnUnmount = detachOnUnmount
        self.handoffTimeout = handoffTimeout
        self.takeover = takeover
        self.leaseRenew = leaseRenew
        self.leaseTTL = leaseTTL
        self.initialPollInterval = initialPollInterval
        self.maxPollInterval = maxPollInterval
        self.actionTimeout = actionTimeout
        self.deviceTimeout = deviceTimeout
        self.negativeLookupTTL = negativeLookupTTL
        self.releaseRetryInterval = releaseRetryInterval
        self.defaults = defaults
        self.mountDeadline = mountDeadline
        self.freezeLimit = freezeLimit
        self.snapshotMinInterval = snapshotMinInterval
    }
}

extension ServiceConfiguration {
    /// Where the volume `name` is mounted on this droplet.
    func mountpoint(for name: String) -> String { mountRoot + "/" + name }
}
