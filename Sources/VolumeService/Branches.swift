import DigitalOcean
import FoundationEssentials
import Logging

/// Branches: each branch of a volume's history is one DigitalOcean volume, tagged with the Docker volume's name tag
/// and `do-storage-branch:<branch>`; the one the Docker name mounts carries `do-storage-head:<generation>`, and
/// every step that moves it writes a higher generation in one call (a new volume made with it, or one tag put on),
/// so whatever a step was interrupted by, the name maps to exactly one volume: the highest. What a step left behind
/// (a lower head tag, a branch's replaced volume) is settled by the next command. Every volume of a history that
/// has branched carries `do-storage-branched`, which tells a Mount to look for the current branch rather than trust
/// the volume it remembers.
///
/// A step that changes what the name mounts holds the current branch's volume attached to this droplet while it
/// runs: DigitalOcean attaches a volume to one droplet at a time, so of two droplets switching at once one fails
/// clearly, and a volume in use anywhere is refused.
extension History {
    static let branchedTag = "do-storage-branched"
    static let headTagPrefix = "do-storage-head:"
    /// On a volume a reset made, until the branch's commits newer than this one are deleted.
    static let resetTagPrefix = "do-storage-reset:"

    /// The generation of the head tag on `volume`; nil when it is not a current branch's.
    static func generation(of volume: Volume) -> Int? {
        volume.tags.compactMap { $0.hasPrefix(headTagPrefix) ? Int($0.dropFirst(headTagPrefix.count)) : nil }.max()
    }

    /// The current branch's volume among a history's volumes: the highest head; nil when none has one.
    static func head(of volumes: [Volume]) -> Volume? {
        volumes.filter { generation(of: $0) != nil }.max { generation(of: $0)! < generation(of: $1)! }
    }

    /// The branch a volume holds; `main` for one that never branched.
    static func branch(of volume: Volume) -> String { branch(in: volume.tags) }

    /// The branch a volume's or a commit's tags name; `main` when they name none.
    static func branch(in tags: [String]) -> String {
        tags.first { $0.hasPrefix(branchTagPrefix) }.map { String($0.dropFirst(branchTagPrefix.count)) } ?? mainBranch
    }

