import DigitalOcean
import Logging
import Timekeeping
import Synchronization

/// Names: the DigitalOcean volume behind a Docker name. Finds it by the id the registry has, else by its
/// DigitalOcean name (see `VolumeNames`), remembering for a short while the names DigitalOcean did not know, and
/// notes the id it finds in the record.
final class VolumeFinder: Sendable {
    private let configuration: ServiceConfiguration
    private let api: any VolumeAPI
    private let registry: VolumeRegistry
    private let time: TimeSource
    private let logger: Logger
    /// Names DigitalOcean did not know, for a short while.
    private let misses: Mutex<RecentMisses>
    /// The region's volumes of branched histories, as last listed, for a short while.
    private let branched = Mutex<(at: ContinuousClock.Instant, volumes: [Volume])?>(nil)

    init(configuration: ServiceConfiguration, api: any VolumeAPI, registry: VolumeRegistry, time: TimeSource, logger: Logger) {
        self.configuration = configuration
        self.api = api
        self.registry = registry
        self.time = time
        self.logger = logger
        misses = Mutex(RecentMisses(ttl: configuration.negativeLookupTTL))
    }

    /// How many misses are remembered.
    var rememberedMisses: Int { misses.withLock { $0.count } }

    /// Looks a DigitalOcean name up, remembering misses for a short while.
    func lookUp(doName: String) async throws -> Volume? {
        if misses.withLock({ $0.contains(doName, now: time.now()) }) { return nil }
        let found = try await cloud("look up volume \(doName)") {
            try await api.volumes(named: doName, region: configuration.region)
        }.first { $0.name == doName }
        let now = time.now()
        misses.withLock { if found == nil { $0.remember(doName, now: now) } else { $0.forget(doName) } }
        return found
    }

    /// Forgets a miss: the name was just created.
    func forget(doName: String) {
        misses.withLock { $0.forget(doName) }
    }

    /// The DigitalOcean name for a Docker name, and the volume by that name when there is one (see `VolumeNames`).
    /// A name taken by another Docker name's volume is refused when the Docker name is used as it is, and skipped
    /// for the hashed name otherwise.
    func resolve(_ name: String) async throws -> (doName: String, volume: Volume?) {
        let (preferred, hashed) = VolumeNames.candidates(for: name)
        if let preferred {
            let volume = try await lookUp(doName: preferred)
            let owner = volume.flatMap { VolumeNames.dockerName(fromTags: $0.tags) }
            if owner == nil || owner == name { return (preferred, volume) }
            if VolumeNames.isUsedAsIs(name), let owner {
                throw VolumeError(
                    .invalidName,
                    "the DigitalOcean volume \(preferred) belongs to the Docker volume \"\(owner)\"; use that name, or "
                        + "choose another name for a new volume")
            }
        }
        let volume = try await lookUp(doName: hashed)
        if let owner = volume.flatMap({ VolumeNames.dockerName(fromTags: $0.tags) }), owner != name {
            throw VolumeError(
                .invalidName,
                "the Docker names \"\(name)\" and \"\(owner)\" both map to the DigitalOcean volume \(hashed); "
                    + "choose another name")
        }
        return (hashed, volume)
    }

    /// The volume of `name`, which this droplet knows, as DigitalOcean has it now: by id when known, else by name (a
    /// volume deleted and re-created out of band gets a new id, so a 404 by id falls back to the name). A volume
    /// whose history has branches (`History.branchedTag`) is the current branch's, whichever this droplet
    /// remembered; the record follows it.
    func current(_ name: String) async throws -> Volume {
        let found = try await remembered(name)
        if let found, !found.tags.contains(History.branchedTag) { return found }
        guard let volume = History.head(of: try await historyVolumes(of: name)) ?? found else {
            let doName = try registry.known(name).doName
            throw VolumeError(
                .notFound,
                "the DigitalOcean volume \(doName) does not exist in region \(configuration.region); "
                    + "create it, or docker volume rm \(name)")
        }
        if volume.id != found?.id {
            logger.info("The volume's current branch is another volume", metadata: ["volume.name": "\(name)", "do.volume.id": "\(volume.id)"])
            registry.update(name) { record in
                record.volumeID = volume.id
                record.doName = volume.name
            }
        }
        return volume
    }

