import AuthzClient
import AuthzIndex
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// Who may call what, tenant isolation, keys, and secrets kept out of logs and disk.
final class SecurityTests: XCTestCase {
    var daemon: DaemonProcess!

    override func setUpWithError() throws { daemon = try DaemonProcess(extra: ["--log-level", "trace"]) }

    override func tearDown() {
        daemon.stop()
        daemon.remove()
    }

    /// Two tenants holding records with the same names.
    struct Twin {
        let t = ID.random(), user = ID.random(), canary = ID.random(), role = ID.random(), perm = ID.random(), rb = ID.random(), pb = ID.random(), cred = ID.random()
        func ops(_ name: String) -> [WriteOp] {
            [.upsert(.tenant(Tenant(id: t, name: name))),
             .upsert(.user(User(id: user, tenantId: t, email: "ana@\(name).test"))),
             .upsert(.user(User(id: canary, tenantId: t, email: "canary@\(name).test"))),
             .upsert(.role(Role(id: role, tenantId: t, name: "admin"))),
             .upsert(.permission(Permission(id: perm, tenantId: t, name: "core.users.manage", service: "core"))),
             .upsert(.permissionBinding(PermissionBinding(id: pb, tenantId: t, roleId: role, permissionId: perm, scope: .global))),
             .upsert(.roleBinding(RoleBinding(id: rb, tenantId: t, userId: user, roleId: role, scope: .global))),
             .upsert(.platformCredential(PlatformCredential(id: cred, tenantId: t, ownerUserId: user, platform: "gmail", externalAccountId: "ana",
                                                           accessToken: "tok-ACCESS-\(name)-SECRET", refreshToken: "tok-REFRESH-\(name)-SECRET")))]
        }
    }

    func key(_ local: AuthzClient, _ tenant: ID?, _ role: KeyRole, expiresAt: Int64 = 0) async throws -> (ID, String) {
        let (k, secret) = try await local.createKey(tenant: tenant, role: role, name: "\(role)", expiresAt: expiresAt)
        return (k.id, secret)
    }

    func code(_ client: AuthzClient, _ call: Call) async -> AuthzError.Code? {
        do {
            _ = try await client.call(call)
            return nil
        } catch let e as AuthzError {
            return e.code
        } catch {
            return .unknown
        }
    }

    func testIsolationAcrossEveryCall() async throws {
        let local = daemon.client()
        defer { local.close() }
        let a = Twin(), b = Twin()
        try await local.write(a.ops("alpha"))
        try await local.write(b.ops("beta"))
        let (_, checkerA) = try await key(local, a.t, .checker)
        let (_, adminA) = try await key(local, a.t, .admin)
        let (revokedId, revokedA) = try await key(local, a.t, .admin)
        _ = try await local.revokeKey(revokedId)
        let bCheck = CheckCall(tenantId: b.t, userId: b.user, permission: "core.users.manage", scope: .self)
        let calls: [Call] = [
            .check(bCheck), .batchCheck([.success(bCheck)], minRevision: 0), .explain(bCheck),
            .listUserPermissions(tenantId: b.t, userId: b.user, minRevision: 0),
            .listPermissionUsers(tenantId: b.t, permission: "core.users.manage", scope: .self, pageSize: 0, after: nil, minRevision: 0),
            .write([.upsert(.user(User(id: .random(), tenantId: b.t)))]), .write([.deactivate(RecordRef(kind: .roleBinding, tenantId: b.t, id: b.rb))]),
            .get(RecordRef(kind: .user, tenantId: b.t, id: b.user), includeSecrets: false),
            .get(RecordRef(kind: .platformCredential, tenantId: b.t, id: b.cred), includeSecrets: true),
            .list(.user, tenantId: b.t, pageSize: 0, after: nil, includeSecrets: false), .list(.tenant, tenantId: .zero, pageSize: 0, after: nil, includeSecrets: false),
            .importJSONL(Array((BulkFormat.encode(.user(User(id: .random(), tenantId: b.t))) + "\n").utf8)),
            .export(tenantId: b.t, includeSecrets: true), .serverInfo,
            .createKey(tenantId: b.t, role: .admin, name: "x", expiresAt: 0), .listKeys(tenantId: nil),
        ]
        for (name, secret) in [("checker", checkerA), ("admin", adminA), ("revoked", revokedA)] {
            for transport in [false, true] {
                let client = daemon.client(tcp: transport, apiKey: secret)
                defer { client.close() }
                for call in calls {
                    let c = await code(client, call)
                    XCTAssertTrue(c == .permissionDenied || c == .unauthenticated, "\(name) key over \(transport ? "TCP" : "Unix"): \(call.name) against tenant B gave \(c.map { "\($0)" } ?? "success")")
                }
            }
        }
        // The admin key still works on its own tenant; the checker key may not write.
        let admin = daemon.client(tcp: true, apiKey: adminA)
        defer { admin.close() }
        let d = try await admin.check(tenant: a.t, user: a.user, permission: "core.users.manage", scope: .global)
        XCTAssertTrue(d.allowed)
        let checker = daemon.client(tcp: true, apiKey: checkerA)
        defer { checker.close() }
        let w = await code(checker, .write([.upsert(.user(User(id: .random(), tenantId: a.t)))]))
        XCTAssertEqual(w, .permissionDenied)
        // The canary (no grants) is never allowed, whoever asks, whatever the permission and scope.
        for client in [local, admin] {
            for t in [a, b] {
                for s in Scope.allCases {
                    for p in ["core.users.manage", "gmail.messages.read", "x.y"] {
                        if let d = try? await client.check(tenant: t.t, user: t.canary, permission: p, scope: s) { XCTAssertFalse(d.allowed) }
                    }
                }
            }
        }
        let perms = try await local.userPermissions(tenant: b.t, user: b.canary).permissions
        XCTAssertTrue(perms.isEmpty)
    }

