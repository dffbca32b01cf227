import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// The Hardening issue's key items, against a real `authzd serve`: operators cannot reach
/// tenant secrets (item 6); keys leak nothing about which ids exist and have one spelling
/// (item 13).
final class KeyHardeningTests: XCTestCase {
    var daemon: DaemonProcess!

    override func setUpWithError() throws { daemon = try DaemonProcess() }

    override func tearDown() {
        daemon.stop()
        daemon.remove()
    }

    func error(_ client: AuthzClient, _ call: Call) async -> AuthzError? {
        do {
            _ = try await client.call(call)
            return nil
        } catch let e as AuthzError {
            return e
        } catch {
            return AuthzError(.unknown, "\(error)")
        }
    }

    func tcpClient(_ key: String) -> AuthzClient {
        let c = daemon.client(tcp: true, apiKey: key)
        return c
    }

    /// Item 6: an operator key creates a tenant and an admin key for it; that admin key manages
    /// the tenant's data but can never read its credential secrets, before and after a restart.
    /// An admin key created locally (the daemon's uid on the Unix socket) still can.
    func testOperatorMintedAdminKeyCannotReadSecrets() async throws {
        let local = daemon.client()
        let (_, operatorSecret) = try await createKey(local, nil, .operator)
        let op = tcpClient(operatorSecret)
        let t = ID.random(), u = ID.random(), cred = ID.random()
        _ = try await op.write([.upsert(.tenant(Tenant(id: t, name: "acme")))])
        let (_, opAdminSecret) = try await createKey(op, t, .admin)
        let (_, localAdminSecret) = try await createKey(local, t, .admin)

        let admin = tcpClient(opAdminSecret)
        // The operator's admin key administers the tenant, secrets included (writing is fine).
        _ = try await admin.write([.upsert(.user(User(id: u, tenantId: t))),
                                   .upsert(.platformCredential(PlatformCredential(id: cred, tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana",
                                                                                  accessToken: "tok-ACCESS-op-SECRET", refreshToken: "tok-REFRESH-op-SECRET")))])
        let ref = RecordRef(kind: .platformCredential, tenantId: t, id: cred)
        let reads: [Call] = [.get(ref, includeSecrets: true),
                             .list(.platformCredential, tenantId: t, pageSize: 10, after: nil, includeSecrets: true),
                             .export(tenantId: t, includeSecrets: true)]

        func assertLocked(_ admin: AuthzClient, _ when: String) async throws {
            for call in reads {
                let e = await error(admin, call)
                XCTAssertEqual(e?.code, .permissionDenied, "\(when): \(call.name) with include_secrets by an operator-made admin key gave \(e.map { "\($0)" } ?? "success")")
                XCTAssertFalse(e?.message.contains("SECRET") ?? false)
            }
            // Redacted reads still work.
            guard case .platformCredential(let redacted) = try await admin.get(ref) else { return XCTFail("not a credential") }
            XCTAssertFalse(redacted.accessToken.contains("SECRET"), when)
            let (bytes, _) = try await admin.export(tenant: t)
            XCTAssertFalse(String(decoding: bytes, as: UTF8.self).contains("SECRET"), when)
        }

        func assertOpen(_ when: String) async throws {
            let owner = tcpClient(localAdminSecret)
            defer { owner.close() }
            guard case .platformCredential(let c) = try await owner.get(ref, includeSecrets: true) else { return XCTFail("not a credential") }
            XCTAssertEqual(c.accessToken, "tok-ACCESS-op-SECRET", when)
            let (bytes, _) = try await owner.export(tenant: t, includeSecrets: true)
            XCTAssertTrue(String(decoding: bytes, as: UTF8.self).contains("tok-REFRESH-op-SECRET"), when)
        }

        try await assertLocked(admin, "before restart")
        try await assertOpen("before restart")
        admin.close()
        // The operator itself still reads no tenant data.
        let opRead = await error(op, .get(ref, includeSecrets: true))
        XCTAssertEqual(opRead?.code, .permissionDenied)
        op.close()
        local.close()  // every client closes before its daemon stops

        // The flag is stored with the key: it survives a restart.
        daemon.stop()
        daemon = try DaemonProcess(dir: daemon.dir)
        let again = tcpClient(opAdminSecret)
        defer { again.close() }
        try await assertLocked(again, "after restart")
        try await assertOpen("after restart")
    }

    /// Item 13: an unknown key id and a known id with a wrong secret get the same answer.
    func testUnknownKeyAndWrongSecretAnswerAlike() async throws {
        let local = daemon.client()
        defer { local.close() }
        let t = ID.random()
        _ = try await local.write([.upsert(.tenant(Tenant(id: t, name: "acme")))])
        let (k, secret) = try await createKey(local, t, .checker)
        let check = Call.check(CheckCall(tenantId: t, userId: .random(), permission: "a.b", scope: .self))
        let wrongSecret = String(secret.prefix(37)) + String(repeating: secret.hasSuffix("0") ? "1" : "0", count: 64)
        let unknownId = "azk_" + String(repeating: "ab", count: 16) + "_" + String(secret.suffix(64))
        var messages: [String] = []
        for presented in [wrongSecret, unknownId] {
            let c = tcpClient(presented)
            defer { c.close() }
            let e = await error(c, check)
            XCTAssertEqual(e?.code, .unauthenticated)
            messages.append(e?.message ?? "")
        }
        let unknownIdText = "abababab-abab-abab-abab-abababababab"
        XCTAssertEqual(messages[0].replacingOccurrences(of: k.id.description, with: "ID"),
                       messages[1].replacingOccurrences(of: unknownIdText, with: "ID"),
                       "an unknown key id and a wrong secret must be indistinguishable")
        XCTAssertTrue(messages[0].contains("is not valid"), messages[0])
    }

    /// Item 13: only the documented spelling `azk_<32 lowercase hex>_<64 lowercase hex>` is a
    /// key; upper case or a sign in the hex is malformed, not another spelling of the same key.
    func testOnlyTheLowercaseKeyFormAuthenticates() async throws {
        let local = daemon.client()
        defer { local.close() }
        let t = ID.random()
        _ = try await local.write([.upsert(.tenant(Tenant(id: t, name: "acme")))])
        let (_, secret) = try await createKey(local, t, .checker)
        let check = Call.check(CheckCall(tenantId: t, userId: .random(), permission: "a.b", scope: .self))
        let good = tcpClient(secret)
        defer { good.close() }
        let ok = await error(good, check)
        XCTAssertNil(ok)
        let upper = "azk_" + secret.dropFirst(4).uppercased()
        let body = Array(secret)
        // A lenient hex parser reads "+x" as "0x": swap the first secret byte written "0x".
        var plus = secret
        if let i = (37..<101).first(where: { $0 % 2 == 1 && body[$0] == "0" }) {
            plus = String(body[0..<i]) + "+" + String(body[(i + 1)...])
        }
        for variant in [upper, plus] where variant != secret {
            let c = tcpClient(variant)
            defer { c.close() }
            let e = await error(c, check)
            XCTAssertEqual(e?.code, .unauthenticated, "\(variant) should not authenticate")
            XCTAssertTrue(e?.message.contains("malformed") ?? false, e?.message ?? "")
        }
    }
}
