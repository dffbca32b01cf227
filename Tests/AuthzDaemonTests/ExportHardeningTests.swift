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
        guard case .createKey(_, let secret) = try await local.call(.createKey(tenantId: tenant, role: .admin, name: "admin", expiresAt: 0)) else {
            throw AuthzError(.internal, "no key")
        }
        let c = daemon.client(tcp: true)
        c.apiKey = secret
        return c
    }

    func export(_ c: AuthzClient, tenant: ID?, secrets: Bool = false) async throws -> [UInt8] {
        guard case .export(let bytes, _) = try await c.call(.export(tenantId: tenant, includeSecrets: secrets)) else { throw AuthzError(.internal, "no export") }
        return bytes
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
        _ = try await local.call(.importJSONL(full))
        let again = try await export(local, tenant: nil)
        XCTAssertEqual(strip(again), strip(full))
        // ...and into a fresh daemon, exactly.
        let other = try start()
        let fresh = other.client()
        defer { fresh.close() }
        _ = try await fresh.call(.importJSONL(full))
        let imported = try await export(fresh, tenant: nil)
        XCTAssertEqual(strip(imported), strip(full))
        let missing = await failure { _ = try await fresh.get(RecordRef(kind: .role, tenantId: tb, id: forgedId)) }
        XCTAssertEqual(missing?.code, .notFound)
    }
}
