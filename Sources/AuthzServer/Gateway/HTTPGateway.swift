import AuthzModel
import AuthzWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// The HTTP authorization listener (`--http-address`, `--http-socket`): nginx `auth_request`
/// subrequests and Envoy's HTTP ext_authz on `/check[/…]`, a user's permissions on
/// `GET /v1/tenants/{t}/users/{u}/permissions`, and `GET /healthz`. HTTP/1.1 with keep-alive
/// and pipelining; decisions are made on the connection's event loop from the compiled index.
///
/// Bounded like the binary listeners: at most `maxConnections` at once on TCP and as many on
/// the Unix socket (more are closed on accept), idle connections closed after `idleTimeout`,
/// request heads limited by NIO's parser.
final class HTTPGatewayServer: Sendable {
    let gateway: Gateway
    let maxConnections: Int
    let idleTimeout: TimeAmount
    /// Connection slots of the TCP listener and of the Unix socket, apart: TCP callers can
    /// never fill the slots the local proxy needs (as on the binary listeners).
    private let openTCP: Slots
    private let openUnix: Slots
    private let channels = NIOLockedValueBox<[Channel]>([])
    /// Open connections, by identity (removed when they close).
    private let accepted = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])

    /// TLS for the TCP listener (nil: plain text); the Unix socket never uses it.
    let tls: TLSContextHolder?

    init(gateway: Gateway, maxConnections: Int, idleTimeout: TimeAmount, tls: TLSContextHolder?) {
        self.tls = tls
        self.gateway = gateway
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
        openTCP = Slots(limit: maxConnections)
        openUnix = Slots(limit: maxConnections)
    }

    /// Binds TCP `host:port`; returns the bound address.
    func start(group: EventLoopGroup, host: String, port: Int) throws -> SocketAddress? {
        let ch = try bootstrap(group: group, isUnix: false)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port).wait()
        channels.withLockedValue { $0.append(ch) }
        return ch.localAddress
    }

    /// Binds a Unix socket at `path` (mode 0660; a stale socket file is replaced by the caller).
    func start(group: EventLoopGroup, unixPath path: String) throws {
        let ch = try bootstrap(group: group, isUnix: true).bind(unixDomainSocketPath: path).wait()
        chmod(path, 0o660)
        channels.withLockedValue { $0.append(ch) }
    }

    /// Stops accepting; open connections close with the event loops.
    /// Closes the listeners, and tells every open connection the daemon is stopping (a Watch
    /// stream then ends with its `error` event naming where to resume).
    func stop() {
        for ch in channels.withLockedValue({ $0 }) { try? ch.close().wait() }
        for ch in accepted.withLockedValue({ Array($0.values) }) { ch.pipeline.fireUserInboundEventTriggered(QuiesceEvent()) }
    }

    private func bootstrap(group: EventLoopGroup, isUnix: Bool) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] ch in
                guard (isUnix ? openUnix : openTCP).admit(ch, refused: gateway.dispatcher.metrics.connectionsRefused) else { return ch.close() }
                let id = ObjectIdentifier(ch)
                accepted.withLockedValue { $0[id] = ch }
                ch.closeFuture.whenComplete { [self] _ in accepted.withLockedValue { _ = $0.removeValue(forKey: id) } }
                let transport: EventLoopFuture<Principal> = isUnix ? unixPrincipal(ch) : ch.eventLoop.makeSucceededFuture(.unauthenticated)
                if !isUnix, let tls {
                    do { try tls.addHandlers(to: ch, logger: gateway.logger, listener: "gateway") } catch { return ch.close() }
                }
                return transport.flatMap { [self] principal in
                    ch.pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true).flatMapThrowing {
                        let sync = ch.pipeline.syncOperations
                        try sync.addHandler(IdleStateHandler(readTimeout: self.idleTimeout))
                        try sync.addHandler(HTTPGatewayHandler(gateway: self.gateway, transport: principal))
                    }
                }
            }
    }

    /// The principal of a Unix peer, by the same rules as the binary socket: the daemon's uid
    /// or root is a superuser (when `local-superuser` is on), an allowlisted uid has its role.
    private func unixPrincipal(_ ch: Channel) -> EventLoopFuture<Principal> {
        let config = gateway.dispatcher.config
        return peerUID(ch).map { uid in
            guard let uid else { return .unauthenticated }
            return unixPeerPrincipal(uid: uid, config: config) ?? .unauthenticated
        }
    }
}

