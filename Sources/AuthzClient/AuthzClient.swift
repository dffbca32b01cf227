import AuthzModel
import Foundation
import AuthzFraming
import AuthzWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// Where the client connects: the daemon's `BindAddress` (a Unix socket path, or a TCP host and
/// port, `[IPV6]:PORT` included). An empty host means loopback.
public typealias Endpoint = BindAddress

/// A client of authzd: a pool of connections, each pipelining many requests; per-call
/// deadlines; typed errors (`AuthzError` with the server's code, message and field); lazy
/// reconnect after a connection drops (calls in flight on it fail with UNAVAILABLE).
///
/// Thread-safe. Call `close()` when done.
public final class AuthzClient: @unchecked Sendable {
    public let endpoint: Endpoint
    let group: EventLoopGroup
    let ownsGroup: Bool
    let maxFrameSize: Int
    private let slots: [NIOLockedValueBox<ClientConnection?>]
    private let next = NIOLockedValueBox(0)
    /// Deadline of calls that name none.
    public var defaultTimeout: TimeAmount = .seconds(30)
    /// API key presented in a Hello on every new connection (nil: none, e.g. a Unix peer
    /// trusted by uid). A rejected Hello fails the call with UNAUTHENTICATED.
    public var apiKey: String?

    /// TLS context for a TCP endpoint (nil: plain text).
    private let tlsContext: NIOSSLContext?
    private let tlsServerName: String?

    /// A client with `connections` pooled connections (opened on first use). With `tls`, TCP
    /// connections speak TLS (ignored for a Unix socket); INVALID_ARGUMENT when its files
    /// cannot be read.
    public convenience init(endpoint: Endpoint, connections: Int = 1, group: EventLoopGroup? = nil, maxFrameSize: Int = 64 * 1024 * 1024, tls: ClientTLS) throws {
        var name: String? = tls.serverName
        if name == nil, case .tcp(let host, _) = endpoint, !AuthzClient.isIPAddress(host) { name = host }
        let context: NIOSSLContext? = { if case .tcp = endpoint { return true } else { return false } }() ? try tls.makeContext() : nil
        self.init(endpoint: endpoint, connections: connections, group: group, maxFrameSize: maxFrameSize, tlsContext: context, serverName: name)
    }

