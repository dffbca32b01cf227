import AuthzModel
import AuthzWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// Envoy ext_authz over gRPC (HTTP/2 cleartext, prior knowledge) on `--grpc-address`: the
/// unary call `POST /envoy.service.auth.v3.Authorization/Check`, decided by `Gateway` from
/// the compiled index on the connection's event loop (no LMDB, no other thread).
///
/// Fails closed: a request it cannot read is answered with a gRPC error status (which Envoy
/// turns into a denial unless `failure_mode_allow` is set), never with an allowing
/// CheckResponse.
///
/// Bounded: at most `maxConnections` connections at once (more are closed on accept and
/// counted in `authzd_connections_refused_total`); at most 100 concurrent streams per
/// connection and 16 KiB of request headers (NIO's default HTTP/2 settings); a request
/// message of at most `GRPCExtAuthz.maxMessageBytes`; a stream that has not delivered its
/// request within `requestTimeout` is answered DEADLINE_EXCEEDED and reset; a connection with
/// no open stream that has read nothing for `idleTimeout` is sent GOAWAY and closed (Envoy
/// reconnects on its next check).
final class GRPCExtAuthzServer: Sendable {
    let gateway: Gateway
    let maxConnections: Int
    let requestTimeout: TimeAmount
    let idleTimeout: TimeAmount
    private let open: Slots
    private let listener = NIOLockedValueBox<Channel?>(nil)
    /// TLS (the daemon's certificate) or nil for cleartext h2c. Callers authenticate with the
    /// API key in gRPC metadata; client certificates encrypt but name no identity here.
    let tls: TLSContextHolder?

    /// A server for `gateway`; nothing is bound until `start`.
    init(gateway: Gateway, maxConnections: Int, requestTimeout: TimeAmount = .seconds(10), idleTimeout: TimeAmount = .minutes(5), tls: TLSContextHolder? = nil) {
        self.tls = tls
        self.gateway = gateway
        self.maxConnections = maxConnections
        open = Slots(limit: maxConnections)
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
    }

    /// Binds `host:port` (port 0: any free port) on `group` and starts accepting. Returns the
    /// bound address. Throws what the bind throws (address in use, permission denied); blocks
    /// the caller until the bind is done, so it must not be called on an event loop.
    func start(group: EventLoopGroup, host: String, port: Int) throws -> SocketAddress? {
        let gateway = self.gateway, requestTimeout = self.requestTimeout, idleTimeout = self.idleTimeout
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { ch in
                guard self.open.admit(ch, refused: gateway.dispatcher.metrics.connectionsRefused) else { return ch.close() }
                do {
                    if let tls = self.tls { try tls.addHandlers(to: ch, logger: gateway.logger, listener: "grpc") }
                    try ch.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idleTimeout))
                } catch {
                    return ch.eventLoop.makeFailedFuture(error)
                }
                return ch.configureHTTP2Pipeline(mode: .server) { stream in
                    stream.eventLoop.makeCompletedFuture {
                        try stream.pipeline.syncOperations.addHandlers(
                            HTTP2FramePayloadToHTTP1ServerCodec(),
                            GRPCExtAuthzHandler(gateway: gateway, requestTimeout: requestTimeout)
                        )
                    }
                }.flatMapThrowing { _ in
                    try ch.pipeline.syncOperations.addHandler(GRPCConnectionGuard(logger: gateway.logger))
                }
            }
        let ch = try bootstrap.bind(host: host, port: port).wait()
        listener.withLockedValue { $0 = ch }
        return ch.localAddress
    }

    /// Stops accepting and closes the listener; connections already open finish on their
    /// own (their event loops stop with the group). Blocks until the listener is closed;
    /// does nothing when the server was never started or is already stopped.
    func stop() {
        let ch = listener.withLockedValue { ch -> Channel? in
            defer { ch = nil }
            return ch
        }
        try? ch?.close().wait()
    }
}

/// The gRPC side of one ext_authz call, without NIO: routing, the length-prefixed message
/// framing, the decision and the status to answer. Pure functions of their arguments (but
/// `check`, which reads the gateway's index), so tests drive them directly.
enum GRPCExtAuthz {
    /// The only method served.
    static let path = "/envoy.service.auth.v3.Authorization/Check"
    /// Largest CheckRequest message accepted (Envoy's are a few KiB; it buffers request bodies
    /// only when `with_request_body` is set, itself bounded by `max_request_bytes`).
    static let maxMessageBytes = 1 << 20

