import AuthzEngine
import AuthzModel
@testable import AuthzStore
import Foundation
import XCTest

/// Export → import round-trips (Hardening 8, 11 and duplicate ids) and credentials whose
/// secrets cannot be decrypted (Hardening 9), against the engine and store (no daemon).
final class ExportRoundTripTests: XCTestCase {
    var dir = ""

    override func setUp() { dir = temporaryDirectory("authzd-export") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func engine(_ name: String, ring: String? = nil) throws -> Engine {
        var o = EngineOptions()
        o.store.keyRingPath = ring
        return try Engine(directory: dir + "/" + name, options: o)
    }

    func lines(_ bytes: [UInt8]) -> [String] {
        String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
    }

    /// Every record of every tenant, with the server's timestamps cleared (they differ between
    /// stores by design), secrets included.
    func state(_ e: Engine) throws -> Set<Entity> {
        var out = Set<Entity>()
        try e.store.read { r in
            for t in try r.tenantIDs() {
                try r.forEachRecord(tenant: t) { x in
                    var x = x
                    x.fields.createdAt = 0
                    x.fields.updatedAt = 0
                    out.insert(x)
                }
            }
        }
        return out
    }

    // MARK: 8. metadata cannot forge export lines

    func testMetadataWithLineBreaksCannotForgeExportLines() throws {
        let a = try engine("a")
        let ta = ID.random(), tb = ID.random(), ua = ID.random(), ub = ID.random(), forgedId = ID.random()
        try a.write([.upsert(.tenant(Tenant(id: ta, name: "alpha"))), .upsert(.tenant(Tenant(id: tb, name: "beta"))),
                     .upsert(.user(User(id: ub, tenantId: tb, email: "bob@beta.test")))])
        // Valid JSON (line breaks are whitespace between tokens) whose middle line is a record of
        // tenant B, as an admin of tenant A could send it.
        let forged = #"{"kind":"role","id":"\#(forgedId)","tenant_id":"\#(tb)","name":"owned","scopes":["global"]}"#
        let metadata = "{\"note\":\n" + forged + "\n,\"sep\":\"\u{2028}x\u{2029}\u{85}\",\"esc\":\"a\\nb\\\"c\"}"
        try a.write([.upsert(.user(User(id: ua, tenantId: ta, email: "ana@alpha.test", metadata: metadata)))])

        guard case .user(let stored) = try a.get(RecordRef(kind: .user, tenantId: ta, id: ua)) else { return XCTFail() }
        XCTAssertFalse(stored.fields.metadata.contains("\n"), "metadata stored with a raw line break")
        XCTAssertEqual(stored.fields.metadata, try Validate.canonicalMetadata(metadata, field: "m"))

        for export in [try a.exportJSONL().bytes, try a.exportJSONL(tenant: ta).bytes] {
            let text = String(decoding: export, as: UTF8.self)
            for sep in ["\u{2028}", "\u{2029}", "\u{85}", "\r"] { XCTAssertFalse(text.contains(sep), "raw line separator in export") }
            for line in lines(export) {
                let e = try BulkFormat.decode(line: Array(line.utf8))
                XCTAssertNotEqual(e.id, forgedId, "a line of the export is the forged record of tenant B")
            }
        }
        XCTAssertEqual(lines(try a.exportJSONL().bytes).count, 4)
        XCTAssertEqual(lines(try a.exportJSONL(tenant: ta).bytes).count, 2)

        // The full export re-imports, into the same store and into a fresh one, exactly.
        _ = try a.importJSONL(try a.exportJSONL().bytes)
        let b = try engine("b")
        _ = try b.importJSONL(try a.exportJSONL().bytes)
        XCTAssertEqual(try state(a), try state(b))
        XCTAssertNil(try b.store.read { try $0.locate(forgedId) })
    }

    func testMetadataRepeatingAMemberNameIsRefused() throws {
        let a = try engine("a")
        let t = ID.random()
        for bad in [#"{"a":1,"a":2}"#, #"{"x":{"b":[{"c":1,"c":1}]}}"#] {
            XCTAssertThrowsError(try a.write([.upsert(.tenant(Tenant(id: t, name: "alpha", metadata: bad)))])) { e in
                XCTAssertEqual((e as! AuthzError).code, .invalidArgument)
                XCTAssertEqual((e as! AuthzError).field, "tenant.metadata", "\(e)")
            }
        }
        try a.write([.upsert(.tenant(Tenant(id: t, name: "alpha", metadata: " { \"a\" : [ 1 ,\n 2 ] } ")))])
        guard case .tenant(let stored) = try a.get(RecordRef(kind: .tenant, tenantId: t, id: t)) else { return XCTFail() }
        XCTAssertEqual(stored.fields.metadata, #"{"a":[1,2]}"#)
    }

    // MARK: 9. one unreadable ciphertext

    func ring(_ name: String, _ lines: String) throws -> String {
        let path = dir + "/" + name
        try lines.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        return path
    }

    func key() -> String { Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString() }

    func testUnreadableSecretFailsOnlyTheReadsThatNeedIt() throws {
        let k1 = key(), k2 = key()
        let ring1 = try ring("ring1", "k1 \(k1) active\n")
        let t = ID.random(), u = ID.random(), bad = ID.random(), good = ID.random()
        let badRef = RecordRef(kind: .platformCredential, tenantId: t, id: bad)
        do {
            let a = try engine("data", ring: ring1)
            try a.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t))),
                         .upsert(.platformCredential(PlatformCredential(id: bad, tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana",
                                                                        accessToken: "OLD-ACCESS", refreshToken: "OLD-REFRESH")))])
        }
        // Two ways a ciphertext becomes unreadable: its key left the ring, or a key of the same id
        // that is not the one that sealed it.
        for (broken, keyMissing) in [(try ring("ring2", "k2 \(k2) active\n"), true), (try ring("ring3", "k1 \(k2) active\n"), false)] {
            let a = try engine("data", ring: broken)
            try a.write([.upsert(.platformCredential(PlatformCredential(id: good, tenantId: t, ownerUserId: u, platform: "gmail",
                                                                        externalAccountId: "good", accessToken: "GOOD")))])
            // Redacted reads, listings and exports work and carry the marker.
            guard case .platformCredential(let c) = try a.get(badRef) else { return XCTFail() }
            XCTAssertTrue(c.secretUnreadable)
            XCTAssertTrue(c.secretsRedacted)
            XCTAssertEqual(c.accessToken, "")
            XCTAssertEqual(try a.list(.platformCredential, tenant: t).count, 2)
            for export in [try a.exportJSONL(), try a.exportJSONL(tenant: t)] {
                let text = String(decoding: export.bytes, as: UTF8.self)
                XCTAssertEqual(text.components(separatedBy: #""secret_unreadable":true"#).count, 2, text)
                XCTAssertFalse(text.contains("OLD-"))
            }
            // Reads that need the secret fail closed, naming the credential; the others still work.
            let needSecrets: [() throws -> Void] = [
                { _ = try a.get(badRef, includeSecrets: true) },
                { _ = try a.list(.platformCredential, tenant: t, includeSecrets: true) },
                { _ = try a.exportJSONL(includeSecrets: true) },
                { _ = try a.exportJSONL(tenant: t, includeSecrets: true) },
            ]
            for read in needSecrets {
                XCTAssertThrowsError(try read()) { e in
                    XCTAssertEqual((e as! AuthzError).code, .dataLoss)
                    XCTAssertTrue((e as! AuthzError).message.contains(bad.description), "\(e)")
                }
            }
            guard case .platformCredential(let g) = try a.get(RecordRef(kind: .platformCredential, tenantId: t, id: good), includeSecrets: true) else { return XCTFail() }
            XCTAssertEqual(g.accessToken, "GOOD")
            if keyMissing {
                // Rotation refuses rather than loops or destroys it.
                XCTAssertThrowsError(try a.store.rotateSecrets()) { e in XCTAssertEqual((e as! AuthzError).code, .dataLoss) }
            }
            // Deactivate, activate and a redacted write-back keep the ciphertext byte for byte;
            // a client cannot forge the marker on a readable record.
            try a.write([.deactivate(badRef)])
            try a.write([.upsert(.platformCredential(c))])
            var forged = g.redacted()
            forged.secretUnreadable = true
            try a.write([.upsert(.platformCredential(forged))])
            guard case .platformCredential(let g2) = try a.get(RecordRef(kind: .platformCredential, tenantId: t, id: good), includeSecrets: true) else { return XCTFail() }
            XCTAssertFalse(g2.secretUnreadable)
            XCTAssertEqual(g2.accessToken, "GOOD")
            // The redacted export of this store imports back into it.
            _ = try a.importJSONL(try a.exportJSONL().bytes)
            try a.write([.deactivate(badRef)])
            try a.write([.activate(badRef)])
            try a.write([.deactivate(badRef)])
            guard case .platformCredential(let after) = try a.get(badRef) else { return XCTFail() }
            XCTAssertTrue(after.secretUnreadable)
            XCTAssertFalse(after.fields.isActive)
        }
        // With the original key back, the secret is intact (and the record inactive).
        do {
            let a = try engine("data", ring: try ring("ring4", "k1 \(k1)\nk2 \(k2) active\n"))
            guard case .platformCredential(let c) = try a.get(badRef, includeSecrets: true) else { return XCTFail() }
            XCTAssertEqual(c.accessToken, "OLD-ACCESS")
            XCTAssertEqual(c.refreshToken, "OLD-REFRESH")
            XCTAssertFalse(c.fields.isActive)
        }
        // Without it, an admin overwrites the credential with new tokens.
        let a = try engine("data", ring: try ring("ring5", "k2 \(k2) active\n"))
        try a.write([.upsert(.platformCredential(PlatformCredential(id: bad, tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana",
                                                                    accessToken: "NEW-ACCESS")))])
        guard case .platformCredential(let c) = try a.get(badRef, includeSecrets: true) else { return XCTFail() }
        XCTAssertFalse(c.secretUnreadable)
        XCTAssertEqual(c.accessToken, "NEW-ACCESS")
        XCTAssertTrue(c.fields.isActive)
        try a.write([.upsert(.platformCredential(PlatformCredential(id: good, tenantId: t, ownerUserId: u, platform: "gmail",
                                                                    externalAccountId: "good", accessToken: "GOOD")))])
        XCTAssertNoThrow(try a.exportJSONL(includeSecrets: true))
    }
}
