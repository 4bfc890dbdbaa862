import FoundationEssentials

/// The operations behind Docker's VolumeDriver protocol. `VolumeService` is the implementation; a plugin without an
/// access token uses `UnconfiguredDriver`.
public protocol VolumeDriver: Sendable {
    /// `docker volume create`: adopts the DigitalOcean volume of that name, or makes it (with `options`).
    ///
    /// - Parameters:
    ///   - name: the Docker volume name.
    ///   - options: `-o key=value` (size, fstype, from_snapshot, clone_of, snapshot_every, …); unknown keys refused.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    ///   Docker sends Create again on other nodes and on retries: the same name and options succeed.
    func create(name: String, options: [String: String]) async throws
    /// `docker volume rm`: forgets the volume, and deletes it on DigitalOcean under `onremove=delete`.
    ///
    /// - Parameter name: the Docker volume name; one this driver does not know succeeds (Docker expects it).
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func remove(name: String) async throws
    /// A container starts with the volume: attach it here (detaching it from an idle droplet, never from a busy
    /// one), wait for its device, mount it, and count the reference.
    ///
    /// - Parameters:
    ///   - name: the Docker volume name.
    ///   - id: the mount id Docker gives this use; Unmount names it again.
    /// - Returns: the path the container gets.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func mount(name: String, id: String) async throws -> String
    /// A container with the volume stops: drop the reference, and on the last one unmount (and detach, by default).
    ///
    /// - Parameters:
    ///   - name: the Docker volume name.
    ///   - id: the mount id its Mount had.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func unmount(name: String, id: String) async throws
    /// Where the volume is mounted here; never calls DigitalOcean.
    ///
    /// - Parameter name: the Docker volume name.
    /// - Returns: the mountpoint, or "" when it is not mounted here.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.notFound` for a name this driver does not know.
    func path(name: String) async throws -> String
    /// `docker volume inspect`; never calls DigitalOcean (Status shows values as last seen).
    ///
    /// - Parameter name: the Docker volume name.
    /// - Returns: the volume, with its Status keys.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.notFound` for a name this driver does not know.
    func get(name: String) async throws -> VolumeInfo
    /// `docker volume ls`; never calls DigitalOcean.
    ///
    /// - Returns: every volume this driver knows, by name.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func list() async throws -> [VolumeInfo]
    /// Takes a snapshot of the volume, frozen when it is mounted here.
    ///
    /// - Parameters:
    ///   - volume: the Docker volume name.
    ///   - name: the snapshot's name; nil for `<volume>-<UTC time>`.
    /// - Returns: the snapshot as the command line shows it.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.invalidOption` for a name the volume's snapshots already use.
    func createSnapshot(volume: String, name: String?) async throws -> SnapshotInfo
    /// The volume's snapshots.
    ///
    /// - Parameter volume: the Docker volume name.
    /// - Returns: its snapshots, newest first.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.notFound` for a volume DigitalOcean does not have.
    func listSnapshots(volume: String) async throws -> [SnapshotInfo]
    /// Deletes one of the volume's snapshots.
    ///
    /// - Parameters:
    ///   - volume: the Docker volume name.
    ///   - snapshot: the snapshot's name or id, among this volume's snapshots only.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do. `.notFound` when the volume has no such snapshot.
    func deleteSnapshot(volume: String, snapshot: String) async throws
    /// Commits the volume's data: a snapshot with a message on its current branch, frozen when it is mounted here.
    ///
    /// - Parameters:
    ///   - volume: the Docker volume name.
    ///   - message: one line saying what the commit holds.
    /// - Returns: the commit.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func commit(volume: String, message: String) async throws -> CommitInfo
    /// The commits of the volume's current branch.
    ///
    /// - Parameter volume: the Docker volume name.
    /// - Returns: its commits, newest first.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func log(volume: String) async throws -> [CommitInfo]
    /// The branches of the volume's history, the current one marked.
    ///
    /// - Parameter volume: the Docker volume name.
    /// - Returns: its branches, by name.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func branches(volume: String) async throws -> [BranchInfo]
    /// Makes a branch current: an existing one, or (`create`) a new one made from a commit of the current branch.
    ///
    /// - Parameters:
    ///   - volume: the Docker volume name.
    ///   - branch: the branch.
    ///   - create: whether to make it.
    ///   - commit: for a new branch, the commit to make it from; nil for the current branch's newest.
    /// - Returns: the branch, now current.
    /// - Throws: `VolumeError`: `.inUse` while the volume is mounted here or attached to another droplet.
    func checkout(volume: String, branch: String, create: Bool, from commit: String?) async throws -> BranchInfo
    /// Replaces the current branch's data with one of its commits.
    ///
    /// - Parameters:
    ///   - volume: the Docker volume name.
    ///   - commit: the commit's id; nil for the newest.
    /// - Returns: what was done, in a sentence.
    /// - Throws: `VolumeError`: `.inUse` while the volume is mounted here or attached to another droplet.
    func reset(volume: String, to commit: String?) async throws -> String
    /// Deletes a branch that is not current.
    ///
    /// - Parameters:
    ///   - volume: the Docker volume name.
    ///   - branch: the branch.
    /// - Returns: what was done, in a sentence.
    /// - Throws: `VolumeError`, whose code says what went wrong and whose message says what to do.
    func deleteBranch(volume: String, branch: String) async throws -> String
    /// Get, List and Path's answers as they stand, for a caller that must not wait (the protocol's channel handler
    /// answers from them on the connection's thread); nil where the driver has none ready (it is still starting).
    /// A name they lack is asked of `get(name:)`, which says why.
    var readyLookups: VolumeLookups? { get }
}

extension VolumeDriver {
    public var readyLookups: VolumeLookups? { nil }
}