/// One HTTP connection of the gateway listener. Requests are answered in order (NIO's
/// pipelining handler holds later ones); bodies are read and dropped.
final class HTTPGatewayHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let gateway: Gateway
    /// The connection's own principal (Unix peer, TLS client certificate, or none).
    private(set) var transport: Principal
    private var head: HTTPRequestHead?
    /// The last key this connection presented and what it resolved to, re-validated when the
    /// key table's epoch moves or the key's expiry passes (as on the binary protocol).
    private var cachedKey: String?
    private var cachedPrincipal: Principal = .unauthenticated
    private var cachedEpoch: UInt64 = 0
    private var cachedExpiry: Int64 = 0
    /// The Watch this connection streams as server-sent events, if any (it then serves nothing
    /// else, and is not closed as idle).
    private var watch: WatchStream?

    init(gateway: Gateway, transport: Principal) {
        self.gateway = gateway
        self.transport = transport
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let h = head else { return }
            head = nil
            answer(context: context, h)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let identified = event as? CertificateIdentified {
            if transport == .unauthenticated { transport = identified.principal }
        } else if event is IdleStateHandler.IdleStateEvent {
            if watch == nil { context.close(promise: nil) }
        } else if event is QuiesceEvent {
            watch?.stopping()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { watch?.writable() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        watch?.end(nil)
        context.fireChannelInactive()
    }

    private func answer(context: ChannelHandlerContext, _ h: HTTPRequestHead) {
        let options = gateway.options
        let uri = h.uri
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        if path == options.pathPrefix || path.hasPrefix(options.pathPrefix + "/") {
            let principal: Principal
            // A header sent twice reads as its values joined with "," (as Envoy folds them), so
            // two keys or two identities fail instead of silently becoming the first.
            let headers = h.headers
            func combined(_ name: String) -> String? {
                let values = headers[name]
                return values.isEmpty ? nil : values.joined(separator: ",")
            }
            switch resolve(combined(options.apiKeyHeader), context: context) {
            case .success(let p): principal = p
            case .failure(let refused): return respond(context: context, h, refused)
            }
            if headers[options.methodHeader].count > 1 || headers[options.uriHeader].count > 1 {
                return respond(context: context, h, GatewayAnswer(status: 403, reason: "ambiguous_path", revision: gateway.dispatcher.engine.revision))
            }
            let method = headers.first(name: options.methodHeader) ?? h.method.rawValue
            let original = headers.first(name: options.uriHeader) ?? {
                let rest = uri.dropFirst(options.pathPrefix.count)
                return rest.isEmpty || rest.hasPrefix("?") ? "/" + rest : String(rest)
            }()
            let a = gateway.decide(method: method, path: original, principal: principal) { combined($0) }
            return respond(context: context, h, a)
        }
        if path == "/v1/watch" {
            return startWatch(context: context, h)
        }
        if h.method == .GET, path == "/healthz" {
            return respond(context: context, h, status: .ok, contentType: "text/plain", body: "ok\n")
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        // "", "v1", "tenants", T, "users", U, "permissions"
        if parts.count == 7, parts[1] == "v1", parts[2] == "tenants", parts[4] == "users", parts[6] == "permissions" {
            guard h.method == .GET else {
                return respond(context: context, h, status: .methodNotAllowed, contentType: "application/json",
                               body: Gateway.errorJSON("INVALID_ARGUMENT", "use GET"))
            }
            let principal: Principal
            switch resolve(h.headers.first(name: options.apiKeyHeader), context: context) {
            case .success(let p): principal = p
            case .failure:
                return respond(context: context, h, status: .unauthorized, contentType: "application/json",
                               body: Gateway.errorJSON("UNAUTHENTICATED", "send a valid API key in \(options.apiKeyHeader)"))
            }
            let (status, body) = gateway.permissionsJSON(tenant: parts[3], user: parts[5], principal: principal)
            return respond(context: context, h, status: HTTPResponseStatus(statusCode: status), contentType: "application/json", body: body)
        }
        respond(context: context, h, status: .notFound, contentType: "application/json",
                body: Gateway.errorJSON("NOT_FOUND", "no such endpoint: decisions are under \(options.pathPrefix), permissions under /v1/tenants/{tenant_id}/users/{user_id}/permissions"))
    }

    /// `GET /v1/watch?from=R&tenant=T&kinds=user,role_binding`: the Watch call as a
    /// server-sent event stream (docs/watch.md, "Over HTTP"). Without `from`, resumes after
    /// `Last-Event-ID`, else starts from now. Events: `changes` and `progress`, each with `id:`
    /// the revision through which everything was sent; `error` ends the stream.
    private func startWatch(context: ChannelHandlerContext, _ h: HTTPRequestHead) {
        func refuse(_ status: HTTPResponseStatus, _ e: AuthzError) {
            respond(context: context, h, status: status, contentType: "application/json", body: Gateway.errorJSON(e.code.name, e.message))
        }
        guard h.method == .GET else { return refuse(.methodNotAllowed, AuthzError.invalid("method", "use GET")) }
        let principal: Principal
        switch resolve(h.headers.first(name: gateway.options.apiKeyHeader), context: context) {
        case .success(let p): principal = p
        case .failure:
            return refuse(.unauthorized, AuthzError(.unauthenticated, "send a valid API key in \(gateway.options.apiKeyHeader)"))
        }
        var call = WatchCall(fromRevision: nil)
        let query = h.uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(kv[0]), value = kv.count > 1 ? String(kv[1]) : ""
            switch key {
            case "from":
                guard let r = UInt64(value) else { return refuse(.badRequest, AuthzError.invalid("from", "must be a revision (an unsigned integer)")) }
                call.fromRevision = r
            case "tenant":
                guard let t = ID(value) else { return refuse(.badRequest, AuthzError.invalid("tenant", "must be a UUID in 8-4-4-4-12 form")) }
                call.tenantId = t
            case "kinds":
                for name in value.split(separator: ",") {
                    guard let k = EntityKind(name: String(name)) else { return refuse(.badRequest, AuthzError.invalid("kinds", "\"\(name)\" is not a kind")) }
                    call.kinds.insert(k)
                }
            default:
                return refuse(.badRequest, AuthzError.invalid(key, "is not a parameter of /v1/watch (from, tenant, kinds)"))
            }
        }
        // A reconnecting EventSource sends the same URL and Last-Event-ID: the latter, always
        // newer, wins over `from`.
        if let last = h.headers.first(name: "last-event-id") {
            guard let r = UInt64(last) else { return refuse(.badRequest, AuthzError.invalid("Last-Event-ID", "must be a revision")) }
            call.fromRevision = r
        }
        if let denied = authorize(principal, .watch(call)) {
            return refuse(denied.code == .unauthenticated ? .unauthorized : .forbidden, denied)
        }
        let dispatcher = gateway.dispatcher
        if dispatcher.replicator != nil, let refused = dispatcher.refuseRead(.watch(effectiveWatch(call, principal: principal))) {
            return refuse(.serviceUnavailable, refused)
        }
        let config = dispatcher.config
        guard dispatcher.watchers.take() else { return refuse(.serviceUnavailable, AuthzError(.resourceExhausted, "the daemon serves max-watchers = \(config.maxWatchers) watches already")) }
        let from: UInt64
        do {
            from = try call.fromRevision ?? dispatcher.engine.storedRevision()
        } catch {
            dispatcher.watchers.release()
            return refuse(.serviceUnavailable, AuthzError(.unavailable, "cannot read the revision: \(error)"))
        }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream")
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "connection", value: "close")
        headers.add(name: "x-accel-buffering", value: "no")  // nginx: pass events through unbuffered
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: .ok, headers: headers))), promise: nil)
        let stream = WatchStream(
            from: from, engine: dispatcher.engine, readers: dispatcher.readers, loop: context.eventLoop, logger: gateway.logger,
            matches: watchFilter(call, principal: principal),
            stallTimeout: .seconds(Int64(config.watchStallSeconds)), progressInterval: .seconds(Int64(config.watchProgressSeconds)),
            send: { [weak self] result in
                guard let self else { return }
                var buf = context.channel.allocator.buffer(capacity: 1024)
                buf.writeString(HTTPGatewayHandler.event(result))
                context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(buf))), promise: nil)
            },
            isWritable: { context.channel.isWritable },
            refusal: { [keys = dispatcher.keys] in
                if case .key(let id, _, _) = principal, let r = keys.stillValid(id) { return r.error }
                return nil
            },
            finished: { [weak self] close in
                dispatcher.watchers.release()
                guard let self else { return }
                self.watch = nil
                // Cut (a full connection): close now; else end the response, then close.
                if close { return context.close(promise: nil) }
                context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            })
        watch = stream
        stream.start()
    }

    /// One server-sent event of a Watch stream.
    static func event(_ result: Result<Reply, AuthzError>) -> String {
        switch result {
        case .success(.watch(let b)):
            var s = b.changes.isEmpty ? "event: progress\n" : "event: changes\n"
            s += "id: \(b.revision)\ndata: {\"revision\":\(b.revision),\"caught_up\":\(b.caughtUp),\"changes\":["
            for (i, c) in b.changes.enumerated() {
                if i > 0 { s += "," }
                let e = c.entity
                s += "{\"revision\":\(c.revision),\"kind\":\"\(e.kind.name)\",\"tenant_id\":\"\(e.tenantId)\",\"id\":\"\(e.id)\",\"record\":\(BulkFormat.encode(e))}"
            }
            return s + "]}\n\n"
        case .success:
            return "event: error\ndata: " + Gateway.errorJSON("INTERNAL", "unexpected reply") + "\n\n"
        case .failure(let e):
            return "event: error\ndata: " + Gateway.errorJSON(e.code.name, e.message) + "\n\n"
        }
    }

    /// The principal for this request, reusing the connection's last verified key. A refused
    /// key is audited with the connection's peer address.
    private func resolve(_ presented: String?, context: ChannelHandlerContext) -> Result<Principal, GatewayAnswer> {
        guard let presented else { return gateway.principal(presentedKey: nil, transport: transport) }
        let keys = gateway.dispatcher.keys
        let epoch = keys.epoch.load(ordering: .acquiring)
        if presented == cachedKey, epoch == cachedEpoch, Timestamp.now() < cachedExpiry {
            return .success(cachedPrincipal)
        }
        cachedKey = nil
        var isUnix = false
        if case .unixDomainSocket? = context.channel.localAddress { isUnix = true }
        let peer = PeerInfo(remote: context.channel.remoteAddress, isUnix: isUnix)
        let r = gateway.principal(presentedKey: presented, transport: transport, peer: peer)
        if case .failure = r { keyRefused() }
        if case .success(let p) = r, case .key(let id, _, _) = p {
            cachedKey = presented
            cachedPrincipal = p
            cachedEpoch = epoch
            cachedExpiry = keys.expiry(of: id)
        }
        return r
    }

    /// Refused keys on this connection in the current window, as on the binary listeners: the
    /// answer to the `ConnectionHandler.maxFailures`-th within `failureWindow` closes the
    /// connection (each refusal is an audit line: one connection cannot flood the trail).
    private var failures = 0
    private var failureWindowStart = NIODeadline.now()
    private var closeAfterAnswer = false

    private func keyRefused() {
        if NIODeadline.now() - failureWindowStart > ConnectionHandler.failureWindow {
            failures = 0
            failureWindowStart = .now()
        }
        failures += 1
        if failures >= ConnectionHandler.maxFailures { closeAfterAnswer = true }
    }

    /// A decision: no body, the decision in headers.
    private func respond(context: ChannelHandlerContext, _ h: HTTPRequestHead, _ a: GatewayAnswer) {
        var headers = HTTPHeaders()
        headers.reserveCapacity(5)
        headers.add(name: "x-authz-decision", value: a.allowed ? "allow" : "deny")
        headers.add(name: "x-authz-reason", value: a.reason)
        headers.add(name: "x-authz-revision", value: String(a.revision))
        if a.routeLine > 0 { headers.add(name: "x-authz-route", value: String(a.routeLine)) }
        headers.add(name: "content-length", value: "0")
        if !h.isKeepAlive || closeAfterAnswer { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: HTTPResponseStatus(statusCode: a.status), headers: headers))), promise: nil)
        finish(context: context, h)
    }

    private func respond(context: ChannelHandlerContext, _ h: HTTPRequestHead, status: HTTPResponseStatus, contentType: String, body: String) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: String(body.utf8.count))
        if !h.isKeepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: status, headers: headers))), promise: nil)
        if h.method != .HEAD {
            var buf = context.channel.allocator.buffer(capacity: body.utf8.count)
            buf.writeString(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buf))), promise: nil)
        }
        finish(context: context, h)
    }

    private func finish(context: ChannelHandlerContext, _ h: HTTPRequestHead) {
        if h.isKeepAlive && !closeAfterAnswer {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}
