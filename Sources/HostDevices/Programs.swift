import FoundationEssentials
import Subprocess

/// The filesystem tools the plugin runs (mke2fs, mkfs.xfs, e2fsck, resize2fs, xfs_growfs): from the plugin's
/// rootfs, or the host's `PATH` for a plain process. Each runs with no input; its output is kept for the error.
enum Programs {
    /// Where the tools are looked up, whatever `PATH` the plugin was started with (a managed plugin may have none).
    static let searchPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// Runs the tool and returns its exit code; throws when it cannot be started. `accept` lists the exit codes
    /// that mean success (e2fsck answers 1 when it fixed something).
    @discardableResult
    static func run(_ tool: String, _ arguments: [String], accept: Set<Int32> = [0]) async throws -> Int32 {
        let code: Int32
        let output: String
        // Nothing of the plugin's (its socket above all) goes with the child, whatever the spawn closes itself.
        Descriptors.closeOnExec()
        do {
            let result = try await Subprocess.run(
                .name(tool), arguments: Arguments(arguments), environment: .inherit.updating(["PATH": searchPath]),
                input: .none, output: .string(limit: 64 * 1024), error: .string(limit: 64 * 1024))
            switch result.terminationStatus {
            case .exited(let status): code = status
            case .signaled(let signal): code = 128 + signal
            }
            output = (result.standardError + " " + result.standardOutput)
                .split(whereSeparator: \.isWhitespace).joined(separator: " ")
        } catch {
            throw DeviceError(.program, "cannot run \(tool): \(error)")
        }
        guard accept.contains(code) else {
            throw DeviceError(
                .program, "\(tool) \(arguments.joined(separator: " ")) failed (exit \(code)): \(String(output.suffix(600)))")
        }
        return code
    }
}
