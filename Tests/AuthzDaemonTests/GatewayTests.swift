import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// authzd's gateway listeners behind real proxies, each running its file of `deploy/gateways/`
/// unchanged but for ports, paths and the key (docs/gateways.md shows the same files): nginx
/// `auth_request` over TCP and over the Unix socket, Envoy HTTP ext_authz, Envoy gRPC ext_authz.
/// The data is `examples/acme.jsonl`, whose ids the configs' stand-in authentication maps the
/// bearer tokens `ana-token` and `bob-token` to. Ana (admin at tenant scope) may read mail at
/// tenant scope and manage users; Bob (viewer at self scope) may only read his own mail.
final class GatewayTests: XCTestCase {
    static let tenant = "7d0c0000-0000-4000-8000-000000000001"
    static let ana = "a1b20000-0000-4000-8000-000000000001"
    static let bob = "a1b20000-0000-4000-8000-000000000002"

    var dir: String!
    var daemon: DaemonProcess?
    var upstream: UpstreamProcess?
    var proxies: [ProxyProcess] = []
    var httpPort = 0
    var grpcPort = 0
    var revision: UInt64 = 0
    var gatewayKey = ""

    var routeMapPath: String { dir + "/routes.map" }
    var httpSocket: String { dir + "/http.sock" }
    var authzdHTTP: String { "http://127.0.0.1:\(httpPort)" }

    override func setUpWithError() throws {
        dir = temporaryDirectory("authzd-gw")
    }

