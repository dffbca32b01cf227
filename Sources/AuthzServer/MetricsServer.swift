import AuthzEngine
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// The optional HTTP listener (`--metrics-address`): `GET /metrics` (Prometheus text),
/// `GET /healthz` (the process answers), `GET /readyz` (index built and the store accepting
/// writes). Runs on the server's event loops; never touches the check path.
///
/// A `Service` beside the `AuthzServer` it reports on: `run()` waits until that server has
/// opened its store, binds `config.metricsAddress`, serves until graceful shutdown, then
/// closes. In authzd's `ServiceGroup` it comes after the server, so it stops first (as before
/// the drain, so probes see the daemon go away before its connections drain).
///
/// Bounded: at most `maxMetricsConnections` at once (more are closed on accept), and each
/// connection is closed `metricsTimeoutSeconds` after it opened, answered or not, so
/// half-sent requests cannot hold descriptors.
public final class MetricsServer: Service, Sendable {
    let registry: PrometheusCollectorRegistry
    let server: AuthzServer
    let maxConnections: Int
    let timeout: TimeAmount
    private let open: Slots
    private let bound = NIOLockedValueBox<SocketAddress?>(nil)

    /// The metrics backend authzd bootstraps `MetricsSystem` with, exporting to `registry`:
    /// duration buckets from 5 µs to 1 s (checks take microseconds), value buckets 1 to 10 000.
    /// Makes the factory only; bootstrapping stays with the process.
    public static func factory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000, 1_000_000].map { Duration.microseconds($0) }
        factory.defaultValueHistogramBuckets = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000]
        return factory
    }

    /// A listener for `server`'s `config.metricsAddress`, rendering `registry` (the one
    /// `MetricsSystem` was bootstrapped with). Binds nothing until `run()`.
    public init(server: AuthzServer, registry: PrometheusCollectorRegistry) {
        self.server = server
        self.registry = registry
        maxConnections = server.config.maxMetricsConnections
        open = Slots(limit: maxConnections)
        timeout = .seconds(Int64(server.config.metricsTimeoutSeconds))
    }

    /// Where the listener is bound, while it is.
    public var address: SocketAddress? { bound.withLockedValue { $0 } }

    /// Waits for the server's store (returns at once if the server did not start), binds,
    /// serves until graceful shutdown or cancellation, then closes the listener (connections
    /// open then end with their timeout or the event loops). Throws `ConfigError` when the
    /// address is bad or cannot be bound; does nothing without `config.metricsAddress`.
    public func run() async throws {
        guard let address = server.config.metricsAddress else { return }
        guard let opened = await server.opened.value() else { return }
        let dispatcher = opened.dispatcher
        let tls = server.config.tls.metricsTLS ? opened.tls : nil
        let (host, port) = try AuthzServer.parse(address: address)
        let bootstrap = ServerBootstrap(group: server.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { ch in
                guard self.open.admit(ch, refused: dispatcher.metrics.connectionsRefused) else { return ch.close() }
                let deadline = ch.eventLoop.scheduleTask(in: self.timeout) { ch.close(promise: nil) }
                ch.closeFuture.whenComplete { _ in deadline.cancel() }
                if let tls {
                    do { try tls.addHandlers(to: ch, logger: dispatcher.logger, listener: "metrics") } catch { return ch.close() }
                }
                return ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.configureHTTPServerPipeline()
                    try ch.pipeline.syncOperations.addHandler(MetricsHTTPHandler(server: self, dispatcher: dispatcher))
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw ConfigError("cannot listen on metrics address \(address): \(error)")
        }
        bound.withLockedValue { $0 = channel.localAddress }
        server.logger.info("metrics listening", metadata: ["listen.metrics": "\(channel.localAddress?.description ?? address)"])
        try? await gracefulShutdown()
        try? await channel.close()
        bound.withLockedValue { $0 = nil }
    }

    /// Refreshes the gauges computed from the engine, then renders the registry.
    func render(_ dispatcher: Dispatcher) -> [UInt8] {
        let engine = dispatcher.engine
        let m = dispatcher.metrics
        let s = engine.snapshot
        m.revision.record(Int64(s.revision))
        let tenants = s.allTenants
        m.tenants.record(tenants.count)
        m.users.record(tenants.reduce(0) { $0 + $1.userCount })
        m.indexBytes.record(tenants.reduce(0) { $0 + $1.approximateBytes })
        let usage = engine.storageUsage
        m.mapSize.record(usage.size)
        m.mapUsed.record(usage.used)
        m.revisionWaiters.record(engine.pendingRevisionWaiters)
        return registry.emitToBuffer()
    }
}

final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let server: MetricsServer
    let dispatcher: Dispatcher
    var path = ""

    init(server: MetricsServer, dispatcher: Dispatcher) {
        self.server = server
        self.dispatcher = dispatcher
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): path = head.method == .GET ? head.uri : ""
        case .body: break
        case .end:
            let (status, body): (HTTPResponseStatus, [UInt8])
            switch path {
            case "/metrics": (status, body) = (.ok, server.render(dispatcher))
            case "/healthz": (status, body) = (.ok, Array("ok\n".utf8))
            case "/readyz":
                let ready = dispatcher.ready()
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
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}
