import AuthzFraming
import AuthzModel
import AuthzWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// Where the client connects: the daemon's `BindAddress` (a Unix socket path, or a TCP host and
/// port, `[IPV6]:PORT` included). An empty host means loopback.
public typealias Endpoint = BindAddress

/// A client of authzd: a pool of connections, each pipelining many requests; per-call
/// deadlines; typed errors; lazy reconnect after a connection drops (calls in flight on it fail
/// with UNAVAILABLE).
///
/// Everything it does is fixed by its `Configuration` when it is made: there is no setting to
/// change afterwards (make another client for another key or deadline). Every public method is
/// safe to call from any thread or task at once.
///
/// Errors: every method throws (or fails its future with) an `AuthzError`, never anything else:
/// the daemon's own (its code, message and field), DEADLINE_EXCEEDED when no answer came within
/// the call's deadline, UNAVAILABLE when the daemon cannot be reached or the connection dropped,
/// UNAUTHENTICATED when the configured key was refused, and INTERNAL with `field`
/// `response.result` (`AuthzClient.unexpectedReplyField`) when the daemon answered a typed
/// method with the result of another call.
///
/// The typed methods (`check`, `list`, `createKey`, … in `AuthzClient+Calls.swift`) are the API;
/// `call(_:timeout:)` and `send(_:timeout:)` are the low-level escape hatch that hands back the
/// raw `Reply`. Call `close()` when done.
public final class AuthzClient: Sendable {
    /// What a client is fixed to when it is made.
    public struct Configuration: Sendable, Equatable {
        /// The daemon's Unix socket or TCP address.
        public var endpoint: Endpoint
        /// API key presented in a Hello on every new connection, before its first call; nil for
        /// none (a Unix peer trusted by its uid). A refused key fails the call that opened the
        /// connection with UNAUTHENTICATED.
        public var apiKey: String?
        /// TLS for a TCP endpoint; nil for clear text. Ignored for a Unix socket.
        public var tls: ClientTLS?
        /// Connections in the pool (at least 1), opened on first use and used round robin.
        /// `watch` opens one more of its own per stream.
        public var connections: Int
        /// Deadline of calls that name none; also sent to the daemon as the request's deadline.
        public var defaultTimeout: TimeAmount
        /// Largest response frame accepted; a larger one closes the connection and fails its
        /// calls. The daemon's own limit on requests is `--max-frame-size` (16 MiB by default).
        public var maxFrameSize: Int

        /// A configuration with the defaults: no key, no TLS, one connection, 30 s deadline,
        /// 64 MiB frames.
        public init(endpoint: Endpoint, apiKey: String? = nil, tls: ClientTLS? = nil, connections: Int = 1,
                    defaultTimeout: TimeAmount = .seconds(30), maxFrameSize: Int = 64 * 1024 * 1024) {
            self.endpoint = endpoint
            self.apiKey = apiKey
            self.tls = tls
            self.connections = connections
            self.defaultTimeout = defaultTimeout
            self.maxFrameSize = maxFrameSize
        }
    }

    /// The configuration this client was made with.
    public let configuration: Configuration
    /// Shorthand for `configuration.endpoint`.
    public var endpoint: Endpoint { configuration.endpoint }

    private let group: EventLoopGroup
    /// Whether `group` was made here (then `close()` shuts it down).
    private let ownsGroup: Bool
    /// TLS context and the name its certificate check uses; nil context for clear text.
    private let tlsContext: NIOSSLContext?
    private let tlsServerName: String?
    /// The pool: one slot per configured connection, nil until first used.
    private let slots: [NIOLockedValueBox<ClientConnection?>]
    private let next = NIOLockedValueBox(0)

    /// A client fixed to `configuration`, on `group` when given (the caller then shuts it down
    /// after `close()`), else on a one-thread group made here and shut down by `close()`.
    /// Connects nothing until the first call. Throws INVALID_ARGUMENT naming the file when
    /// `configuration.tls` names a CA, certificate or key that cannot be read (only for a TCP
    /// endpoint: TLS is ignored for a Unix socket); nothing else.
    public convenience init(configuration: Configuration, group: EventLoopGroup? = nil) throws {
        var context: NIOSSLContext?
        var serverName: String?
        if let tls = configuration.tls, case .tcp(let host, _) = configuration.endpoint {
            context = try tls.makeContext()
            serverName = tls.serverName ?? (AuthzClient.isIPAddress(host) ? nil : host)
        }
        self.init(configuration: configuration, group: group, tlsContext: context, serverName: serverName)
    }

    /// A clear-text client of `endpoint` presenting `apiKey` (nil: none), with the other
    /// settings at `Configuration`'s defaults but `connections`. Never throws: there are no
    /// files to read.
    public convenience init(endpoint: Endpoint, apiKey: String? = nil, connections: Int = 1, group: EventLoopGroup? = nil) {
        self.init(configuration: Configuration(endpoint: endpoint, apiKey: apiKey, connections: connections),
                  group: group, tlsContext: nil, serverName: nil)
    }

