import AuthzFraming
import AuthzModel
import AuthzWire
import NIOCore

/// One connection of a client: its channel and the handler matching responses to requests.
/// Sendable: the handler's state is reached only on the channel's event loop (`NIOLoopBound`
/// checks it), the channel is itself Sendable.
final class ClientConnection: Sendable {
    let channel: Channel
    let handler: NIOLoopBound<ClientHandler>

    /// The connection over `channel`, whose pipeline holds a `ClientHandler`. On the channel's
    /// event loop; throws when the pipeline has no `ClientHandler`.
    init(channel: Channel) throws {
        self.channel = channel
        handler = NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ClientHandler.self), eventLoop: channel.eventLoop)
    }

    /// Sends `call`, hopping to the channel's event loop when called elsewhere; see
    /// `ClientHandler.send`.
    func send(_ call: Call, timeout: TimeAmount) -> EventLoopFuture<Reply> {
        let loop = channel.eventLoop
        if loop.inEventLoop { return handler.value.send(call, timeout: timeout, channel: channel) }
        return loop.flatSubmit { self.handler.value.send(call, timeout: timeout, channel: self.channel) }
    }
}

/// The client end of one connection: request ids → pending promises (one reply each) or stream
/// sinks (Watch: many). Not Sendable: every method runs on its channel's event loop.
final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var pending: [UInt64: (EventLoopPromise<Reply>, Scheduled<Void>?)] = [:]
    /// Streaming calls (Watch): every frame of the request id goes to its sink; an error ends it.
    private var streams: [UInt64: (Result<Reply, AuthzError>) -> Void] = [:]
    private var nextId: UInt64 = 1
    private var closed = false

    /// Sends `call` with deadline `timeout` (also sent to the daemon) and completes with the
    /// reply to it, or fails with the daemon's error, DEADLINE_EXCEEDED, UNAVAILABLE (the
    /// connection closed) or INVALID_ARGUMENT (the call cannot be encoded).
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
        let timer = channel.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            if let (p, _) = self?.pending.removeValue(forKey: id) {
                p.fail(AuthzError(.deadlineExceeded, "no answer within \(timeout.nanoseconds / 1_000_000) ms"))
            }
        }
        pending[id] = (promise, timer)
        write(payload, channel: channel)
        return promise.futureResult
    }

    /// Sends a streaming call; `sink` gets every frame answering it until one is an error (or
    /// the connection closes: UNAVAILABLE).
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
        write(payload, channel: channel)
    }

    private func write(_ payload: [UInt8], channel: Channel) {
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