    /// Refuses what is not a branch name.
    static func checkBranchName(_ branch: String) throws(VolumeError) {
        let bytes = Array(branch.utf8)
        let allowed = bytes.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == UInt8(ascii: "-") }
        guard (1...30).contains(bytes.count), allowed, bytes.first != UInt8(ascii: "-") else {
            throw VolumeError(
                .invalidOption,
                "\"\(branch)\" is not a branch name: use 1 to 30 lowercase letters, digits and \"-\", not starting with \"-\"")
        }
    }

    /// The DigitalOcean name of a branch's volume made at `generation`: valid (`^[a-z][a-z0-9-]{0,63}$`), and
    /// distinct for each Docker name, branch and generation.
    static func volumeName(doName: String, branch: String, generation: Int) -> String {
        let hash = String(VolumeNames.fnv1a64("\(doName)/\(branch)/\(generation)") >> 32, radix: 16)
        let suffix = "-g\(generation)-" + String(repeating: "0", count: 8 - hash.count) + hash
        return String("\(doName)-\(branch)".prefix(64 - suffix.count)) + suffix
    }

    // MARK: The commands

    /// The branches of `name`'s history, the current one marked.
    func branches(volume name: String) async throws -> [BranchInfo] {
        let current = try await finder.current(name)
        var byBranch: [String: Volume] = [Self.branch(of: current): current]
        for volume in try await finder.historyVolumes(of: name) where byBranch[Self.branch(of: volume)] == nil {
            byBranch[Self.branch(of: volume)] = volume
        }
        return byBranch.map { BranchInfo(name: $0.key, current: $0.value.id == current.id, doID: $0.value.id) }
            .sorted { $0.name < $1.name }
    }

    /// Makes a new branch from a commit of the current branch (its newest by default) and makes it current.
    func checkoutNew(volume name: String, branch: String, from commitID: String?) async throws -> BranchInfo {
        try Self.checkBranchName(branch)
        return try await switching(name) { current, volumes, generation in
            guard !(volumes + [current]).contains(where: { Self.branch(of: $0) == branch }) else {
                throw VolumeError(.invalidOption, "volume \(name) has a branch \(branch) already: do-storage checkout \(name) \(branch)")
            }
            let commit = try await self.commit(commitID, of: name, on: Self.branch(of: current))
            let made = try await self.make(name, branch: branch, from: commit, like: current, generation: generation)
            await self.untagHead(current, name: name)
            return BranchInfo(name: branch, current: true, doID: made.id)
        }
    }

    /// Makes another branch current.
    func checkout(volume name: String, branch: String) async throws -> BranchInfo {
        try Self.checkBranchName(branch)
        return try await switching(name) { current, volumes, generation in
            guard let target = (volumes + [current]).first(where: { Self.branch(of: $0) == branch }) else {
                let known = Set(volumes.map(Self.branch(of:)) + [Self.branch(of: current)]).sorted().joined(separator: ", ")
                throw VolumeError(
                    .notFound, "volume \(name) has no branch \(branch) (its branches: \(known)); make it with -b: do-storage checkout \(name) -b \(branch)")
            }
            if target.id == current.id { return BranchInfo(name: branch, current: true, doID: target.id) }
            let head = Self.headTagPrefix + String(generation)
            try await cloud("make branch \(branch) of volume \(name) current") {
                try await api.createTag(name: head)
                try await api.tagVolume(id: target.id, with: head)
            }
            self.registry.update(name) { record in
                record.volumeID = target.id
                record.doName = target.name
                record.saw(target)
            }
            await self.untagHead(current, name: name)
            return BranchInfo(name: branch, current: true, doID: target.id)
        }
    }

    /// Replaces the current branch's data with one of its commits (its newest by default): a new volume made from
    /// it becomes the branch's; the replaced one is deleted when do_storage made it (else kept, untagged), and the
    /// branch's commits newer than it are deleted. Returns what was done, in a sentence.
    func reset(volume name: String, to commitID: String?) async throws -> String {
        try await switching(name) { current, _, generation in
            let branch = Self.branch(of: current)
            let commit = try await self.commit(commitID, of: name, on: branch)
            // The new volume says which commit it was reset to, until the newer commits are gone: a step cut off
            // before then has the next one finish it.
            let made = try await self.make(
                name, branch: branch, from: commit, like: current, generation: generation, extraTags: [Self.resetTagPrefix + commit.id])
            let fate = try await self.retire(current, name: name)
            let dropped = try await self.finishReset(made, name: name)
            self.registry.update(name) { $0.head = "\(commit.id) \(commit.name)" }
            return "volume \(name): branch \(branch) reset to \(commit.id) (\(commit.name)); \(dropped) newer commit(s) deleted; \(fate)"
        }
    }

    /// Deletes a branch that is not current: its DigitalOcean volume (kept, untagged, when do_storage did not make
    /// it); its commits stay.
    func deleteBranch(volume name: String, branch: String) async throws -> String {
        try Self.checkBranchName(branch)
        return try await switching(name) { current, volumes, _ in
            guard Self.branch(of: current) != branch else {
                throw VolumeError(.inUse, "branch \(branch) is the current branch of volume \(name): check out another one first")
            }
            guard let target = volumes.first(where: { Self.branch(of: $0) == branch }) else {
                throw VolumeError(.notFound, "volume \(name) has no branch \(branch); see do-storage branch \(name)")
            }
            if let holder = target.dropletIDs.first {
                throw VolumeError(.inUse, "branch \(branch) of volume \(name) is attached to droplet \(holder); stop what uses it there first")
            }
            return "volume \(name): branch \(branch) deleted; " + (try await self.retire(target, name: name, as: "its volume"))
        }
    }
}

// MARK: Steps

extension History {
    /// Runs a step that changes what `name` mounts: refused while the volume is mounted here or attached to another
    /// droplet; what an interrupted step left is settled first; the current branch's volume is tagged as branched
    /// and held attached here while `body` runs with it, the history's other volumes and the next generation.
    func switching<T: Sendable>(
        _ name: String, _ body: (_ current: Volume, _ others: [Volume], _ generation: Int) async throws -> T
    ) async throws -> T {
        try await volumeLocks.withLock(name) {
            let record = try registry.known(name)
            if record.referenceCount > 0 || record.mountpoint != nil {
                throw VolumeError(
                    .inUse,
                    "volume \(name) is mounted on this droplet (\(record.referenceCount) container mount(s)); stop the "
                        + "containers using it first (docker ps --filter volume=\(name))")
            }
            var current = try await finder.current(name)
            if let holder = current.dropletIDs.first, holder != configuration.dropletID {
                throw VolumeError(
                    .inUse,
                    "volume \(name) is attached to droplet \(holder): in use there, or being switched from there; stop "
                        + "what uses it there first (docker ps --filter volume=\(name) on droplet \(holder))")
            }
            let others = try await settle(name, current: current)
            // A reset cut off before its newer commits were deleted.
            if current.tags.contains(where: { $0.hasPrefix(Self.resetTagPrefix) }) {
                _ = try await finishReset(current, name: name)
                current.tags.removeAll { $0.hasPrefix(Self.resetTagPrefix) }
            }
            current = try await markBranched(current, name: name)
            let generation = (others + [current]).compactMap(Self.generation(of:)).max().map { $0 + 1 } ?? 2
            // Held like a Mount's volume: with this droplet's heartbeat fresh, so no droplet takes it meanwhile.
            return try await heartbeat.whileMounting {
                await heartbeat.renewIfDue()
                let attachedByUs = try await hold(current, name: name)
                current.dropletIDs = [configuration.dropletID]
                do {
                    let result = try await body(current, others, generation)
                    await letGo(current, name: name, attachedByUs: attachedByUs)
                    try await registry.save()
                    return result
                } catch {
                    await letGo(current, name: name, attachedByUs: attachedByUs)
                    try? await registry.save()
                    throw error
                }
            }
        }
    }

