import ArgumentParser
import FoundationEssentials
import Glibc
import Timekeeping
import VolumePlugin
import VolumeService

/// `do-storage snapshot …` and `do-storage restore …`: a command line that asks the running plugin over its socket,
/// so snapshots are frozen where the volume is mounted and errors are the plugin's.
public struct StorageCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "do-storage",
        abstract: "Snapshots and restores of do_storage volumes, done by the running plugin.",
        discussion: "Without arguments, do-storage is the plugin itself (Docker starts it so).",
        subcommands: [SnapshotCommand.self, RestoreCommand.self])

    public init() {}

    /// Whether these arguments are a command for the CLI rather than the plugin's start.
    public static func isCommand(_ arguments: [String]) -> Bool { arguments.count > 1 }
}

/// Where the plugin listens: `--socket`, else the managed plugin's socket (inside its namespace, or the only one
/// under /run/docker/plugins on the host).
struct SocketOption: ParsableArguments {
    @Option(help: "The plugin's socket (default: found under /run/docker/plugins).")
    var socket: String?

    func path() throws -> String {
        if let socket { return socket }
        let own = "/run/docker/plugins/do_storage.sock"
        if access(own, F_OK) == 0 { return own }
        let folders: [String] = (try? FileManager.default.contentsOfDirectory(atPath: "/run/docker/plugins")) ?? []
        let found: [String] = folders.sorted().map { (folder: String) -> String in "/run/docker/plugins/\(folder)/do_storage.sock" }
            .filter { (path: String) -> Bool in access(path, F_OK) == 0 }
        guard found.count == 1, let only = found.first else {
            throw ValidationError(
                found.isEmpty
                    ? "no do_storage socket under /run/docker/plugins: is the plugin enabled? (or give --socket)"
                    : "several do_storage sockets: \(found.joined(separator: ", ")); give one with --socket")
        }
        return only
    }
}

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Take, list and delete a volume's snapshots.",
        subcommands: [Create.self, List.self, Delete.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take a snapshot (with the filesystem frozen if the volume is mounted where the plugin runs).")
        @Argument(help: "The Docker volume.") var volume: String
        @Option(help: "The snapshot's name (default: <volume>-<UTC time>).") var name: String?
        @OptionGroup var socket: SocketOption

        func run() throws {
            let answer: VolumeDriverController.SnapshotResponse = try PluginSocket(path: socket.path())
                .call(.snapshotCreate, VolumeDriverController.SnapshotRequest(volume: volume, name: name))
            print("\(answer.snapshot.name) \(answer.snapshot.id)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a volume's snapshots, newest first.")
        @Argument(help: "The Docker volume.") var volume: String
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var socket: SocketOption

        func run() throws {
            let answer: VolumeDriverController.SnapshotListResponse = try PluginSocket(path: socket.path())
                .call(.snapshotList, VolumeDriverController.SnapshotRequest(volume: volume))
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(answer.snapshots), as: UTF8.self))
                return
            }
            let rows = [["NAME", "CREATED (UTC)", "SIZE", "ORIGIN", "ID"]]
                + answer.snapshots.map {
                    [$0.name, $0.createdAt, "\(($0.sizeGigabytes * 100).rounded() / 100) GiB", $0.origin, $0.id]
                }
            let widths = (0..<5).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let cells = zip(row, widths).map { cell, width in cell + String(repeating: " ", count: max(width - cell.count, 0)) }
                print(cells.joined(separator: "  ").trimmedWhitespace)
            }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete one of a volume's snapshots.")
        @Argument(help: "The snapshot's name or id.") var snapshot: String
        @Option(help: "The Docker volume it is a snapshot of.") var volume: String
        @OptionGroup var socket: SocketOption

        func run() throws {
            let _: Done = try PluginSocket(path: socket.path())
                .call(.snapshotDelete, VolumeDriverController.SnapshotRequest(volume: volume, snapshot: snapshot))
        }
    }
}

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore", abstract: "Make a new volume from a snapshot (as -o from_snapshot= does).")
    @Argument(help: "The snapshot's id or name.") var snapshot: String
    @Argument(help: "The new Docker volume's name.") var volume: String
    @OptionGroup var socket: SocketOption

    func run() throws {
        let _: Done = try PluginSocket(path: socket.path())
            .call(.restore, VolumeDriverController.SnapshotRequest(volume: volume, snapshot: snapshot))
        print(volume)
    }
}

/// An answer with nothing but `Err`.
struct Done: Decodable {}