    /// nil when a request with this method, `:path` and content-type is the Check call;
    /// otherwise the UNIMPLEMENTED to answer (gRPC's status for an unknown method).
    static func refusal(method: HTTPMethod, uri: String, contentType: String?) -> AuthzError? {
        guard method == .POST, uri == path else {
            return AuthzError(.unimplemented, "authzd serves only POST \(path), not \(method.rawValue) \(uri.prefix(128))")
        }
        let ct = contentType?.lowercased() ?? ""
        guard ct == "application/grpc" || ct.hasPrefix("application/grpc+proto") || ct.hasPrefix("application/grpc;") else {
            return AuthzError(.unimplemented, "content-type must be application/grpc, not \"\(ct.prefix(64))\"")
        }
        return nil
    }

    /// Collects a unary request body: one gRPC length-prefixed message (1-byte compressed
    /// flag, 4-byte big-endian length, the message), refusing as soon as the prefix shows a
    /// problem. Holds at most `5 + maxMessageBytes` bytes once the prefix is known (before,
    /// at most the first chunk).
    struct UnaryMessageReader {
        let maxMessageBytes: Int
        private var buffer: [UInt8] = []
        /// The declared message length, once the 5-byte prefix has arrived.
        private var declared: Int?

        /// A reader refusing messages over `maxMessageBytes`.
        init(maxMessageBytes: Int = GRPCExtAuthz.maxMessageBytes) { self.maxMessageBytes = maxMessageBytes }

        /// Adds body bytes. Returns the error to answer now, or nil to keep reading:
        /// UNIMPLEMENTED for a compressed message ("compression not supported"),
        /// RESOURCE_EXHAUSTED for a declared length over `maxMessageBytes`, INVALID_ARGUMENT for
        /// bytes after the message (a unary call carries exactly one). After an error the
        /// reader must not be used again.
        mutating func append(_ bytes: some Collection<UInt8>) -> AuthzError? {
            if let n = declared, buffer.count + bytes.count > 5 + n {
                return trailing(buffer.count + bytes.count - 5 - n)
            }
            buffer.append(contentsOf: bytes)
            if declared == nil, buffer.count >= 5 {
                guard buffer[0] == 0 else {
                    return AuthzError(.unimplemented, "compression not supported (the message's compressed flag is \(buffer[0]))")
                }
                let n = Int(buffer[1]) << 24 | Int(buffer[2]) << 16 | Int(buffer[3]) << 8 | Int(buffer[4])
                guard n <= maxMessageBytes else {
                    return AuthzError(.resourceExhausted, "the request message is \(n) bytes; at most \(maxMessageBytes) are accepted")
                }
                declared = n
                if buffer.count > 5 + n { return trailing(buffer.count - 5 - n) }
            }
            return nil
        }

        private func trailing(_ extra: Int) -> AuthzError {
            AuthzError.invalid("request body", "holds more than one message (\(extra) bytes after it); Check is unary")
        }

        /// The message, once the body has ended: INVALID_ARGUMENT when it stopped before the
        /// 5-byte prefix or before the declared length.
        func finish() -> Result<[UInt8], AuthzError> {
            guard let n = declared else {
                return .failure(AuthzError.invalid("request body", "ended after \(buffer.count) bytes, before the 5-byte gRPC message prefix"))
            }
            guard buffer.count == 5 + n else {
                return .failure(AuthzError.invalid("request body", "ended after \(buffer.count - 5) of the message's \(n) bytes"))
            }
            return .success(Array(buffer[5...]))
        }
    }

