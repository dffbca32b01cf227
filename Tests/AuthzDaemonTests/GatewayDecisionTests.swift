import AuthzEngine
import AuthzModel
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest
@testable import AuthzServer

/// The gateway's decision table and route map, in process: the HTTP handler on an
/// EmbeddedChannel with NIO's HTTP/1.1 codec, the decider against a real engine. The real
/// proxies in front of a real daemon are in GatewayTests.
final class GatewayDecisionTests: XCTestCase {
    var dir: String!
    var engine: Engine!
    var dispatcher: Dispatcher!
    var gateway: Gateway!
    let t = ID.random(), u = ID.random(), idle = ID.random(), other = ID.random()
    var routesPath: String { dir + "/routes" }

    override func setUpWithError() throws {
        dir = temporaryDirectory("gateway")
        var o = EngineOptions()
        o.store.sync = .nosync
        engine = try Engine(directory: dir + "/data", options: o)
        let r = ID.random(), p = ID.random(), w = ID.random()
        try engine.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.tenant(Tenant(id: other, name: "other"))),
                          .upsert(.user(User(id: u, tenantId: t))), .upsert(.user(User(id: idle, tenantId: t))),
                          .upsert(.role(Role(id: r, tenantId: t, name: "reader"))),
                          .upsert(.permission(Permission(id: p, tenantId: t, name: "gmail.messages.read", service: "gmail"))),
                          .upsert(.permission(Permission(id: w, tenantId: t, name: "gmail.messages.send", service: "gmail"))),
                          .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .tenant))),
                          .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .global)))])
        try """
        # the test's routes
        GET   /mail/**          gmail.messages.read  tenant
        POST  /mail/*/send      gmail.messages.send  self
        *     /admin            gmail.messages.read  global
        """.write(toFile: routesPath, atomically: true, encoding: .utf8)
        var config = ServerConfig()
        config.gateway.routeMapPath = routesPath
        dispatcher = try Dispatcher(engine: engine, config: config, logger: Logger(label: "test"))
        gateway = try Gateway(dispatcher: dispatcher, options: config.gateway, logger: Logger(label: "test"))
    }

    override func tearDown() {
        dispatcher?.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    // MARK: route map

    func testRouteMapMatchesFirstRouteBySegments() throws {
        let m = gateway.routeMap
        XCTAssertEqual(m.match(method: "GET", path: "/mail")?.line, 2, "** matches zero segments")
        XCTAssertEqual(m.match(method: "GET", path: "/mail/inbox/42?x=1")?.line, 2, "query string ignored")
        XCTAssertEqual(m.match(method: "POST", path: "/mail/7/send")?.line, 3)
        XCTAssertNil(m.match(method: "POST", path: "/mail/7/8/send"), "* is one segment")
        XCTAssertNil(m.match(method: "POST", path: "/mail/send"))
        XCTAssertEqual(m.match(method: "DELETE", path: "/admin")?.line, 4, "* is any method")
        XCTAssertNil(m.match(method: "GET", path: "/admin/x"), "a literal last segment matches exactly")
        XCTAssertNil(m.match(method: "GET", path: "/mailbox"))
    }

    func testRouteMapRejectsBadLinesNamingThem() {
        let bad: [(String, String)] = [
            ("GET /a", "METHOD PATH-PATTERN PERMISSION SCOPE"),
            ("get /a p.q self", "upper-case"),
            ("GET a p.q self", "must start with /"),
            ("GET /**/a p.q self", "** may only be the last"),
            ("GET /a?b p.q self", "query string"),
            ("GET /a Perm self", "dotted lowercase"),
            ("GET /a p.q everywhere", "self, tenant or global"),
        ]
        for (text, rule) in bad {
            XCTAssertThrowsError(try RouteMap(text: "# ok\n" + text, origin: "m")) { e in
                XCTAssertTrue("\(e)".contains("m:2:"), "\(e)")
                XCTAssertTrue("\(e)".contains(rule), "\(text): \(e)")
            }
        }
    }

    func testReloadKeepsTheOldMapWhenTheNewOneIsInvalid() throws {
        try "GET /x/** gmail.messages.send self\n".write(toFile: routesPath, atomically: true, encoding: .utf8)
        try gateway.reloadRoutes()
        XCTAssertEqual(gateway.routeMap.routes.map(\.permission), ["gmail.messages.send"])
        try "GET /x/** NOT-A-PERMISSION self\n".write(toFile: routesPath, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try gateway.reloadRoutes())
        XCTAssertEqual(gateway.routeMap.routes.map(\.permission), ["gmail.messages.send"], "the valid map stays")
    }

    // MARK: decisions

    func decide(_ method: String, _ path: String, _ headers: [String: String], as p: Principal) -> GatewayAnswer {
        gateway.decide(method: method, path: path, principal: p) { headers[$0] }
    }

    /// A path the application could resolve to another resource is never matched as written:
    /// `/mail/../admin` is not a mail path (the route map's `..` bypass).
    func testAmbiguousPathsAreDeniedNotMatched() {
        let id = ["x-authz-tenant": t.description, "x-authz-user": u.description]
        for path in ["/mail/../admin", "/mail/me/../../admin/users", "/mail/./inbox", "/mail/..;/admin", "/mail/.;x/inbox",
                     "/mail/%2e%2e/admin", "/mail/%2E%2E/admin", "/mail%2f..%2fadmin", "/mail/%2F/x", "/mail\\..\\admin", "/mail/%5c/x",
                     "/mail/..", "/.."] {
            XCTAssertTrue(RouteMap.isAmbiguous(path), path)
            let a = decide("GET", path, id, as: .superuser)
            XCTAssertEqual(a.status, 403, path)
            XCTAssertEqual(a.reason, "ambiguous_path", path)
        }
        // Dots inside a segment, other escapes and a query string holding dots are plain paths.
        for path in ["/mail/inbox.json", "/mail/...", "/mail/a..b", "/mail/%20x", "/mail/inbox?next=/../admin", "/mail/.well-known", "/mail//inbox"] {
            XCTAssertFalse(RouteMap.isAmbiguous(path), path)
            XCTAssertEqual(decide("GET", path, id, as: .superuser).status, 200, path)
        }
        // A location that names its permission does not use the path at all.
        XCTAssertEqual(decide("GET", "/mail/../admin", id.merging(["x-authz-permission": "gmail.messages.read"]) { $1 }, as: .superuser).status, 200)
    }

    func testDecisionTable() {
        let id = ["x-authz-tenant": t.description, "x-authz-user": u.description]
        let cases: [(String, String, [String: String], Int, String)] = [
            ("GET", "/mail/inbox", id, 200, "granted"),
            ("POST", "/mail/1/send", id, 403, "no_grant"),
            ("GET", "/admin", id, 403, "no_grant"),  // granted at tenant, asked at global
            ("GET", "/nowhere", id, 403, "no_route"),
            ("GET", "/mail", ["x-authz-tenant": t.description], 401, "missing_identity"),
            ("GET", "/mail", ["x-authz-user": u.description], 401, "missing_identity"),
            ("GET", "/mail", ["x-authz-tenant": "acme", "x-authz-user": u.description], 401, "malformed_identity"),
            ("GET", "/mail", ["x-authz-tenant": t.description, "x-authz-user": idle.description], 403, "no_grant"),
            ("GET", "/mail", ["x-authz-tenant": t.description, "x-authz-user": ID.random().description], 403, "unknown_user"),
            ("GET", "/mail", ["x-authz-tenant": ID.random().description, "x-authz-user": u.description], 403, "unknown_tenant"),
            // Headers set per location take precedence over the route map.
            ("GET", "/nowhere", id.merging(["x-authz-permission": "gmail.messages.read"]) { $1 }, 200, "granted"),
            ("GET", "/mail", id.merging(["x-authz-permission": "gmail.messages.read", "x-authz-scope": "global"]) { $1 }, 403, "no_grant"),
            ("GET", "/mail", id.merging(["x-authz-permission": "gmail.messages.read", "x-authz-scope": "planet"]) { $1 }, 503, "malformed_permission"),
        ]
        for (method, path, headers, status, reason) in cases {
            let a = decide(method, path, headers, as: .superuser)
            XCTAssertEqual(a.status, status, "\(method) \(path) \(headers)")
            XCTAssertEqual(a.reason, reason, "\(method) \(path) \(headers)")
            if status == 200 || reason == "no_grant" { XCTAssertEqual(a.revision, engine.revision) }
        }
    }

    func testKeyRolesBoundToTheirTenant() {
        let id = ["x-authz-tenant": t.description, "x-authz-user": u.description]
        XCTAssertEqual(decide("GET", "/mail", id, as: .key(id: .random(), role: .gateway, tenant: .zero)).status, 200)
        XCTAssertEqual(decide("GET", "/mail", id, as: .key(id: .random(), role: .checker, tenant: t)).status, 200)
        XCTAssertEqual(decide("GET", "/mail", id, as: .key(id: .random(), role: .checker, tenant: other)).reason, "key_tenant_mismatch")
        XCTAssertEqual(decide("GET", "/mail", id, as: .key(id: .random(), role: .operator, tenant: .zero)).status, 503)
        XCTAssertEqual(decide("GET", "/mail", id, as: .unauthenticated).status, 503)
    }

    // MARK: the HTTP handler

    func channel(transport: Principal) throws -> EmbeddedChannel {
        let ch = EmbeddedChannel()
        try ch.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
        try ch.pipeline.syncOperations.addHandler(HTTPGatewayHandler(gateway: gateway, transport: transport))
        try ch.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return ch
    }

    /// Sends raw request bytes; returns the raw response text written so far.
    func exchange(_ ch: EmbeddedChannel, _ request: String) throws -> String {
        try ch.writeInbound(ByteBuffer(string: request))
        var out = ""
        while var b = try ch.readOutbound(as: ByteBuffer.self) { out += b.readString(length: b.readableBytes) ?? "" }
        return out
    }

    func testHTTPAnswersWithStatusAndHeadersOnly() throws {
        let ch = try channel(transport: .superuser)
        let id = "X-Authz-Tenant: \(t)\r\nX-Authz-User: \(u)\r\n"
        var r = try exchange(ch, "GET /check/mail/inbox HTTP/1.1\r\nHost: a\r\n\(id)\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 200 OK\r\n"), r)
        XCTAssertTrue(r.contains("x-authz-decision: allow\r\n"), r)
        XCTAssertTrue(r.contains("x-authz-reason: granted\r\n"), r)
        XCTAssertTrue(r.contains("x-authz-revision: \(engine.revision)\r\n"), r)
        XCTAssertTrue(r.contains("content-length: 0\r\n"), r)
        // nginx: the subrequest is GET /check; the original request is in headers.
        r = try exchange(ch, "GET /check HTTP/1.1\r\nHost: a\r\n\(id)X-Original-Method: POST\r\nX-Original-URI: /mail/1/send?q=1\r\n\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 403 Forbidden\r\n"), r)
        XCTAssertTrue(r.contains("x-authz-reason: no_grant\r\n"), r)
        r = try exchange(ch, "GET /check/mail HTTP/1.1\r\nHost: a\r\n\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"), r)
        // Pipelined requests on one connection are answered in order.
        r = try exchange(ch, "GET /check/mail HTTP/1.1\r\nHost: a\r\n\(id)\r\nGET /check/nowhere HTTP/1.1\r\nHost: a\r\n\(id)\r\n")
        let first = try XCTUnwrap(r.range(of: "200 OK")), second = try XCTUnwrap(r.range(of: "403 Forbidden"))
        XCTAssertLessThan(first.lowerBound, second.lowerBound)
        XCTAssertTrue(ch.isActive, "keep-alive")
    }

    /// A header sent twice never decides as its first value (as Envoy folds repeated headers).
    func testRepeatedHeadersFailClosed() throws {
        let ch = try channel(transport: .superuser)
        let id = "X-Authz-Tenant: \(t)\r\nX-Authz-User: \(u)\r\n"
        let cases: [(String, String, String)] = [
            ("X-Authz-User: \(u)\r\n", "401 Unauthorized", "malformed_identity"),
            ("X-Authz-Tenant: \(other)\r\n", "401 Unauthorized", "malformed_identity"),
            ("X-Original-URI: /mail/inbox\r\nX-Original-URI: /admin\r\n", "403 Forbidden", "ambiguous_path"),
            ("X-Original-Method: GET\r\nX-Original-Method: POST\r\n", "403 Forbidden", "ambiguous_path"),
            ("X-Authz-Scope: tenant\r\nX-Authz-Scope: global\r\nX-Authz-Permission: gmail.messages.read\r\n", "503 Service Unavailable", "malformed_permission"),
        ]
        for (extra, status, reason) in cases {
            let r = try exchange(ch, "GET /check/mail/inbox HTTP/1.1\r\nHost: a\r\n\(id)\(extra)\r\n")
            XCTAssertTrue(r.hasPrefix("HTTP/1.1 \(status)\r\n"), "\(extra): \(r)")
            XCTAssertTrue(r.contains("x-authz-reason: \(reason)\r\n"), "\(extra): \(r)")
        }
        // Two keys are one invalid key.
        let tcp = try channel(transport: .unauthenticated)
        let r = try exchange(tcp, "GET /check/mail HTTP/1.1\r\nHost: a\r\n\(id)X-Authz-Api-Key: azk_a\r\nX-Authz-Api-Key: azk_b\r\n\r\n")
        XCTAssertFalse(r.hasPrefix("HTTP/1.1 200"), r)
    }

    /// Refused keys are limited per connection as on the binary listeners: the fifth within
    /// the window is answered, then the connection closes.
    func testRepeatedRefusedKeysCloseTheConnection() throws {
        let ch = try channel(transport: .unauthenticated)
        let id = "X-Authz-Tenant: \(t)\r\nX-Authz-User: \(u)\r\n"
        for i in 1...5 {
            let r = try exchange(ch, "GET /check/mail HTTP/1.1\r\nHost: a\r\n\(id)X-Authz-Api-Key: azk_nope\r\n\r\n")
            XCTAssertTrue(r.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), "\(i): \(r)")
            if i < 5 {
                XCTAssertFalse(r.lowercased().contains("connection: close"), "\(i): \(r)")
                XCTAssertTrue(ch.isActive, "closed after \(i) refusals")
            } else {
                XCTAssertTrue(r.lowercased().contains("connection: close"), r)
            }
        }
        ch.embeddedEventLoop.run()
        XCTAssertFalse(ch.isActive, "the fifth refused key closes the connection")
    }

    func testTCPWithoutKeyCannotDecideAndAWrongKeyIsRefused() throws {
        let ch = try channel(transport: .unauthenticated)
        let id = "X-Authz-Tenant: \(t)\r\nX-Authz-User: \(u)\r\n"
        var r = try exchange(ch, "GET /check/mail HTTP/1.1\r\nHost: a\r\n\(id)\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), r)
        XCTAssertTrue(r.contains("x-authz-reason: gateway_unauthenticated"), r)
        r = try exchange(ch, "GET /check/mail HTTP/1.1\r\nHost: a\r\n\(id)X-Authz-Api-Key: azk_nope\r\n\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), r)
        let (_, secret) = try dispatcher.keys.create(tenant: nil, role: .gateway, name: "gw", expiresAt: 0, creator: .superuser)
        r = try exchange(ch, "GET /check/mail HTTP/1.1\r\nHost: a\r\n\(id)X-Authz-Api-Key: \(secret)\r\n\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 200 OK\r\n"), r)
    }

    func testRevokedGatewayKeyStopsOnTheNextRequest() throws {
        let ch = try channel(transport: .unauthenticated)
        let (k, secret) = try dispatcher.keys.create(tenant: nil, role: .gateway, name: "gw", expiresAt: 0, creator: .superuser)
        let req = "GET /check/mail HTTP/1.1\r\nHost: a\r\nX-Authz-Tenant: \(t)\r\nX-Authz-User: \(u)\r\nX-Authz-Api-Key: \(secret)\r\n\r\n"
        XCTAssertTrue(try exchange(ch, req).hasPrefix("HTTP/1.1 200 OK\r\n"))
        _ = try dispatcher.keys.revoke(k.id, expiresAt: 0)
        XCTAssertTrue(try exchange(ch, req).hasPrefix("HTTP/1.1 503 "), "the cached key is re-validated once the epoch moves")
    }

    func testPermissionsEndpoint() throws {
        let ch = try channel(transport: .superuser)
        var r = try exchange(ch, "GET /v1/tenants/\(t)/users/\(u)/permissions HTTP/1.1\r\nHost: a\r\n\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 200 OK\r\n"), r)
        XCTAssertTrue(r.contains("application/json"), r)
        XCTAssertTrue(r.hasSuffix("{\"tenant_id\":\"\(t)\",\"user_id\":\"\(u)\",\"revision\":\(engine.revision),\"reason\":\"granted\",\"permissions\":[{\"name\":\"gmail.messages.read\",\"scope\":\"tenant\"}]}"), r)
        r = try exchange(ch, "GET /v1/tenants/acme/users/\(u)/permissions HTTP/1.1\r\nHost: a\r\n\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 400 Bad Request\r\n") && r.contains("tenant_id must be a UUID"), r)
        let tcp = try channel(transport: .unauthenticated)
        r = try exchange(tcp, "GET /v1/tenants/\(t)/users/\(u)/permissions HTTP/1.1\r\nHost: a\r\n\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"), r)
        let (_, secret) = try dispatcher.keys.create(tenant: other, role: .checker, name: "c", expiresAt: 0, creator: .superuser)
        r = try exchange(tcp, "GET /v1/tenants/\(t)/users/\(u)/permissions HTTP/1.1\r\nHost: a\r\nX-Authz-Api-Key: \(secret)\r\n\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 403 Forbidden\r\n"), r)
        r = try exchange(ch, "GET /elsewhere HTTP/1.1\r\nHost: a\r\n\r\n")
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 404 Not Found\r\n"), r)
    }
}