    override func tearDown() {
        for p in proxies.reversed() { p.stop() }
        upstream?.stop()
        daemon?.stop()
        if let d = daemon, (testRun?.totalFailureCount ?? 0) > 0 {
            print("authzd log:\n\(d.log)")
            for p in proxies { print("\(p.name) log:\n\(p.log)") }
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    // MARK: - Fixture

    /// A real `authzd serve` with every gateway listener (HTTP on TCP and on a Unix socket,
    /// Envoy gRPC) and `deploy/gateways/routes.map`, the acme example imported, a gateway key
    /// made; then the stand-in application.
    func start() async throws {
        try FileManager.default.copyItem(atPath: repositoryRoot.appendingPathComponent("deploy/gateways/routes.map").path, toPath: routeMapPath)
        httpPort = try freeLoopbackPort()
        grpcPort = try freeLoopbackPort()
        let d = try DaemonProcess(dir: dir, tcp: false, extra: [
            "--http-address", "127.0.0.1:\(httpPort)", "--http-socket", httpSocket,
            "--grpc-address", "127.0.0.1:\(grpcPort)", "--route-map", routeMapPath,
            "--insecure-plaintext",  // loopback only
        ])
        daemon = d
        guard waitUntil(10, { (try? HTTP.request("\(authzdHTTP)/healthz", timeout: 1))?.status == 200 }) else {
            throw AuthzError(.unavailable, "the HTTP gateway listener did not answer /healthz: \(d.log)")
        }
        let client = d.client()
        defer { client.close() }
        let acme = try Data(contentsOf: repositoryRoot.appendingPathComponent("examples/acme.jsonl"))
        revision = try await client.importJSONL(Array(acme)).revision
        guard let role = KeyRole(name: "gateway") else { throw AuthzError(.failedPrecondition, "this build has no gateway key role") }
        gatewayKey = try await createKey(client, nil, role).1
        upstream = try UpstreamProcess(dir: dir)
    }

    func startNginx(name: String = "nginx", key: String? = nil) throws -> (tcp: Int, sidecar: Int) {
        let (tcp, sidecar) = (try freeLoopbackPort(), try freeLoopbackPort())
        var subs = [("127.0.0.1:8000", "127.0.0.1:\(tcp)"), ("127.0.0.1:8001", "127.0.0.1:\(sidecar)"),
                    ("127.0.0.1:8181", "127.0.0.1:\(httpPort)"), ("/run/authzd/http.sock", httpSocket),
                    ("127.0.0.1:8080", "127.0.0.1:\(upstream!.port)"), ("REPLACE_WITH_GATEWAY_API_KEY", key ?? gatewayKey)]
        // Workers reach the socket without a key only as authzd's uid: as root, nginx would
        // otherwise run them as nobody.
        if geteuid() == 0 { subs.append(("#user authzd;", "user root;")) }
        proxies.append(try .nginx(name: name, config: try gatewayConfig("nginx.conf", subs), dir: dir, probe: "http://127.0.0.1:\(tcp)/public/probe"))
        return (tcp, sidecar)
    }

    func startEnvoy(_ file: String, name: String, key: String? = nil) throws -> Int {
        let (port, admin) = (try freeLoopbackPort(), try freeLoopbackPort())
        let grpc = file.contains("grpc")
        if grpc, !waitUntil(5, { tcpAnswers(grpcPort) }) {
            throw AuthzError(.unavailable, "the gRPC gateway listener did not answer on 127.0.0.1:\(grpcPort): \(daemon?.log ?? "")")
        }
        let subs = [(grpc ? "port_value: 10001" : "port_value: 10000", "port_value: \(port)"),
                    (grpc ? "port_value: 9902" : "port_value: 9901", "port_value: \(admin)"),
                    (grpc ? "port_value: 8182" : "port_value: 8181", "port_value: \(grpc ? grpcPort : httpPort)"),
                    ("port_value: 8080", "port_value: \(upstream!.port)"), ("REPLACE_WITH_GATEWAY_API_KEY", key ?? gatewayKey)]
        proxies.append(try .envoy(name: name, config: try gatewayConfig(file, subs), dir: dir, probe: "http://127.0.0.1:\(port)/public/probe"))
        return port
    }

    /// A request through a proxy as the holder of `token` (nil: no Authorization header).
    func send(_ url: String, _ token: String?, method: String = "GET", headers: [(String, String)] = [], body: String? = nil) throws -> HTTP.Response {
        try HTTP.request(url, method: method, headers: (token.map { [("Authorization", "Bearer \($0)")] } ?? []) + headers, body: body)
    }

    /// A query string no other request carries, to find a request in the upstream's log.
    func marker() -> String { "m=\(UUID().uuidString)" }

    /// The upstream's answer to an allowed request of `user`.
    func assertReachedUpstream(_ r: HTTP.Response, _ path: String, user: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 200, "\(r.headers) \(r.body)", file: file, line: line)
        XCTAssertTrue(r.body.hasPrefix("upstream ok: "), r.body, file: file, line: line)
        XCTAssertTrue(r.body.contains(" \(path) "), r.body, file: file, line: line)
        XCTAssertTrue(r.body.contains("tenant=\(Self.tenant) user=\(user) "), r.body, file: file, line: line)
        XCTAssertTrue(r.body.contains("revision=\(revision) "), r.body, file: file, line: line)
        // The gateway's key never reaches the application.
        XCTAssertTrue(r.body.hasSuffix("api_key=\n"), r.body, file: file, line: line)
    }

    // MARK: - The HTTP listener itself

    func testHTTPListenerContract() async throws {
        try await start()
        let id = [("X-Authz-Tenant", Self.tenant), ("X-Authz-User", Self.ana)]
        let key = [("X-Authz-Api-Key", gatewayKey)]
        func check(_ path: String, method: String = "GET", _ headers: [(String, String)]) throws -> HTTP.Response {
            try HTTP.request(authzdHTTP + path, method: method, headers: headers)
        }
        // The original path is the request's path minus /check (Envoy's path_prefix).
        var r = try check("/check/mail/inbox?x=1", key + id)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r[header: "X-Authz-Decision"], "allow")
        XCTAssertEqual(r[header: "X-Authz-Reason"], "granted")
        XCTAssertEqual(r[header: "X-Authz-Revision"], "\(revision)")
        XCTAssertEqual(r.body, "")
        // X-Original-Method / X-Original-URI win over the request's own (nginx auth_request).
        r = try check("/check", method: "POST", key + id + [("X-Original-Method", "GET"), ("X-Original-URI", "/mail/inbox?x=1")])
        XCTAssertEqual(r.status, 200)
        r = try check("/check/public/x", key + id + [("X-Original-URI", "/mail/inbox")])
        XCTAssertEqual(r.status, 200)
        r = try check("/check/mail/inbox", key + id + [("X-Original-Method", "PUT")])
        XCTAssertEqual(r.status, 403)
        XCTAssertEqual(r[header: "X-Authz-Reason"], "no_route")
        // Any method on the check path.
        for method in ["HEAD", "POST", "PUT", "DELETE"] {
            r = try check("/check/mail/send", method: method, key + id)
            XCTAssertEqual(r.status, method == "POST" ? 200 : 403, method)
        }
        // Denials.
        r = try check("/check/mail/inbox", key + [("X-Authz-Tenant", Self.tenant), ("X-Authz-User", Self.bob)])
        XCTAssertEqual(r.status, 403)
        XCTAssertEqual(r[header: "X-Authz-Decision"], "deny")
        XCTAssertEqual(r[header: "X-Authz-Reason"], "no_grant")
        XCTAssertEqual(r[header: "X-Authz-Revision"], "\(revision)")
        XCTAssertEqual(r.body, "")
        r = try check("/check/mail/inbox", key + [("X-Authz-Tenant", Self.tenant), ("X-Authz-User", UUID().uuidString.lowercased())])
        XCTAssertEqual(r.status, 403)
        XCTAssertEqual(r[header: "X-Authz-Reason"], "unknown_user")
        r = try check("/check/nowhere", key + id)
        XCTAssertEqual(r.status, 403)
        XCTAssertEqual(r[header: "X-Authz-Reason"], "no_route")
        // Identity missing or not a UUID: 401.
        r = try check("/check/mail/inbox", key)
        XCTAssertEqual(r.status, 401)
        XCTAssertEqual(r[header: "X-Authz-Reason"], "missing_identity")
        r = try check("/check/mail/inbox", key + [("X-Authz-Tenant", Self.tenant)])
        XCTAssertEqual(r.status, 401)
        r = try check("/check/mail/inbox", key + [("X-Authz-Tenant", Self.tenant), ("X-Authz-User", "ana")])
        XCTAssertEqual(r.status, 401)
        XCTAssertEqual(r[header: "X-Authz-Decision"], "deny")
        // Permission headers override the route map; the scope defaults to tenant.
        let bob = [("X-Authz-Tenant", Self.tenant), ("X-Authz-User", Self.bob)]
        r = try check("/check/anything", key + bob + [("X-Authz-Permission", "gmail.messages.read"), ("X-Authz-Scope", "self")])
        XCTAssertEqual(r.status, 200)
        r = try check("/check/anything", key + bob + [("X-Authz-Permission", "gmail.messages.read")])
        XCTAssertEqual(r.status, 403)
        // The gateway key: required on TCP, a bad one is "cannot decide".
        r = try check("/check/mail/inbox", id)
        XCTAssertEqual(r.status, 503)
        r = try check("/check/mail/inbox", [("X-Authz-Api-Key", "not-a-key")] + id)
        XCTAssertEqual(r.status, 503)
        // A Unix-socket peer of the daemon's uid needs none.
        r = try HTTP.request("http://authzd/check/mail/inbox", headers: id, unixSocket: httpSocket)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r[header: "X-Authz-Reason"], "granted")
    }

    func testPermissionsEndpointAndHealth() async throws {
        try await start()
        XCTAssertEqual(try HTTP.request("\(authzdHTTP)/healthz").status, 200)
        func permissions(_ user: String, key: String?) throws -> (Int?, [String: Any]) {
            let r = try HTTP.request("\(authzdHTTP)/v1/tenants/\(Self.tenant)/users/\(user)/permissions",
                                     headers: key.map { [("X-Authz-Api-Key", $0)] } ?? [])
            let json = (try? JSONSerialization.jsonObject(with: Data(r.body.utf8))) as? [String: Any] ?? [:]
            return (r.status, json)
        }
        func names(_ json: [String: Any]) -> Set<String> {
            Set((json["permissions"] as? [[String: Any]] ?? []).map { "\($0["name"] ?? "")@\($0["scope"] ?? "")" })
        }
        var (status, json) = try permissions(Self.ana, key: gatewayKey)
        XCTAssertEqual(status, 200)
        XCTAssertEqual(json["tenant_id"] as? String, Self.tenant)
        XCTAssertEqual(json["user_id"] as? String, Self.ana)
        XCTAssertEqual((json["revision"] as? NSNumber)?.uint64Value, revision)
        XCTAssertEqual(json["reason"] as? String, "granted")
        XCTAssertEqual(names(json), ["gmail.messages.read@tenant", "gmail.messages.send@self", "core.users.manage@tenant"])
        (status, json) = try permissions(Self.bob, key: gatewayKey)
        XCTAssertEqual(status, 200)
        XCTAssertEqual(names(json), ["gmail.messages.read@self"])
        (status, json) = try permissions(UUID().uuidString.lowercased(), key: gatewayKey)
        XCTAssertEqual(status, 200)
        XCTAssertEqual(json["reason"] as? String, "unknown_user")
        XCTAssertEqual(names(json), [])
        (status, _) = try permissions(Self.ana, key: nil)
        XCTAssertEqual(status, 401, "TCP without a key")
        let local = try HTTP.request("http://authzd/v1/tenants/\(Self.tenant)/users/\(Self.ana)/permissions", unixSocket: httpSocket)
        XCTAssertEqual(local.status, 200, "the daemon's uid on the Unix socket needs no key")
    }

    // MARK: - nginx auth_request

    func testNginxAuthRequest() async throws {
        _ = try GatewayBinaries.require(GatewayBinaries.nginx, "nginx")
        try await start()
        let (port, sidecar) = try startNginx()
        let base = "http://127.0.0.1:\(port)"
        // Route-map driven (/mail/), and per location (/admin/ names core.users.manage).
        assertReachedUpstream(try send("\(base)/mail/inbox?x=1", "ana-token"), "/mail/inbox?x=1", user: Self.ana)
        assertReachedUpstream(try send("\(base)/mail/me/drafts", "bob-token"), "/mail/me/drafts", user: Self.bob)
        assertReachedUpstream(try send("\(base)/admin/users", "ana-token"), "/admin/users", user: Self.ana)
        assertReachedUpstream(try send("\(base)/mail/send", "ana-token", method: "POST", body: "hello"), "/mail/send", user: Self.ana)
        var denied: [String] = []
        func deny(_ path: String, _ token: String?, method: String = "GET", headers: [(String, String)] = [],
                  status: Int, reason: String?, base b: String? = nil, line: UInt = #line) throws {
            let m = marker()
            denied.append(m)
            let r = try send("\(b ?? base)\(path)\(path.contains("?") ? "&" : "?")\(m)", token, method: method, headers: headers)
            XCTAssertEqual(r.status, status, "\(path): \(r.headers) \(r.body)", line: line)
            if let reason { XCTAssertEqual(r[header: "X-Authz-Reason"], reason, line: line) }
        }
        try deny("/mail/inbox", "bob-token", status: 403, reason: "no_grant")
        try deny("/admin/users", "bob-token", status: 403, reason: "no_grant")
        try deny("/mail/send", "bob-token", method: "POST", status: 403, reason: "no_grant")
        try deny("/mail/inbox", nil, status: 401, reason: "missing_identity")
        try deny("/mail/inbox", "not-a-known-token", status: 401, reason: "missing_identity")
        try deny("/mail/send", "ana-token", method: "PUT", status: 403, reason: "no_route")
        // Client-sent authorization headers are ignored: Bob posing as Ana, or naming a
        // permission he holds, or a path that would be allowed; nobody posing as anyone.
        let forged = [("X-Authz-Tenant", Self.tenant), ("X-Authz-User", Self.ana), ("X-Authz-Permission", "gmail.messages.read"),
                      ("X-Authz-Scope", "self"), ("X-Original-URI", "/mail/me/x"), ("X-Original-Method", "GET"),
                      ("X-Authz-Api-Key", "forged")]
        try deny("/mail/inbox", "bob-token", headers: forged, status: 403, reason: "no_grant")
        try deny("/admin/users", "bob-token", headers: forged, status: 403, reason: "no_grant")
        try deny("/mail/inbox", nil, headers: forged, status: 401, reason: "missing_identity")
        // The application never sees a client's X-Authz-* header either.
        let r = try send("\(base)/mail/inbox", "ana-token", headers: [("X-Authz-Revision", "999999"), ("X-Authz-Api-Key", "forged")])
        assertReachedUpstream(r, "/mail/inbox", user: Self.ana)
        // The sidecar server: authzd over its Unix socket, no key.
        let local = "http://127.0.0.1:\(sidecar)"
        assertReachedUpstream(try send("\(local)/mail/inbox", "ana-token"), "/mail/inbox", user: Self.ana)
        try deny("/mail/inbox", "bob-token", headers: forged, status: 403, reason: "no_grant", base: local)
        try deny("/mail/inbox", nil, status: 401, reason: "missing_identity", base: local)
        // A bad gateway key: authzd answers 503, which auth_request turns into 500.
        let (badPort, _) = try startNginx(name: "nginx-bad-key", key: "not-a-key")
        try deny("/mail/inbox", "ana-token", status: 500, reason: nil, base: "http://127.0.0.1:\(badPort)")
        // authzd stopped: 500, never the upstream.
        daemon?.stop()
        try deny("/mail/inbox", "ana-token", status: 500, reason: nil)
        try deny("/mail/inbox", "ana-token", status: 500, reason: nil, base: local)
        for m in denied { upstream!.assertNotReached(m) }
    }

    /// The route map is re-read on SIGHUP, without a restart; an invalid one is refused and
    /// the one in use stays. Through nginx's sidecar server, whose every path is route-map driven.
    func testRouteMapReloadsOnSIGHUP() async throws {
        _ = try GatewayBinaries.require(GatewayBinaries.nginx, "nginx")
        try await start()
        let (_, sidecar) = try startNginx()
        func decision(_ path: String, _ token: String) throws -> (Int?, String?) {
            let r = try send("http://127.0.0.1:\(sidecar)\(path)", token)
            return (r.status, r[header: "X-Authz-Reason"])
        }
        XCTAssertTrue(try decision("/reports/q1", "ana-token") == (403, "no_route"))
        let original = try String(contentsOfFile: routeMapPath, encoding: .utf8)
        let pid = daemon!.process.processIdentifier
        // A new route: /reports/** needs core.users.manage (Ana has it, Bob has not).
        try (original + "GET /reports/** core.users.manage tenant\n").write(toFile: routeMapPath, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        XCTAssertTrue(try waitUntil(5) { try decision("/reports/q1", "ana-token") == (200, "granted") }, "the edited route map did not take effect")
        XCTAssertTrue(try decision("/reports/q1", "bob-token") == (403, "no_grant"))
        // Invalid (its second line has no scope): refused whole, the map in use stays. Its first
        // line alone would let Bob read reports.
        try "GET /reports/** gmail.messages.read self\nGET /mail/** gmail.messages.read\n".write(toFile: routeMapPath, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        waitUntil(3) { daemon!.log.contains("routes.map:2") }
        usleep(300_000)
        XCTAssertTrue(daemon!.process.isRunning, "authzd stopped on an invalid route map")
        XCTAssertTrue(try decision("/reports/q1", "bob-token") == (403, "no_grant"), "an invalid route map replaced the one in use")
        XCTAssertTrue(try decision("/reports/q1", "ana-token") == (200, "granted"))
        XCTAssertTrue(try decision("/mail/inbox", "ana-token") == (200, "granted"))
        // And it still reloads after a refusal.
        try original.write(toFile: routeMapPath, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        XCTAssertTrue(try waitUntil(5) { try decision("/reports/q1", "ana-token") == (403, "no_route") })
    }

    // MARK: - Envoy

    func testEnvoyHTTPExtAuthz() async throws {
        _ = try GatewayBinaries.require(GatewayBinaries.envoy, "envoy")
        try await start()
        let base = "http://127.0.0.1:\(try startEnvoy("envoy-http.yaml", name: "envoy-http"))"
        assertReachedUpstream(try send("\(base)/mail/inbox?x=1", "ana-token"), "/mail/inbox?x=1", user: Self.ana)
        assertReachedUpstream(try send("\(base)/mail/me/drafts", "bob-token"), "/mail/me/drafts", user: Self.bob)
        assertReachedUpstream(try send("\(base)/admin/users", "ana-token"), "/admin/users", user: Self.ana)
        assertReachedUpstream(try send("\(base)/mail/send", "ana-token", method: "POST", body: "hello"), "/mail/send", user: Self.ana)
        var denied: [String] = []
        func deny(_ path: String, _ token: String?, method: String = "GET", headers: [(String, String)] = [],
                  status: Int, reason: String?, base b: String? = nil, line: UInt = #line) throws {
            let m = marker()
            denied.append(m)
            let r = try send("\(b ?? base)\(path)?\(m)", token, method: method, headers: headers)
            XCTAssertEqual(r.status, status, "\(path): \(r.headers) \(r.body)", line: line)
            if let reason { XCTAssertEqual(r[header: "X-Authz-Reason"], reason, line: line) }
        }
        try deny("/mail/inbox", "bob-token", status: 403, reason: "no_grant")
        try deny("/admin/users", "bob-token", status: 403, reason: "no_grant")
        try deny("/mail/inbox", nil, status: 401, reason: "missing_identity")
        try deny("/mail/send", "ana-token", method: "PUT", status: 403, reason: "no_route")
        let forged = [("X-Authz-Tenant", Self.tenant), ("X-Authz-User", Self.ana), ("X-Authz-Permission", "gmail.messages.read"),
                      ("X-Authz-Scope", "self"), ("X-Original-URI", "/mail/me/x"), ("X-Original-Method", "GET"),
                      ("X-Authz-Api-Key", "forged")]
        try deny("/mail/inbox", "bob-token", headers: forged, status: 403, reason: "no_grant")
        try deny("/admin/users", "bob-token", headers: forged, status: 403, reason: "no_grant")
        try deny("/mail/inbox", nil, headers: forged, status: 401, reason: "missing_identity")
        assertReachedUpstream(try send("\(base)/mail/inbox", "ana-token", headers: [("X-Authz-Revision", "999999")]), "/mail/inbox", user: Self.ana)
        // A bad key: authzd's 503 is a 5xx, which Envoy's HTTP client counts as a failed call:
        // status_on_error (403 by default), authzd's headers dropped.
        let bad = "http://127.0.0.1:\(try startEnvoy("envoy-http.yaml", name: "envoy-http-bad-key", key: "not-a-key"))"
        try deny("/mail/inbox", "ana-token", status: 403, reason: nil, base: bad)
        // authzd stopped: 403 (failure_mode_allow: false), never the upstream.
        daemon?.stop()
        try deny("/mail/inbox", "ana-token", status: 403, reason: nil)
        for m in denied { upstream!.assertNotReached(m) }
    }

    func testEnvoyGRPCExtAuthz() async throws {
        _ = try GatewayBinaries.require(GatewayBinaries.envoy, "envoy")
        try await start()
        let base = "http://127.0.0.1:\(try startEnvoy("envoy-grpc.yaml", name: "envoy-grpc"))"
        // An allow's CheckResponse adds x-authz-revision (and -decision, -reason) upstream.
        assertReachedUpstream(try send("\(base)/mail/inbox?x=1", "ana-token"), "/mail/inbox?x=1", user: Self.ana)
        assertReachedUpstream(try send("\(base)/mail/me/drafts", "bob-token"), "/mail/me/drafts", user: Self.bob)
        // /admin/: permission and scope from the route's context_extensions.
        assertReachedUpstream(try send("\(base)/admin/users", "ana-token"), "/admin/users", user: Self.ana)
        assertReachedUpstream(try send("\(base)/mail/send", "ana-token", method: "POST", body: "hello"), "/mail/send", user: Self.ana)
        var denied: [String] = []
        func deny(_ path: String, _ token: String?, method: String = "GET", headers: [(String, String)] = [],
                  status: Int, base b: String? = nil, line: UInt = #line) throws {
            let m = marker()
            denied.append(m)
            let r = try send("\(b ?? base)\(path)?\(m)", token, method: method, headers: headers)
            XCTAssertEqual(r.status, status, "\(path): \(r.headers) \(r.body)", line: line)
        }
        try deny("/mail/inbox", "bob-token", status: 403)
        try deny("/admin/users", "bob-token", status: 403)
        try deny("/mail/inbox", nil, status: 401)
        try deny("/mail/send", "ana-token", method: "PUT", status: 403)
        let forged = [("X-Authz-Tenant", Self.tenant), ("X-Authz-User", Self.ana), ("X-Authz-Permission", "gmail.messages.read"),
                      ("X-Authz-Scope", "self"), ("X-Authz-Api-Key", "forged")]
        try deny("/mail/inbox", "bob-token", headers: forged, status: 403)
        try deny("/admin/users", "bob-token", headers: forged, status: 403)
        try deny("/mail/inbox", nil, headers: forged, status: 401)
        // A bad key: the denial carries authzd's 503.
        let bad = "http://127.0.0.1:\(try startEnvoy("envoy-grpc.yaml", name: "envoy-grpc-bad-key", key: "not-a-key"))"
        try deny("/mail/inbox", "ana-token", status: 503, base: bad)
        // authzd stopped: 403 (failure_mode_allow: false), never the upstream.
        daemon?.stop()
        try deny("/mail/inbox", "ana-token", status: 403)
        for m in denied { upstream!.assertNotReached(m) }
    }
}
