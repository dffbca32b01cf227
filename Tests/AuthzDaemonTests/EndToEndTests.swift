import AuthzClient
import AuthzIndex
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// Against a real `authzd serve` child process, on a temporary Unix socket and 127.0.0.1:0.
final class EndToEndTests: XCTestCase {
    var daemon: DaemonProcess!

    override func setUpWithError() throws {
        daemon = try DaemonProcess()
    }

    override func tearDown() {
        daemon.stop()
        daemon.remove()
    }

    struct Acme {
        let t = ID.random(), ana = ID.random(), bob = ID.random(), viewer = ID.random(), editor = ID.random()
        let read = ID.random(), send = ID.random(), rbAna = ID.random(), rbBob = ID.random(), pbRead = ID.random(), pbSend = ID.random()

        var ops: [WriteOp] {
            [.upsert(.tenant(Tenant(id: t, name: "acme"))),
             .upsert(.user(User(id: ana, tenantId: t, email: "ana@acme.test"))),
             .upsert(.user(User(id: bob, tenantId: t))),
             .upsert(.role(Role(id: viewer, tenantId: t, name: "viewer"))),
             .upsert(.role(Role(id: editor, tenantId: t, name: "editor", inherits: [viewer]))),
             .upsert(.permission(Permission(id: read, tenantId: t, name: "gmail.messages.read", service: "gmail"))),
             .upsert(.permission(Permission(id: send, tenantId: t, name: "gmail.messages.send", service: "gmail"))),
             .upsert(.permissionBinding(PermissionBinding(id: pbRead, tenantId: t, roleId: viewer, permissionId: read, scope: .tenant))),
             .upsert(.permissionBinding(PermissionBinding(id: pbSend, tenantId: t, roleId: editor, permissionId: send, scope: .self))),
             .upsert(.roleBinding(RoleBinding(id: rbAna, tenantId: t, userId: ana, roleId: editor, scope: .global))),
             .upsert(.roleBinding(RoleBinding(id: rbBob, tenantId: t, userId: bob, roleId: viewer, scope: .self)))]
        }
    }

