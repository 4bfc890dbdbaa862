import Logging
import ServiceLifecycle
import VolumePlugin

/// The plugin's server for `controller` on a loopback port, run in a `ServiceGroup` as the plugin runs it, while
/// `body` talks to it; then shut down gracefully, as SIGTERM does, and awaited.
///
/// - Parameters:
///   - controller: What answers the requests.
///   - body: Given the port the server listens on.
public func withLiveServer<T: Sendable>(
    _ controller: VolumeDriverController, _ body: @escaping @Sendable (Int) async throws -> T
) async throws -> T {
    let (ports, listening) = AsyncStream.makeStream(of: Int.self)
    let server = PluginServer(controller: controller, address: .loopback) { address in
        listening.yield(address.port ?? 0)
        listening.finish()
    }
    let group = ServiceGroup(services: [server], logger: Logger(label: "test-server"))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask {
            defer { listening.finish() }
            try await group.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else {
            try await tasks.waitForAll()
            throw ConnectionError("the test server stopped before it listened")
        }
        let result: Result<T, any Error>
        do { result = .success(try await body(port)) } catch { result = .failure(error) }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
        return try result.get()
    }
}