    /// `message` with its gRPC prefix (uncompressed, 4-byte big-endian length).
    static func framed(_ message: [UInt8]) -> [UInt8] {
        let n = UInt32(message.count)
        return [0, UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)] + message
    }

    /// Answers one CheckRequest message: the encoded CheckResponse, or the INVALID_ARGUMENT
    /// naming the field when the message cannot be decoded (never an allowing response).
    ///
    /// The caller is the key in `apiKey` (the request's `x-authz-api-key` metadata; nil when
    /// absent), else nobody (TCP has no peer identity): without a valid key the answer is a
    /// denial (UNAVAILABLE, HTTP 503) with `gateway_unauthenticated`, unless the daemon runs
    /// with `--insecure-no-auth`. Permission and scope come from the route's
    /// `context_extensions` (`permission`, `scope`) when set, else from the request headers or
    /// the route map; identity from the request headers, repeated values joined with `,`
    /// (`ExtAuthzRequest.combinedHeader`), so a duplicated identity is malformed, not the first.
    static func check(message: [UInt8], apiKey: String?, gateway: Gateway) -> Result<[UInt8], AuthzError> {
        let request: ExtAuthzRequest
        switch decode(message) {
        case .success(let r): request = r
        case .failure(let e): return .failure(e)
        }
        switch gateway.principal(presentedKey: apiKey, transport: .unauthenticated) {
        case .failure(let refused): return .success(response(for: refused))
        case .success(let principal): return .success(response(for: decide(request, principal: principal, gateway: gateway)))
        }
    }

    /// `check` for a caller whose key was resolved already (the stream handler does so at the
    /// request's head, before it reads a byte of the body).
    static func check(message: [UInt8], principal: Principal, gateway: Gateway) -> Result<[UInt8], AuthzError> {
        decode(message).map { response(for: decide($0, principal: principal, gateway: gateway)) }
    }

    private static func decode(_ message: [UInt8]) -> Result<ExtAuthzRequest, AuthzError> {
        do {
            return .success(try message.withUnsafeBytes { try ExtAuthzCodec.decodeCheckRequest($0) })
        } catch let e as AuthzError {
            return .failure(e)
        } catch {
            return .failure(AuthzError.invalid("CheckRequest", "cannot be decoded"))
        }
    }

    private static func decide(_ request: ExtAuthzRequest, principal: Principal, gateway: Gateway) -> GatewayAnswer {
        gateway.decide(method: request.method, path: request.path, principal: principal,
                       permission: request.contextExtensions["permission"], scope: request.contextExtensions["scope"],
                       header: { request.combinedHeader($0) })
    }

    /// The CheckResponse for a gateway answer: 200 allows (status OK, the headers added
    /// upstream); 403 is PERMISSION_DENIED with HTTP 403, 401 UNAUTHENTICATED with HTTP 401,
    /// and anything else (503) UNAVAILABLE with HTTP 503. Both carry `x-authz-decision`
    /// (`allow`/`deny`), `x-authz-reason` and `x-authz-revision`.
    static func response(for answer: GatewayAnswer) -> [UInt8] {
        let headers = [("x-authz-decision", answer.allowed ? "allow" : "deny"), ("x-authz-reason", answer.reason),
                       ("x-authz-revision", String(answer.revision))]
        let (code, status): (Int32, Int)
        switch answer.status {
        case 200: (code, status) = (0, 200)
        case 403: (code, status) = (Int32(AuthzError.Code.permissionDenied.rawValue), 403)
        case 401: (code, status) = (Int32(AuthzError.Code.unauthenticated.rawValue), 401)
        default: (code, status) = (Int32(AuthzError.Code.unavailable.rawValue), 503)
        }
        return ExtAuthzCodec.encodeCheckResponse(allowed: answer.allowed, grpcCode: code, httpStatus: status,
                                                 message: answer.reason, headers: headers)
    }

    /// The response trailers for `error` (nil: OK): `grpc-status`, and `grpc-message`
    /// percent-encoded as the gRPC HTTP/2 protocol requires. An INTERNAL error's message is
    /// for the log only and is replaced here by an opaque text.
    static func trailers(_ error: AuthzError?) -> HTTPHeaders {
        guard let error else { return HTTPHeaders([("grpc-status", "0")]) }
        let text = error.code == .internal ? "internal error" : error.message
        return HTTPHeaders([("grpc-status", String(error.code.rawValue)), ("grpc-message", percentEncoded(text))])
    }

    /// `text` as a `grpc-message` value: bytes outside printable ASCII, and `%`, become
    /// `%XX` of their UTF-8 bytes.
    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for b in text.utf8 {
            if b >= 0x20 && b <= 0x7E && b != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                let hex = Array("0123456789ABCDEF".utf8)
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b & 15)]))
            }
        }
        return out
    }
}

