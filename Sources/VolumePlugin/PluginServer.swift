import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The plugin's HTTP/1.1 server: SwiftNIO's HTTP/1 coding and a `VolumeDriverChannelHandler` in every connection's
/// pipeline, nothing else. It is a `Service` of the plugin's `ServiceGroup`: it runs until the group shuts down
/// gracefully (SIGTERM), then stops listening, lets every answer under way be written (a Mount's, say), and returns
/// once the last connection has closed. Cancelled, it does the same.
public struct PluginServer: Service {
    /// Where the server listens.
    public enum Address: Sendable {
        /// A unix socket at this path (the plugin's: Docker's plugin socket).
        case unixSocket(String)
        /// A port the kernel chooses on 127.0.0.1 (the tests').
        case loopback
    }

    let controller: VolumeDriverController
    let address: Address
    let onListening: @Sendable (SocketAddress) -> Void

    /// - Parameters:
    ///   - controller: What answers the requests.
    ///   - address: Where to listen.
    ///   - onListening: Called once the server listens, with the address it listens on, before any connection is
    ///     accepted.
    public init(
        controller: VolumeDriverController, address: Address, onListening: @escaping @Sendable (SocketAddress) -> Void = { _ in }
    ) {
        self.controller = controller
        self.address = address
        self.onListening = onListening
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let quiescing = ServerQuiescingHelper(group: group)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelInitializer { [controller] channel in
                channel.eventLoop.makeCompletedFuture {
                    // The handler keeps pipelined requests in order itself; NIO answers what it cannot parse with 400.
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withPipeliningAssistance: false, withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(VolumeDriverChannelHandler(controller: controller))
                }
            }
        let channel =
            switch address {
            case .unixSocket(let path): try await bootstrap.bind(unixDomainSocketPath: path).get()
            case .loopback: try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
            }
        if let local = channel.localAddress { onListening(local) }
        let stopped = channel.eventLoop.makePromise(of: Void.self)
        // A second call (a cancellation after the graceful shutdown) finds the shutdown under way.
        await withTaskCancellationOrGracefulShutdownHandler {
            try? await stopped.futureResult.get()
        } onCancelOrGracefulShutdown: {
            quiescing.initiateShutdown(promise: stopped)
        }
    }
}