    /// A client with `connections` pooled connections (opened on first use).
    public convenience init(endpoint: Endpoint, connections: Int = 1, group: EventLoopGroup? = nil, maxFrameSize: Int = 64 * 1024 * 1024) {
        self.init(endpoint: endpoint, connections: connections, group: group, maxFrameSize: maxFrameSize, tlsContext: nil, serverName: nil)
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    private init(endpoint: Endpoint, connections: Int, group: EventLoopGroup?, maxFrameSize: Int, tlsContext: NIOSSLContext?, serverName: String?) {
        self.tlsContext = tlsContext
        self.tlsServerName = serverName
        self.endpoint = endpoint
        if let group {
            self.group = group
            ownsGroup = false
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            ownsGroup = true
        }
        self.maxFrameSize = maxFrameSize
        slots = (0..<max(1, connections)).map { _ in NIOLockedValueBox(nil) }
    }

    /// Closes every connection (and the event loop group if the client made it).
    public func close() {
        for s in slots {
            if let c = s.withLockedValue({ $0 }) { try? c.channel.close().wait() }
        }
        if ownsGroup { try? group.syncShutdownGracefully() }
    }

    private func connect(on loop: EventLoop) -> EventLoopFuture<ClientConnection> {
        let handler = ClientHandler()
        let maxFrame = maxFrameSize
        let tls = tlsContext, serverName = tlsServerName
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.seconds(5))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    if let tls { try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: serverName)) }
                    try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: maxFrame)))
                    try ch.pipeline.syncOperations.addHandler(handler)
                }
            }
        let future: EventLoopFuture<Channel>
        switch endpoint {
        case .unix(let path): future = bootstrap.connect(unixDomainSocketPath: path)
        case .tcp(let host, let port):
            future = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: host.isEmpty ? "127.0.0.1" : host, port: port)
        }
        let key = apiKey
        return future.flatMap { channel -> EventLoopFuture<ClientConnection> in
            let c = ClientConnection(channel: channel, handler: handler)
            guard let key else { return channel.eventLoop.makeSucceededFuture(c) }
            return c.send(.hello(apiKey: key, protocolVersion: protocolVersion), timeout: .seconds(10)).map { _ in c }
        }
    }

    /// A new connection outside the pool (a stream's own), authenticated like the pool's.
    func connectDedicated() -> EventLoopFuture<ClientConnection> {
        connect(on: group.next())
    }

    /// A live connection from the pool (round robin), connecting or reconnecting as needed.
    func connection() -> EventLoopFuture<ClientConnection> {
        let i = next.withLockedValue { n -> Int in
            n = (n + 1) % slots.count
            return n
        }
        let slot = slots[i]
        if let c = slot.withLockedValue({ $0 }), c.channel.isActive { return c.channel.eventLoop.makeSucceededFuture(c) }
        let loop = group.next()
        return connect(on: loop).map { c in
            slot.withLockedValue { $0 = c }
            return c
        }.flatMapErrorThrowing { error in
            if let e = error as? AuthzError { throw e }
            throw AuthzError(.unavailable, "cannot connect to authzd at \(self.endpoint): \(error)")
        }
    }

    /// Sends one call and completes with its reply, or fails with an `AuthzError` (the
    /// server's, DEADLINE_EXCEEDED after `timeout`, or UNAVAILABLE when the connection fails).
    public func send(_ call: Call, timeout: TimeAmount? = nil) -> EventLoopFuture<Reply> {
        let t = timeout ?? defaultTimeout
        return connection().flatMap { c in c.send(call, timeout: t) }
    }

    /// `send` for async code.
    public func call(_ call: Call, timeout: TimeAmount? = nil) async throws -> Reply {
        try await send(call, timeout: timeout).get()
    }

    // MARK: typed calls

    public func check(tenant: ID, user: ID, permission: String, scope: Scope, minRevision: UInt64 = 0) async throws -> Decision {
        guard case .check(let d) = try await call(.check(CheckCall(tenantId: tenant, userId: user, permission: permission, scope: scope, minRevision: minRevision))) else {
            throw AuthzError(.internal, "unexpected reply")
        }
        return d
    }

    public func batchCheck(_ checks: [CheckCall], minRevision: UInt64 = 0) async throws -> [Result<Decision, AuthzError>] {
        guard case .batchCheck(let r, _) = try await call(.batchCheck(checks.map { .success($0) }, minRevision: minRevision)) else {
            throw AuthzError(.internal, "unexpected reply")
        }
        return r
    }

    public func explain(tenant: ID, user: ID, permission: String, scope: Scope) async throws -> Explanation {
        guard case .explain(let e) = try await call(.explain(CheckCall(tenantId: tenant, userId: user, permission: permission, scope: scope))) else {
            throw AuthzError(.internal, "unexpected reply")
        }
        return e
    }

    @discardableResult
    public func write(_ ops: [WriteOp]) async throws -> UInt64 {
        guard case .write(let rev) = try await call(.write(ops)) else { throw AuthzError(.internal, "unexpected reply") }
        return rev
    }

    public func get(_ ref: RecordRef, includeSecrets: Bool = false) async throws -> Entity {
        guard case .get(let e) = try await call(.get(ref, includeSecrets: includeSecrets)) else { throw AuthzError(.internal, "unexpected reply") }
        return e
    }

    /// Exports in pages of `pageSize` records, all read from one snapshot of the daemon (one
    /// revision), handing each page to `page` as it arrives: memory is one page on both sides.
    /// Returns the revision the export was read at.
    @discardableResult
    public func exportPaged(tenant: ID?, includeSecrets: Bool, pageSize: Int = 10_000, timeout: TimeAmount = .seconds(600),
                            page: ([UInt8]) throws -> Void) async throws -> UInt64 {
        var token = ""
        while true {
            let reply = try await call(.exportPage(tenantId: tenant, includeSecrets: includeSecrets, pageSize: pageSize, pageToken: token), timeout: timeout)
            switch reply {
            case .exportPage(let bytes, _, let next):
                try page(bytes)
                token = next
            case .export(let bytes, let revision):
                try page(bytes)
                return revision
            default:
                throw AuthzError(.internal, "unexpected reply")
            }
        }
    }

    /// Splits JSON Lines into chunks of at most `chunkBytes` that end at a line boundary (a
    /// single longer line is a chunk of its own). Returns each chunk's byte range and the number
    /// of its first line.
    public static func chunks(of jsonl: [UInt8], chunkBytes: Int) -> [(range: Range<Int>, firstLine: Int)] {
        var out: [(Range<Int>, Int)] = []
        var start = 0, line = 1
        while start < jsonl.count {
            var end = min(jsonl.count, start + chunkBytes)
            if end < jsonl.count {
                // Back up to just after the last newline in the window, or run to the next one.
                var cut = end
                while cut > start, jsonl[cut - 1] != 0x0A { cut -= 1 }
                if cut == start {
                    while end < jsonl.count, jsonl[end - 1] != 0x0A { end += 1 }
                } else {
                    end = cut
                }
            }
            out.append((start..<end, line))
            for b in jsonl[start..<end] where b == 0x0A { line += 1 }
            start = end
        }
        return out
    }

    /// Imports JSON Lines of any size atomically: sent in chunks of at most `chunkBytes` under
    /// one import session, staged by the daemon and applied as one write with the last chunk
    /// (nothing is applied if any line is bad, the connection drops or the daemon restarts).
    /// Line numbers in errors count from the start of `jsonl`. `progress` gets the bytes sent.
    public func importChunked(_ jsonl: [UInt8], chunkBytes: Int = 4 << 20, timeout: TimeAmount = .seconds(600),
                              progress: ((Int) -> Void)? = nil) async throws -> (revision: UInt64, records: UInt64) {
        let parts = AuthzClient.chunks(of: jsonl, chunkBytes: chunkBytes)
        if parts.count <= 1 {
            guard case .importResult(let rev, let n) = try await call(.importJSONL(jsonl), timeout: timeout) else { throw AuthzError(.internal, "unexpected reply") }
            progress?(jsonl.count)
            return (rev, n)
        }
        let session = ID.random()
        var result: (UInt64, UInt64) = (0, 0)
        for (i, part) in parts.enumerated() {
            let last = i == parts.count - 1
            guard case .importResult(let rev, let n) = try await call(.importChunk(session: session, jsonl: Array(jsonl[part.range]), firstLine: UInt64(part.firstLine), more: !last),
                                                                      timeout: timeout) else { throw AuthzError(.internal, "unexpected reply") }
            progress?(part.range.upperBound)
            result = (rev, n)
        }
        return result
    }
}