/// One HTTP/2 stream of the ext_authz listener, seen through `HTTP2FramePayloadToHTTP1ServerCodec`:
/// reads the request head and body, answers once (HTTP 200, `content-type: application/grpc`,
/// the framed CheckResponse when there is one, then the `grpc-status` trailers) and resets
/// the stream with NO_ERROR when it answered before the request ended. Every problem is
/// answered with a gRPC status; none allows.
final class GRPCExtAuthzHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case awaitingHead
        case reading(GRPCExtAuthz.UnaryMessageReader, principal: Principal)
        case answered
    }

    let gateway: Gateway
    let requestTimeout: TimeAmount
    private var state = State.awaitingHead
    private var requestEnded = false
    private var deadline: Scheduled<Void>?

    /// A handler for one stream; `requestTimeout` bounds the time until it answers.
    init(gateway: Gateway, requestTimeout: TimeAmount) {
        self.gateway = gateway
        self.requestTimeout = requestTimeout
    }

    /// Starts the `requestTimeout` clock: DEADLINE_EXCEEDED is answered when it runs out first.
    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: requestTimeout) {
            let (handler, context) = loopBound.value
            handler.answer(.failure(AuthzError(.deadlineExceeded, "the request did not arrive within \(handler.requestTimeout)")), context: context)
        }
    }

    /// Stops the clock (the stream is gone).
    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    /// Routes on the head, collects the body into one bounded message, and answers at its
    /// end, or at the first problem; parts after the answer are dropped.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard case .awaitingHead = state else { return }
            if let refused = GRPCExtAuthz.refusal(method: head.method, uri: head.uri, contentType: head.headers.first(name: "content-type")) {
                answer(.failure(refused), context: context)
                return
            }
            let keys = head.headers[gateway.options.apiKeyHeader]
            // Two keys are one invalid key: neither is chosen.
            let key = keys.isEmpty ? nil : keys.joined(separator: ",")
            // The key is known from the head: a caller without a valid one is answered now,
            // before the daemon buffers any of its body (up to 1 MiB a stream).
            let peer = PeerInfo(remote: context.channel.parent?.remoteAddress ?? context.channel.remoteAddress, isUnix: false)
            switch gateway.principal(presentedKey: key, transport: .unauthenticated, peer: peer, listener: "grpc") {
            case .failure(let refused):
                answer(.success(GRPCExtAuthz.response(for: refused)), context: context)
            case .success(let principal):
                state = .reading(GRPCExtAuthz.UnaryMessageReader(), principal: principal)
            }
        case .body(let buffer):
            guard case .reading(var reader, let principal) = state else { return }
            if let problem = reader.append(buffer.readableBytesView) {
                answer(.failure(problem), context: context)
                return
            }
            state = .reading(reader, principal: principal)
        case .end:
            requestEnded = true
            guard case .reading(let reader, let principal) = state else { return }
            switch reader.finish() {
            case .failure(let problem):
                answer(.failure(problem), context: context)
            case .success(let message):
                let result = GRPCExtAuthz.check(message: message, principal: principal, gateway: gateway)
                if case .failure(let e) = result {
                    gateway.logger.debug("ext_authz request refused", metadata: ["grpc.status": "\(e.code.name)", "error": "\(e.message)"])
                }
                answer(result, context: context)
            }
        }
    }

    /// Resets the stream (closing a stream channel sends RST_STREAM); logged at debug.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        gateway.logger.debug("ext_authz stream error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// Writes the one answer of this stream; later calls do nothing.
    private func answer(_ result: Result<[UInt8], AuthzError>, context: ChannelHandlerContext) {
        if case .answered = state { return }
        state = .answered
        deadline?.cancel()
        deadline = nil
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/grpc")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http2, status: .ok, headers: headers))), promise: nil)
        var error: AuthzError?
        switch result {
        case .success(let message):
            let bytes = GRPCExtAuthz.framed(message)
            var buffer = context.channel.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .failure(let e):
            error = e
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(GRPCExtAuthz.trailers(error))))
        if !requestEnded {
            // The client is still sending: the response is complete, so ask it to stop without
            // error (RFC 9113 §8.1: RST_STREAM NO_ERROR; a CANCEL would make gRPC clients report
            // CANCELLED instead of the status just sent). The frame goes out below the HTTP/1
            // codec; closing the stream channel (CANCEL) is the fallback.
            done.assumeIsolated().whenComplete { _ in
                if let codec = try? context.pipeline.syncOperations.context(handlerType: HTTP2FramePayloadToHTTP1ServerCodec.self) {
                    codec.writeAndFlush(NIOAny(HTTP2Frame.FramePayload.rstStream(.noError)), promise: nil)
                } else {
                    context.close(promise: nil)
                }
            }
        }
    }
}

/// The last handler of an ext_authz connection: counts its open streams from the HTTP/2
/// handler's events and, when `IdleStateHandler` reports that nothing was read for the idle
/// timeout while no stream is open, sends GOAWAY (NO_ERROR, naming the last stream it saw)
/// and closes the connection. Closes it on any error that reaches it: `NIOHTTP2Handler` sends
/// GOAWAY on a connection error but leaves the closing to its user, and fires a stream error
/// (after resetting that stream) as the same bare error, so the two cannot be told apart here.
/// A peer that breaks the protocol on one stream so loses its other streams too; Envoy does
/// not break it.
final class GRPCConnectionGuard: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    let logger: Logger
    private var openStreams = 0
    private var lastStreamID = HTTP2StreamID.rootStream

    /// A guard that logs what it closes through `logger` (at debug).
    init(logger: Logger) { self.logger = logger }

    /// Drops the connection-level frames the multiplexer passes on (SETTINGS, PING, GOAWAY).
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    }

    /// Counts streams opened and closed; on an idle event with none open, GOAWAY and close.
    /// Forwards every event.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let created as NIOHTTP2StreamCreatedEvent:
            openStreams += 1
            if created.streamID > lastStreamID { lastStreamID = created.streamID }
        case is StreamClosedEvent:
            openStreams = max(0, openStreams - 1)
        case IdleStateHandler.IdleStateEvent.read where openStreams == 0:
            logger.debug("ext_authz connection idle, closing", metadata: ["http2.last_stream_id": "\(lastStreamID)"])
            let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil))
            context.writeAndFlush(wrapOutboundOut(goAway)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Closes the connection (see the type's comment); logged at debug.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("ext_authz connection error, closing", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
