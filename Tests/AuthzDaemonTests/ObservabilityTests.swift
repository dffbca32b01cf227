import AuthzClient
import AuthzIndex
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// /metrics, /healthz, /readyz and the decision log, against a real daemon.
final class ObservabilityTests: XCTestCase {
    func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// A minimal HTTP/1.1 GET; returns (status line, body).
    func get(_ port: Int, _ path: String) -> (String, String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }) == 0 else { return ("", "") }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let req = Array("GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
        _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        let text = String(decoding: out, as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        return (parts.first?.components(separatedBy: "\r\n").first ?? "", parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    func testMetricsHealthAndDecisionLog() throws {
        let port = freePort()
        let dir = temporaryDirectory("authzd-obs")
        let log = dir + "/decisions.jsonl"
        let daemon = try DaemonProcess(dir: dir, tcp: false, extra: ["--metrics-address", "127.0.0.1:\(port)", "--decision-log", log, "--decision-log-sample-rate", "0.5"])
        defer { daemon.stop(); daemon.remove() }
        let client = daemon.client()
        defer { client.close() }
        let t = ID.random(), u = ID.random(), r = ID.random(), p = ID.random()
        _ = try client.send(.write([.upsert(.tenant(Tenant(id: t, name: "o"))), .upsert(.user(User(id: u, tenantId: t))), .upsert(.role(Role(id: r, tenantId: t, name: "r"))),
                                    .upsert(.permission(Permission(id: p, tenantId: t, name: "core.obs.read", service: "core"))),
                                    .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .global))),
                                    .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .self))),
                                    .upsert(.platformCredential(PlatformCredential(id: .random(), tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "a", accessToken: "OBS-SECRET-TOKEN")))])).wait()
        for i in 0..<20 {
            _ = try client.send(.check(CheckCall(tenantId: t, userId: u, permission: "core.obs.read", scope: i % 2 == 0 ? .self : .tenant))).wait()
        }
        _ = try? client.send(.check(CheckCall(tenantId: t, userId: u, permission: "", scope: .self))).wait()
        let (status, metrics) = get(port, "/metrics")
        XCTAssertTrue(status.contains("200"), status)
        XCTAssertTrue(metrics.contains("authzd_checks_total{decision=\"allow\",reason=\"granted\"} 10"), metrics)
        XCTAssertTrue(metrics.contains("authzd_checks_total{decision=\"deny\",reason=\"no_grant\"} 10"))
        XCTAssertTrue(metrics.contains("authzd_errors_total{code=\"INVALID_ARGUMENT\"} 1"))
        XCTAssertTrue(metrics.contains("authzd_writes_total 1"))
        XCTAssertTrue(metrics.contains("authzd_index_users 1"))
        XCTAssertTrue(metrics.contains("authzd_check_request_duration_seconds_bucket"))
        XCTAssertFalse(metrics.contains(t.description), "no tenant-identifying labels")
        XCTAssertFalse(metrics.contains("SECRET"))
        XCTAssertTrue(get(port, "/healthz").0.contains("200"))
        XCTAssertTrue(get(port, "/readyz").0.contains("200"))
        XCTAssertTrue(get(port, "/nope").0.contains("404"))
        daemon.stop()  // flushes the decision log
        let lines = (try String(contentsOfFile: log, encoding: .utf8)).split(separator: "\n")
        XCTAssertEqual(lines.count, 10, "a sample rate of 0.5 logs every second check")
        for line in lines {
            guard case .object(let o) = try JSONParser.parse(Array(line.utf8)) else { return XCTFail() }
            let keys = Set(o.map(\.0))
            XCTAssertEqual(keys, ["decision_id", "time", "tenant_id", "user_id", "permission", "scope", "decision", "reason", "revision", "latency_us"])
        }
        XCTAssertFalse(lines.joined().contains("SECRET"))
    }
}
