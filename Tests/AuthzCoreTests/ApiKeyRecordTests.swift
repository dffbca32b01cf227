import AuthzModel
@testable import AuthzStore
import Foundation
import XCTest

/// API keys: the one accepted spelling (item 13 of the Hardening issue) and the stored record's
/// versions (item 6: the secrets flag, with records written before it still loading).
final class ApiKeyRecordTests: XCTestCase {
    var dir = ""

    override func setUp() { dir = temporaryDirectory("authzd-keyrec") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testParseAcceptsExactlyTheDocumentedForm() throws {
        let id = ID.random()
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let text = ApiKey.format(id: id, secret: secret)
        let parsed = try XCTUnwrap(ApiKey.parse(text))
        XCTAssertEqual(parsed.0, id)
        XCTAssertEqual(parsed.1, secret)
        let idHex = String(text.dropFirst(4).prefix(32)), secretHex = String(text.suffix(64))
        let zeroSecret = String(repeating: "0", count: 62) + "0a"
        let rejected = [
            "azk_" + idHex.uppercased() + "_" + secretHex,                     // upper-case id
            "azk_" + idHex + "_" + secretHex.uppercased(),                     // upper-case secret
            "azk_" + idHex + "_" + String(zeroSecret.dropLast(2)) + "+a",       // "+a" is not "0a"
            "AZK_" + idHex + "_" + secretHex,
            "azk_" + idHex + "_" + secretHex + "0",
            "azk_" + idHex + "_" + String(secretHex.dropLast()),
            "azk_" + idHex + "__" + String(secretHex.dropLast()),
            " azk_" + idHex + "_" + String(secretHex.dropLast()),
            "azk_" + idHex + "_" + String(secretHex.dropLast()) + "g",
            "azk_" + String(idHex.prefix(8)) + "-" + String(idHex.dropFirst(9)) + "_" + secretHex,
        ]
        for r in rejected {
            XCTAssertNil(ApiKey.parse(r), r)
        }
        XCTAssertNotNil(ApiKey.parse("azk_" + idHex + "_" + zeroSecret))
    }

    /// A key record stored before keys carried the secrets flag still loads, and fails closed:
    /// it may not read secrets. A new record round-trips the flag and the creator, and still
    /// starts with what older builds read.
    func testOldKeyRecordsLoadAndMayNotReadSecrets() throws {
        let store = try Store(directory: dir)
        let old = ID.random(), tenant = ID.random()
        var w = ByteWriter()
        w.u8(1)
        w.u8(KeyRole.admin.rawValue)
        w.id(tenant)
        w.i64(1_000)
        w.i64(0)
        w.i64(0)
        w.bytes(Array(repeating: 7, count: 32))
        w.str("legacy admin")
        let txn = try LMDBTransaction(env: store.env, readOnly: false)
        try txn.put(store.keysDB, Store.idKey(old), w.bytes)
        try txn.commit()

        let creator = ID.random()
        let new = ApiKey(id: .random(), tenantId: tenant, role: .admin, name: "new", createdAt: 2_000, secretHash: [9, 9],
                         maySeeSecrets: true, createdBy: creator)
        try store.putKey(new)
        let keys = Dictionary(uniqueKeysWithValues: try store.keys().map { ($0.id, $0) })
        let legacy = try XCTUnwrap(keys[old])
        XCTAssertEqual(legacy.role, .admin)
        XCTAssertEqual(legacy.tenantId, tenant)
        XCTAssertEqual(legacy.name, "legacy admin")
        XCTAssertEqual(legacy.createdAt, 1_000)
        XCTAssertFalse(legacy.maySeeSecrets, "who created a version-1 key is unknown: it must not read secrets")
        XCTAssertEqual(legacy.createdBy, .zero)
        XCTAssertEqual(keys[new.id], new)
        // What an older build reads (up to the name) is unchanged: the new fields only trail.
        var oldForm = ByteWriter()
        oldForm.u8(1)
        oldForm.u8(new.role.rawValue)
        oldForm.id(new.tenantId)
        oldForm.i64(new.createdAt)
        oldForm.i64(new.expiresAt)
        oldForm.i64(new.revokedAt)
        oldForm.bytes(new.secretHash)
        oldForm.str(new.name)
        XCTAssertEqual(Array(Store.encodeKey(new).prefix(oldForm.bytes.count)), oldForm.bytes)
    }
}
