import AuthzEngine
import AuthzFraming
import AuthzIndex
import AuthzModel
import AuthzWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What the check path touches on every request: the answers' buffer, the parsed items, and
/// what the last read burst decided. `ConnectionHandler` holds it behind a pointer because Swift
/// checks exclusive access to a class's stored `var`s at run time (swift_beginAccess, a few
/// hundred instructions a check), and a pointee's fields are not checked: the handler alone
/// touches it, on its event loop, never across a call that could reach it again.
struct CheckPathState {
    /// Answers of the current read burst (and of calls completed since), written once.
    var out = ByteBuffer()
    var items: [CheckQuery] = []
    /// The tenant id this connection's checks named last, by its text.
    var tenants = CheckFrame.TenantCache()
    var decisions: [Decision] = []
    /// Answers wait in `out` to be written.
    var needsFlush = false
    /// Check-path state refreshed once per read burst.
    var fastPath = false
    var fastPathTenant: ID?
    /// Writes answers straight to the socket (plaintext connections; see `SocketWriter`).
    var writer: SocketWriter?
    /// Writes handed to NIO and not yet complete: direct writes wait until there are none.
    var writesInNIO = 0
}

/// Asks a connection to finish what it has in flight and close (graceful shutdown).
struct QuiesceEvent {}

