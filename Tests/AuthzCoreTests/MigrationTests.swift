import AuthzEngine
import AuthzModel
@testable import AuthzStore
import Foundation
import XCTest

final class MigrationTests: XCTestCase {
    var dir = ""

    override func setUp() { dir = temporaryDirectory("authzd-migrate") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func setMeta(_ store: Store, _ key: String, _ bytes: [UInt8]?) throws {
        let txn = try LMDBTransaction(env: store.env, readOnly: false)
        if let bytes { try txn.put(store.meta, Array(key.utf8), bytes) } else { try txn.delete(store.meta, Array(key.utf8)) }
        try txn.commit()
    }

    /// A data directory in format 1: records, no per-kind counts, `format` = 1.
    func makeFormat1Directory() throws -> (ID, Int) {
        let t = ID.random()
        var ops: [WriteOp] = [.upsert(.tenant(Tenant(id: t, name: "old")))]
        for _ in 0..<25 { ops.append(.upsert(.user(User(id: .random(), tenantId: t)))) }
        let store = try Store(directory: dir)
        _ = try store.write(ops)
        for k in EntityKind.allCases { try setMeta(store, "count.\(k.name)", nil) }
        var one = UInt32(1).littleEndian
        try setMeta(store, "format", withUnsafeBytes(of: &one) { Array($0) })
        return (t, 25)
    }

    func testFormat1IsMigratedOrRefusedOnRequest() throws {
        let (t, users) = try makeFormat1Directory()
        var o = StoreOptions()
        o.autoMigrate = false
        XCTAssertThrowsError(try Store(directory: dir, options: o)) { e in
            let m = (e as! AuthzError).message
            XCTAssertTrue(m.contains("format version 1") && m.contains("format version \(Store.formatVersion)"), m)
        }
        let store = try Store(directory: dir)
        XCTAssertEqual(try store.format(), Store.formatVersion)
        XCTAssertEqual(try store.read { try $0.counts() }.byKind[.user], users)
        XCTAssertEqual(try store.read { try $0.counts() }.byKind[.tenant], 1)
        XCTAssertNotNil(try store.read { try $0.entity(.tenant, tenant: t, id: t) })
    }

    func testNewerFormatIsRefusedNamingBothVersions() throws {
        do {
            let store = try Store(directory: dir)
            var v = UInt32(Store.formatVersion + 1).littleEndian
            try setMeta(store, "format", withUnsafeBytes(of: &v) { Array($0) })
        }
        XCTAssertThrowsError(try Store(directory: dir)) { e in
            XCTAssertEqual((e as! AuthzError).code, .failedPrecondition)
            XCTAssertTrue((e as! AuthzError).message.contains("format version \(Store.formatVersion + 1), newer than this authzd (format version \(Store.formatVersion))"))
        }
    }
}
