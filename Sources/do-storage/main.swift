import FoundationEssentials
import Glibc
import Logging
import PluginApp
import StorageCLI

// do-storage: Docker volume plugin for DigitalOcean Block Storage. Configured only through the environment
// (see README.md, "Configuration"). Given arguments, it is the command line that asks the running plugin.
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
