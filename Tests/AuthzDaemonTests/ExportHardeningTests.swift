import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// Hardening 8, 9, 11 and duplicate ids in one import, through a real `authzd serve`.
final class ExportHardeningTests: XCTestCase {
    var daemons: [DaemonProcess] = []

    override func tearDown() {
        for d in daemons { d.stop() }
        for d in daemons { d.remove() }
        daemons = []
    }

    func start(dir: String? = nil, extra: [String] = []) throws -> DaemonProcess {
        let d = try DaemonProcess(dir: dir, extra: extra)
        daemons.append(d)
        return d
    }

    func adminClient(_ daemon: DaemonProcess, _ local: AuthzClient, tenant: ID) async throws -> AuthzClient {
        let (_, secret) = try await local.createKey(tenant: tenant, role: .admin, name: "admin")
        return daemon.client(tcp: true, apiKey: secret)
    }

    func export(_ c: AuthzClient, tenant: ID?, secrets: Bool = false) async throws -> [UInt8] {
        try await c.export(tenant: tenant, includeSecrets: secrets).jsonl
    }

    func lines(_ bytes: [UInt8]) -> [String] {
        String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    func strip(_ bytes: [UInt8]) -> [String] {
        lines(bytes).map { $0.replacingOccurrences(of: #""(created|updated)_at":"[^"]*","#, with: "", options: .regularExpression) }
    }

    func failure(_ body: () async throws -> Void) async -> AuthzError? {
        do { try await body(); return nil } catch let e as AuthzError { return e } catch { return AuthzError(.unknown, "\(error)") }
    }

    /// Hardening 8: an admin of tenant A sends metadata with line breaks whose middle line is a
    /// record of tenant B. Export stays one record per line and re-imports exactly.
    func testAdminMetadataCannotForgeExportLinesOfAnotherTenant() async throws {
        let daemon = try start()
        let local = daemon.client()
        defer { local.close() }
        let ta = ID.random(), tb = ID.random(), ua = ID.random(), forgedId = ID.random()
        try await local.write([.upsert(.tenant(Tenant(id: ta, name: "alpha"))), .upsert(.tenant(Tenant(id: tb, name: "beta"))),
                               .upsert(.user(User(id: .random(), tenantId: tb, email: "bob@beta.test")))])
        let admin = try await adminClient(daemon, local, tenant: ta)
        defer { admin.close() }
        let forged = #"{"kind":"role","id":"\#(forgedId)","tenant_id":"\#(tb)","name":"owned","scopes":["global"]}"#
        let metadata = "{\"x\":\n" + forged + "\n,\"q\":\"\\\"\\n\u{2028}日本\"}"
        try await admin.write([.upsert(.user(User(id: ua, tenantId: ta, email: "ana@alpha.test", metadata: metadata)))])
        let stored = try await admin.get(RecordRef(kind: .user, tenantId: ta, id: ua))
        XCTAssertFalse(stored.fields.metadata.contains("\n"))

        let full = try await export(local, tenant: nil)
        XCTAssertEqual(lines(full).count, 4, String(decoding: full, as: UTF8.self))
        for line in lines(full) {
            XCTAssertNotEqual(try BulkFormat.decode(line: Array(line.utf8)).id, forgedId)
        }
        XCTAssertFalse(String(decoding: full, as: UTF8.self).contains("\u{2028}"))
        // The full export re-imports (it could not before) and changes nothing.
        _ = try await local.importJSONL(full)
        let again = try await export(local, tenant: nil)
        XCTAssertEqual(strip(again), strip(full))
        // ...and into a fresh daemon, exactly.
        let other = try start()
        let fresh = other.client()
        defer { fresh.close() }
        _ = try await fresh.importJSONL(full)
        let imported = try await export(fresh, tenant: nil)
        XCTAssertEqual(strip(imported), strip(full))
        let missing = await failure { _ = try await fresh.get(RecordRef(kind: .role, tenantId: tb, id: forgedId)) }
        XCTAssertEqual(missing?.code, .notFound)
    }

    /// Hardening 11 and duplicate ids: an admin's export imports back with its key; a changed
    /// tenant line is refused naming the line; the same id twice with different content is
    /// refused naming both lines.
    func testAdminReimportsItsOwnExport() async throws {
        let daemon = try start()
        let local = daemon.client()
        defer { local.close() }
        let t = ID.random(), u = ID.random(), r = ID.random()
        try await local.write([.upsert(.tenant(Tenant(id: t, name: "alpha", metadata: #"{"plan":"gold"}"#))),
                               .upsert(.user(User(id: u, tenantId: t, email: "ana@alpha.test", metadata: "{\"k\":\n1}"))),
                               .upsert(.role(Role(id: r, tenantId: t, name: "viewer \"quoted\" é")))])
        let admin = try await adminClient(daemon, local, tenant: t)
        defer { admin.close() }
        let mine = try await export(admin, tenant: nil)
        XCTAssertTrue(lines(mine)[0].contains(#""kind":"tenant""#))
        let n = try await admin.importJSONL(mine).records
        XCTAssertEqual(n, 3)
        let again = try await export(admin, tenant: t)
        XCTAssertEqual(strip(again), strip(mine))

        let renamed = lines(mine).map { $0.replacingOccurrences(of: #""name":"alpha""#, with: #""name":"omega""#) }
        XCTAssertNotEqual(renamed, lines(mine))
        let denied = await failure { _ = try await admin.importJSONL(Array(renamed.joined(separator: "\n").utf8)) }
        XCTAssertEqual(denied?.code, .permissionDenied, "\(String(describing: denied))")
        XCTAssertTrue(denied?.message.hasPrefix("line 1: ") ?? false, "\(String(describing: denied))")

        let userLine = lines(mine).first { $0.contains(#""kind":"user""#) }!
        let changed = userLine.replacingOccurrences(of: "ana@alpha.test", with: "eve@alpha.test")
        let dup = await failure { _ = try await admin.importJSONL(Array((lines(mine) + [changed]).joined(separator: "\n").utf8)) }
        XCTAssertEqual(dup?.code, .invalidArgument, "\(String(describing: dup))")
        XCTAssertTrue(dup?.message.hasPrefix("line 4: ") ?? false, "\(String(describing: dup))")
        XCTAssertTrue(dup?.message.contains("line 2 ") ?? false, "\(String(describing: dup))")
        guard case .user(let still) = try await admin.get(RecordRef(kind: .user, tenantId: t, id: u)) else { return XCTFail() }
        XCTAssertEqual(still.email, "ana@alpha.test")
    }

    /// Hardening 9: a credential whose ciphertext cannot be decrypted (its key left the ring)
    /// fails only the reads that need the secret; an admin can deactivate or overwrite it.
    func testUnreadableSecretFailsOnlyTheReadsThatNeedIt() async throws {
        let base = temporaryDirectory()
        func ring(_ name: String, _ id: String) throws -> String {
            let path = base + "/" + name
            let key = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            try "\(id) \(key) active\n".write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o600)
            return path
        }
        let t = ID.random(), u = ID.random(), bad = ID.random(), good = ID.random()
        let badRef = RecordRef(kind: .platformCredential, tenantId: t, id: bad)
        let first = try start(dir: base, extra: ["--keyring", try ring("ring1", "k1")])
        do {
            let local = first.client()
            defer { local.close() }
            try await local.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t))),
                                   .upsert(.platformCredential(PlatformCredential(id: bad, tenantId: t, ownerUserId: u, platform: "gmail",
                                                                                  externalAccountId: "ana", accessToken: "SECRET-A", refreshToken: "SECRET-R")))])
        }
        first.stop()
        let daemon = try start(dir: base, extra: ["--keyring", try ring("ring2", "k2")])
        let local = daemon.client()
        defer { local.close() }
        let admin = try await adminClient(daemon, local, tenant: t)
        defer { admin.close() }
        try await admin.write([.upsert(.platformCredential(PlatformCredential(id: good, tenantId: t, ownerUserId: u, platform: "gmail",
                                                                              externalAccountId: "good", accessToken: "GOOD")))])
        for c in [local, admin] {
            guard case .platformCredential(let cred) = try await c.get(badRef) else { return XCTFail() }
            XCTAssertTrue(cred.secretUnreadable)
            XCTAssertTrue(cred.secretsRedacted)
            let items = try await c.list(.platformCredential, tenant: t, pageSize: 10).items
            XCTAssertEqual(items.count, 2)
            let tenantExport = String(decoding: try await export(c, tenant: t), as: UTF8.self)
            XCTAssertTrue(tenantExport.contains(#""secret_unreadable":true"#), tenantExport)
            XCTAssertFalse(tenantExport.contains("SECRET"))
            let secretRead = await failure { _ = try await c.get(badRef, includeSecrets: true) }
            XCTAssertEqual(secretRead?.code, .dataLoss)
            XCTAssertTrue(secretRead?.message.contains(bad.description) ?? false, "\(String(describing: secretRead))")
            let secretExport = await failure { _ = try await self.export(c, tenant: t, secrets: true) }
            XCTAssertEqual(secretExport?.code, .dataLoss)
            guard case .platformCredential(let g) = try await c.get(RecordRef(kind: .platformCredential, tenantId: t, id: good), includeSecrets: true) else { return XCTFail() }
            XCTAssertEqual(g.accessToken, "GOOD")
        }
        let fullExport = try await export(local, tenant: nil)
        XCTAssertEqual(lines(fullExport).count, 4)
        // The admin's redacted export imports back; the admin deactivates, then overwrites it.
        _ = try await admin.importJSONL(try await export(admin, tenant: nil))
        try await admin.write([.deactivate(badRef)])
        let deactivated = try await admin.get(badRef)
        XCTAssertFalse(deactivated.fields.isActive)
        try await admin.write([.upsert(.platformCredential(PlatformCredential(id: bad, tenantId: t, ownerUserId: u, platform: "gmail",
                                                                              externalAccountId: "ana", accessToken: "NEW-A")))])
        guard case .platformCredential(let fixed) = try await admin.get(badRef, includeSecrets: true) else { return XCTFail() }
        XCTAssertFalse(fixed.secretUnreadable)
        XCTAssertEqual(fixed.accessToken, "NEW-A")
        XCTAssertFalse(daemon.log.contains("SECRET"))
    }
}