/// Reads a JSON Lines file in chunks that end at line boundaries, at most `chunkBytes` each (a
/// single longer line is a chunk of its own), holding one chunk and one read block in memory:
/// a file of any size imports at constant memory in the client.
public final class JSONLChunkReader {
    private let handle: FileHandle
    private let chunkBytes: Int
    private var pending: [UInt8] = []
    private var eof = false
    private var nextLine = 1
    /// The file's size, and the bytes handed out (or skipped) so far.
    public let totalBytes: Int
    public private(set) var consumed = 0

    /// Opens `path`; skips its first `skipLines` lines. Throws INVALID_ARGUMENT naming the
    /// path when it cannot be read.
    public init(path: String, chunkBytes: Int, skipLines: Int = 0) throws {
        guard let h = FileHandle(forReadingAtPath: path) else { throw AuthzError.invalid("file", "cannot read \(path)") }
        handle = h
        self.chunkBytes = max(1, chunkBytes)
        totalBytes = Int((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)??.intValue ?? 0)
        // Skip whole lines by an offset into the buffer, dropping what was passed once a block.
        var skipped = 0, at = 0
        while skipped < skipLines {
            if at >= pending.count {
                consumed += at
                pending.removeAll(keepingCapacity: true)
                at = 0
                try fill(atLeast: 1)
                if pending.isEmpty { break }
            }
            if let nl = pending[at...].firstIndex(of: 0x0A) {
                at = nl + 1
                skipped += 1
            } else if eof {
                at = pending.count
            } else {
                consumed += at
                pending.removeFirst(at)
                at = 0
                try fill(atLeast: pending.count + 1)
            }
        }
        consumed += at
        pending.removeFirst(at)
        nextLine = skipped + 1
    }

    deinit { try? handle.close() }

    private func fill(atLeast n: Int) throws {
        while pending.count < n && !eof {
            guard let block = try handle.read(upToCount: max(chunkBytes, 1 << 16)), !block.isEmpty else {
                eof = true
                return
            }
            pending.append(contentsOf: block)
        }
    }

