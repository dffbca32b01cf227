import AuthzEngine
import AuthzIndex
import AuthzModel
import Foundation
import XCTest

/// Imports write their keys deferred and sorted (`MDB_APPEND` into empty databases) and decode
/// large chunks on two threads: the same rules and answers as any other write, checked here
/// where the deferral could hide a record from validation.
final class BulkImportTests: XCTestCase {
    var dir = ""

    override func setUp() { dir = temporaryDirectory("authzd-bulk") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func engine(_ name: String = "e") throws -> Engine { try Engine(directory: dir + "/" + name) }

    func jsonl(_ entities: [Entity]) -> [UInt8] {
        Array(entities.map { BulkFormat.encode($0) }.joined(separator: "\n").utf8)
    }

    func testTwoRecordsClaimingOneNameInAnImportAreRefused() throws {
        let e = try engine()
        let t = ID.random()
        let file = jsonl([
            .tenant(Tenant(id: t, name: "acme")),
            .role(Role(id: ID.random(), tenantId: t, name: "viewer", scopes: .all, inherits: [])),
            .role(Role(id: ID.random(), tenantId: t, name: "viewer", scopes: .all, inherits: [])),
        ])
        XCTAssertThrowsError(try e.importJSONL(file)) { err in
            let a = err as! AuthzError
            XCTAssertEqual(a.code, .alreadyExists, a.message)
            XCTAssertEqual(a.field, "role.name")
            XCTAssertTrue(a.message.hasPrefix("line 3: "), a.message)
        }
        XCTAssertEqual(e.revision, 0)
        // Two tenants of one name too (tenant names are unique in the daemon).
        XCTAssertThrowsError(try e.importJSONL(jsonl([.tenant(Tenant(id: ID.random(), name: "x")), .tenant(Tenant(id: ID.random(), name: "x"))])))
        XCTAssertEqual(e.revision, 0)
    }

    /// A role's scopes are checked against its stored bindings as the import leaves them, not
    /// as LMDB held them before the import's (deferred) puts.
    func testAnImportNarrowingARoleSeesItsBindingsAsTheImportLeavesThem() throws {
        let e = try engine()
        let b = TenantBuilder()
        b.user("ana")
        b.role("editor", scopes: [.self, .tenant])
        b.permission("doc.read")
        b.grant("editor", "doc.read", .tenant)
        let binding = b.bind("ana", "editor", .self)
        try b.commit(e)
        let role = Role(id: b.id("editor"), tenantId: b.tenant, name: "editor", scopes: [.tenant], inherits: [])
        let moved = RoleBinding(id: binding, tenantId: b.tenant, userId: b.id("ana"), roleId: b.id("editor"), scope: .tenant)
        // The binding moves to the new scope in the same import: accepted.
        _ = try e.importJSONL(jsonl([.role(role), .roleBinding(moved)]))
        XCTAssertEqual(try e.check(tenant: b.tenant, user: b.id("ana"), permission: "doc.read", scope: .tenant).reason, .granted)
        // Narrowing again below the binding's scope, binding unchanged: refused, nothing kept.
        let before = e.revision
        let narrower = Role(id: b.id("editor"), tenantId: b.tenant, name: "editor", scopes: [.self], inherits: [])
        XCTAssertThrowsError(try e.importJSONL(jsonl([.role(narrower)]))) { err in
            XCTAssertEqual((err as! AuthzError).code, .failedPrecondition)
        }
        XCTAssertEqual(e.revision, before)
        XCTAssertEqual(try e.verifyIndex(), [])
    }

    /// A second tenant's keys sort between the first tenant's: plain puts in order, not
    /// appends; the result reads back exactly and the index agrees with a fresh compile.
    func testImportsIntoANonEmptyStoreReadBackExactly() throws {
        let exported = try importThreeTenants()
        // Reopened: what was appended is really in the B-trees.
        let reopened = try engine()
        XCTAssertEqual(try reopened.verifyIndex(), [])
        XCTAssertEqual(try reopened.exportJSONL().bytes, exported)
    }

    /// Imports three random tenants one after the other and checks them; returns the export.
    func importThreeTenants() throws -> [UInt8] {
        let e = try engine()
        var all: [ID: Entity] = [:]
        var rng = SplitMix(seed: 7)
        for _ in 0..<3 {
            var records: [Entity] = []
            let t = ID.random(using: &rng)
            records.append(.tenant(Tenant(id: t, name: "t-\(t)")))
            var roles: [ID] = [], users: [ID] = [], perms: [ID] = []
            for i in 0..<20 { let r = ID.random(using: &rng); roles.append(r); records.append(.role(Role(id: r, tenantId: t, name: "role-\(i)", scopes: .all, inherits: i > 0 && i % 3 == 0 ? [roles[i - 1]] : []))) }
            for i in 0..<30 { let p = ID.random(using: &rng); perms.append(p); records.append(.permission(Permission(id: p, tenantId: t, name: "svc.p\(i)", service: "svc", scopes: .all))) }
            for i in 0..<200 { let u = ID.random(using: &rng); users.append(u); records.append(.user(User(id: u, tenantId: t, email: "u\(i)@x.test"))) }
            for u in users { records.append(.roleBinding(RoleBinding(id: ID.random(using: &rng), tenantId: t, userId: u, roleId: roles.randomElement(using: &rng)!, scope: Scope.allCases.randomElement(using: &rng)!))) }
            for r in roles { records.append(.permissionBinding(PermissionBinding(id: ID.random(using: &rng), tenantId: t, roleId: r, permissionId: perms.randomElement(using: &rng)!, scope: .global))) }
            records.shuffle(using: &rng)
            _ = try e.importJSONL(jsonl(records))
            for r in records { all[r.id] = r }
        }
        XCTAssertEqual(try e.verifyIndex(), [])
        for (id, want) in all {
            let got = try e.get(RecordRef(kind: want.kind, tenantId: want.tenantId, id: id))
            XCTAssertEqual(got.id, id)
            XCTAssertEqual(got.kind, want.kind)
        }
        return try e.exportJSONL().bytes
    }

    /// Chunks large enough to be decoded on two threads keep line order: the first bad line
    /// (by number) is the one reported, whichever half it is in.
    func testLargeChunksReportTheFirstBadLine() throws {
        let e = try engine()
        let t = ID.random()
        var lines = [BulkFormat.encode(.tenant(Tenant(id: t, name: "acme")))]
        for i in 0..<9_000 { lines.append(BulkFormat.encode(.user(User(id: ID.random(), tenantId: t, email: "u\(i)@acme.test")))) }
        for bad in [7_000, 2_000] {
            var copy = lines
            copy[bad - 1] = #"{"kind":"user","id":"not-a-uuid"}"#
            copy[8_500] = #"{"kind":"nope"}"#
            XCTAssertThrowsError(try e.importJSONL(Array(copy.joined(separator: "\n").utf8))) { err in
                XCTAssertTrue((err as! AuthzError).message.hasPrefix("line \(bad): "), (err as! AuthzError).message)
            }
        }
        XCTAssertEqual(e.revision, 0)
        let (_, n) = try e.importJSONL(Array(lines.joined(separator: "\n").utf8))
        XCTAssertEqual(n, 9_001)
        XCTAssertEqual(try e.verifyIndex(), [])
    }
}
