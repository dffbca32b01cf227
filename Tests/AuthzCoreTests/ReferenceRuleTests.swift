import AuthzEngine
import AuthzModel
import Foundation
import XCTest

/// A reference names a record of the right kind in the same tenant (spec: "No reference
/// crosses a tenant"; a reference to a record that does not exist is rejected), whatever the
/// batch validated before it and whether the batch is a write or an import (which defers its
/// puts): a wrong kind answers FAILED_PRECONDITION "is a <kind>, not a <kind>", another
/// tenant's id the same NOT_FOUND as a missing one.
final class ReferenceRuleTests: XCTestCase {
    var dir: String!
    override func setUp() { dir = temporaryDirectory("authzd-refs") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func jsonl(_ entities: [Entity]) -> [UInt8] {
        Array(entities.map { BulkFormat.encode($0, includeSecrets: true) }.joined(separator: "\n").utf8)
    }

    /// Runs `records` as one write and, in a second engine holding the same `base`, as one
    /// import; both must fail with `code` on `field`, and the message must contain `says`.
    func expectRefused(base: [Entity], _ records: [Entity], _ code: AuthzError.Code, field: String, says: String,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        for mode in ["write", "import"] {
            let e = try Engine(directory: dir + "/" + mode + "-" + UUID().uuidString)
            if !base.isEmpty { try e.write(base.map { .upsert($0) }) }
            let before = e.revision
            let attempt: () throws -> Void = mode == "write"
                ? { _ = try e.write(records.map { .upsert($0) }) }
                : { _ = try e.importJSONL(self.jsonl(records)) }
            XCTAssertThrowsError(try attempt(), "\(mode)", file: file, line: line) { err in
                guard let a = err as? AuthzError else { return XCTFail("\(mode): \(err)", file: file, line: line) }
                XCTAssertEqual(a.code, code, "\(mode): \(a.message)", file: file, line: line)
                XCTAssertTrue(a.field.hasSuffix(field), "\(mode): field \(a.field)", file: file, line: line)
                XCTAssertTrue(a.message.contains(says), "\(mode): \(a.message)", file: file, line: line)
            }
            XCTAssertEqual(e.revision, before, "\(mode): nothing of a refused batch is kept", file: file, line: line)
        }
    }

    let a = Tenant(id: .random(), name: "a")
    let b = Tenant(id: .random(), name: "b")

    func user(_ t: Tenant, _ name: String) -> User { User(id: .random(), tenantId: t.fields.id, email: "\(name)@\(t.name).test") }
    func role(_ t: Tenant, _ name: String) -> Role { Role(id: .random(), tenantId: t.fields.id, name: name) }

    func testTheTenantIdIsNotAUser() throws {
        // Every record checks its tenant first; that must not make the tenant id pass as a user.
        let r = role(a, "reader")
        let rb = RoleBinding(id: .random(), tenantId: a.fields.id, userId: a.fields.id, roleId: r.fields.id, scope: .tenant)
        try expectRefused(base: [.tenant(a)], [.role(r), .roleBinding(rb)], .failedPrecondition, field: "role_binding.user_id", says: "is a tenant, not a user")
        // Nor as a role a permission binding or an inheriting role names.
        let p = Permission(id: .random(), tenantId: a.fields.id, name: "mail.read", service: "mail")
        let pb = PermissionBinding(id: .random(), tenantId: a.fields.id, roleId: a.fields.id, permissionId: p.fields.id, scope: .tenant)
        try expectRefused(base: [.tenant(a)], [.permission(p), .permissionBinding(pb)], .failedPrecondition, field: "permission_binding.role_id", says: "is a tenant, not a role")
        var child = role(a, "child")
        child.inherits = [a.fields.id]
        try expectRefused(base: [.tenant(a)], [.role(child)], .failedPrecondition, field: "role.inherits[0]", says: "is a tenant, not a role")
    }

    func testAUserCheckedInOneTenantIsNotFoundInAnother() throws {
        let ua = user(a, "ana"), ra = role(a, "reader"), rbA = role(b, "reader")
        let ok = RoleBinding(id: .random(), tenantId: a.fields.id, userId: ua.fields.id, roleId: ra.fields.id, scope: .tenant)
        let cross = RoleBinding(id: .random(), tenantId: b.fields.id, userId: ua.fields.id, roleId: rbA.fields.id, scope: .tenant)
        // Stored before the batch, and new in the batch.
        try expectRefused(base: [.tenant(a), .tenant(b), .user(ua), .role(ra), .role(rbA)], [.roleBinding(ok), .roleBinding(cross)],
                          .notFound, field: "role_binding.user_id", says: "does not exist")
        try expectRefused(base: [], [.tenant(a), .tenant(b), .user(ua), .role(ra), .role(rbA), .roleBinding(ok), .roleBinding(cross)],
                          .notFound, field: "role_binding.user_id", says: "does not exist")
        // A credential's owner too.
        let cred = PlatformCredential(id: .random(), tenantId: b.fields.id, ownerUserId: ua.fields.id, platform: "gmail", externalAccountId: "ana@a.test", accessToken: "t")
        try expectRefused(base: [.tenant(a), .tenant(b), .user(ua), .role(ra)], [.roleBinding(ok), .platformCredential(cred)],
                          .notFound, field: "platform_credential.owner_user_id", says: "does not exist")
    }

    func testAnIdUsedAsOneKindIsNotAnother() throws {
        // A user the batch checked (or created) is not a role, in a write or an import.
        let u = user(a, "ana"), r = role(a, "reader")
        let p = Permission(id: .random(), tenantId: a.fields.id, name: "mail.read", service: "mail")
        let rb = RoleBinding(id: .random(), tenantId: a.fields.id, userId: u.fields.id, roleId: r.fields.id, scope: .tenant)
        let pb = PermissionBinding(id: .random(), tenantId: a.fields.id, roleId: u.fields.id, permissionId: p.fields.id, scope: .tenant)
        try expectRefused(base: [.tenant(a), .user(u), .role(r), .permission(p)], [.roleBinding(rb), .permissionBinding(pb)],
                          .failedPrecondition, field: "permission_binding.role_id", says: "is a user, not a role")
        try expectRefused(base: [], [.tenant(a), .user(u), .role(r), .permission(p), .roleBinding(rb), .permissionBinding(pb)],
                          .failedPrecondition, field: "permission_binding.role_id", says: "is a user, not a role")
        // A user new in the batch named as a binding's role: the same answer as a write's.
        let wrong = RoleBinding(id: .random(), tenantId: a.fields.id, userId: u.fields.id, roleId: u.fields.id, scope: .tenant)
        try expectRefused(base: [.tenant(a)], [.user(u), .roleBinding(wrong)], .failedPrecondition, field: "role_binding.role_id", says: "is a user, not a role")
    }

    func testCorrectReferencesStillPassInBothModes() throws {
        let u = user(a, "ana"), r = role(a, "reader")
        let p = Permission(id: .random(), tenantId: a.fields.id, name: "mail.read", service: "mail")
        let rb = RoleBinding(id: .random(), tenantId: a.fields.id, userId: u.fields.id, roleId: r.fields.id, scope: .tenant)
        let pb = PermissionBinding(id: .random(), tenantId: a.fields.id, roleId: r.fields.id, permissionId: p.fields.id, scope: .tenant)
        let records: [Entity] = [.tenant(a), .user(u), .role(r), .permission(p), .roleBinding(rb), .permissionBinding(pb)]
        let w = try Engine(directory: dir + "/w")
        try w.write(records.map { .upsert($0) })
        let i = try Engine(directory: dir + "/i")
        _ = try i.importJSONL(jsonl(records))
        for e in [w, i] {
            XCTAssertEqual(try e.check(tenant: a.fields.id, user: u.fields.id, permission: "mail.read", scope: .tenant).reason, .granted)
        }
    }
}
