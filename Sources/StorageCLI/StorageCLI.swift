import ArgumentParser
import FoundationEssentials
import Glibc
import Timekeeping
import VolumePlugin
import VolumeService

/// `do-storage snapshot …`, `restore …`, `commit …` and `log …`: a command line that asks the running plugin over its
/// socket, so snapshots are frozen where the volume is mounted and errors are the plugin's.
public struct StorageCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "do-storage",
        abstract: "Snapshots, restores and history of do_storage volumes, done by the running plugin.",
        discussion: "Without arguments, do-storage is the plugin itself (Docker starts it so).",
        subcommands: [
            SnapshotCommand.self, RestoreCommand.self, CommitCommand.self, LogCommand.self, ResetCommand.self,
            CheckoutCommand.self, BranchCommand.self,
        ])

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
            if json { return try printJSON(answer.snapshots) }
            printTable(
                [["NAME", "CREATED (UTC)", "SIZE", "ORIGIN", "ID"]]
                    + answer.snapshots.map {
                        [$0.name, $0.createdAt, "\(($0.sizeGigabytes * 100).rounded() / 100) GiB", $0.origin, $0.id]
                    })
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

struct CommitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit",
        abstract: "Commit a volume's data on its current branch (a snapshot with a message, frozen if the volume is mounted where the plugin runs); prints the commit's id.")
    @Argument(help: "The Docker volume.") var volume: String
    @Option(name: .shortAndLong, help: "What the commit holds, in one line.") var message: String
    @OptionGroup var socket: SocketOption

    func run() throws {
        let answer: VolumeDriverController.CommitResponse = try PluginSocket(path: socket.path())
            .call(.commit, VolumeDriverController.HistoryRequest(volume: volume, message: message))
        print(answer.commit.id)
    }
}

struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log", abstract: "List the commits of a volume's current branch, newest first.")
    @Argument(help: "The Docker volume.") var volume: String
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var socket: SocketOption

    func run() throws {
        let answer: VolumeDriverController.LogResponse = try PluginSocket(path: socket.path())
            .call(.log, VolumeDriverController.HistoryRequest(volume: volume))
        if json { return try printJSON(answer.commits) }
        printTable([["ID", "CREATED (UTC)", "MESSAGE"]] + answer.commits.map { [$0.id, $0.createdAt, $0.message] })
    }
}

struct ResetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset",
        abstract: "Replace the current branch's data with one of its commits, deleting the commits after it (refused while the volume is in use anywhere).")
    @Flag(help: "Required: what happened since the commit is thrown away.") var hard = false
    @Argument(help: "The Docker volume.") var volume: String
    @Argument(help: "A commit id of the current branch, or HEAD (its newest; the default).") var commit: String?
    @OptionGroup var socket: SocketOption

    func validate() throws {
        guard hard else {
            throw ValidationError("reset throws away the volume's data since the commit: say so with --hard (do-storage reset --hard \(volume) \(commit ?? "HEAD"))")
        }
    }

    func run() throws {
        let answer: VolumeDriverController.DoneResponse = try PluginSocket(path: socket.path())
            .call(.reset, VolumeDriverController.HistoryRequest(volume: volume, commit: commit))
        print(answer.message)
    }
}

struct CheckoutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkout",
        abstract: "Make another branch current, or (-b) a new one from a commit of the current branch (refused while the volume is in use anywhere).")
    @Argument(help: "The Docker volume.") var volume: String
    @Argument(help: "The branch to make current.") var branch: String?
    @Option(name: .customShort("b"), help: "Make this new branch (from the current branch's newest commit) and make it current.") var new: String?
    @Option(help: "With -b: the commit to make the branch from.") var from: String?
    @OptionGroup var socket: SocketOption

    func validate() throws {
        guard (branch == nil) != (new == nil) else {
            throw ValidationError("give a branch (do-storage checkout \(volume) main) or -b NEW, not both nor neither")
        }
        if from != nil && new == nil { throw ValidationError("--from goes with -b NEW") }
    }

    func run() throws {
        let answer: VolumeDriverController.BranchResponse = try PluginSocket(path: socket.path())
            .call(.checkout, VolumeDriverController.HistoryRequest(volume: volume, commit: from, branch: new ?? branch, create: new != nil))
        print("\(answer.branch.name) \(answer.branch.doID)")
    }
}

struct BranchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "branch", abstract: "List a volume's branches, or (-d) delete one that is not current.")
    @Argument(help: "The Docker volume.") var volume: String
    @Option(name: .customShort("d"), help: "Delete this branch (its DigitalOcean volume; its commits stay).") var delete: String?
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var socket: SocketOption

    func run() throws {
        let plugin = try PluginSocket(path: socket.path())
        if let delete {
            let answer: VolumeDriverController.DoneResponse = try plugin.call(
                .branchDelete, VolumeDriverController.HistoryRequest(volume: volume, branch: delete))
            return print(answer.message)
        }
        let answer: VolumeDriverController.BranchListResponse = try plugin.call(.branches, VolumeDriverController.HistoryRequest(volume: volume))
        if json { return try printJSON(answer.branches) }
        printTable([["", "BRANCH", "DIGITALOCEAN VOLUME"]] + answer.branches.map { [$0.current ? "*" : "", $0.name, $0.doID] })
    }
}

/// Prints `value` as indented JSON with sorted keys.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Prints rows as columns, each as wide as its widest cell.
func printTable(_ rows: [[String]]) {
    let widths = (0..<(rows.first?.count ?? 0)).map { column in rows.map { $0[column].count }.max() ?? 0 }
    for row in rows {
        let cells = zip(row, widths).map { cell, width in cell + String(repeating: " ", count: max(width - cell.count, 0)) }
        print(cells.joined(separator: "  ").trimmedWhitespace)
    }
}

/// An answer with nothing but `Err`.
struct Done: Decodable {}
