import DigitalOcean
import FoundationEssentials
import Logging
import Timekeeping

/// History: a volume's commits, kept on DigitalOcean as snapshots of its volume, so every droplet reads the same
/// history. A commit's message is its snapshot's name (names take free text; tags do not), and its tags say whose
/// commit it is: the commit marker, the Docker volume's name tag and its branch's tag. So a branch's history is read
/// from the account's snapshots by their tags, never from one DigitalOcean volume's own list, and outlives the
/// volume it was taken of. A volume's history starts on the branch `main`.
struct History: Sendable {
    /// On every commit.
    static let commitTag = "do-storage-commit"
    static let branchTagPrefix = "do-storage-branch:"
    /// The branch every volume starts with.
    static let mainBranch = "main"
    /// A message's most bytes: a snapshot name has at most 255, and a message used twice gets a number after it.
    static let maxMessageBytes = 240

    let configuration: ServiceConfiguration
    let api: any VolumeAPI
    let registry: VolumeRegistry
    let finder: VolumeFinder
    let snapshots: Snapshots
    let provisioning: Provisioning
    let attachments: Attachments
    let actions: DropletActions
    let heartbeat: Heartbeat
    /// Each volume's sequences, shared with the orchestration: a step that changes what a name mounts runs under it.
    let volumeLocks: AsyncKeyedLock
    let time: TimeSource
    let logger: Logger

    /// The tag of `branch`'s commits.
    static func branchTag(_ branch: String) -> String { branchTagPrefix + branch }

    /// Commits the volume's current data: a snapshot of its volume, frozen when it is mounted here.
    ///
    /// - Parameters:
    ///   - name: The Docker volume.
    ///   - message: What the commit holds, in the user's words.
    /// - Returns: The commit.
    /// - Throws: `VolumeError`: `.invalidOption` for an empty or overlong message, `.notFound` for a volume
    ///   DigitalOcean does not have, `.cloud` when DigitalOcean refuses (at most one snapshot of a volume every 10
    ///   minutes, 25 per volume).
    func commit(volume name: String, message: String) async throws -> CommitInfo {
        let message = message.trimmedWhitespace
        guard !message.isEmpty, message.utf8.count <= Self.maxMessageBytes, !message.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw VolumeError(
                .invalidOption,
                "a commit message is one line of 1 to \(Self.maxMessageBytes) bytes: do-storage commit \(name) -m \"what changed\"")
        }
        let snapshot = try await snapshots.take(of: name) { volume in
            // Snapshot names are unique per volume: a message used before on this volume gets a number after it.
            let taken = Set(try await cloud("list the snapshots of volume \(name)") { try await api.snapshots(volumeID: volume.id) }.map(\.name))
            var snapshotName = message
            var number = 2
            while taken.contains(snapshotName) {
                snapshotName = "\(message) (\(number))"
                number += 1
            }
            return (snapshotName, [Self.commitTag, VolumeNames.nameTag(for: name), Self.branchTag(Self.branch(of: volume))])
        }
        let branch = Self.branch(in: snapshot.tags)
        let commit = CommitInfo(id: snapshot.id, message: snapshot.name, createdAt: snapshot.createdAt, branch: branch)
        await noteHead(commit, of: name)
        logger.info("Committed", metadata: ["volume.name": "\(name)", "do.snapshot.id": "\(snapshot.id)", "branch": "\(branch)"])
        return commit
    }

    /// The current branch's commits, newest first (commits of the same second in the reverse of DigitalOcean's
    /// order), in this droplet's region.
    ///
    /// - Parameter name: The Docker volume.
    /// - Returns: The commits.
    /// - Throws: `VolumeError`: `.invalidName` for a name Docker would refuse, `.cloud` when DigitalOcean cannot be
    ///   read.
    func log(volume name: String) async throws -> [CommitInfo] {
        try VolumeNames.check(name)
        // A volume deleted since keeps its history: its commits are read on `main`.
        let branch: String
        do {
            branch = Self.branch(of: try await finder.onDigitalOcean(name))
        } catch let error as VolumeError where error.code == .notFound {
            branch = Self.mainBranch
        }
        let commits = try await commits(of: name, on: branch)
        if let head = commits.first { await noteHead(head, of: name) }
        return commits
    }

    /// `branch`'s commits, newest first.
    func commits(of name: String, on branch: String) async throws -> [CommitInfo] {
        let wanted = [Self.commitTag, VolumeNames.nameTag(for: name), Self.branchTag(branch)]
        let all = try await cloud("list volume snapshots") { try await api.volumeSnapshots() }
        let commits = all.enumerated()
            .filter { entry in
                wanted.allSatisfy(entry.element.tags.contains) && entry.element.regions.contains(configuration.region)
            }
            .map { (time: Snapshots.date($0.element.createdAt) ?? .distantPast, order: $0.offset, snapshot: $0.element) }
            .sorted { $0.time != $1.time ? $0.time > $1.time : $0.order > $1.order }
            .map { CommitInfo(id: $0.snapshot.id, message: $0.snapshot.name, createdAt: $0.snapshot.createdAt, branch: branch) }
        return commits
    }

    /// Notes the newest commit in the volume's record, for Status, when this droplet knows the volume.
    private func noteHead(_ commit: CommitInfo, of name: String) async {
        guard registry.update(name, { $0.head = "\(commit.id) \(commit.message)" }) != nil else { return }
        await registry.saveOrWarn(logger)
    }
}
