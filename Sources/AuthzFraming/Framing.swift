import NIOCore

// authzd's framing, the one implementation for the daemon, the client, the bench and the fuzzer
// (docs/protocol.md): a 4-byte big-endian length, then that many bytes.

/// Reading frames in place from a buffer (the daemon's connection handler and the bench's load
/// generator split whole reads themselves rather than through a `ByteToMessageHandler`).
public enum Framing {
    /// What starts at a buffer's reader index.
    public enum Next: Equatable {
        /// Not a whole frame yet (fewer than 4 bytes, or fewer than the length says).
        case incomplete
        /// A whole frame whose payload is `length` bytes after the 4-byte header.
        case frame(length: Int)
        /// A length above the maximum: refuse it from the header alone, before any allocation.
        case tooLarge(length: UInt32)
    }

    /// The frame at `buffer.readerIndex`, without moving it. Reads 4 bytes; allocates nothing.
    @inlinable
    public static func next(in buffer: ByteBuffer, maxFrameSize: Int) -> Next {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .incomplete }
        if Int(length) > maxFrameSize { return .tooLarge(length: length) }
        return buffer.readableBytes >= 4 + Int(length) ? .frame(length: Int(length)) : .incomplete
    }
}

/// Splits the byte stream into frames: a 4-byte big-endian length, then that many bytes.
///
/// A length above `maxFrameSize` is refused from the header alone, before any allocation:
/// the decoder throws `FrameTooLarge` and the connection is closed (the stream cannot be
/// resynchronised without reading what the peer claims to send). Emits the payload only.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    public let maxFrameSize: Int

    /// The error for a length header above the maximum.
    public struct FrameTooLarge: Error, CustomStringConvertible {
        public var length: UInt32
        public var maximum: Int
        public var description: String { "frame length \(length) exceeds the maximum frame size \(maximum)" }
    }

    public init(maxFrameSize: Int) { self.maxFrameSize = maxFrameSize }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        switch Framing.next(in: buffer, maxFrameSize: maxFrameSize) {
        case .incomplete:
            return .needMoreData
        case .tooLarge(let length):
            throw FrameTooLarge(length: length, maximum: maxFrameSize)
        case .frame(let length):
            buffer.moveReaderIndex(forwardBy: 4)
            // `next` saw 4 + length readable bytes: the slice exists.
            guard let frame = buffer.readSlice(length: length) else { return .needMoreData }
            context.fireChannelRead(wrapInboundOut(frame))
            return .continue
        }
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

extension ByteBuffer {
    /// Appends a frame: the 4-byte big-endian length of `payload`, then `payload`.
    public mutating func writeFrame(_ payload: [UInt8]) {
        writeInteger(UInt32(payload.count))
        writeBytes(payload)
    }
}