    func testKeysWrongExpiredRevokedAndMissing() async throws {
        let local = daemon.client()
        defer { local.close() }
        let a = Twin()
        try await local.write(a.ops("alpha"))
        let check = Call.check(CheckCall(tenantId: a.t, userId: a.user, permission: "core.users.manage", scope: .self))
        // Missing on TCP.
        let none = daemon.client(tcp: true)
        defer { none.close() }
        let missing = await code(none, check)
        XCTAssertEqual(missing, .unauthenticated)
        let health = await code(none, .health)
        XCTAssertNil(health, "health needs no key")
        // Wrong.
        let (_, good) = try await key(local, a.t, .checker)
        let wrong = daemon.client(tcp: true, apiKey: String(good.dropLast(2)) + (good.hasSuffix("00") ? "11" : "00"))
        defer { wrong.close() }
        let w = await code(wrong, check)
        XCTAssertEqual(w, .unauthenticated)
        // Expired.
        let (_, expired) = try await key(local, a.t, .checker, expiresAt: Timestamp.now() - 1_000_000)
        let exp = daemon.client(tcp: true, apiKey: expired)
        defer { exp.close() }
        let e = await code(exp, check)
        XCTAssertEqual(e, .unauthenticated)
        // Revoked while the connection is open: the next request on it fails.
        let (id, live) = try await key(local, a.t, .checker)
        let open = daemon.client(tcp: true, apiKey: live)
        defer { open.close() }
        let before = await code(open, check)
        XCTAssertNil(before)
        _ = try await local.revokeKey(id)
        let after = await code(open, check)
        XCTAssertEqual(after, .unauthenticated)
        let keys = try await local.listKeys(tenant: a.t)
        XCTAssertTrue(keys.contains { $0.id == id && $0.revokedAt != 0 })
        XCTAssertTrue(keys.allSatisfy { $0.secretHash.isEmpty }, "listings never carry secrets or hashes")
    }

    func testFailedAttemptsAreRateLimitedPerConnection() throws {
        let raw = try RawConnection(unixPath: daemon.socketPath)
        var codes: [AuthzError.Code] = []
        for i in 0..<10 {
            raw.sendFrame(WireCodec.encodeRequest(WireRequest(requestId: UInt64(i + 1), call: .success(.health), apiKey: "azk_" + String(repeating: "0", count: 32) + "_" + String(repeating: "1", count: 64))))
            guard let f = raw.receiveFrame() else { break }
            if case .failure(let e) = try f.withUnsafeBytes({ try WireCodec.decodeResponse($0) }).result { codes.append(e.code) }
        }
        XCTAssertEqual(Array(codes.prefix(5)), Array(repeating: .unauthenticated, count: 5))
        XCTAssertEqual(codes.last, .resourceExhausted)
        XCTAssertLessThan(codes.count, 10, "the connection should have been closed")
        // Another connection is unaffected.
        let other = try RawConnection(unixPath: daemon.socketPath)
        other.sendFrame(WireCodec.encodeRequest(WireRequest(requestId: 1, call: .success(.health))))
        XCTAssertNotNil(other.receiveFrame())
    }

