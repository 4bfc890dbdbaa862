import DOSimulator
import Foundation
import Subprocess
import SystemPackage
import Testing

/// `do-storage snapshot …` and `do-storage restore …` against a running plugin, real devices and mounts: the
/// snapshot of a mounted volume is frozen, the list is newest first, errors are the plugin's, and the exit status
/// is 0 only on success.
@Suite(.serialized, .timeLimit(.minutes(5)), .enabled(if: E2E.available, "needs root and udev; CI sets DO_STORAGE_E2E=1"))
struct CommandLineTests {
    /// Runs the plugin's binary as the command line.
    static func cli(_ arguments: [String]) async throws -> (status: Int32, output: String, error: String) {
        let result = try await Subprocess.run(
            .path(FilePath(Plugin.executable.path)), arguments: Arguments(arguments),
            output: .string(limit: 1 << 20), error: .string(limit: 1 << 16))
        guard case .exited(let status) = result.terminationStatus else { throw LabError("do-storage \(arguments) was killed") }
        return (status, result.standardOutput, result.standardError)
    }

    @Test func snapshotsAndRestoresFromTheShell() async throws {
        try await Lab.withPgdataOnOneDroplet { lab, plugin in
            let socket = ["--socket", plugin.socket]
            let mountpoint = try await plugin.mount("pgdata", id: "c1")
            try "before the upgrade\n".write(toFile: mountpoint + "/PG_VERSION", atomically: true, encoding: .utf8)

            let created = try await Self.cli(["snapshot", "create", "pgdata", "--name", "before-upgrade"] + socket)
            #expect(created.status == 0, "\(created)")
            #expect(created.output.hasPrefix("before-upgrade "))
            #expect(plugin.log.contains("Snapshot taken with the filesystem frozen"))
            try "after the upgrade\n".write(toFile: mountpoint + "/PG_VERSION", atomically: true, encoding: .utf8)
            let second = try await Self.cli(["snapshot", "create", "pgdata"] + socket)
            #expect(second.status == 0 && second.output.hasPrefix("pgdata-2"), "\(second)")

            let list = try await Self.cli(["snapshot", "list", "pgdata"] + socket)
            #expect(list.status == 0, "\(list)")
            let lines = list.output.split(separator: "\n")
            #expect(lines.count == 3 && lines[0].hasPrefix("NAME") && lines[0].contains("ORIGIN"), "\(list.output)")
            #expect(lines.count == 3 && lines[1].hasPrefix("pgdata-2") && lines[2].hasPrefix("before-upgrade"), "newest first")
            #expect(lines.count == 3 && lines[2].contains("manual"))
            let json = try await Self.cli(["snapshot", "list", "pgdata", "--json"] + socket)
            let parsed = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [[String: Any]]
            #expect(parsed?.map { $0["name"] as? String } == [second.output.split(separator: " ").first.map(String.init), "before-upgrade"])

            let restored = try await Self.cli(["restore", "before-upgrade", "pgdata-restored"] + socket)
            #expect(restored.status == 0, "\(restored)")
            let onRestored = try await plugin.mount("pgdata-restored", id: "c2")
            #expect(try String(contentsOfFile: onRestored + "/PG_VERSION", encoding: .utf8) == "before the upgrade\n")
            try await plugin.unmount("pgdata-restored", id: "c2")

            let deleted = try await Self.cli(["snapshot", "delete", "before-upgrade", "--volume", "pgdata"] + socket)
            #expect(deleted.status == 0, "\(deleted)")
            #expect(try await lab.world.listSnapshots(volumeID: nil).map(\.name).filter { $0 == "before-upgrade" }.isEmpty)

            // Errors: the plugin's message, a non-zero status.
            let missing = try await Self.cli(["snapshot", "delete", "before-upgrade", "--volume", "pgdata"] + socket)
            #expect(missing.status != 0 && missing.error.contains("volume pgdata has no snapshot with the name or id \"before-upgrade\""), "\(missing)")
            let ghost = try await Self.cli(["snapshot", "list", "ghost"] + socket)
            #expect(ghost.status != 0 && ghost.error.contains("there is no volume ghost"), "\(ghost)")
            let noPlugin = try await Self.cli(["snapshot", "list", "pgdata", "--socket", lab.root + "/none.sock"])
            #expect(noPlugin.status != 0 && noPlugin.error.contains("cannot reach the plugin"), "\(noPlugin)")
            let usage = try await Self.cli(["snapshot", "frobnicate"])
            #expect(usage.status != 0)
            try await plugin.unmount("pgdata", id: "c1")
        }
    }
}
