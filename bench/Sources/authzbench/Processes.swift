import AuthzFraming
import Foundation
import NIOCore
import NIOPosix

/// A server process the harness started; killed (and waited for) by `stop`.
final class ServerProcess {
    let name: String
    let process = Process()
    let logPath: String

    init(name: String, executable: String, arguments: [String], logPath: String) throws {
        self.name = name
        self.logPath = logPath
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)  // a missing log only loses the daemon's messages
        let log = FileHandle(forWritingAtPath: logPath)!
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// Resident memory in KiB (VmRSS: includes file-backed pages such as LMDB's map), or 0.
    func residentKiB() -> Int { status("VmRSS:") }

    /// Anonymous resident memory in KiB (RssAnon: the heap, without mapped files), or 0.
    func anonymousKiB() -> Int { status("RssAnon:") }

    private func status(_ key: String) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix(key) {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }
}

/// Waits until a Unix socket path accepts connections. Throws after `timeout` seconds, or as
/// soon as `alive` (the server process is running) turns false.
func waitForSocket(_ path: String, timeout: Double = 60, while alive: () -> Bool = { true }) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        guard alive() else { throw HarnessError("the server for \(path) exited before it listened") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 } }
        close(fd)
        if ok { return }
        Thread.sleep(forTimeInterval: 0.05)
    }
    throw HarnessError("nothing listens on \(path) after \(timeout) s")
}

/// A free TCP port on 127.0.0.1.
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Sends raw bytes to a Unix socket and reads until `expectReplies` RESP simple replies
/// (lines) arrived: used to load Redis.
func redisPipe(path: String, commands: [UInt8], expectReplies: Int) throws {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
    guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }) == 0 else {
        throw HarnessError("cannot connect to redis at \(path)")
    }
    let done = DispatchSemaphore(value: 0)
    let t = Thread {
        var buf = [UInt8](repeating: 0, count: 65536)
        var lines = 0
        while lines < expectReplies {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            for i in 0..<n where buf[i] == 0x0A { lines += 1 }
        }
        done.signal()
    }
    t.start()
    var off = 0
    while off < commands.count {
        let n = commands[off...].withUnsafeBytes { send(fd, $0.baseAddress, min($0.count, 1 << 20), Int32(MSG_NOSIGNAL)) }
        if n <= 0 { throw HarnessError("redis load: send failed") }
        off += n
    }
    done.wait()
}

/// The echo server: frames (4-byte length + payload) are written back unchanged.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    var buffer: ByteBuffer?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        while case .frame(let len) = Framing.next(in: buffer!, maxFrameSize: .max) {
            let frame = buffer!.readSlice(length: 4 + len)!
            context.write(wrapOutboundOut(frame), promise: nil)
        }
        buffer!.discardReadBytes()
    }

    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
}

func runEchoServer(socketPath: String, port: Int, threads: Int) throws -> Never {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    let bootstrap = ServerBootstrap(group: group)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
        }
    unlink(socketPath)
    _ = try bootstrap.bind(unixDomainSocketPath: socketPath).wait()
    _ = try bootstrap.bind(host: "127.0.0.1", port: port).wait()
    while true { sleep(1000) }
}
