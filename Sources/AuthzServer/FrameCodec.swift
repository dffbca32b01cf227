import NIOCore

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
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        if Int(length) > maxFrameSize { throw FrameTooLarge(length: length, maximum: maxFrameSize) }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        let frame = buffer.readSlice(length: Int(length))!
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
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
