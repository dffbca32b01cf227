import NIOCore

/// Cuts off slow clients: once the first byte of a frame has arrived, the whole frame must
/// arrive within `timeout`, however the bytes trickle in (an idle timeout alone would be reset by
/// every byte). Counts frame boundaries from the 4-byte length headers; sits before the frame
/// decoder and passes bytes through unchanged.
final class FrameTimeoutHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    /// Header bytes seen of the current frame (0...4) and payload bytes still expected.
    private var headerBytes: [UInt8] = []
    private var remaining = 0
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        var view = buffer.readableBytesView[...]
        while !view.isEmpty {
            if remaining > 0 {
                let n = min(remaining, view.count)
                remaining -= n
                view = view.dropFirst(n)
            } else {
                headerBytes.append(view.first!)
                view = view.dropFirst()
                if headerBytes.count == 4 {
                    remaining = Int(headerBytes[0]) << 24 | Int(headerBytes[1]) << 16 | Int(headerBytes[2]) << 8 | Int(headerBytes[3])
                    headerBytes.removeAll(keepingCapacity: true)
                }
            }
        }
        let midFrame = remaining > 0 || !headerBytes.isEmpty
        if midFrame {
            if timer == nil {
                let timeout = self.timeout
                timer = context.eventLoop.scheduleTask(in: timeout) {
                    context.fireUserInboundEventTriggered(SlowClientEvent())
                    context.close(promise: nil)
                }
            }
        } else {
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }
}

/// Fired before a slow client's connection is closed (for logs and metrics).
struct SlowClientEvent {}