    private init(configuration: Configuration, group: EventLoopGroup?, tlsContext: NIOSSLContext?, serverName: String?) {
        self.configuration = configuration
        self.tlsContext = tlsContext
        self.tlsServerName = serverName
        if let group {
            self.group = group
            ownsGroup = false
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            ownsGroup = true
        }
        slots = (0..<max(1, configuration.connections)).map { _ in NIOLockedValueBox(nil) }
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    /// Closes every pooled connection, waiting for each to close, and shuts down the event loop
    /// group if the client made it; calls in flight fail with UNAVAILABLE. Blocks: never call
    /// it on an event loop of the client's group. A Watch stream has a connection of its own,
    /// closed when its consumer stops iterating (or when the group made here shuts down).
    public func close() {
        for s in slots {
            if let c = s.withLockedValue({ $0 }) { try? c.channel.close().wait() }
        }
        if ownsGroup { try? group.syncShutdownGracefully() }
    }

    // MARK: the low-level escape hatch

    /// Sends one call on a pooled connection and completes with its raw reply, or fails with an
    /// `AuthzError` (the daemon's, DEADLINE_EXCEEDED after `timeout` — default
    /// `configuration.defaultTimeout` —, or UNAVAILABLE when the connection fails).
    ///
    /// The low-level escape hatch for code that must send a `Call` as a value (tests of the
    /// protocol, benchmarks on event loops): it does not check that the reply answers the call.
    /// Prefer the typed methods, which do. Not for Watch (use `watch(_:)`).
    public func send(_ call: Call, timeout: TimeAmount? = nil) -> EventLoopFuture<Reply> {
        let t = timeout ?? configuration.defaultTimeout
        return connection().flatMap { c in c.send(call, timeout: t) }
    }

    /// `send(_:timeout:)` for async code: the raw reply, unchecked. The low-level escape hatch;
    /// prefer the typed methods.
    public func call(_ call: Call, timeout: TimeAmount? = nil) async throws -> Reply {
        try await send(call, timeout: timeout).get()
    }

    /// Sends `call` and returns what `extract` takes from its reply; throws
    /// `unexpectedReply` when `extract` takes nothing (the reply answers another call). The one
    /// place a typed method checks its reply.
    func expect<T>(_ call: Call, timeout: TimeAmount?, _ extract: (Reply) -> T?) async throws -> T {
        let reply = try await self.call(call, timeout: timeout)
        guard let value = extract(reply) else { throw AuthzClient.unexpectedReply(to: call.kind, "a \(reply.kind.name) result") }
        return value
    }

    /// The `field` of the error a typed method throws when the daemon answered with the result
    /// of another call (code INTERNAL).
    public static let unexpectedReplyField = "response.result"

    /// The error for a reply that does not answer `call` (`what` says what came instead):
    /// INTERNAL, field `unexpectedReplyField`. Every typed method raises it through here.
    static func unexpectedReply(to call: CallKind, _ what: String) -> AuthzError {
        AuthzError(.internal, "unexpected reply to \(call.name): \(what)", field: unexpectedReplyField)
    }

    // MARK: connections

    private func connect(on loop: EventLoop) -> EventLoopFuture<ClientConnection> {
        let maxFrame = configuration.maxFrameSize
        let tls = tlsContext, serverName = tlsServerName
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.seconds(5))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    if let tls { try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: serverName)) }
                    try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: maxFrame)))
                    try ch.pipeline.syncOperations.addHandler(ClientHandler())
                }
            }
        let future: EventLoopFuture<Channel>
        switch configuration.endpoint {
        case .unix(let path): future = bootstrap.connect(unixDomainSocketPath: path)
        case .tcp(let host, let port):
            future = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: host.isEmpty ? "127.0.0.1" : host, port: port)
        }
        let key = configuration.apiKey
        // Hello waits no longer than a call would (nor than 10 s); a connection whose Hello
        // failed is closed, never left open beside the pool.
        let helloTimeout = min(configuration.defaultTimeout, .seconds(10))
        return future.flatMapThrowing { channel in
            try ClientConnection(channel: channel)
        }.flatMap { c -> EventLoopFuture<ClientConnection> in
            guard let key else { return c.channel.eventLoop.makeSucceededFuture(c) }
            return c.send(.hello(apiKey: key, protocolVersion: protocolVersion), timeout: helloTimeout).map { _ in c }
                .flatMapErrorThrowing { error in
                    c.channel.close(promise: nil)
                    throw error
                }
        }
    }

    /// A new connection outside the pool (a stream's own), authenticated like the pool's.
    func connectDedicated() -> EventLoopFuture<ClientConnection> {
        connect(on: group.next())
    }

    /// A live connection from the pool (round robin), connecting or reconnecting as needed.
    private func connection() -> EventLoopFuture<ClientConnection> {
        let i = next.withLockedValue { n -> Int in
            n = (n + 1) % slots.count
            return n
        }
        let slot = slots[i]
        if let c = slot.withLockedValue({ $0 }), c.channel.isActive { return c.channel.eventLoop.makeSucceededFuture(c) }
        let endpoint = self.endpoint
        return connect(on: group.next()).map { c in
            slot.withLockedValue { $0 = c }
            return c
        }.flatMapErrorThrowing { error in
            if let e = error as? AuthzError { throw e }
            throw AuthzError(.unavailable, "cannot connect to authzd at \(endpoint): \(error)")
        }
    }
}