    /// With `admin` (a tenant-scoped key), the tenant record is written beforehand by `setup`
    /// and the bulk round trip leaves the tenant line out (tenants are an operator's).
    func exercise(_ client: AuthzClient, a: Acme = Acme(), admin: Bool = false) async throws {
        let rev = try await client.write(admin ? Array(a.ops.dropFirst()) : a.ops)
        XCTAssertGreaterThan(rev, 0)
        // Read-your-writes: the acknowledged write is visible to the next check.
        var d = try await client.check(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertEqual(d.reason, .granted)
        XCTAssertEqual(d.revision, rev)
        d = try await client.check(tenant: a.t, user: a.bob, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertEqual(d.reason, .noGrant)
        d = try await client.check(tenant: a.t, user: ID.random(), permission: "gmail.messages.read", scope: .self)
        XCTAssertEqual(d.reason, .unknownUser)
        // Batch: answers in order.
        let batch = try await client.batchCheck([
            CheckCall(tenantId: a.t, userId: a.ana, permission: "gmail.messages.send", scope: .self),
            CheckCall(tenantId: a.t, userId: a.ana, permission: "gmail.messages.send", scope: .tenant),
            CheckCall(tenantId: a.t, userId: a.bob, permission: "gmail.messages.read", scope: .self),
            admin ? CheckCall(tenantId: a.t, userId: ID.random(), permission: "gmail.messages.read", scope: .self)
                  : CheckCall(tenantId: ID.random(), userId: a.bob, permission: "gmail.messages.read", scope: .self),
        ])
        XCTAssertEqual(batch.map { try? $0.get().reason }, [.granted, .noGrant, .granted, admin ? .unknownUser : .unknownTenant])
        // Explain.
        let ex = try await client.explain(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertEqual(ex.roleChainNames, ["editor", "viewer"])
        XCTAssertEqual(ex.roleBindingId, a.rbAna)
        XCTAssertEqual(ex.permissionBindingId, a.pbRead)
        // Listings.
        let held = try await client.userPermissions(tenant: a.t, user: a.ana)
        XCTAssertEqual(held.reason, .granted)
        XCTAssertEqual(held.permissions.map { "\($0.name)@\($0.scope)" }, ["gmail.messages.read@tenant", "gmail.messages.send@self"])
        let users = try await client.permissionUsers(tenant: a.t, permission: "gmail.messages.read", scope: .self).users
        XCTAssertEqual(Set(users), [a.ana, a.bob])
        let (roles, nextRoles) = try await client.list(.role, tenant: a.t)
        XCTAssertNil(nextRoles)
        XCTAssertEqual(Set(roles.map(\.id)), [a.viewer, a.editor])
        // Soft delete then re-activation.
        try await client.write([.deactivate(RecordRef(kind: .roleBinding, tenantId: a.t, id: a.rbAna))])
        d = try await client.check(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertEqual(d.reason, .noGrant)
        let stored = try await client.get(RecordRef(kind: .roleBinding, tenantId: a.t, id: a.rbAna))
        XCTAssertFalse(stored.fields.isActive)
        try await client.write([.activate(RecordRef(kind: .roleBinding, tenantId: a.t, id: a.rbAna))])
        d = try await client.check(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertEqual(d.reason, .granted)
        // Errors name the field and the rule.
        do {
            try await client.write([.upsert(.roleBinding(RoleBinding(id: .random(), tenantId: a.t, userId: a.ana, roleId: ID.random(), scope: .self)))])
            XCTFail("dangling reference accepted")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .notFound)
            XCTAssertEqual(e.field, "role_binding.role_id")
        }
        do {
            _ = try await client.get(RecordRef(kind: .user, tenantId: a.t, id: ID.random()))
            XCTFail()
        } catch let e as AuthzError { XCTAssertEqual(e.code, .notFound) }
        do {
            _ = try await client.check(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .tenant, minRevision: 1_000_000)
            XCTFail()
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .unavailable)
            XCTAssertTrue(e.message.contains("not yet reached"), e.message)
        }
        // Import / export round trip through the daemon.
        var bytes = try await client.export(tenant: a.t).jsonl
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self).split(separator: "\n").count, a.ops.count)
        if admin {
            bytes = Array(String(decoding: bytes, as: UTF8.self).split(separator: "\n").filter { !$0.contains("\"kind\":\"tenant\"") }.joined(separator: "\n").utf8)
        }
        let n = try await client.importJSONL(bytes).records
        XCTAssertEqual(n, UInt64(a.ops.count - (admin ? 1 : 0)))
        let again = try await client.export(tenant: a.t).jsonl
        func strip(_ b: [UInt8]) -> [String] {
            String(decoding: b, as: UTF8.self).split(separator: "\n").map { $0.replacingOccurrences(of: #""updated_at":"[^"]*","#, with: "", options: .regularExpression) }
        }
        XCTAssertEqual(strip(again).filter { !$0.contains("\"kind\":\"tenant\"") }, strip(bytes).filter { !$0.contains("\"kind\":\"tenant\"") })
        do {
            _ = try await client.importJSONL(Array("{\"kind\":\"user\"}\n".utf8))
            XCTFail()
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .invalidArgument)
            XCTAssertTrue(e.message.hasPrefix("line 1: user.id is required"), e.message)
        }
        if !admin {
            let info = try await client.serverInfo()
            XCTAssertEqual(info.counts[.user], 2)
        }
    }

    func testOverUnixSocket() async throws {
        let client = daemon.client()
        defer { client.close() }
        try await exercise(client)
        // The socket file is 0660.
        let attrs = try FileManager.default.attributesOfItem(atPath: daemon.socketPath)
        XCTAssertEqual((attrs[.posixPermissions] as? NSNumber)?.intValue, 0o660)
    }

    func testOverTCP() async throws {
        // TCP needs a key: the tenant and an admin key are made over the Unix socket (as the
        // daemon's uid, a superuser).
        let a = Acme()
        let local = daemon.client()
        defer { local.close() }
        try await local.write([a.ops[0]])
        let (_, secret) = try await local.createKey(tenant: a.t, role: .admin, name: "e2e")
        let anonymous = daemon.client(tcp: true)
        defer { anonymous.close() }
        do {
            _ = try await anonymous.check(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .self)
            XCTFail("TCP without a key was served")
        } catch let e as AuthzError { XCTAssertEqual(e.code, .unauthenticated) }
        let client = daemon.client(tcp: true, apiKey: secret)
        defer { client.close() }
        try await exercise(client, a: a, admin: true)
    }

    /// Many requests on one connection; a slow call (an import on the writer thread) does not
    /// hold back the checks queued behind it, and every response echoes its request id.
    func testPipeliningCompletesOutOfOrder() throws {
        let a = Acme()
        let setup = daemon.client()
        let done = expectation(description: "setup")
        Task {
            _ = try await setup.write(a.ops)
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
        setup.close()
        let raw = try RawConnection(unixPath: daemon.socketPath)
        // A large import first (slow: parses, validates, fsyncs), then 50 checks.
        var lines = ""
        for _ in 0..<3000 { lines += BulkFormat.encode(.user(User(id: .random(), tenantId: a.t))) + "\n" }
        var burst: [UInt8] = []
        func append(_ payload: [UInt8]) {
            let n = UInt32(payload.count)
            burst += [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] + payload
        }
        append(WireCodec.encodeRequest(WireRequest(requestId: 1000, call: .success(.importJSONL(Array(lines.utf8))))))
        for i in 0..<50 {
            append(WireCodec.encodeRequest(WireRequest(requestId: UInt64(i + 1), call: .success(.check(CheckCall(tenantId: a.t, userId: a.ana, permission: "gmail.messages.read", scope: .tenant))))))
        }
        raw.send(burst)
        var order: [UInt64] = []
        for _ in 0..<51 {
            guard let f = raw.receiveFrame() else { return XCTFail("connection closed") }
            let r = try f.withUnsafeBytes { try WireCodec.decodeResponse($0) }
            if r.requestId != 1000 {
                guard case .success(.check(let d)) = r.result else { return XCTFail("\(r.result)") }
                XCTAssertEqual(d.reason, .granted)
            }
            order.append(r.requestId)
        }
        XCTAssertEqual(Set(order), Set([1000] + (1...50).map { UInt64($0) }))
        XCTAssertNotEqual(order.first, 1000, "the checks should overtake the import")
        XCTAssertEqual(order.filter { $0 != 1000 }, (1...50).map { UInt64($0) })
    }

    func testMalformedFramesGetErrorsAndOtherConnectionsDoNotNotice() throws {
        let good = try RawConnection(unixPath: daemon.socketPath)
        let bad = try RawConnection(unixPath: daemon.socketPath)
        // Garbage payload: INVALID_ARGUMENT, connection stays usable.
        bad.sendFrame([0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        var r = try bad.receiveFrame()!.withUnsafeBytes { try WireCodec.decodeResponse($0) }
        guard case .failure(let e) = r.result else { return XCTFail() }
        XCTAssertEqual(e.code, .invalidArgument)
        bad.sendFrame(WireCodec.encodeRequest(WireRequest(requestId: 5, call: .success(.health))))
        r = try bad.receiveFrame()!.withUnsafeBytes { try WireCodec.decodeResponse($0) }
        XCTAssertEqual(r.requestId, 5)
        // Oversized length: RESOURCE_EXHAUSTED, then the connection is closed.
        bad.send([0xFF, 0xFF, 0xFF, 0xFF])
        r = try bad.receiveFrame()!.withUnsafeBytes { try WireCodec.decodeResponse($0) }
        guard case .failure(let e2) = r.result else { return XCTFail() }
        XCTAssertEqual(e2.code, .resourceExhausted)
        XCTAssertTrue(bad.isClosedByPeer())
        // The other connection still answers.
        good.sendFrame(WireCodec.encodeRequest(WireRequest(requestId: 6, call: .success(.health))))
        r = try good.receiveFrame()!.withUnsafeBytes { try WireCodec.decodeResponse($0) }
        XCTAssertEqual(r.requestId, 6)
    }

    func testLiveSocketIsNotStolenAndStaleOneIsReplaced() throws {
        // A second daemon on the same socket path (and another data dir) must refuse.
        let other = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: other) }
        let p = Process()
        p.executableURL = productsDirectory().appendingPathComponent("authzd")
        p.arguments = ["serve", "--data-dir", other + "/data", "--socket", daemon.socketPath]
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: daemon.socketPath))
        // Killed daemons leave a stale socket; the next start replaces it.
        daemon.kill9()
        XCTAssertTrue(FileManager.default.fileExists(atPath: daemon.socketPath))
        daemon = try DaemonProcess(dir: daemon.dir, tcp: false)
        let raw = try RawConnection(unixPath: daemon.socketPath)
        raw.sendFrame(WireCodec.encodeRequest(WireRequest(requestId: 1, call: .success(.health))))
        XCTAssertNotNil(raw.receiveFrame())
    }

    func testSecondDaemonOnTheSameDataDirectoryRefuses() throws {
        let p = Process()
        p.executableURL = productsDirectory().appendingPathComponent("authzd")
        p.arguments = ["serve", "--data-dir", daemon.dir + "/data", "--socket", daemon.dir + "/other.sock"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertTrue(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("in use by another authzd"))
    }
}
