import AuthzEngine
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// The optional HTTP listener (`--metrics-address`): `GET /metrics` (Prometheus text),
/// `GET /healthz` (the process answers), `GET /readyz` (index built and the store accepting
/// writes). Runs on the daemon's event loops; never touches the check path.
///
/// Bounded: at most `maxConnections` at once (more are closed on accept), and each connection
/// is closed `timeout` after it opened, answered or not, so half-sent requests cannot hold
/// descriptors.
final class MetricsServer: @unchecked Sendable {
    let registry: PrometheusCollectorRegistry
    let dispatcher: Dispatcher
    let maxConnections: Int
    let timeout: TimeAmount
    private let open: Slots
    var channel: Channel?

    /// TLS for the listener (`metrics-tls`), or nil.
    let tls: TLSContextHolder?

    init(registry: PrometheusCollectorRegistry, dispatcher: Dispatcher, maxConnections: Int = 32, timeout: TimeAmount = .seconds(10), tls: TLSContextHolder? = nil) {
        self.tls = tls
        self.registry = registry
        self.dispatcher = dispatcher
        self.maxConnections = maxConnections
        open = Slots(limit: maxConnections)
        self.timeout = timeout
    }

    func start(group: EventLoopGroup, host: String, port: Int) throws -> SocketAddress? {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { ch in
                guard self.open.admit(ch, refused: self.dispatcher.metrics.connectionsRefused) else { return ch.close() }
                let deadline = ch.eventLoop.scheduleTask(in: self.timeout) { ch.close(promise: nil) }
                ch.closeFuture.whenComplete { _ in deadline.cancel() }
                if let tls = self.tls {
                    do { try tls.addHandlers(to: ch, logger: self.dispatcher.logger, listener: "metrics") } catch { return ch.close() }
                }
                return ch.pipeline.configureHTTPServerPipeline().flatMap { ch.pipeline.addHandler(MetricsHTTPHandler(server: self)) }
            }
        let ch = try bootstrap.bind(host: host, port: port).wait()
        channel = ch
        return ch.localAddress
    }

    func stop() { try? channel?.close().wait() }

    /// Refreshes the gauges computed from the engine, then renders the registry.
    func render() -> [UInt8] {
        let engine = dispatcher.engine
        let m = dispatcher.metrics
        let s = engine.snapshot
        m.revision.record(Int64(s.revision))
        let tenants = s.allTenants
        m.tenants.record(tenants.count)
        m.users.record(tenants.reduce(0) { $0 + $1.userCount })
        m.indexBytes.record(tenants.reduce(0) { $0 + $1.approximateBytes })
        let usage = engine.store.mapUsage()
        m.mapSize.record(usage.size)
        m.mapUsed.record(usage.used)
        return registry.emitToBuffer()
    }
}

final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let server: MetricsServer
    var path = ""

    init(server: MetricsServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): path = head.method == .GET ? head.uri : ""
        case .body: break
        case .end:
            let (status, body): (HTTPResponseStatus, [UInt8])
            switch path {
            case "/metrics": (status, body) = (.ok, server.render())
            case "/healthz": (status, body) = (.ok, Array("ok\n".utf8))
            case "/readyz":
                let ready = server.dispatcher.ready()
                (status, body) = (ready.0 ? .ok : .serviceUnavailable, Array((ready.1 + "\n").utf8))
            default: (status, body) = (.notFound, Array("not found\n".utf8))
            }
            var headers = HTTPHeaders()
            headers.add(name: "Connection", value: "close")
            headers.add(name: "Content-Type", value: path == "/metrics" ? "text/plain; version=0.0.4" : "text/plain")
            headers.add(name: "Content-Length", value: String(body.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            var buf = context.channel.allocator.buffer(capacity: body.count)
            buf.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buf))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
        }
    }
}
