import FoundationEssentials
import Glibc
import Logging
import PluginApp
import StorageCLI

// do-storage: Docker volume plugin for DigitalOcean Block Storage. Configured only through the environment
// (see README.md, "Configuration"). Given arguments, it is the command line that asks the running plugin.
// Swift reads the arguments from /proc/self/cmdline: a process that entered another mount namespace but not its pid
// namespace sees none there, not even its own name, and must not take that for "no arguments" and start a server.
guard !CommandLine.arguments.isEmpty else {
    let message = Array(
        "do-storage: cannot read this process's arguments from /proc/self/cmdline (a mount namespace entered without its pid namespace? use nsenter -m -p)\n".utf8)
    _ = message.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    exit(2)
}
if StorageCommand.isCommand(CommandLine.arguments) {
    StorageCommand.main()
    exit(0)
}
let settings: PluginSettings
do {
    settings = try PluginSettings.fromEnvironment()
} catch {
    let message = Array("do-storage: \(error)\n".utf8)
    _ = message.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    exit(2)
}
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardOutput(label: label)
    handler.logLevel = settings.logLevel
    return handler
}
let logger = Logger(label: "do_storage")
do {
    try await PluginApp.run(settings: settings, logger: logger)
} catch {
    logger.critical("do_storage stopped", metadata: ["error": "\(error)"])
    exit(1)
}
