import FoundationEssentials
import Glibc
import NIOConcurrencyHelpers
import NIOPosix
import TypedErrors

/// What the plugin knows of one Docker volume.
public struct VolumeRecord: Codable, Sendable, Equatable {
    /// Docker's name for the volume.
    public var name: String
    /// The DigitalOcean volume's name (Docker's name with `_` read as `-`).
    public var doName: String
    /// The DigitalOcean volume id, once known.
    public var volumeID: String?
    public var createdAt: Date
    /// References held by Docker: mount ID → count (the engine may send the same ID twice).
    public var references: [String: Int]
    /// Where the volume is mounted, while it is.
    public var mountpoint: String?
    /// `-o mountopts=` given at Create; nil: the plugin-wide default.
    public var mountOptions: [MountOption]?
    /// `-o onremove=` given at Create; nil: the plugin-wide default.
    public var onRemove: RemovePolicy?
    /// What the plugin last saw of the volume (shown in Status; absent in state files of earlier versions).
    public var seen: SeenVolume?
    /// The last failure worth showing in Status (a failed growth, say); nil when none.
    public var lastError: String?
    /// `-o fstype=` given at Create: the filesystem to make on the volume if it turns out blank.
    public var formatAs: FilesystemType?
    /// `-o fslabel=` given at Create, for that filesystem.
    public var formatLabel: String?
    /// `-o takeover=` given at Create; nil: the plugin-wide `TAKEOVER`.
    public var takeover: Takeover?
    /// When a Mount asked DigitalOcean to attach the volume here, until that Mount ends: a plugin killed meanwhile
    /// knows at its next start that an attach may still complete, and releases the volume once it has.
    public var attachRequested: Date?
    /// When this droplet asked DigitalOcean to detach the volume from here, until it was detached: a plugin killed
    /// meanwhile does not take the volume for attached at its next Mount while the detach may still complete.
    public var detachRequested: Date?
    /// For a volume made by `clone_of`: whether its origin snapshot was taken with the source's filesystem frozen.
    public var cloneConsistency: CloneConsistency?
    /// How many snapshots the volume had, and its newest ("name at time"), as last seen.
    public var snapshotCount: Int?
    public var lastSnapshot: String?
    /// The newest commit of the volume's current branch ("id message"), as last seen.
    public var head: String?
    /// The current branch of its history, as its volume's tags said when last seen; nil: `main`.
    public var branch: String?
    /// The volume's snapshot schedule, as its tags said when last seen.
    public var schedule: SnapshotSchedule?
    /// When the schedule last took a snapshot (wall clock), as last seen.
    public var lastScheduledAt: Date?
    /// The data directory its containers see, as its tags said when last seen; nil: they see the filesystem's root.
    public var dataDirectory: DataDirectory?

    public init(
        name: String, doName: String, volumeID: String? = nil, createdAt: Date, references: [String: Int] = [:],
        mountpoint: String? = nil, mountOptions: [MountOption]? = nil, onRemove: RemovePolicy? = nil,
        seen: SeenVolume? = nil
    ) {
        self.name = name
        self.doName = doName
        self.volumeID = volumeID
        self.createdAt = createdAt
        self.references = references
        self.mountpoint = mountpoint
        self.mountOptions = mountOptions
        self.onRemove = onRemove
        self.seen = seen
    }

    /// All references, across mount IDs.
    public var referenceCount: Int { references.values.reduce(0, +) }
}

/// How consistent a clone's origin snapshot is.
public enum CloneConsistency: String, Codable, Sendable {
    /// Taken with the source's filesystem frozen on the droplet that had it mounted: as after a clean unmount.
    case frozen
    /// Taken of a volume mounted elsewhere or nowhere: as after a power cut (the journal replays at mount).
    case crash
}

/// A DigitalOcean volume as the plugin last saw it, so Get answers without calling DigitalOcean.
public struct SeenVolume: Codable, Sendable, Equatable {
    public var sizeGiB: Int
    /// `ext4`, `xfs`, or empty when DigitalOcean did not format it.
    public var fstype: String
    /// The droplet it is attached to, if any.
    public var attachedTo: Int?
    /// Its device node here, while attached here.
    public var device: String?
    /// It carries the `do-storage` marker tag.
    public var createdByPlugin: Bool
    /// The filesystem's size in bytes, as read before the last mount and after each growth.
    public var filesystemBytes: UInt64?

    public init(sizeGiB: Int, fstype: String, attachedTo: Int?, device: String? = nil, createdByPlugin: Bool) {
        self.sizeGiB = sizeGiB
        self.fstype = fstype
        self.attachedTo = attachedTo
        self.device = device
        self.createdByPlugin = createdByPlugin
    }
}

/// The persisted registry.
public struct PersistedState: Codable, Sendable, Equatable {
    public var version: Int = 1
    public var volumes: [String: VolumeRecord] = [:]
    /// This droplet's heartbeat, while it has one.
    public var lease: LeaseState?