    func testSecretsStayOutOfLogsErrorsAndDisk() async throws {
        let local = daemon.client()
        let a = Twin()
        try await local.write(a.ops("alpha"))
        _ = try await local.get(RecordRef(kind: .platformCredential, tenantId: a.t, id: a.cred), includeSecrets: true)
        _ = try await local.get(RecordRef(kind: .platformCredential, tenantId: a.t, id: a.cred))
        _ = try await local.export(tenant: nil)
        // A malformed write carrying secrets: the error must not echo them.
        var bad = PlatformCredential(id: .random(), tenantId: a.t, ownerUserId: ID.random(), platform: "gmail", externalAccountId: "x",
                                     accessToken: "tok-ACCESS-bad-SECRET", refreshToken: "tok-REFRESH-bad-SECRET")
        bad.oauthScopes = ["\u{1}"]
        do {
            try await local.write([.upsert(.platformCredential(bad))])
            XCTFail()
        } catch let e as AuthzError { XCTAssertFalse(e.message.contains("SECRET")) }
        local.close()
        daemon.stop()
        XCTAssertFalse(daemon.log.contains("SECRET"), "the log holds a secret")
        XCTAssertTrue(daemon.log.contains("trace") || daemon.log.contains("debug") || daemon.log.contains("info"))
        let enumerator = FileManager.default.enumerator(atPath: daemon.dir)!
        while let f = enumerator.nextObject() as? String {
            let path = daemon.dir + "/" + f
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue, !f.hasSuffix(".sock") else { continue }
            let bytes = (try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()
            XCTAssertNil(bytes.range(of: Data("SECRET".utf8)), "\(f) holds a secret in clear")
        }
    }
}

/// A sidecar running as its service's uid needs no key: the Unix peer uid allowlist.
final class PeerUIDTests: XCTestCase {
    func runAs(uid: Int, _ args: [String]) throws -> (Int32, String) {
        try runProcess("/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=65534", "--clear-groups", productsDirectory().appendingPathComponent("authzctl").path] + args)
    }

    func testAllowlistedUIDGetsItsRoleAndNothingMore() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root and setpriv to act as another uid")
        }
        let t = ID.random(), other = ID.random(), u = ID.random(), r = ID.random(), p = ID.random()
        let daemon = try DaemonProcess(tcp: false, extra: ["--allow-uid", "65534:checker:\(t)"])
        defer { daemon.stop(); daemon.remove() }
        chmod(daemon.dir, 0o755)
        chown(daemon.socketPath, 0, 65534)  // group nogroup may connect (mode 0660)
        let local = daemon.client()
        defer { local.close() }
        _ = try local.send(.write([.upsert(.tenant(Tenant(id: t, name: "svc"))), .upsert(.tenant(Tenant(id: other, name: "other"))),
                                   .upsert(.user(User(id: u, tenantId: t))), .upsert(.role(Role(id: r, tenantId: t, name: "r"))),
                                   .upsert(.permission(Permission(id: p, tenantId: t, name: "core.side.car", service: "core"))),
                                   .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .global))),
                                   .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .tenant)))])).wait()
        let sock = ["--socket", daemon.socketPath]
        let (ok, out) = try runAs(uid: 65534, ["check"] + sock + [t.description, u.description, "core.side.car", "tenant"])
        XCTAssertEqual(ok, 0, out)
        let (cross, out2) = try runAs(uid: 65534, ["check"] + sock + [other.description, u.description, "core.side.car", "tenant"])
        XCTAssertEqual(cross, 2, out2)
        XCTAssertTrue(out2.contains("PERMISSION_DENIED"), out2)
        let (write, out3) = try runAs(uid: 65534, ["delete"] + sock + ["user", t.description, u.description])
        XCTAssertEqual(write, 2, out3)
        XCTAssertTrue(out3.contains("PERMISSION_DENIED"), out3)
        // Another uid with the same group reaches the socket but is not on the list.
        let (stranger, out4) = try runAs(uid: 65533, ["check"] + sock + [t.description, u.description, "core.side.car", "tenant"])
        XCTAssertEqual(stranger, 2, out4)
        XCTAssertTrue(out4.contains("UNAUTHENTICATED"), out4)
    }
}
