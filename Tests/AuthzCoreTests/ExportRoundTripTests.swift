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
}