    /// Every DigitalOcean volume in this region that carries `name`'s name tag: its history's branches, and what an
    /// interrupted step left.
    func historyVolumes(of name: String) async throws -> [Volume] {
        let tag = VolumeNames.nameTag(for: name)
        return try await cloud("list the volumes of \(name)'s history") {
            try await api.volumes(named: nil, region: configuration.region)
        }.filter { $0.tags.contains(tag) }
    }

    /// The current branch's volume of `name`'s history when it has branched, for a name this droplet does not know
    /// and whose DigitalOcean name has no volume (a reset replaced it). One listing of the region's volumes answers
    /// for every name for `negativeLookupTTL`, so a stream of unknown names costs one call, not one each.
    func branchedHead(of name: String) async throws -> Volume? {
        let now = time.now()
        let cached = branched.withLock { $0.flatMap { $0.at.duration(to: now) < configuration.negativeLookupTTL ? $0.volumes : nil } }
        let volumes: [Volume]
        if let cached {
            volumes = cached
        } else {
            volumes = try await cloud("list the region's volumes") { try await api.volumes(named: nil, region: configuration.region) }
                .filter { $0.tags.contains(History.branchedTag) }
            branched.withLock { $0 = (now, volumes) }
        }
        let tag = VolumeNames.nameTag(for: name)
        return History.head(of: volumes.filter { $0.tags.contains(tag) })
    }

    /// The volume this droplet remembers for `name`, by id, else by name; nil when DigitalOcean has neither.
    private func remembered(_ name: String) async throws -> Volume? {
        let record = try registry.known(name)
        if let id = record.volumeID {
            do {
                return try await api.volume(id: id)
            } catch let error as DOError where error.code == .notFound {
                logger.notice("Volume id no longer exists; looking the name up again", metadata: ["volume.name": "\(name)"])
                registry.update(name) { $0.volumeID = nil }
                forget(doName: record.doName)
            } catch let error as DOError {
                throw VolumeError(.cloud, "cannot read volume \(name) from DigitalOcean: \(error)")
            }
        }
        guard let volume = try await lookUp(doName: record.doName) else { return nil }
        registry.update(name) { $0.volumeID = volume.id }
        return volume
    }

    /// The DigitalOcean id of `name`'s volume: the one the registry has, else looked up by its DigitalOcean name.
    func volumeID(_ name: String) async throws -> String {
        let record = try registry.known(name)
        if let id = record.volumeID { return id }
        guard let volume = try await lookUp(doName: record.doName) else {
            throw VolumeError(.notFound, "the DigitalOcean volume \(record.doName) no longer exists in region \(configuration.region)")
        }
        registry.update(name) { $0.volumeID = volume.id }
        return volume.id
    }

    /// The DigitalOcean volume behind a Docker name, whether or not this droplet knows it.
    func onDigitalOcean(_ name: String) async throws -> Volume {
        if registry[name] != nil { return try await current(name) }
        try VolumeNames.check(name)
        let (doName, found) = try await resolve(name)
        guard let volume = found else {
            throw VolumeError(.notFound, "there is no volume \(name) (DigitalOcean volume \(doName) in \(configuration.region))")
        }
        return volume
    }
}

extension VolumeNames {
    /// Refuses what is not a Docker volume name, saying what one is.
    static func check(_ name: String) throws(VolumeError) {
        guard isValidDockerName(name) else {
            throw VolumeError(
                .invalidName,
                "\"\(name)\" is not a volume name: use letters, digits, \"_\", \".\" and \"-\", starting with a letter "
                    + "or digit, at most \(maxDockerNameBytes) characters")
        }
    }
}

extension VolumeRegistry {
    /// The record of `name`, which this droplet knows; else "no such volume".
    func known(_ name: String) throws(VolumeError) -> VolumeRecord {
        guard let record = self[name] else { throw VolumeError(.notFound, "no such volume: \(name)") }
        return record
    }
}
