import NIOCore
import NIOHTTP1

/// Answers every request on a plugin connection from its channel pipeline, right after SwiftNIO's HTTP/1.1 decoding:
/// the body is gathered there, the controller answers it (on the spot where it can: the fixed answers, and Get, List
/// and Path from the driver's ready lookups; else in one task), and the answer is written back on the connection's
/// event loop. `PluginServer` puts it in every connection's pipeline.
///
/// Requests are answered one at a time and in order, as HTTP/1.1 requires of a client that pipelines (Docker does
/// not): one that arrives while another is answered waits its turn, and the connection is not read meanwhile. A
/// path that is no request of the protocol is answered 404. On a graceful shutdown a connection closes once the
/// answer it is making is written.
public final class VolumeDriverChannelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    /// The largest body read (a VolumeDriver request is a few hundred bytes); the rest of a larger one is dropped
    /// as it arrives, and the request answered with an error.
    public static let bodyLimit = 1 << 20

    let controller: VolumeDriverController

    /// A request read in full.
    struct Pending: Sendable {
        var method: HTTPMethod
        var version: HTTPVersion
        var path: String
        var body: ByteBuffer
        var tooLarge = false
        var close: Bool
    }

    /// The request being read.
    private var reading: Pending?
    /// Requests read while another is answered.
    private var waiting: [Pending] = []
    private var answering = false
    /// A read the channel asked for while an answer was made: done once it is written. Holding reads keeps what a
    /// client that pipelines can queue here to what one read brings.
    private var readPending = false
    /// The server is shutting down gracefully: the connection closes once the answer being made is written.
    private var quiescing = false

    public init(controller: VolumeDriverController) {
        self.controller = controller
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
            reading = Pending(
                method: head.method, version: head.version, path: String(path),
                body: context.channel.allocator.buffer(capacity: 0), close: !head.isKeepAlive)
        case .body(var part):
            guard var request = reading else { return }
            reading = nil  // the buffer is appended to in place, not copied
            if !request.tooLarge, request.body.readableBytes + part.readableBytes <= Self.bodyLimit {
                request.body.writeBuffer(&part)
            } else {
                request.tooLarge = true
                request.body.clear()
            }
            reading = request
        case .end:
            guard let request = reading else { return }
            reading = nil
            waiting.append(request)
            if !answering { answerNext(context: context) }
        }
    }

    /// Answers the waiting requests in turn: at once where the answer is fixed, ready (a lookup) or a refusal, else
    /// in a task whose answer is written on the event loop, which then takes the next.
    private func answerNext(context: ChannelHandlerContext) {
        while !waiting.isEmpty {
            let request = waiting.removeFirst()
            // The last answer before a graceful shutdown closes the connection.
            let close = request.close || quiescing && waiting.isEmpty
            switch request.method == .POST ? controller.endpoints[request.path] : nil {
            case nil:
                Self.write(Self.notFound(request), to: request, close: close, context: context)
            case .fixed(let answer):
                Self.write(answer, to: request, close: close, context: context)
            case .route where request.tooLarge:
                let refusal = VolumeDriverController.encode(
                    VolumeDriverController.ErrorResponse(
                        err: "malformed VolumeDriver request: a body of more than \(Self.bodyLimit) bytes"),
                    status: .internalServerError)
                Self.write(refusal, to: request, close: close, context: context)
            case .route(let route, let immediate):
                if let answer = immediate?(request.body) {
                    Self.write(answer, to: request, close: close, context: context)
                    continue
                }
                answering = true
                Self.answerLater(
                    request, route, handler: NIOLoopBound(self, eventLoop: context.eventLoop),
                    context: NIOLoopBound(context, eventLoop: context.eventLoop))
                return
            }
        }
    }

    /// The route's answer in a task on Swift's pool (a Mount may take minutes, and never holds the event loop),
    /// written on the connection's event loop; then the next request's.
    private static func answerLater(
        _ request: Pending, _ route: @escaping VolumeDriverController.Route,
        handler: NIOLoopBound<VolumeDriverChannelHandler>, context: NIOLoopBound<ChannelHandlerContext>
    ) {
        let loop = context.eventLoop
        Task {
            let answer = await route(request.body)
            loop.execute {
                let handler = handler.value
                handler.answering = false
                write(
                    answer, to: request, close: request.close || handler.quiescing && handler.waiting.isEmpty,
                    context: context.value)
                handler.answerNext(context: context.value)
                if !handler.answering, handler.readPending {
                    handler.readPending = false
                    context.value.read()
                }
            }
        }
    }

    /// The client is gone: requests it queued behind the one being answered are not started (the one under way
    /// finishes: a Mount half done would leave more behind than a Mount done).
    public func channelInactive(context: ChannelHandlerContext) {
        waiting.removeAll()
        reading = nil
        context.fireChannelInactive()
    }

    /// A graceful shutdown (SIGTERM) asks every connection to close. One whose answer is still being made (a Mount,
    /// say), or whose request is still being read, stays open until that answer is written, so that Docker hears how
    /// the Mount ended; an idle one closes at once.
    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        if answering || reading != nil {
            quiescing = true
        } else {
            context.close(promise: nil)
        }
    }

    public func read(context: ChannelHandlerContext) {
        if answering {
            readPending = true
        } else {
            context.read()
        }
    }

    static func notFound(_ request: Pending) -> VolumeDriverController.Answer {
        VolumeDriverController.encode(
            VolumeDriverController.ErrorResponse(err: "no such request: \(request.method.rawValue) \(request.path)"),
            status: .notFound)
    }

    private static func write(
        _ answer: VolumeDriverController.Answer, to request: Pending, close: Bool, context: ChannelHandlerContext
    ) {
        var headers = HTTPHeaders()
        headers.reserveCapacity(3)
        headers.add(name: "Content-Type", value: VolumeDriverController.contentType)
        headers.add(name: "Content-Length", value: String(answer.body.readableBytes))
        if close { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: request.version, status: answer.status, headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(answer.body))), promise: nil)
        let written = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
        if close {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