    /// The next chunk and the number (from the file's start) of its first line; nil at the end.
    public func next() throws -> (bytes: [UInt8], firstLine: Int)? {
        try fill(atLeast: chunkBytes + 1)
        if pending.isEmpty { return nil }
        var end = min(pending.count, chunkBytes)
        if end < pending.count || !eof {
            // Back to just after the last newline in the window, or on to the next one.
            if let nl = pending[..<end].lastIndex(of: 0x0A) {
                end = nl + 1
            } else {
                while true {
                    if let nl = pending[end...].firstIndex(of: 0x0A) { end = nl + 1; break }
                    if eof { end = pending.count; break }
                    let had = pending.count
                    try fill(atLeast: had + 1)
                    if pending.count == had { end = pending.count; break }
                }
            }
        }
        let chunk = Array(pending[..<end])
        pending.removeFirst(end)
        consumed += end
        let first = nextLine
        nextLine += chunk.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        return (chunk, first)
    }
}

extension AuthzClient {
    /// `importChunked` from a chunk reader: constant memory however large the file. One chunk
    /// is one import call; more are one session applied atomically with the last. `progress`
    /// gets the reader's bytes consumed.
    public func importChunked(_ reader: JSONLChunkReader, timeout: TimeAmount = .seconds(600),
                              progress: ((Int) -> Void)? = nil) async throws -> (revision: UInt64, records: UInt64) {
        guard var current = try reader.next() else {
            guard case .importResult(let rev, let n) = try await call(.importJSONL([]), timeout: timeout) else { throw AuthzError(.internal, "unexpected reply") }
            return (rev, n)
        }
        var following = try reader.next()
        if following == nil {
            guard case .importResult(let rev, let n) = try await call(.importJSONL(current.bytes), timeout: timeout) else { throw AuthzError(.internal, "unexpected reply") }
            progress?(reader.consumed)
            return (rev, n)
        }
        let session = ID.random()
        while true {
            let more = following != nil
            guard case .importResult(let rev, let n) = try await call(.importChunk(session: session, jsonl: current.bytes, firstLine: UInt64(current.firstLine), more: more),
                                                                      timeout: timeout) else { throw AuthzError(.internal, "unexpected reply") }
            progress?(reader.consumed - (following?.bytes.count ?? 0))
            guard let f = following else { return (rev, n) }
            current = f
            following = try reader.next()
        }
    }