    public init(volumes: [String: VolumeRecord] = [:], lease: LeaseState? = nil) {
        self.volumes = volumes
        self.lease = lease
    }
}

/// Saves the registry atomically: write a temporary file, fsync it, rename it over the old one, fsync the folder.
/// A crash at any point leaves either the old or the new state, never a torn file. File I/O runs on a thread pool.
///
/// Saves are serialised and ordered: each snapshot gets a sequence number when `save` is called, writes happen one
/// at a time, and a snapshot older than the one already on disk is not written (the newer one holds all it knew).
/// So however callers re-enter while a write is in flight, the file ends as the last snapshot handed to `save`.
public struct StateStore: Sendable {
    public let directory: String
    public var path: String { directory + "/state.json" }
    private let writer = SerialWriter()

    /// A store of the state in `directory`/state.json, written atomically.
    ///
    /// - Parameter directory: Where state.json lives (the plugin's `STATE_DIR`).
    public init(directory: String) {
        self.directory = directory
    }

    /// The saved state; an empty one when there is none yet. A file that cannot be read fails with the reason.
    ///
    /// - Returns: The state as last saved, or an empty one.
    /// - Throws: `StateError` `.damaged` when the file is not what the plugin writes (it is left alone).
    public func load() throws -> PersistedState {
        guard FileManager.default.fileExists(atPath: path) else { return PersistedState() }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        do {
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            return try decoder.decode(PersistedState.self, from: data)
        } catch {
            throw StateError(.damaged, "the state file \(path) is damaged (\(error)); move it aside to start afresh")
        }
    }

    /// Writes `state`; returns once it, or a newer snapshot, is durably on disk.
    ///
    /// Runs on the caller's actor up to the write (`nonisolated(nonsending)`), so snapshots are numbered in the order
    /// the caller handed them over, not in the order the global executor happened to run the calls.
    nonisolated(nonsending) public func save(_ state: PersistedState) async throws {
        try await prepare(state).write()
    }

    /// Encodes `state` and numbers it, for `PendingSave.write`: call it where the order of saves is decided (under
    /// the lock of whatever owns the state), and write after.
    ///
    /// - Parameter state: The state to save.
    /// - Returns: The encoded state with its place in the order of saves.
    /// - Throws: When the state cannot be encoded.
    public func prepare(_ state: PersistedState) throws -> PendingSave {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return PendingSave(data: try encoder.encode(state), sequence: writer.next(), store: self)
    }

    /// One save, numbered: written unless a later one is on disk already.
    public struct PendingSave: Sendable {
        let data: Data
        let sequence: UInt64
        let store: StateStore

        /// Writes the state off the cooperative pool; returns once it, or a newer one, is durably on disk.
        ///
        /// - Throws: `StateError` `.write` when it cannot be written.
        public func write() async throws {
            let (data, sequence, writer, path, directory) = (data, sequence, store.writer, store.path, store.directory)
            try await NIOThreadPool.singleton.runIfActive {
                try writer.write(sequence) { try StateStore.writeAtomically(data, to: path, directory: directory) }
            }
        }
    }

    /// Hands out sequence numbers and runs one write at a time, skipping snapshots older than the one written.
    final class SerialWriter: Sendable {
        private let issued = NIOLockedValueBox<UInt64>(0)
        private let written = NIOLockedValueBox<UInt64>(0)

        func next() -> UInt64 {
            issued.withLockedValue {
                $0 += 1
                return $0
            }
        }

        /// Runs `body` under the write lock unless a newer snapshot is already written. Blocks: call it off the
        /// cooperative pool.
        func write(_ sequence: UInt64, _ body: () throws -> Void) throws {
            try written.withLockedValue { last in
                guard sequence > last else { return }
                try body()
                last = sequence
            }
        }
    }

    /// Writes `data` to a new temporary file (never through a link planted there), syncs it and renames it over
    /// `path`. The state directory is kept 0700.
    static func writeAtomically(_ data: Data, to path: String, directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o700)
        let temporary = path + ".tmp"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StateError(.write, "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        var failure: String?
        data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    failure = String(cString: strerror(errno))
                    return
                }
                offset += written
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if let failure { throw StateError(.write, "cannot write \(temporary): \(failure)") }
        guard rename(temporary, path) == 0 else {
            throw StateError(.write, "cannot replace \(path): \(String(cString: strerror(errno)))")
        }
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            fsync(dirFD)
            close(dirFD)
        }
    }
}

/// The plugin's state file could not be read or written.
public typealias StateError = CodedError<StateErrorCode>

/// What kind of `StateError` it is.
public struct StateErrorCode: Hashable, Sendable, CustomStringConvertible {
    private enum Base: String, Hashable, Sendable {
        case damaged, write
    }
    private let base: Base
    private init(_ base: Base) { self.base = base }

    /// state.json is not what the plugin writes: it is left alone, and the plugin does not start.
    public static let damaged = Self(.damaged)
    /// The new state could not be written or put in place; the previous file is intact.
    public static let write = Self(.write)

    public var description: String { base.rawValue }
}
