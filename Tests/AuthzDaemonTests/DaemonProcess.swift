import AuthzClient
import AuthzModel
import Foundation
import NIOConcurrencyHelpers
import XCTest

/// Directory holding the built executables (beside the test bundle).
func productsDirectory() -> URL {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [bundle, bundle.deletingLastPathComponent()] where FileManager.default.fileExists(atPath: candidate.appendingPathComponent("authzd").path) {
        return candidate
    }
    return Bundle.allBundles.first { $0.bundlePath.hasSuffix(".xctest") }.map { URL(fileURLWithPath: $0.bundlePath).deletingLastPathComponent() } ?? bundle
}

func temporaryDirectory(_ name: String = "authzd-e2e") -> String {
    // Short paths: Unix socket paths are limited to 108 bytes.
    let path = "/tmp/\(name)-\(UUID().uuidString.prefix(8))"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// A real `authzd serve` child process on a temporary Unix socket and/or 127.0.0.1:0.
final class DaemonProcess {
    let dir: String
    let socketPath: String
    let process = Process()
    private let stderrPipe = Pipe()
    /// The daemon's stderr so far (appended by the pipe's reader thread).
    private let output = NIOLockedValueBox("")
    var log: String { output.withLockedValue { $0 } }
    private(set) var tcpPort: Int?

    /// Starts the daemon and waits until it listens. `extra` are additional flags; `environment`
    /// entries are added to (or replace) the test's own environment.
    init(dir: String? = nil, tcp: Bool = true, extra: [String] = [], environment: [String: String] = [:]) throws {
        self.dir = dir ?? temporaryDirectory()
        socketPath = self.dir + "/authzd.sock"
        process.executableURL = productsDirectory().appendingPathComponent("authzd")
        var args = ["serve", "--data-dir", self.dir + "/data", "--socket", socketPath, "--threads", "2"]
        if tcp && !extra.contains("--tls-cert") { args += ["--address", "127.0.0.1:0", "--insecure-plaintext"] } else if tcp { args += ["--address", "127.0.0.1:0"] }
        process.arguments = args + extra
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardError = stderrPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        var buffer = Data()
        let handle = stderrPipe.fileHandleForReading
        while Date() < deadline {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
            let log = String(decoding: buffer, as: UTF8.self)
            output.withLockedValue { $0 = log }
            let listeningLines = log.components(separatedBy: "\n").filter { $0.hasSuffix("listening") && ($0.contains("listen.unix=") || $0.contains("listen.tcp=")) }
            if let line = listeningLines.first(where: { $0.contains("listen.tcp=") }),
               let r = line.range(of: #"listen\.tcp=[^ ]*:(\d+)"#, options: .regularExpression) {
                tcpPort = Int(line[r].split(separator: ":").last!)
            }
            if listeningLines.count >= (tcp ? 2 : 1) { break }
        }
        guard FileManager.default.fileExists(atPath: socketPath), !tcp || tcpPort != nil else {
            process.terminate()
            throw AuthzError(.unavailable, "daemon did not start: \(log)")
        }
        // Keep draining stderr so the child never blocks on a full pipe.
        let output = self.output
        handle.readabilityHandler = { h in
            let d = h.availableData
            if !d.isEmpty { output.withLockedValue { $0 += String(decoding: d, as: UTF8.self) } }
        }
    }

    /// A client of the daemon's Unix socket (or its TCP port), presenting `apiKey` when given.
    func client(tcp: Bool = false, connections: Int = 1, apiKey: String? = nil) -> AuthzClient {
        AuthzClient(endpoint: tcp ? .tcp(host: "127.0.0.1", port: tcpPort!) : .unix(socketPath), apiKey: apiKey, connections: connections)
    }

    /// SIGTERM and wait; returns the exit status.
    @discardableResult func stop() -> Int32 {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        stderrPipe.fileHandleForReading.readabilityHandler = nil
        return process.terminationStatus
    }

    func kill9() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        stderrPipe.fileHandleForReading.readabilityHandler = nil
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

/// A blocking raw socket client for tests that need byte-level control.
final class RawConnection {
    let fd: Int32

    init(unixPath: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in unixPath.utf8.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw AuthzError(.unavailable, "connect failed") }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Takes ownership of a connected socket.
    init(fd: Int32) throws {
        self.fd = fd
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    func sendFrame(_ payload: [UInt8]) {
        let n = UInt32(payload.count)
        send([UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] + payload)
    }

    /// Reads exactly `n` bytes; nil on EOF, error or timeout.
    func receive(_ n: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: n)
        var off = 0
        while off < n {
            let r = out[off...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if r <= 0 { return nil }
            off += r
        }
        return out
    }

    /// Reads one frame's payload; nil on EOF.
    func receiveFrame() -> [UInt8]? {
        guard let h = receive(4) else { return nil }
        let n = Int(h[0]) << 24 | Int(h[1]) << 16 | Int(h[2]) << 8 | Int(h[3])
        return receive(n)
    }

    /// True when the peer has closed the connection (EOF within the receive timeout).
    func isClosedByPeer() -> Bool {
        var b: UInt8 = 0
        return recv(fd, &b, 1, 0) == 0
    }
}

/// Runs a program to completion; returns its exit status and its stdout (and stderr when
/// `mergeStderr`).
func runProcess(_ executable: String, _ args: [String], mergeStderr: Bool = true) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = mergeStderr ? out : FileHandle.nullDevice
    try p.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, text)
}

extension XCTestCase {
    /// Creates a key through `client` (named after its role, no expiry); returns it and its secret.
    func createKey(_ client: AuthzClient, _ tenant: ID?, _ role: KeyRole) async throws -> (ApiKey, String) {
        try await client.createKey(tenant: tenant, role: role, name: "\(role)")
    }
}