    /// Tags the current branch's volume as a branched history's (name, branch, head) where it is not yet.
    private func markBranched(_ volume: Volume, name: String) async throws -> Volume {
        let wanted = [VolumeNames.nameTag(for: name), Self.branchedTag, Self.branchTag(Self.branch(of: volume))]
            + (Self.generation(of: volume) == nil ? [Self.headTagPrefix + "1"] : [])
        let missing = wanted.filter { !volume.tags.contains($0) }
        guard !missing.isEmpty else { return volume }
        try await cloud("tag volume \(name) for its branches") {
            for tag in missing {
                try await api.createTag(name: tag)
                try await api.tagVolume(id: volume.id, with: tag)
            }
        }
        var tagged = volume
        tagged.tags += missing
        return tagged
    }

    /// Settles what an interrupted step left: a branch's replaced volume (the current branch has a newer one) is
    /// retired, and a head tag below the current one comes off. Returns the history's other volumes.
    private func settle(_ name: String, current: Volume) async throws -> [Volume] {
        var others: [Volume] = []
        for volume in try await finder.historyVolumes(of: name) where volume.id != current.id {
            if Self.branch(of: volume) == Self.branch(of: current), volume.dropletIDs.isEmpty || volume.dropletIDs == [configuration.dropletID] {
                logger.notice("Retiring a volume an interrupted reset replaced", metadata: ["volume.name": "\(name)", "do.volume.id": "\(volume.id)"])
                _ = try await retire(volume, name: name)
                continue
            }
            if Self.generation(of: volume) != nil { await untagHead(volume, name: name) }
            var settled = volume
            settled.tags.removeAll { $0.hasPrefix(Self.headTagPrefix) }
            others.append(settled)
        }
        return others
    }

    /// Attaches the volume here, the step's hold on it; returns whether this call attached it.
    private func hold(_ volume: Volume, name: String) async throws -> Bool {
        guard !volume.dropletIDs.contains(configuration.dropletID) else { return false }
        registry.update(name) { $0.attachRequested = time.wallClock() }
        try await registry.save()
        return try await actions.oneAtATime { try await attachments.attach(volume, watch: nil, name: name) }
    }

    /// Ends the step's hold: detaches the volume it held unless the step retired it; a detach that fails is
    /// retried in the background (whatever DETACH_ON_UNMOUNT says: nothing uses it here).
    private func letGo(_ volume: Volume, name: String, attachedByUs: Bool) async {
        registry.update(name) { $0.attachRequested = nil }
        guard attachedByUs, let now = try? await api.volume(id: volume.id), now.dropletIDs.contains(configuration.dropletID) else { return }
        do {
            try await attachments.detachHere(volumeID: volume.id, doName: volume.name, name: name)
        } catch {
            logger.warning("Cannot let go of the volume a step held; retrying in the background", metadata: ["volume.name": "\(name)", "error": "\(error)"])
            attachments.scheduleRelease(name: name, volumeID: volume.id, doName: volume.name)
        }
    }

    /// The commit `id` (nil or `HEAD`: the newest) of `branch`, as DigitalOcean has it.
    private func commit(_ id: String?, of name: String, on branch: String) async throws -> Snapshot {
        let log = try await commits(of: name, on: branch)
        guard let newest = log.first else {
            throw VolumeError(
                .notFound, "branch \(branch) of volume \(name) has no commit yet: commit first (do-storage commit \(name) -m MESSAGE)")
        }
        let wanted = id == nil || id?.uppercased() == "HEAD" ? newest : log.first { $0.id == id?.lowercased() }
        guard let wanted else {
            throw VolumeError(.notFound, "branch \(branch) of volume \(name) has no commit \(id ?? ""); see do-storage log \(name)")
        }
        return try await cloud("read commit \(wanted.id)") { try await api.snapshot(id: wanted.id) }
    }