    /// Watches committed changes (docs/watch.md): every change after `call.fromRevision` (or
    /// after the daemon's revision now), then new ones as they commit, in commit order, as
    /// frames of changes. Runs on a connection of its own, closed when the sequence ends or
    /// its consumer stops iterating. The sequence throws the error that ended the stream
    /// (OUT_OF_RANGE: no longer kept; RESOURCE_EXHAUSTED: read too slowly; UNAVAILABLE: the
    /// daemon stopped or the connection broke); resume with a new watch from the last
    /// `WatchBatch.revision` received: nothing is missed (a revision may come twice).
    /// Frames the consumer has not taken yet are buffered in memory.
    public func watch(_ call: WatchCall) -> AsyncThrowingStream<WatchBatch, Error> {
        AsyncThrowingStream { continuation in
            let endpoint = self.endpoint
            // Set before connecting: a consumer that stops first still gets the connection closed.
            let state = NIOLockedValueBox<(ended: Bool, channel: Channel?)>((false, nil))
            continuation.onTermination = { _ in
                let ch = state.withLockedValue { s -> Channel? in
                    s.ended = true
                    return s.channel
                }
                ch?.close(promise: nil)
            }
            connectDedicated().whenComplete { result in
                switch result {
                case .failure(let error):
                    continuation.finish(throwing: (error as? AuthzError) ?? AuthzError(.unavailable, "cannot connect to authzd at \(endpoint): \(error)"))
                case .success(let c):
                    let ended = state.withLockedValue { s -> Bool in
                        s.channel = c.channel
                        return s.ended
                    }
                    if ended { return c.channel.close(promise: nil) }
                    c.channel.eventLoop.execute {
                        c.handler.stream(.watch(call), channel: c.channel) { frame in
                            switch frame {
                            case .success(.watch(let batch)): continuation.yield(batch)
                            case .success: continuation.finish(throwing: AuthzError(.internal, "unexpected reply to Watch"))
                            case .failure(let e): continuation.finish(throwing: e)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One connection: request ids → pending promises. All state lives on the channel's event loop.
final class ClientConnection: @unchecked Sendable {
    let channel: Channel
    let handler: ClientHandler

    init(channel: Channel, handler: ClientHandler) {
        self.channel = channel
        self.handler = handler
    }

    func send(_ call: Call, timeout: TimeAmount) -> EventLoopFuture<Reply> {
        let loop = channel.eventLoop
        if loop.inEventLoop { return handler.send(call, timeout: timeout, channel: channel) }
        return loop.flatSubmit { self.handler.send(call, timeout: timeout, channel: self.channel) }
    }
}

final class ClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private var pending: [UInt64: (EventLoopPromise<Reply>, Scheduled<Void>?)] = [:]
    /// Streaming calls (Watch): every frame of the request id goes to its sink; an error ends it.
    private var streams: [UInt64: (Result<Reply, AuthzError>) -> Void] = [:]
    private var nextId: UInt64 = 1
    private var closed = false

    func send(_ call: Call, timeout: TimeAmount, channel: Channel) -> EventLoopFuture<Reply> {
        let promise = channel.eventLoop.makePromise(of: Reply.self)
        if closed {
            promise.fail(AuthzError(.unavailable, "connection closed"))
            return promise.futureResult
        }
        let payload: [UInt8]
        do {
            payload = try WireCodec.encodeRequestChecked(WireRequest(requestId: nextId, deadlineMs: UInt32(clamping: timeout.nanoseconds / 1_000_000), call: .success(call)))
        } catch {
            promise.fail(error)
            return promise.futureResult
        }
        let id = nextId
        nextId &+= 1
        let timer = channel.eventLoop.scheduleTask(in: timeout) { [weak self] in
            if let (p, _) = self?.pending.removeValue(forKey: id) {
                p.fail(AuthzError(.deadlineExceeded, "no answer within \(timeout.nanoseconds / 1_000_000) ms"))
            }
        }
        pending[id] = (promise, timer)
        var buf = channel.allocator.buffer(capacity: payload.count + 4)
        buf.writeInteger(UInt32(payload.count))
        buf.writeBytes(payload)
        channel.writeAndFlush(buf, promise: nil)
        return promise.futureResult
    }

    /// Sends a streaming call; `sink` gets every frame answering it until one is an error (or
    /// the connection closes: UNAVAILABLE). On the channel's event loop.
    func stream(_ call: Call, channel: Channel, sink: @escaping (Result<Reply, AuthzError>) -> Void) {
        if closed { return sink(.failure(AuthzError(.unavailable, "connection closed"))) }
        let payload: [UInt8]
        do {
            payload = try WireCodec.encodeRequestChecked(WireRequest(requestId: nextId, call: .success(call)))
        } catch let e as AuthzError {
            return sink(.failure(e))
        } catch {
            return sink(.failure(AuthzError(.invalidArgument, "\(error)")))
        }
        streams[nextId] = sink
        nextId &+= 1
        var buf = channel.allocator.buffer(capacity: payload.count + 4)
        buf.writeInteger(UInt32(payload.count))
        buf.writeBytes(payload)
        channel.writeAndFlush(buf, promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let response: WireResponse
        do {
            response = try frame.withUnsafeReadableBytes { try WireCodec.decodeResponse($0) }
        } catch {
            failAll(AuthzError(.internal, "undecodable response: \(error)"))
            context.close(promise: nil)
            return
        }
        if response.requestId == 0, case .failure(let e) = response.result {
            // A connection-level error (e.g. an oversized frame): every pending call gets it.
            failAll(e)
            return
        }
        if let sink = streams[response.requestId] {
            if case .failure = response.result { streams.removeValue(forKey: response.requestId) }
            return sink(response.result)
        }
        guard let (promise, timer) = pending.removeValue(forKey: response.requestId) else { return }
        timer?.cancel()
        switch response.result {
        case .success(let reply): promise.succeed(reply)
        case .failure(let e): promise.fail(e)
        }
    }

    private func failAll(_ e: AuthzError) {
        let sinks = streams
        streams = [:]
        for (_, sink) in sinks { sink(.failure(e)) }
        let all = pending
        pending = [:]
        for (_, (p, t)) in all {
            t?.cancel()
            p.fail(e)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        failAll(AuthzError(.unavailable, "connection to authzd closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

