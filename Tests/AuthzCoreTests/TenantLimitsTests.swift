@testable import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzStore
import Foundation
import XCTest

/// Inheritance depth and tenant size: nothing recurses on the data, limits refuse the write that
/// would pass them, and data already past them still opens, serves and can be repaired.
final class TenantLimitsTests: XCTestCase {
    var dir: String!

    override func setUp() { dir = temporaryDirectory("limits") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func open(_ limits: TenantLimits = TenantLimits()) throws -> Engine {
        var o = EngineOptions()
        o.limits = limits
        o.store.sync = .nosync
        return try Engine(directory: dir, options: o)
    }

    func failure(_ body: () throws -> Void) -> AuthzError? {
        do { try body() } catch let e as AuthzError { return e } catch { return AuthzError(.unknown, "\(error)") }
        return nil
    }

    /// A chain r0 → r1 → … → r(n-1) (r0 inherits r1), a user bound to r0 and a permission
    /// granted to the last role, written in batches of `batch` as a tenant admin would.
    func writeChain(_ e: Engine, tenant t: ID, length n: Int, batch: Int = 2000) throws -> (user: ID, roles: [ID]) {
        let roles = (0..<n).map { _ in ID.random() }
        let user = ID.random(), perm = ID.random()
        try e.write([.upsert(.tenant(Tenant(id: t, name: "deep"))), .upsert(.user(User(id: user, tenantId: t))),
                     .upsert(.permission(Permission(id: perm, tenantId: t, name: "core.deep.read", service: "core")))])
        // The far end first, so every batch only names roles that exist.
        var i = n - 1
        while i >= 0 {
            var ops: [WriteOp] = []
            let low = max(0, i - batch + 1)
            for k in stride(from: i, through: low, by: -1) {
                ops.append(.upsert(.role(Role(id: roles[k], tenantId: t, name: "r\(k)", inherits: k + 1 < n ? [roles[k + 1]] : []))))
            }
            try e.write(ops)
            i = low - 1
        }
        try e.write([.upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: roles[n - 1], permissionId: perm, scope: .global))),
                     .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: user, roleId: roles[0], scope: .global)))])
        return (user, roles)
    }

    func testDefaultDepthLimitRefusesTheWriteThatPassesIt() throws {
        let e = try open()
        let t = ID.random()
        let (user, roles) = try writeChain(e, tenant: t, length: 33)  // 32 hops: at the limit
        XCTAssertEqual(try e.check(tenant: t, user: user, permission: "core.deep.read", scope: .global).reason, .granted)
        // One more role above the top of the chain: 33 hops.
        let extra = Role(id: .random(), tenantId: t, name: "top", inherits: [roles[0]])
        let err = failure { try e.write([.upsert(.role(extra))]) }
        XCTAssertEqual(err?.code, .failedPrecondition)
        XCTAssertEqual(err?.field, "role.inherits")
        XCTAssertTrue(err?.message.contains("max-inheritance-depth is 32") ?? false, err?.message ?? "")
        // Joining in the middle is measured through both ends: a new role below the top that
        // the top also inherits through a fresh link still makes 33 hops.
        let mid = Role(id: .random(), tenantId: t, name: "mid", inherits: [roles[1]])
        let top = Role(id: .random(), tenantId: t, name: "top2", inherits: [mid.fields.id])
        XCTAssertEqual(failure { try e.write([.upsert(.role(mid)), .upsert(.role(top))]) }?.code, .failedPrecondition)
        // Nothing was written by the refused batches.
        XCTAssertNotNil(failure { _ = try e.get(RecordRef(kind: .role, tenantId: t, id: extra.fields.id)) })
        // Re-writing a role of the chain without adding a parent is fine (a rename).
        try e.write([.upsert(.role(Role(id: roles[5], tenantId: t, name: "renamed", inherits: [roles[6]])))])
    }

    func testAdminCannotGrowTenantPastSizeLimits() throws {
        var limits = TenantLimits()
        limits.maxRoles = 3
        limits.maxPermissions = 2
        let e = try open(limits)
        let t = ID.random()
        try e.write([.upsert(.tenant(Tenant(id: t, name: "small")))])
        try e.write((0..<3).map { .upsert(.role(Role(id: .random(), tenantId: t, name: "r\($0)"))) })
        let err = failure { try e.write([.upsert(.role(Role(id: .random(), tenantId: t, name: "r3")))]) }
        XCTAssertEqual(err?.code, .failedPrecondition)
        XCTAssertEqual(err?.message, "tenant \(t) would hold 4 roles; the limit max-roles-per-tenant is 3")
        let p = (0..<3).map { WriteOp.upsert(.permission(Permission(id: .random(), tenantId: t, name: "core.p\($0).read", service: "core"))) }
        XCTAssertEqual(failure { try e.write(p) }?.message, "tenant \(t) would hold 3 permissions; the limit max-permissions-per-tenant is 2")
        // Another tenant has its own budget.
        let u = ID.random()
        try e.write([.upsert(.tenant(Tenant(id: u, name: "other")))] + (0..<3).map { .upsert(.role(Role(id: .random(), tenantId: u, name: "r\($0)"))) })
    }

    /// The attack of the hardening issue: a 40,000-role chain written in ordinary batches under
    /// permissive limits (as data written before limits existed) must compile without recursion,
    /// serve, verify, explain, and refuse only writes that lengthen it once limits are back.
    func testDeepChainWrittenBeforeLimitsStillOpensAndServes() throws {
        var loose = TenantLimits()
        loose.maxInheritanceDepth = .max
        loose.maxRoles = .max
        let t = ID.random()
        let n = 40_000
        var user = ID.zero, roles: [ID] = []
        do {
            let e = try open(loose)
            (user, roles) = try writeChain(e, tenant: t, length: n)
            XCTAssertEqual(try e.check(tenant: t, user: user, permission: "core.deep.read", scope: .global).reason, .granted)
        }
        let e = try open()  // default limits; compiles the 40,000-deep chain at open
        XCTAssertEqual(try e.check(tenant: t, user: user, permission: "core.deep.read", scope: .tenant).reason, .granted)
        XCTAssertEqual(try e.verifyIndex(), [])
        let x = try e.explain(tenant: t, user: user, permission: "core.deep.read", scope: .self)
        XCTAssertEqual(x.roleChain.count, n)
        XCTAssertEqual(x.roleChain.first, roles[0])
        XCTAssertEqual(x.roleChain.last, roles[n - 1])
        // Lengthening is refused; cutting the chain (a repair) is accepted and takes effect.
        XCTAssertEqual(failure { try e.write([.upsert(.role(Role(id: .random(), tenantId: t, name: "top", inherits: [roles[0]])))]) }?.code, .failedPrecondition)
        try e.write([.deactivate(RecordRef(kind: .role, tenantId: t, id: roles[n / 2]))])
        XCTAssertEqual(try e.check(tenant: t, user: user, permission: "core.deep.read", scope: .self).reason, .noGrant)
        try e.write([.upsert(.role(Role(id: roles[10], tenantId: t, name: "r10", inherits: [])))])
    }

    /// One write of a 3,000-role chain (the cubic case of the issue) and a cycle through all of
    /// it: both are decided by one pass over the batch, and the cycle is reported with its path.
    func testLongChainInOneWriteAndItsCycle() throws {
        var loose = TenantLimits()
        loose.maxInheritanceDepth = 10_000
        let e = try open(loose)
        let t = ID.random()
        let (_, roles) = try writeChain(e, tenant: t, length: 3000, batch: 3000)
        let closing = Role(id: roles[2999], tenantId: t, name: "r2999", inherits: [roles[0]])
        let err = failure { try e.write([.upsert(.role(closing))]) }
        XCTAssertEqual(err?.code, .failedPrecondition)
        XCTAssertTrue(err?.message.hasPrefix("role.inherits of role \"r2999\" makes an inheritance cycle: r2999 → r0 → r1 → r2") ?? false, err?.message ?? "")
        XCTAssertTrue(err?.message.hasSuffix("r2998 → r2999") ?? false)
    }

    func testLongestChainHelperIsIterative() {
        // 200,000 nodes in a line would overflow any recursive walk.
        let ids = (0..<200_000).map { _ in ID.random() }
        var next: [ID: [ID]] = [:]
        for i in 0..<(ids.count - 1) { next[ids[i]] = [ids[i + 1]] }
        var memo: [ID: Int] = [:]
        XCTAssertEqual(Engine.longestChain(from: ids[0], next: { next[$0] ?? [] }, memo: &memo), ids.count)
    }
}