/// One connection: splits the bytes it reads into frames, runs them (inline, on the reader pool
/// or on the writer thread), writes responses as they complete — possibly out of order, each
/// echoing its request id.
///
/// The check path works on whole reads: every complete frame of a read is looked at in place in
/// the read buffer; a plain Check or BatchCheck from an authenticated principal is decided and
/// answered straight into one per-connection output buffer (`CheckFrame`: no per-request
/// allocation, no decoding into Swift values, no key lookup), written and flushed once per read.
/// Everything else — other calls, anything not well formed, per-request keys, `min_revision`,
/// observability on — goes to the general path, which gives the same answers as before.
/// The frame timeout (a started frame must complete within `frameTimeoutSeconds`) is this
/// handler's own state.
///
/// Backpressure: with `maxInFlight` requests pending, or with more answers queued than the
/// channel's high-water mark (a peer that does not read), it stops reading the socket until
/// that clears; nothing is buffered without bound. Responses computed inline are flushed once
/// per read burst.
///
/// Before a connection authenticates (a Hello with a valid key, or a trusted Unix peer), only
/// the envelope of a frame is read: Hello and Health are decoded, a request carrying its own
/// key is decoded once that key verifies, anything else is refused without decoding and counts
/// as a failed authentication. Frames are limited to `preAuthMaxFrameSize` until Hello, and
/// the connection is closed if it has not authenticated within `authTimeoutSeconds`.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let dispatcher: Dispatcher
    private let logger: Logger
    /// Reading, backpressure, the frame timer and draining (`ConnectionFlow`'s rules).
    private var flow: ConnectionFlow
    private let isUnix: Bool
    /// The connection carries plaintext on a socket: answers may bypass NIO's write path.
    private let directWrites: Bool
    /// The other end, for the audit trail (address at activation, uid once read).
    private var peer = PeerInfo.unknown
    /// Who the connection is, before any per-request key.
    private var principal: Principal = .unauthenticated
    /// Failed authentication attempts (bad keys) in the current window.
    private var failures = 0
    private var failureWindowStart = NIODeadline.now()
    static let maxFailures = 5
    static let failureWindow = TimeAmount.seconds(60)

    /// The frame limit in force on this connection: small until it authenticates.
    private var frameLimit: Int
    private let limits: WireLimits
    /// Bytes of a frame not yet complete, kept between reads.
    private var cumulation: ByteBuffer?
    private var frameTimer: Scheduled<Void>?
    /// Answers of the current read burst (and of calls completed since), written once.
    /// The check path's state, reached through a pointer (see `CheckPathState`).
    private let hot: UnsafeMutablePointer<CheckPathState>
    /// Check-path state refreshed once per read burst.
    /// The key table epoch and key expiry at which this connection's key was last validated.
    private var keyEpoch: UInt64 = .max
    private var keyExpiry: Int64 = 0
    /// Watch streams running on this connection, by request id.
    private var watches: [UInt64: WatchStream] = [:]
    /// Chunked imports this connection has started and not finished.
    private var importSessions: [ID: Principal] = [:]
    /// Some key verified on this connection, or the peer is trusted: requests are decoded.
    /// Calls waiting for a revision (`waitForRevision`), withdrawn when the connection closes.
    private var revisionWaits: [ObjectIdentifier: RevisionWaiter] = [:]
    private var authenticated = false
    private var authTimer: Scheduled<Void>?
    /// The read-idle timeout (`idleTimeoutSeconds`; nil: none) is this handler's own state: the
    /// time of the last read burst, and one timer that checks it.
    private let idleTimeout: TimeAmount?
    private var lastRead = NIODeadline.now()
    private var idleTimer: Scheduled<Void>?

    /// `directWrites`: the channel is a plaintext socket (no TLS handler before this one), so
    /// answers may be sent on its descriptor directly (`SocketWriter`); false writes every
    /// byte through the pipeline.
    init(dispatcher: Dispatcher, logger: Logger, isUnix: Bool, directWrites: Bool = false) {
        self.dispatcher = dispatcher
        self.logger = logger
        self.isUnix = isUnix
        self.directWrites = directWrites
        self.frameLimit = dispatcher.config.preAuthMaxFrameSize
        self.limits = dispatcher.config.wireLimits
        self.flow = ConnectionFlow(maxInFlight: dispatcher.config.maxInFlight)
        self.hot = UnsafeMutablePointer<CheckPathState>.allocate(capacity: 1)
        self.hot.initialize(to: CheckPathState())
        let idle = dispatcher.config.idleTimeoutSeconds
        self.idleTimeout = idle > 0 ? .seconds(Int64(idle)) : nil
    }

    deinit {
        hot.deinitialize(count: 1)
        hot.deallocate()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        hot.pointee.out = context.channel.allocator.buffer(capacity: 4096)
    }

    func channelActive(context: ChannelHandlerContext) {
        let config = dispatcher.config
        lastRead = context.eventLoop.now
        armIdleTimer(context: context, at: lastRead)
        peer = PeerInfo(remote: context.channel.remoteAddress, isUnix: isUnix)
        if directWrites {
            // Complete at once (on the event loop); nil keeps NIO's write path.
            SocketWriter.find(context.channel).assumeIsolated().whenSuccess { writer in
                if context.channel.isActive { self.hot.pointee.writer = writer }
            }
        }
        if config.insecureNoAuth {
            principal = .superuser
            trust()
        } else {
            armAuthTimer(context: context)
            if isUnix {
                peerUID(context.channel).assumeIsolated().whenSuccess { uid in
                    guard let uid else { return }
                    self.peer.uid = uid
                    if let p = unixPeerPrincipal(uid: uid, config: config) {
                        self.principal = p
                        self.trust()
                    }
                }
            }
        }
        context.fireChannelActive()
    }

    /// Checks for read idleness one timeout after `from`: a connection that read nothing for
    /// `idleTimeout` closes when nothing is pending (`ConnectionFlow.idleTimeoutPassed`);
    /// otherwise the check moves to one timeout after the last read (or after now, when a
    /// pending request kept an idle connection open).
    private func armIdleTimer(context: ChannelHandlerContext, at from: NIODeadline) {
        guard let timeout = idleTimeout else { return }
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: from + timeout) { [weak self] in
            guard let self, self.flow.state != .closed else { return }
            let now = context.eventLoop.now
            if now - self.lastRead < timeout { return self.armIdleTimer(context: context, at: self.lastRead) }
            if self.flow.idleTimeoutPassed() {
                self.logger.debug("closing idle connection")
                context.close(promise: nil)
                return
            }
            self.armIdleTimer(context: context, at: now)
        }
    }

    /// Closes the connection unless it authenticates within `authTimeoutSeconds` (0: never).
    private func armAuthTimer(context: ChannelHandlerContext) {
        authTimer?.cancel()
        authTimer = nil
        let seconds = dispatcher.config.authTimeoutSeconds
        guard seconds > 0 else { return }
        authTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(Int64(seconds))) { [weak self] in
            guard let self, !self.authenticated else { return }
            self.logger.info("closing connection: no authentication within auth-timeout")
            context.close(promise: nil)
        }
    }

    /// Marks the connection authenticated (Hello or a trusted peer): its frames are decoded in
    /// full and may be up to `maxFrameSize`.
    private func trust() {
        authenticated = true
        authTimer?.cancel()
        authTimer = nil
        frameLimit = dispatcher.config.maxFrameSize
    }

    /// A request carrying its own key that verified: the connection is not closed at
    /// `auth-timeout` (its caller does authenticate), but it does not become authenticated:
    /// that key answers for its own request only, and a keyless frame later on is refused
    /// from its envelope and counted as a failed authentication, as before.
    private func keyedRequestSeen() {
        authTimer?.cancel()
        authTimer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        // NIO has closed the descriptor; its number may already belong to another connection.
        hot.pointee.writer = nil
        _ = flow.close()
        idleTimer?.cancel()
        idleTimer = nil
        authTimer?.cancel()
        authTimer = nil
        frameTimer?.cancel()
        frameTimer = nil
        for w in Array(watches.values) { w.end(nil) }
        // A revision wait dies with its connection: its slot in the engine's bounded waiter
        // table is freed now, not at the request's deadline.
        for w in Array(revisionWaits.values) { w.cancel() }
        revisionWaits.removeAll()
        // A chunked import dies with its connection: nothing of it was applied.
        for (session, owner) in importSessions { dispatcher.dropImport(session, owner: owner) }
        importSessions.removeAll()
        context.fireChannelInactive()
    }

    // MARK: reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let input = unwrapInboundIn(data)
        if var pending = cumulation {
            cumulation = nil
            pending.writeImmutableBuffer(input)
            cumulation = pending
        } else {
            cumulation = input
        }
        drain(context: context)
    }

    /// Answers the complete frames buffered, until `maxInFlight` requests are pending (the rest
    /// waits in the buffer and is resumed as requests complete). A partial frame left over must
    /// complete within frame-timeout of its first byte, counted only while the daemon reads.
    private func drain(context: ChannelHandlerContext) {
        guard var input = cumulation else { return }
        cumulation = nil
        refreshFastPath()
        var started = 0
        // Read once and again only after the general path ran (a check changes neither): each
        // read of a class property is a run-time exclusivity check.
        var limit = frameLimit
        var mayStart = flow.mayStartRequest && !outputHeld
        frames: while mayStart {
            let n: Int
            switch Framing.next(in: input, maxFrameSize: limit) {
            case .incomplete: break frames
            case .tooLarge(let length): return frameTooLarge(context: context, length: length)
            case .frame(let length): n = length
            }
            input.moveReaderIndex(forwardBy: 4)
            started += 1
            let answered = hot.pointee.fastPath && input.withUnsafeReadableBytes { raw in answerCheck(UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
            if !answered {
                let before = principal
                input.withUnsafeReadableBytes { raw in general(context: context, frame: UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
                // A Hello (or a revocation) changed who this connection is: decide again.
                if principal != before { keyEpoch = .max; refreshFastPath() }
                limit = frameLimit
                mayStart = flow.mayStartRequest
                // Answers of the general path can be far larger than their frames (an error
                // naming every call answers a 4-byte frame): past `outputFlushBytes` they are
                // written out, and once the peer stops reading them (the channel is not
                // writable) the remaining frames wait in the buffer until it is.
                if hot.pointee.out.readableBytes >= ConnectionHandler.outputFlushBytes {
                    flushOut(context: context)
                    if !context.channel.isWritable {
                        outputHeld = true
                        mayStart = false
                    }
                }
            }
            input.moveReaderIndex(forwardBy: n)
        }
        if flow.state == .closed { return }
        var leftover = ConnectionFlow.Leftover.nothing
        if input.readableBytes > 0 {
            input.discardReadBytes()
            cumulation = input
            let partial = Framing.next(in: input, maxFrameSize: .max) == .incomplete
            leftover = partial ? .partialFrame : .completeFrames
        }
        perform(flow.framesConsumed(started: started, leftover: leftover), context: context)
    }

    /// Arms or cancels the frame timer as `ConnectionFlow` decided.
    private func perform(_ action: ConnectionFlow.TimerAction, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .arm:
            frameTimer?.cancel()
            frameTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(Int64(dispatcher.config.frameTimeoutSeconds))) { [weak self] in
                guard let self, self.flow.frameTimerFired() else { return }
                self.dispatcher.metrics.slowClients.increment()
                self.logger.info("closing slow client: a frame did not complete within frame-timeout")
                context.close(promise: nil)
            }
        case .cancel:
            frameTimer?.cancel()
            frameTimer = nil
        }
    }

    /// A request leaves the read loop to finish later (a pool call, a revision wait, a watch):
    /// it holds an in-flight slot until `requestCompleted`.
    private func requestStarted() {
        flow.requestStarted()
    }

    /// A request that held an in-flight slot is answered: close a draining connection that has
    /// nothing left, else start buffered frames, flush, and resume a held read.
    private func requestCompleted(context: ChannelHandlerContext) {
        switch flow.requestCompleted() {
        case .close:
            if hot.pointee.needsFlush { flushOut(context: context) }
            context.close(promise: nil)
        case .resume:
            if flow.mayStartRequest, cumulation != nil { drain(context: context) }
            if hot.pointee.needsFlush { flushOut(context: context) }
            if flow.mayResumeReading(writable: context.channel.isWritable) { context.read() }
        }
    }

    /// Decides once per read burst whether checks may take the in-place path: an authenticated
    /// principal allowed to check, its key still valid (re-validated only when the key table's
    /// epoch moved or the key's expiry passed), observability off.
    private func refreshFastPath() {
        hot.pointee.fastPath = false
        hot.pointee.fastPathTenant = nil
        if flow.state != .open || dispatcher.metricsEnabled || dispatcher.decisionLog != nil { return }
        // Log mode: a replica refusing reads, or holding only some tenants, answers on the general path.
        if let r = dispatcher.replicator, r.shard != .all || r.readRefusal() != nil { return }
        switch principal {
        case .unauthenticated:
            return
        case .superuser:
            hot.pointee.fastPath = true
        case .uid(_, let role, let tenant), .certificate(_, let role, let tenant):
            hot.pointee.fastPath = role != .operator
            hot.pointee.fastPathTenant = role == .gateway ? nil : tenant
        case .key(let id, let role, let tenant):
            guard role != .operator else { return }
            let keys = dispatcher.keys
            let epoch = keys.epoch.load(ordering: .acquiring)
            if epoch != keyEpoch || Timestamp.now() >= keyExpiry {
                guard keys.stillValid(id) == nil else { return }  // the general path answers and forgets it
                keyEpoch = epoch
                keyExpiry = keys.expiry(of: id)
            }
            hot.pointee.fastPath = true
            hot.pointee.fastPathTenant = role == .gateway ? nil : tenant
        }
    }

    /// Answers a plain Check or BatchCheck in place; false hands the frame to the general path.
    /// Allocates nothing once the per-connection arrays and output buffer have grown.
    private func answerCheck(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard let parsed = CheckFrame.parse(frame, maxItems: limits.maxBatchChecks, into: &hot.pointee.items, tenants: &hot.pointee.tenants) else { return false }
        if let t = hot.pointee.fastPathTenant {
            for q in hot.pointee.items where q.tenant != t { return false }  // the general path says PERMISSION_DENIED
        }
        let engine = dispatcher.engine
        if !parsed.isBatch {
            let q = hot.pointee.items[0]
            let d = engine.withSnapshot { s in
                s.decide(tenant: q.tenant, user: q.user, permissionBytes: UnsafeRawBufferPointer(rebasing: frame[q.permissionStart..<q.permissionEnd]), scope: q.scope)
            }
            let size = CheckFrame.checkResponseSize(requestId: parsed.requestId, d)
            hot.pointee.out.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { CheckFrame.writeCheckResponse(requestId: parsed.requestId, d, to: $0) }
        } else {
            var decided = hot.pointee.decisions
            hot.pointee.decisions = []
            decided.removeAll(keepingCapacity: true)
            let queries = hot.pointee.items
            let revision = engine.withSnapshot { s -> UInt64 in
                for q in queries {
                    decided.append(s.decide(tenant: q.tenant, user: q.user, permissionBytes: UnsafeRawBufferPointer(rebasing: frame[q.permissionStart..<q.permissionEnd]), scope: q.scope))
                }
                return s.revision
            }
            decided.withUnsafeBufferPointer { ds in
                let size = CheckFrame.batchResponseSize(requestId: parsed.requestId, ds, revision: revision)
                hot.pointee.out.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { CheckFrame.writeBatchResponse(requestId: parsed.requestId, ds, revision: revision, to: $0) }
            }
            hot.pointee.decisions = decided
        }
        hot.pointee.needsFlush = true
        return true
    }

    private func frameTooLarge(context: ChannelHandlerContext, length: UInt32) {
        logger.info("refusing oversized frame", metadata: ["frame.length": "\(length)"])
        let why = authenticated && frameLimit == dispatcher.config.maxFrameSize ? "" : " before the connection authenticates (send Hello with an API key first)"
        let e = AuthzError(.resourceExhausted, "frame length \(length) exceeds max_frame_size \(frameLimit)\(why); closing the connection", field: "frame.length")
        if flow.close() { perform(.cancel, context: context) }
        cumulation = nil
        let payload = WireCodec.encodeResponse(WireResponse(requestId: 0, result: .failure(e)))
        hot.pointee.out.writeFrame(payload)
        let buffer = hot.pointee.out
        hot.pointee.out.clear()
        hot.pointee.needsFlush = false
        context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// Counts a failed authentication and records it in the audit trail; past the limit the
    /// connection is told and closed.
    private func authenticationFailed(context: ChannelHandlerContext, id: UInt64, refusal: AuthRefusal) {
        if NIODeadline.now() - failureWindowStart > ConnectionHandler.failureWindow {
            failures = 0
            failureWindowStart = .now()
        }
        failures += 1
        let error = refusal.error
        logger.info("authentication failed", metadata: ["error": "\(error.message)"])
        let closing = failures > ConnectionHandler.maxFailures
        audited(refusal, closing: closing)
        if closing {
            respond(context: context, id: id, result: .failure(AuthzError(.resourceExhausted, "too many failed authentication attempts on this connection; closing it")), flush: true)
            context.close(promise: nil)
            return
        }
        respond(context: context, id: id, result: .failure(error), flush: false)
    }

    /// Records a refused authentication in the audit trail (when it is on), naming the
    /// connection as it is without the refused key.
    private func audited(_ refusal: AuthRefusal, as principal: Principal? = nil, closing: Bool = false) {
        guard let audit = dispatcher.audit else { return }
        audit.authRefused(refusal, who: dispatcher.actor(principal ?? self.principal, peer), peer: peer, listener: "binary", closing: closing)
    }

    /// The general path for one frame: everything the in-place check path does not answer.
    private func general(context: ChannelHandlerContext, frame: UnsafeRawBufferPointer) {
        var principal = self.principal
        var keyVerified = false
        if !authenticated {
            // Not authenticated: read the envelope only; decode nothing an anonymous caller sent
            // unless it is Hello or Health, or carries a key that verifies.
            guard let envelope = WireCodec.peekEnvelope(frame) else {
                return authenticationFailed(context: context, id: 0, refusal: AuthRefusal(reason: .malformedRequest, error: AuthzError.invalid("request", "is not a valid authz.v1.Request protobuf message")))
            }
            if let presented = envelope.apiKey {
                switch dispatcher.keys.authenticate(presented) {
                case .success(let k):
                    principal = .key(id: k.id, role: k.role, tenant: k.tenantId)
                    keyVerified = true
                    keyedRequestSeen()
                case .failure(let r): return authenticationFailed(context: context, id: envelope.requestId, refusal: r)
                }
            } else if !(envelope.callKind.map { Commands.command($0).open } ?? false) {
                return authenticationFailed(context: context, id: envelope.requestId, refusal: AuthRefusal(reason: .noKey, error: ConnectionHandler.noKey))
            }
        }
        if frame.count > ConnectionHandler.offloadDecodingAbove {
            // A large frame (a big Write or Import) is decoded on the reader pool, so that other
            // connections of this event loop never wait for it.
            let bytes = Array(frame)
            let limits = self.limits
            requestStarted()
            dispatcher.readers.runIfActive(eventLoop: context.eventLoop) {
                bytes.withUnsafeBytes { WireCodec.decodeRequest($0, limits: limits) }
            }.assumeIsolated().whenComplete { outcome in
                switch outcome {
                case .success(let request): self.proceed(context: context, request: request, principal: principal, keyVerified: keyVerified)
                case .failure: self.respond(context: context, id: 0, result: .failure(AuthzError(.unavailable, "the daemon is shutting down")), flush: true)
                }
                self.requestCompleted(context: context)
            }
            return
        }
        proceed(context: context, request: WireCodec.decodeRequest(frame, limits: limits), principal: principal, keyVerified: keyVerified)
    }

    /// Frames larger than this are decoded off the event loop.
    static let offloadDecodingAbove = 256 * 1024

    /// Answers of the general path buffered past this many bytes are written out before the
    /// next frame is read from the buffer (`drain`).
    static let outputFlushBytes = 64 * 1024

    /// The general path stopped answering because the peer does not read its answers (the
    /// channel is not writable): frames wait in the buffer until it is writable again.
    private var outputHeld = false

    /// The general path once the request is decoded.
    private func proceed(context: ChannelHandlerContext, request: WireRequest, principal: Principal, keyVerified: Bool) {
        var principal = principal
        // Authenticate: a per-request key, else the connection's principal (a Hello key is
        // re-validated on every request, so revocation applies to open connections).
        if let presented = request.apiKey, !keyVerified {
            switch dispatcher.keys.authenticate(presented) {
            case .success(let k):
                principal = .key(id: k.id, role: k.role, tenant: k.tenantId)
                keyedRequestSeen()
            case .failure(let r): return authenticationFailed(context: context, id: request.requestId, refusal: r)
            }
        } else if request.apiKey == nil, case .key(let keyId, _, _) = principal, let r = dispatcher.keys.stillValid(keyId) {
            // The connection's key was revoked or expired: back to the pre-authentication state
            // (small frames, the auth timeout), as if it had never said Hello.
            let e = r.error
            audited(r, as: .unauthenticated)
            self.principal = .unauthenticated
            authenticated = false
            frameLimit = dispatcher.config.preAuthMaxFrameSize
            armAuthTimer(context: context)
            return respond(context: context, id: request.requestId, result: .failure(e), flush: false)
        }
        guard case .success(let call) = request.call else {
            if case .failure(let e) = request.call { respond(context: context, id: request.requestId, result: .failure(e), flush: false) }
            return
        }
        if case .hello(let presented, _) = call {
            if presented.isEmpty {
                if case .unauthenticated = principal {
                    return authenticationFailed(context: context, id: request.requestId,
                                                refusal: AuthRefusal(reason: .noKey, error: AuthzError(.unauthenticated, "hello.api_key is required", field: "hello.api_key")))
                }
                return respond(context: context, id: request.requestId, result: .success(.hello(role: principal.role, tenantId: principal.tenant, keyId: nil)), flush: false)
            }
            switch dispatcher.keys.authenticate(presented) {
            case .success(let k):
                self.principal = .key(id: k.id, role: k.role, tenant: k.tenantId)
                keyEpoch = .max
                trust()
                return respond(context: context, id: request.requestId, result: .success(.hello(role: k.role, tenantId: k.tenantId, keyId: k.id)), flush: false)
            case .failure(let r):
                return authenticationFailed(context: context, id: request.requestId, refusal: r)
            }
        }
        if let denied = authorize(principal, call) {
            if denied.code == .unauthenticated { audited(AuthRefusal(reason: .noKey, error: denied), as: principal) }
            return respond(context: context, id: request.requestId, result: .failure(denied), flush: false)
        }
        if case .importChunk(let session, _, _, _) = call {
            // Kept until the connection closes, the last chunk included: a last chunk refused
            // before it ran (its deadline passed in the queue) leaves the session staged, and
            // the disconnect must still discard it (dropping a committed one does nothing).
            importSessions[session] = principal
        }
        if case .watch(let w) = call {
            return startWatch(context: context, id: request.requestId, call: w, principal: principal)
        }
        let deadline = NIODeadline.now() + .milliseconds(Int64(request.deadlineMs == 0 ? UInt32(dispatcher.config.defaultDeadlineMillis) : request.deadlineMs))
        let lane = Dispatcher.lane(call)
        switch lane {
        case .stream:
            return respond(context: context, id: request.requestId, result: .failure(AuthzError.internalError("no stream for \(call.name)")), flush: false)
        case .inline:
            let started: NIODeadline? = dispatcher.metricsEnabled || dispatcher.decisionLog != nil ? .now() : nil
            let result = dispatcher.execute(call, principal: principal, peer: peer)
            if let started { observe(call, result, started) }
            if case .failure(let e) = result, let awaited = e.awaitedRevision {
                // Log mode waits up to the request's deadline (a replica catching up is normal);
                // a standalone daemon up to revision-wait-ms (its revision moves only by writes).
                // The answer leaves a little before the deadline, so that the caller still reads it.
                let logMode = dispatcher.replicator != nil
                let margin = TimeAmount.milliseconds(min(100, Int64(request.deadlineMs == 0 ? UInt32(dispatcher.config.defaultDeadlineMillis) : request.deadlineMs) / 10))
                let bound = logMode ? deadline - margin : min(deadline, .now() + .milliseconds(Int64(dispatcher.config.revisionWaitMillis)))
                waitForRevision(context: context, id: request.requestId, call: call, principal: principal, awaited: awaited,
                                until: bound, pastDeadline: logMode)
            } else {
                respond(context: context, id: request.requestId, result: result, flush: false)
            }
        case .reader, .writer:
            let pool = lane == .writer ? dispatcher.writer : dispatcher.readers
            requestStarted()
            let dispatcher = self.dispatcher
            let peer = self.peer
            let principal = principal
            // Queued → running, or queued → abandoned when the deadline passes first: a call
            // answered DEADLINE_EXCEEDED while it waited never runs afterwards.
            let ticket = NIOLockedValueBox(Ticket.queued)
            let future = pool.runIfActive(eventLoop: context.eventLoop) { () -> Result<Reply, AuthzError> in
                let run = ticket.withLockedValue { t -> Bool in
                    guard t == .queued else { return false }
                    t = .running
                    return true
                }
                guard run, NIODeadline.now() <= deadline else {
                    return .failure(AuthzError(.deadlineExceeded, "the request's deadline passed before it could run; nothing was applied"))
                }
                // A key revoked while the call waited does not get to run it.
                if case .key(let id, _, _) = principal, let r = dispatcher.keys.stillValid(id) {
                    dispatcher.audit?.authRefused(r, who: dispatcher.actor(.unauthenticated, peer), peer: peer, listener: "binary")
                    return .failure(r.error)
                }
                return dispatcher.execute(call, principal: principal, peer: peer)
            }
            var answered = false
            let timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
                let abandoned = ticket.withLockedValue { t -> Bool in
                    guard t == .queued else { return false }
                    t = .abandoned
                    return true
                }
                guard abandoned else { return }
                answered = true
                self.respond(context: context, id: request.requestId,
                             result: .failure(AuthzError(.deadlineExceeded, "the request's deadline passed while it waited to run; nothing was applied")), flush: true)
            }
            future.assumeIsolated().whenComplete { outcome in
                timer.cancel()
                if !answered {
                    switch outcome {
                    case .success(let result): self.respond(context: context, id: request.requestId, result: result, flush: true)
                    case .failure: self.respond(context: context, id: request.requestId, result: .failure(AuthzError(.unavailable, "the daemon is shutting down")), flush: true)
                    }
                }
                self.requestCompleted(context: context)
            }
        }
    }

    private enum Ticket { case queued, running, abandoned }

    /// Starts a Watch stream (docs/watch.md): it holds one of the connection's in-flight slots
    /// until it ends, and one of the daemon's `max-watchers`.
    private func startWatch(context: ChannelHandlerContext, id: UInt64, call: WatchCall, principal: Principal) {
        let config = dispatcher.config
        if flow.state != .open {
            return respond(context: context, id: id, result: .failure(AuthzError(.unavailable, "the daemon is stopping: watch again on a new connection")), flush: false)
        }
        if watches[id] != nil {
            return respond(context: context, id: id, result: .failure(AuthzError.invalid("request_id", "already names a running watch on this connection")), flush: false)
        }
        if dispatcher.replicator != nil, let refused = dispatcher.refuseRead(.watch(effectiveWatch(call, principal: principal))) {
            return respond(context: context, id: id, result: .failure(refused), flush: false)
        }
        guard dispatcher.watchers.take() else {
            return respond(context: context, id: id, result: .failure(AuthzError(.resourceExhausted, "the daemon serves max-watchers = \(config.maxWatchers) watches already", field: "watch")), flush: false)
        }
        let from: UInt64
        do {
            from = try call.fromRevision ?? dispatcher.engine.storedRevision()
        } catch let e as AuthzError {
            dispatcher.watchers.release()
            return respond(context: context, id: id, result: .failure(e), flush: false)
        } catch {
            dispatcher.watchers.release()
            return respond(context: context, id: id, result: .failure(AuthzError(.unavailable, "cannot read the revision: \(error)")), flush: false)
        }
        requestStarted()
        let stream = WatchStream(
            from: from, engine: dispatcher.engine, readers: dispatcher.readers, loop: context.eventLoop, logger: logger,
            matches: watchFilter(call, principal: principal),
            stallTimeout: .seconds(Int64(config.watchStallSeconds)), progressInterval: .seconds(Int64(config.watchProgressSeconds)),
            send: { [weak self] result in self?.respond(context: context, id: id, result: result, flush: true) },
            isWritable: { context.channel.isWritable },
            refusal: { [keys = dispatcher.keys] in
                if case .key(let id, _, _) = principal, let r = keys.stillValid(id) { return r.error }
                return nil
            },
            finished: { [weak self] close in
                guard let self else { return }
                self.watches.removeValue(forKey: id)
                self.dispatcher.watchers.release()
                if close {
                    _ = self.flow.requestCompleted()
                    context.close(promise: nil)
                } else {
                    self.requestCompleted(context: context)
                }
            })
        watches[id] = stream
        stream.start()
    }

    static let noKey = AuthzError(.unauthenticated, "this connection presented no API key: send a Hello with api_key first, or set Request.api_key", field: "api_key")

    /// Metrics and decision log for an inline check or batch (only when either is on).
    private func observe(_ call: Call, _ result: Result<Reply, AuthzError>, _ started: NIODeadline) {
        let elapsed = (NIODeadline.now() - started).nanoseconds
        let m = dispatcher.metrics
        switch (call, result) {
        case (.check(let c), .success(.check(let d))):
            if dispatcher.metricsEnabled {
                m.check(d.reason)
                m.checkLatency.recordNanoseconds(elapsed)
            }
            if let log = dispatcher.decisionLog, log.sample() {
                log.record(.init(time: Timestamp.now(), tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope,
                                 reason: d.reason, revision: d.revision, latencyNanos: UInt64(max(0, elapsed))))
            }
        case (.batchCheck(let items, _), .success(.batchCheck(let results, _))):
            if dispatcher.metricsEnabled {
                m.batchSize.record(items.count)
                m.checkLatency.recordNanoseconds(elapsed)
                // One counter update per reason per batch, not per check.
                var counts = [Int](repeating: 0, count: Reason.allCases.count + 1)
                for case .success(let d) in results { counts[Int(d.reason.rawValue)] += 1 }
                for r in Reason.allCases where counts[Int(r.rawValue)] > 0 { m.checks[Int(r.rawValue) - 1].increment(by: counts[Int(r.rawValue)]) }
            }
            if let log = dispatcher.decisionLog {
                for i in log.sample(batch: items.count) where i < results.count {
                    guard case .success(let c) = items[i], case .success(let d) = results[i] else { continue }
                    log.record(.init(time: Timestamp.now(), tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope,
                                     reason: d.reason, revision: d.revision, latencyNanos: UInt64(max(0, elapsed)) / UInt64(max(1, items.count))))
                }
            }
        default:
            break
        }
    }

    /// Re-runs an inline call when the engine publishes the revision its `min_revision` names
    /// (`AuthzError.awaitedRevision`), until it answers or the wait bound passes (then it
    /// answers UNAVAILABLE "not yet at revision"). Nothing polls: the write that reaches the
    /// revision wakes the waiter, earlier writes do not.
    ///
    /// With `pastDeadline` (the bound is the request's deadline), a revision still not reached
    /// then answers DEADLINE_EXCEEDED.
    private func waitForRevision(context: ChannelHandlerContext, id: UInt64, call: Call, principal: Principal, awaited: UInt64,
                                 until: NIODeadline, pastDeadline: Bool) {
        requestStarted()
        let wait = RevisionWaiter(handler: self, context: context, id: id, call: call, principal: principal,
                                  until: until, pastDeadline: pastDeadline)
        let bound = NIOLoopBound(wait, eventLoop: context.eventLoop)
        revisionWaits[ObjectIdentifier(wait)] = wait
        wait.timeout = context.eventLoop.scheduleTask(deadline: until) { bound.value.expire() }
        wait.wait(for: awaited, bound)
    }

    /// One call waiting for a revision (`waitForRevision`). Confined to the connection's event
    /// loop: the engine's callback and the timeout reach it through a `NIOLoopBound`.
    private final class RevisionWaiter {
        let handler: ConnectionHandler
        let context: ChannelHandlerContext
        let id: UInt64
        let call: Call
        let principal: Principal
        let until: NIODeadline
        let pastDeadline: Bool
        var settled = false
        var timeout: Scheduled<Void>?
        var token: UInt64?

        init(handler: ConnectionHandler, context: ChannelHandlerContext, id: UInt64, call: Call, principal: Principal,
             until: NIODeadline, pastDeadline: Bool) {
            self.handler = handler
            self.context = context
            self.id = id
            self.call = call
            self.principal = principal
            self.until = until
            self.pastDeadline = pastDeadline
        }

        /// Answers once: cancels the timeout and the engine waiter, writes the reply.
        func finish(_ result: Result<Reply, AuthzError>) {
            guard !settled else { return }
            cancel()
            handler.revisionWaits.removeValue(forKey: ObjectIdentifier(self))
            handler.respond(context: context, id: id, result: result, flush: true)
            handler.requestCompleted(context: context)
        }

        /// Ends the wait without an answer (the connection closed): the timeout and the engine
        /// waiter are withdrawn; a wake-up already queued finds it settled.
        func cancel() {
            settled = true
            timeout?.cancel()
            timeout = nil
            if let t = token { handler.dispatcher.engine.cancelRevisionWait(t) }
            token = nil
        }

        /// Registers with the engine for `revision`; the wake-up hops back to the loop.
        func wait(for revision: UInt64, _ bound: NIOLoopBound<RevisionWaiter>) {
            let loop = context.eventLoop
            switch handler.dispatcher.engine.whenRevision(reaches: revision, { loop.execute { bound.value.attempt(bound) } }) {
            case .waiting(let t): token = t
            case .reached: token = nil  // attempt() is already queued on the loop
            case .refused:
                finish(.failure(AuthzError(.resourceExhausted, "too many requests are waiting for a revision; retry later", field: "min_revision")))
            }
        }

        /// Runs the call again; waits on for a newer revision it names while time remains.
        func attempt(_ bound: NIOLoopBound<RevisionWaiter>) {
            guard !settled else { return }
            token = nil
            let result = handler.dispatcher.execute(call, principal: principal, peer: handler.peer)
            if case .failure(let e) = result, let r = e.awaitedRevision, NIODeadline.now() < until { return wait(for: r, bound) }
            finish(result)
        }

        /// The wait bound passed: a last attempt, answered whatever it gives.
        func expire() {
            guard !settled else { return }
            var result = handler.dispatcher.execute(call, principal: principal, peer: handler.peer)
            if pastDeadline, case .failure(let e) = result, e.awaitedRevision != nil {
                result = .failure(AuthzError(.deadlineExceeded, "the request's deadline passed before this replica reached it: " + e.message, field: "min_revision"))
            }
            finish(result)
        }
    }

    /// Appends an answer to the output buffer; `flush` writes it out now (completions outside a
    /// read burst), otherwise it leaves with the rest of the burst's answers.
    private func respond(context: ChannelHandlerContext, id: UInt64, result: Result<Reply, AuthzError>, flush: Bool) {
        if case .failure(let e) = result { dispatcher.metrics.error(e.code) }
        guard context.channel.isActive, flow.state != .closed else { return }
        hot.pointee.out.writeFrame(WireCodec.encodeResponse(WireResponse(requestId: id, result: result)))
        if flush {
            flushOut(context: context)
        } else {
            hot.pointee.needsFlush = true
        }
    }

    /// Writes and flushes what the output buffer holds: on a plaintext socket with no write of
    /// NIO's pending, with one `send` (`SocketWriter`); what the socket does not take, and
    /// everything on other connections, through the pipeline. The buffer is reused: once the
    /// socket has taken the bytes (the usual case, synchronously) clearing it allocates nothing.
    private func flushOut(context: ChannelHandlerContext) {
        hot.pointee.needsFlush = false
        guard hot.pointee.out.readableBytes > 0 else { return }
        var written: EventLoopPromise<Void>?
        if let writer = hot.pointee.writer {
            if hot.pointee.writesInNIO == 0 {
                switch hot.pointee.out.withUnsafeReadableBytes({ writer.write($0) }) {
                case .all:
                    hot.pointee.out.clear()
                    return
                case .partial(let sent):
                    hot.pointee.out.moveReaderIndex(forwardBy: sent)
                }
            }
            // The socket is full (or failing): NIO writes the rest, and everything after it
            // until its writes complete, so that bytes keep their order.
            hot.pointee.writesInNIO += 1
            written = context.eventLoop.makePromise(of: Void.self)
            written!.futureResult.assumeIsolated().whenComplete { _ in self.hot.pointee.writesInNIO -= 1 }
        }
        context.writeAndFlush(wrapOutboundOut(hot.pointee.out), promise: written)
        hot.pointee.out.clear()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if idleTimeout != nil { lastRead = context.eventLoop.now }  // one clock read per read burst
        if hot.pointee.needsFlush { flushOut(context: context) }
        context.fireChannelReadComplete()
        // On a plaintext socket (this handler alone in the pipeline), ask for the next read
        // now, straight from the channel: NIO then skips its own request through the pipeline
        // (about 500 instructions a wake-up). A held read is asked for again by NIO, as before.
        if hot.pointee.writer != nil { requestRead(context: context, direct: true) }
    }

    func read(context: ChannelHandlerContext) {
        requestRead(context: context, direct: false)
    }

    /// Reads on unless `ConnectionFlow` holds reading; `direct` asks the channel itself rather
    /// than the handlers before this one (only when there are none: a plaintext socket).
    private func requestRead(context: ChannelHandlerContext, direct: Bool) {
        switch flow.readRequested(writable: context.channel.isWritable, partialFrameBuffered: cumulation != nil) {
        case .ignore:
            return
        case .hold(let cancelFrameTimer):
            if cancelFrameTimer { perform(.cancel, context: context) }
        case .read(let armFrameTimer):
            if armFrameTimer { perform(.arm, context: context) }
            if direct { context.channel._channelCore.read0() } else { context.read() }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            for w in Array(watches.values) { w.writable() }
            if outputHeld {
                // The peer read its answers: answer the frames that waited for that.
                outputHeld = false
                if flow.mayStartRequest, cumulation != nil { drain(context: context) }
                if hot.pointee.needsFlush { flushOut(context: context) }
            }
        }
        if flow.mayResumeReading(writable: context.channel.isWritable) { context.read() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let identified = event as? CertificateIdentified {
            // The TLS client certificate names who this connection is (before any data).
            if principal == .unauthenticated {
                principal = identified.principal
                trust()
            }
            return
        }
        if event is QuiesceEvent {
            let closeNow = flow.quiesce()
            for w in Array(watches.values) { w.stopping() }
            if closeNow { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
