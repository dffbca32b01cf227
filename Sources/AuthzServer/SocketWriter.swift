import Glibc
import NIOCore

/// Writes a plaintext connection's answers with one `send(2)` on its socket, instead of
/// swift-nio's write and flush path (the pipeline's head, the pending-writes queue, the flush:
/// about 2,900 instructions a wake-up, a quarter of a one-check request; bench/README.md).
///
/// swift-nio does not publish a channel's descriptor, so `SocketWriter.find` reads it from the
/// channel's stored properties by reflection and then proves it: the socket cookie the kernel
/// reports for that descriptor (`SO_COOKIE`, unique to one socket) must equal the cookie NIO's
/// own `getsockopt` reports for the channel. Whatever fails — another swift-nio layout, a channel
/// that is no socket (`EmbeddedChannel`), a kernel without `SO_COOKIE` — leaves no writer, and
/// the connection writes through NIO as before. `SocketWriterTests` fails when the lookup stops
/// finding the descriptor of a real NIO socket channel.
///
/// The owner (`ConnectionHandler`) keeps NIO's view true:
/// - bytes go out directly only while NIO holds none of this connection's writes, so order is
///   kept; what `send` does not take (a full socket buffer) is handed to NIO, which then writes
///   everything until its writes complete (and keeps backpressure and writability as before);
/// - only on the channel's event loop, and never after the channel went inactive: NIO closes
///   the descriptor on that loop just before it reports the channel inactive, and a closed
///   descriptor's number can be reused by the next connection;
/// - never under TLS, whose bytes must go through the TLS handler.
struct SocketWriter {
    /// The channel's socket.
    let descriptor: CInt

    /// What one `write` did.
    enum Outcome: Equatable {
        /// The socket took every byte.
        case all
        /// The socket took this many bytes (maybe 0: its buffer is full, or an error NIO will
        /// meet and report on its own write); the caller hands the rest to NIO.
        case partial(Int)
    }

    /// Sends `bytes` without blocking (the socket is non-blocking) and without SIGPIPE.
    func write(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        var sent = 0
        while sent < bytes.count {
            let n = send(descriptor, bytes.baseAddress! + sent, bytes.count - sent, CInt(MSG_NOSIGNAL))
            if n > 0 {
                sent += n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return .partial(sent)
            }
        }
        return .all
    }

    /// The writer for `channel`'s socket, or nil (see the type's contract). Call on the
    /// channel's event loop while it is active; the future is complete when this returns.
    static func find(_ channel: Channel) -> EventLoopFuture<SocketWriter?> {
        guard let provider = channel as? SocketOptionProvider else { return channel.eventLoop.makeSucceededFuture(nil) }
        let cookie: EventLoopFuture<UInt64> = provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(soCookie))
        return cookie.map { expected -> SocketWriter? in
            guard let fd = reflectedDescriptor(of: channel), fd >= 0, Self.cookie(of: fd) == expected else { return nil }
            return SocketWriter(descriptor: fd)
        }.recover { _ in nil }
    }

    /// `SO_COOKIE` (Linux ≥ 4.12; not exported by Glibc's module).
    static let soCookie: CInt = 57

    /// The kernel's cookie for the socket `fd`, or nil.
    static func cookie(of fd: CInt) -> UInt64? {
        var value: UInt64 = 0
        var length = socklen_t(MemoryLayout<UInt64>.size)
        guard getsockopt(fd, SOL_SOCKET, soCookie, &value, &length) == 0, length == MemoryLayout<UInt64>.size else { return nil }
        return value
    }

    /// The descriptor swift-nio's socket channel keeps (`BaseSocketChannel.socket`, then
    /// `BaseSocket.descriptor`), found by name through the class hierarchy; nil when absent.
    static func reflectedDescriptor(of channel: Channel) -> CInt? {
        func stored(_ name: String, in value: Any) -> Any? {
            var mirror: Mirror? = Mirror(reflecting: value)
            while let m = mirror {
                for child in m.children where child.label == name { return child.value }
                mirror = m.superclassMirror
            }
            return nil
        }
        guard let socket = stored("socket", in: channel) else { return nil }
        return stored("descriptor", in: socket) as? CInt
    }
}
