import AuthzEngine
import AuthzModel
import AuthzLog
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's request server: the engine served over a Unix socket and/or TCP, and the
/// gateway listeners, as a swift-service-lifecycle `Service`.
///
/// Lifecycle (`State`): `run()` starts (opens the store, compiling the index, then binds every
/// listener), serves until graceful shutdown, then drains: stops accepting, lets every
/// connection finish what it has in flight (bounded by `drainTimeout`), closes the rest,
/// stops the background work (events, push, replication) and syncs LMDB. Cancellation drains
/// with no grace. Not restartable: a second `run()` throws.
///
/// The blocking steps (opening LMDB, binding, draining, joining thread pools) run on
/// `NIOThreadPool.singleton`, never on the caller's task or an event loop.
///
/// A library: it never bootstraps logging or metrics; the process that assembles it does
/// (authzd's `serve`), before making it.
public final class AuthzServer: Service, Sendable {
    public let config: ServerConfig
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    /// Whether `group` was made here (then it is shut down after the drain).
    private let ownsGroup: Bool
    /// How long the drain at graceful shutdown waits for in-flight requests.
    public let drainTimeout: TimeAmount

    /// What the server is doing; see the type's doc comment. Transitions under the lock.
    private enum State {
        case idle
        case starting
        case serving(Running)
        case stopping
        case stopped
    }

    /// What a started server holds.
    private struct Running {
        var dispatcher: Dispatcher
        var listeners: [Channel]
        var tls: TLSContextHolder?
        /// `Dispatcher.sweepSessions` every few seconds.
        var sweeper: RepeatedTask?
        var gateway: Gateway?
        var httpGateway: HTTPGatewayServer?
        var grpcGateway: GRPCExtAuthzServer?
        var httpAddress: SocketAddress?
        var grpcAddress: SocketAddress?
    }

    private let state = NIOLockedValueBox(State.idle)
    /// Published once start ends: what the metrics listener needs, or nil when start failed.
    let opened = Published<Opened?>()
    /// What `MetricsServer` serves from.
    struct Opened: Sendable {
        let dispatcher: Dispatcher
        let tls: TLSContextHolder?
    }

    private let connections = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
    private let connectionCount = NIOLockedValueBox(0)
    private let unixConnectionCount = NIOLockedValueBox(0)
    /// `maxConnections`, lowered at start if the descriptor limit cannot hold it.
    private let effectiveMaxConnections = NIOLockedValueBox(0)

    /// The decision log checks are recorded to, or nil (`config.decisionLogPath` is read by
    /// whoever makes the log; the log's own service writes it).
    let decisionLog: DecisionLog?