    /// Makes `branch`'s volume from `commit` at `generation` (the new head: the step's one decisive call), as large
    /// as `current`, and points the record at it.
    private func make(
        _ name: String, branch: String, from commit: Snapshot, like current: Volume, generation: Int, extraTags: [String] = []
    ) async throws -> Volume {
        let (preferred, hashed) = VolumeNames.candidates(for: name)
        var options = CreateOptions()
        // The user's own tags and the schedule go with the name to the new volume.
        options.tags = current.tags.filter { !$0.hasPrefix(VolumeNames.reservedTagPrefix) }
            + [Self.branchedTag, Self.branchTag(branch), Self.headTagPrefix + String(generation)] + extraTags
        options.schedule = SnapshotSchedule(tags: current.tags)
        let doName = Self.volumeName(doName: preferred ?? hashed, branch: branch, generation: generation)
        var volume = try await provisioning.create(name: name, doName: doName, options: options, from: commit)
        if current.sizeGigabytes > volume.sizeGigabytes {
            volume = try await actions.grow(volume, to: current.sizeGigabytes, name: name)
        }
        logger.notice(
            "Branch volume made from a commit",
            metadata: ["volume.name": "\(name)", "branch": "\(branch)", "do.volume.id": "\(volume.id)", "do.snapshot.id": "\(commit.id)"])
        registry.update(name) { record in
            record.volumeID = volume.id
            record.doName = volume.name
            record.saw(volume)
        }
        return volume
    }

    /// Finishes a reset that made `volume`: deletes its branch's commits newer than the one it was reset to, then
    /// takes the reset's tag off. Returns how many were deleted.
    func finishReset(_ volume: Volume, name: String) async throws -> Int {
        guard let tag = volume.tags.first(where: { $0.hasPrefix(Self.resetTagPrefix) }) else { return 0 }
        let target = String(tag.dropFirst(Self.resetTagPrefix.count))
        let log = try await commits(of: name, on: Self.branch(of: volume))
        var dropped = 0
        if log.contains(where: { $0.id == target }) {
            for newer in log.prefix(while: { $0.id != target }) {
                do {
                    try await api.deleteSnapshot(id: newer.id)
                } catch let error as DOError where error.code != .notFound {
                    throw VolumeError(.cloud, "cannot delete commit \(newer.id) of volume \(name), newer than the reset: \(error); the next step tries again")
                }
                dropped += 1
            }
        }
        do {
            try await api.untagVolume(id: volume.id, from: tag)
        } catch {
            // Finished all the same: the next step finds nothing newer to delete, and tries the tag again.
            logger.warning("Cannot take a finished reset's tag off; the next step does", metadata: ["volume.name": "\(name)", "error": "\(error)"])
        }
        return dropped
    }

    /// Takes the head tags off a volume that is no longer current; a failure is left to the next step's settling.
    private func untagHead(_ volume: Volume, name: String) async {
        for tag in volume.tags where tag.hasPrefix(Self.headTagPrefix) {
            do {
                try await api.untagVolume(id: volume.id, from: tag)
            } catch {
                logger.warning("Cannot take an old head tag off; the next step does", metadata: ["volume.name": "\(name)", "error": "\(error)"])
            }
        }
    }

    /// Takes a volume out of the history: deleted when do_storage made it, else kept without its do_storage tags.
    /// Returns what became of it, in words.
    private func retire(_ volume: Volume, name: String, as what: String = "the replaced volume") async throws -> String {
        if volume.dropletIDs.contains(configuration.dropletID) {
            try await attachments.detachHere(volumeID: volume.id, doName: volume.name, name: name)
        }
        if volume.tags.contains(VolumeNames.markerTag) {
            do {
                try await api.deleteVolume(id: volume.id)
            } catch let error as DOError where error.code != .notFound {
                throw VolumeError(.cloud, "cannot delete \(what) \(volume.name) of \(name): \(error)")
            }
            return "\(what) \(volume.name) was deleted"
        }
        // do-storage-branched stays: a droplet that remembers this volume for the name must still look for the current
        // branch instead of mounting it.
        let ours = volume.tags.filter {
            $0 == VolumeNames.nameTag(for: name) || $0.hasPrefix(Self.branchTagPrefix) || $0.hasPrefix(Self.headTagPrefix)
                || $0.hasPrefix(Self.resetTagPrefix)
        }
        try await cloud("untag \(what) \(volume.name)") {
            for tag in ours { try await api.untagVolume(id: volume.id, from: tag) }
        }
        return "\(what) \(volume.name) (\(volume.id)) was kept, since do_storage did not make it; its do_storage "
            + "tags are off but \(Self.branchedTag), which sends a droplet that remembers it to the current branch"
    }
}