    /// A server for `config`, on `group` when given (the caller then shuts it down after the
    /// server stopped), else on a group of `config.threads` threads made and shut down here.
    /// Sampled checks go to `decisionLog` when given. Nothing is opened or bound until
    /// `run()` (or `start()`).
    public init(config: ServerConfig, logger: Logger, group: MultiThreadedEventLoopGroup? = nil,
                decisionLog: DecisionLog? = nil, drainTimeout: TimeAmount = .seconds(10)) {
        self.config = config
        self.decisionLog = decisionLog
        self.logger = logger
        self.drainTimeout = drainTimeout
        if let group {
            self.group = group
            ownsGroup = false
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, config.threads))
            ownsGroup = true
        }
    }

    private var running: Running? {
        state.withLockedValue { if case .serving(let r) = $0 { return r } else { return nil } }
    }

    /// The dispatcher, while serving.
    public var dispatcher: Dispatcher? { running?.dispatcher }
    /// The gateway decider, while serving with a gateway listener.
    public var gateway: Gateway? { running?.gateway }
    /// Where the HTTP and gRPC gateway listeners are bound, while serving.
    public var httpAddress: SocketAddress? { running?.httpAddress }
    public var grpcAddress: SocketAddress? { running?.grpcAddress }

    /// The service: `start()`, serve until graceful shutdown (or cancellation), then
    /// `shutdown`. Throws what `start()` throws; a server that started returns normally.
    public func run() async throws {
        try await start()
        let cancelled: Bool
        do {
            try await gracefulShutdown()
            cancelled = false
        } catch {
            cancelled = true
        }
        logger.info("shutting down", metadata: ["drain.timeout_ms": "\(cancelled ? 0 : drainTimeout.nanoseconds / 1_000_000)"])
        await shutdown(drainTimeout: cancelled ? .zero : drainTimeout)
    }

    /// The TCP port actually bound (useful with port 0), or nil.
    public var tcpPort: Int? {
        running?.listeners.compactMap { $0.localAddress?.port }.first
    }

    /// Opens the engine and binds every listener; returns once they accept. Throws
    /// `AuthzError` for store problems and `ConfigError` for a bad address, a live socket
    /// already at `socketPath` or a port in use; then nothing stays open. Throws `ConfigError`
    /// when called twice. The work runs on `NIOThreadPool.singleton`.
    public func start() async throws {
        let go = state.withLockedValue { s -> Bool in
            guard case .idle = s else { return false }
            s = .starting
            return true
        }
        guard go else { throw ConfigError("the server was already started") }
        do {
            let r = try await NIOThreadPool.singleton.runIfActive { try self.openAndBind() }
            state.withLockedValue { $0 = .serving(r) }
            opened.publish(Opened(dispatcher: r.dispatcher, tls: r.tls))
        } catch {
            state.withLockedValue { $0 = .stopped }
            opened.publish(nil)
            if ownsGroup { try? await group.shutdownGracefully() }
            throw error
        }
    }

    /// `start()`'s blocking part: on a thread-pool thread, never an event loop.
    private func openAndBind() throws -> Running {
        if config.socketPath == nil && config.address == nil && config.httpAddress == nil && config.httpSocketPath == nil && config.grpcAddress == nil {
            throw ConfigError("nothing to listen on: give --socket PATH and/or --address HOST:PORT")
        }
        let tcpListeners = [config.address, config.httpAddress, config.grpcAddress].compactMap { $0 }
        var tls: TLSContextHolder?
        if config.tls.enabled {
            tls = try TLSContextHolder(settings: config.tls)
        } else if !tcpListeners.isEmpty && !(config.insecurePlaintext || config.insecureNoAuth) {
            throw ConfigError("TCP listener \(tcpListeners.joined(separator: ", ")) would carry API keys and decisions in clear text: give --tls-cert and --tls-key, or --insecure-plaintext to accept that")
        }
        if config.tls.metricsTLS && !config.tls.enabled {
            throw ConfigError("metrics-tls needs tls-cert and tls-key")
        }
        if !config.tls.enabled && !tcpListeners.isEmpty {
            logger.warning("TCP listeners serve plain text (--insecure-plaintext): API keys and decisions cross the network unencrypted", metadata: ["listen.tcp": "\(tcpListeners)"])
        }
        var options = EngineOptions()
        options.sync = config.sync
        options.mapSize = config.mapSize
        options.maxMapSize = config.maxMapSize
        options.keyRingPath = config.keyRingPath
        options.autoMigrate = config.autoMigrate
        options.changeRetention = config.watchRetention
        options.limits = config.tenantLimits
        try planDescriptors()
        let started = NIODeadline.now()
        let engine = try Engine(directory: config.dataDir, options: options)
        let tenants = engine.snapshot.allTenants
        logger.info("index compiled", metadata: [
            "store.dir": "\(config.dataDir)", "store.revision": "\(engine.revision)", "index.tenants": "\(tenants.count)",
            "index.users": "\(tenants.reduce(0) { $0 + $1.userCount })",
            "index.compile_ms": "\((NIODeadline.now() - started).nanoseconds / 1_000_000)",
        ])
        let dispatcher = try Dispatcher(engine: engine, config: config, logger: logger)
        if let log = decisionLog {
            dispatcher.decisionLog = log
            logger.info("decision log on", metadata: ["decision_log.path": "\(log.path)", "decision_log.sample_rate": "\(log.sampleRate)"])
        }
        if let path = config.auditLogPath {
            var settings = AuditLog.Settings(path: path)
            settings.maxBytes = config.auditMaxBytes
            settings.keep = config.auditKeep
            settings.syncMillis = config.auditSyncMillis
            let metrics = dispatcher.metrics
            dispatcher.audit = try AuditLog(settings: settings, logger: logger,
                                            onWritten: { metrics.auditLines.increment(by: $0) },
                                            onDropped: { metrics.auditDropped.increment(by: $0) })
            logger.info("audit trail on", metadata: ["audit.path": "\(path)", "audit.max_bytes": "\(config.auditMaxBytes)", "audit.keep": "\(config.auditKeep)"])
            tls?.audit.withLockedValue { $0 = dispatcher.audit }
        }
        // Checks read the clock for their latency only when someone exports it.
        dispatcher.metricsEnabled = config.metricsAddress != nil
        if config.insecureNoAuth {
            logger.critical("--insecure-no-auth: EVERY CALLER, ON TCP TOO, IS A SUPERUSER. Never use this outside a benchmark or a laptop.")
        }
        if let settings = config.log {
            // A re-send after the duplicate window would be stored twice (docs/scale-out.md).
            guard Int64(config.logWriteTimeoutSeconds) < settings.duplicateWindowSeconds else {
                throw ConfigError("log-write-timeout (\(config.logWriteTimeoutSeconds) s) must be shorter than log-duplicate-window (\(settings.duplicateWindowSeconds) s): a write re-sent after the window would be stored twice")
            }
            try Replicator.adopt(engine: engine, stream: settings.stream, shard: config.logShard)
            let log = try JetStreamLog(settings: settings, name: "authzd")
            let replicator = try Replicator(log: log, engine: engine, keys: dispatcher.keys, shard: config.logShard,
                                            writeTimeout: Double(config.logWriteTimeoutSeconds), logger: logger)
            engine.replicate = { ops, keepTimestamps, label in try replicator.write(ops, keepTimestamps: keepTimestamps, label: label) }
            dispatcher.keys.persist = { try replicator.putKey($0) }
            dispatcher.replicator = replicator
            let metrics = dispatcher.metrics
            replicator.onStatus = { s in
                metrics.logApplied.record(Int64(s.applied))
                metrics.logStreamLast.record(Int64(s.streamLast))
                metrics.logLag.record(Int64(s.lag))
                metrics.logConnected.record(s.connected ? 1 : 0)
            }
            replicator.start()
            logger.info("log mode", metadata: ["log.servers": "\(settings.servers.joined(separator: ","))", "log.stream": "\(settings.stream)",
                                               "log.replicas": "\(settings.replicas)", "log.shard": "\(config.logShard)",
                                               "log.applied": "\(engine.revision)"])
        }
        if let settings = config.events {
            let shard = config.log != nil ? config.logShard : .all
            let replicator = dispatcher.replicator
            let ingestor = EventIngestor(engine: engine, holds: { shard.holds($0) }, refusing: { replicator?.readRefusal() })
            let source: any EventSource
            switch settings.transport {
            case .nats: source = try NATSEventSource(settings: settings, ingestor: ingestor, replicas: config.log?.replicas ?? 1, logger: logger)
            case .kafka: source = try KafkaEventSource(settings: settings, ingestor: ingestor, logger: logger)
            }
            let who = AuditActor.events(subject: settings.subject)
            let peer = PeerInfo(address: settings.transport.rawValue, uid: nil)
            source.onApplied = { op, revision in dispatcher.audit?.write([op], revision: revision, who: who, peer: peer) }
            if let replicator = dispatcher.replicator { source.isReady = { replicator.status().caughtUp } }
            dispatcher.events = source
            source.start()
        }
        if let settings = config.push {
            if config.watchRetention == 0 { throw ConfigError("push needs the change log: watch-retention must not be 0") }
            let publisher = try ChangePublisher(settings: settings, engine: engine, replicas: config.log?.replicas ?? 1, logger: logger)
            dispatcher.push = publisher
            publisher.start()
            logger.info("pushing changed users", metadata: ["push.subject": "\(settings.subject).<tenant>"])
        }
        dispatcher.rotator.resumeIfRecorded()
        let listenerTLS = tls
        var running = Running(dispatcher: dispatcher, listeners: [], tls: tls)
        // Idle import and export sessions are discarded on time even when nothing else runs.
        // On the reader pool: dropping a large staged import frees much memory at once.
        let sweepLoop = group.next()
        running.sweeper = sweepLoop.scheduleRepeatedTask(initialDelay: .seconds(5), delay: .seconds(5)) { _ in
            _ = dispatcher.readers.runIfActive(eventLoop: sweepLoop) { dispatcher.sweepSessions() }
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.allocator, value: ByteBufferAllocator())
            .childChannelInitializer { [self] channel in initialize(channel, dispatcher: dispatcher, tls: listenerTLS) }
        do {
            if let path = config.socketPath {
                try prepareSocketPath(path)
                let ch = try bootstrap.bind(unixDomainSocketPath: path).wait()
                chmod(path, 0o660)
                running.listeners.append(ch)
                logger.info("listening", metadata: ["listen.unix": "\(path)"])
            }
            if let address = config.address {
                let (host, port) = try AuthzServer.parse(address: address)
                var bootstrapTCP = bootstrap
                bootstrapTCP = bootstrapTCP.childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                let ch = try bootstrapTCP.bind(host: host, port: port).wait()
                running.listeners.append(ch)
                logger.info("listening", metadata: ["listen.tcp": "\(ch.localAddress?.description ?? address)"])
            }
            try startGateways(&running)
        } catch {
            running.httpGateway?.stop()
            running.grpcGateway?.stop()
            for l in running.listeners { try? l.close().wait() }
            dispatcher.events?.stop()
            dispatcher.push?.stop()
            dispatcher.replicator?.stop()
            dispatcher.shutdown()
            if let e = error as? ConfigError { throw e }
            throw ConfigError("cannot listen: \(error)")
        }
        return running
    }

    /// Starts the gateway listeners that are configured (docs/gateways.md).
    private func startGateways(_ running: inout Running) throws {
        guard config.httpAddress != nil || config.httpSocketPath != nil || config.grpcAddress != nil else { return }
        let tls = running.tls
        let g = try Gateway(dispatcher: running.dispatcher, options: config.gateway, logger: logger)
        running.gateway = g
        if config.httpAddress != nil || config.httpSocketPath != nil {
            let idle = TimeAmount.seconds(Int64(config.idleTimeoutSeconds > 0 ? config.idleTimeoutSeconds : 300))
            let h = HTTPGatewayServer(gateway: g, maxConnections: config.maxHTTPConnections, idleTimeout: idle, tls: tls)
            running.httpGateway = h
            if let address = config.httpAddress {
                let (host, port) = try AuthzServer.parse(address: address)
                running.httpAddress = try h.start(group: group, host: host, port: port)
                logger.info("listening", metadata: ["listen.http": "\(running.httpAddress?.description ?? address)"])
            }
            if let path = config.httpSocketPath {
                try prepareSocketPath(path)
                try h.start(group: group, unixPath: path)
                logger.info("listening", metadata: ["listen.http_unix": "\(path)"])
            }
        }
        if let address = config.grpcAddress {
            let s = GRPCExtAuthzServer(gateway: g, maxConnections: config.maxHTTPConnections, tls: tls)
            running.grpcGateway = s
            let (host, port) = try AuthzServer.parse(address: address)
            running.grpcAddress = try s.start(group: group, host: host, port: port)
            logger.info("listening", metadata: ["listen.grpc": "\(running.grpcAddress?.description ?? address)"])
        }
        if config.gateway.routeMapPath != nil {
            logger.info("route map loaded", metadata: ["route_map.path": "\(config.gateway.routeMapPath!)", "route_map.routes": "\(g.routeMap.routes.count)"])
        }
    }

    /// SIGHUP: re-reads what can change while serving (the route map, the TLS certificate and
    /// key), each on its own: a route map that does not validate never holds back a renewed
    /// certificate, nor the reverse. Connections already open keep their TLS session. A file
    /// that does not validate leaves the old one in place; the error is logged and the first
    /// one returned. Does nothing unless serving. Blocking file reads: call it off the event loops.
    @discardableResult
    public func reload() -> Error? {
        guard let running else { return nil }
        var first: Error?
        do {
            try running.gateway?.reloadRoutes()
        } catch {
            logger.error("route map reload refused; keeping the previous map", metadata: ["error": "\(error)"])
            first = error
        }
        if let tls = running.tls {
            do {
                try tls.reload()
                logger.info("TLS certificate reloaded", metadata: ["tls.cert": "\(config.tls.certPath ?? "")"])
            } catch {
                logger.error("TLS reload refused; keeping the previous certificate", metadata: ["error": "\(error)"])
                first = first ?? error
            }
        }
        return first
    }

    private func initialize(_ channel: Channel, dispatcher: Dispatcher, tls: TLSContextHolder?) -> EventLoopFuture<Void> {
        let isUnix: Bool
        if case .unixDomainSocket? = channel.localAddress { isUnix = true } else { isUnix = false }
        // Each listener has its own limit: idle TCP callers cannot lock out the local socket.
        let counter = isUnix ? unixConnectionCount : connectionCount
        let limit = isUnix ? config.maxUnixConnections : effectiveMaxConnections.withLockedValue { $0 }
        let admitted = counter.withLockedValue { n -> Bool in
            if n >= limit { return false }
            n += 1
            return true
        }
        if !admitted {
            dispatcher.metrics.connectionsRefused.increment()
            logger.warning("refusing connection: connection limit reached", metadata: ["listener": "\(isUnix ? "unix" : "tcp")", "limit": "\(limit)"])
            return channel.close()
        }
        let id = ObjectIdentifier(channel)
        connections.withLockedValue { $0[id] = channel }
        dispatcher.metrics.connectionsOpened.increment()
        dispatcher.metrics.connectionsOpen.record(openConnections)
        channel.closeFuture.whenComplete { [self] _ in
            connections.withLockedValue { _ = $0.removeValue(forKey: id) }
            counter.withLockedValue { $0 -= 1 }
            dispatcher.metrics.connectionsOpen.record(openConnections)
        }
        let high = config.writeBufferHighWater
        return channel.setOption(.writeBufferWaterMark, value: .init(low: high / 4, high: high)).flatMapThrowing { [self] in
            let sync = channel.pipeline.syncOperations
            if !isUnix, let tls { try tls.addHandlers(to: channel, logger: logger) }
            // The read-idle timeout is ConnectionHandler's own state (no extra handler per hop).
            // Answers bypass NIO's write path on plaintext sockets only (never under TLS).
            let plaintext = isUnix || tls == nil
            try sync.addHandler(ConnectionHandler(dispatcher: dispatcher, logger: logger, isUnix: isUnix, directWrites: plaintext && config.directWrites))
        }
    }

    /// Open connections on both listeners.
    private var openConnections: Int { connectionCount.withLockedValue { $0 } + unixConnectionCount.withLockedValue { $0 } }

    /// Raises the soft descriptor limit to the hard one and makes room, within it, for every
    /// listener's connections plus `reservedFileDescriptors`; when they do not fit, the TCP
    /// limit gives way (logged), never the Unix socket's.
    private func planDescriptors() throws {
        effectiveMaxConnections.withLockedValue { $0 = config.maxConnections }
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return }
        if rl.rlim_cur < rl.rlim_max {
            var raised = rl
            raised.rlim_cur = rl.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { rl = raised }
        }
        guard config.address != nil else { return }
        let available = Int(min(rl.rlim_cur, rlim_t(Int32.max)))
        // Room only for the listeners this daemon actually has.
        let others = (config.socketPath == nil ? 0 : config.maxUnixConnections)
            + (config.metricsAddress == nil ? 0 : config.maxMetricsConnections) + config.reservedFileDescriptors
        let tcp = available - others
        if tcp < 1 {
            throw ConfigError("the descriptor limit (\(available)) leaves no room for TCP connections beside max-unix-connections, max-metrics-connections and reserved-fds (\(others)): raise `ulimit -n` or lower those settings")
        }
        if tcp < config.maxConnections {
            logger.warning("lowering max-connections to fit the descriptor limit", metadata: [
                "limit.nofile": "\(available)", "max_connections": "\(tcp)", "max_connections.configured": "\(config.maxConnections)",
            ])
        }
        effectiveMaxConnections.withLockedValue { $0 = min(config.maxConnections, tcp) }
    }

    /// Replaces a stale socket file; refuses to steal one a live process is listening on, and
    /// refuses a directory that anyone may write to (another user could swap the socket).
    private func prepareSocketPath(_ path: String) throws {
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        var ds = stat()
        if stat(dir.isEmpty ? "/" : dir, &ds) == 0, ds.st_mode & 0o002 != 0 {
            throw ConfigError("the socket's directory \(dir) is writable by everyone; put the socket in a directory only the daemon's user (and group) can write")
        }
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw ConfigError("\(path) exists and is not a socket; refusing to replace it")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw ConfigError("socket path \(path) is too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let live = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        if live { throw ConfigError("another process is listening on \(path); refusing to steal its socket") }
        logger.info("replacing stale socket file", metadata: ["listen.unix": "\(path)"])
        unlink(path)
    }

    /// Parses a TCP listener address (`BindAddress`: `HOST:PORT`, `[IPV6]:PORT`, `:PORT` for
    /// every interface). A Unix path or anything else is a configuration error naming it.
    static func parse(address: String) throws -> (String, Int) {
        guard let bind = BindAddress(address), case .tcp(let host, let port) = bind else {
            throw ConfigError("address \"\(address)\" must be HOST:PORT (an IPv6 host in brackets: [::1]:7000)")
        }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    /// Graceful shutdown: stop accepting, let connections drain (at most `drainTimeout`;
    /// `.zero` closes them at once), stop the background work, sync and close LMDB, and shut
    /// down the event loops when they were made here. Returns when all that is done; does
    /// nothing unless serving (a second call returns at once). The blocking steps run on
    /// `NIOThreadPool.singleton`.
    public func shutdown(drainTimeout: TimeAmount = .seconds(10)) async {
        let running = state.withLockedValue { s -> Running? in
            guard case .serving(let r) = s else { return nil }
            s = .stopping
            return r
        }
        guard let running else { return }
        try? await NIOThreadPool.singleton.runIfActive { self.drainAndClose(running, drainTimeout: drainTimeout) }
        if ownsGroup { try? await group.shutdownGracefully() }
        state.withLockedValue { $0 = .stopped }
        logger.info("stopped")
    }

    /// `shutdown`'s blocking part: on a thread-pool thread, never an event loop.
    private func drainAndClose(_ running: Running, drainTimeout: TimeAmount) {
        running.sweeper?.cancel()
        for l in running.listeners { try? l.close().wait() }
        running.httpGateway?.stop()
        running.grpcGateway?.stop()
        if let path = config.socketPath { unlink(path) }
        if let path = config.httpSocketPath { unlink(path) }
        let open = connections.withLockedValue { Array($0.values) }
        for ch in open { ch.pipeline.fireUserInboundEventTriggered(QuiesceEvent()) }
        let deadline = NIODeadline.now() + drainTimeout
        for ch in open {
            let remaining = deadline - .now()
            if remaining > .zero {
                _ = try? ch.closeFuture.flatMap { ch.eventLoop.makeSucceededVoidFuture() }.wait(timeout: remaining)
            }
            ch.close(promise: nil)
        }
        let dispatcher = running.dispatcher
        dispatcher.events?.stop()
        dispatcher.push?.stop()
        dispatcher.replicator?.stop()
        dispatcher.shutdown()
        try? dispatcher.engine.sync()
    }
}

extension EventLoopFuture where Value: Sendable {
    /// Waits at most `timeout`; throws on timeout.
    func wait(timeout: TimeAmount) throws -> Value {
        let done = Latch()
        let result = NIOLockedValueBox<Result<Value, Error>?>(nil)
        whenComplete { r in
            result.withLockedValue { $0 = r }
            done.signal()
        }
        guard done.wait(timeout: timeout), let r = result.withLockedValue({ $0 }) else { throw ChannelError.ioOnClosedChannel }
        return try r.get()
    }
}
