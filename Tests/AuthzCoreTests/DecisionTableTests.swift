import AuthzEngine
import AuthzIndex
import AuthzModel
import XCTest

/// The decision rule of the spec, as tables: data, then expected decisions.
final class DecisionTableTests: XCTestCase {
    var dir = ""
    var engine: Engine!

    override func setUpWithError() throws {
        dir = temporaryDirectory()
        engine = try Engine(directory: dir)
    }

    override func tearDown() {
        engine = nil
        try? FileManager.default.removeItem(atPath: dir)
    }

    func expect(_ b: TenantBuilder, _ table: [(String, String, Scope, Reason)], file: StaticString = #filePath, line: UInt = #line) throws {
        for (user, perm, scope, want) in table {
            let got = try engine.check(tenant: b.tenant, user: b.id(user), permission: perm, scope: scope)
            XCTAssertEqual(got.reason, want, "check(\(user), \(perm), \(scope))", file: file, line: line)
            XCTAssertEqual(got.allowed, want == .granted, file: file, line: line)
            // Explain evaluates the same rule from LMDB: the two must agree.
            let ex = try engine.explain(tenant: b.tenant, user: b.id(user), permission: perm, scope: scope)
            XCTAssertEqual(ex.decision.reason, want, "explain(\(user), \(perm), \(scope))", file: file, line: line)
        }
    }

    func testScopeOrder() throws {
        let b = TenantBuilder()
        b.user("ana"); b.user("bob"); b.user("cy")
        b.permission("gmail.messages.read")
        b.role("reader")
        b.grant("reader", "gmail.messages.read", .global)
        b.bind("ana", "reader", .self)
        b.bind("bob", "reader", .tenant)
        b.bind("cy", "reader", .global)
        try b.commit(engine)
        try expect(b, [
            ("ana", "gmail.messages.read", .self, .granted),
            ("ana", "gmail.messages.read", .tenant, .noGrant),
            ("ana", "gmail.messages.read", .global, .noGrant),
            ("bob", "gmail.messages.read", .self, .granted),
            ("bob", "gmail.messages.read", .tenant, .granted),
            ("bob", "gmail.messages.read", .global, .noGrant),
            ("cy", "gmail.messages.read", .global, .granted),
        ])
        // min(s_rb, s_pb): a permission binding at tenant caps a global role binding.
        let b2 = TenantBuilder(name: "beta")
        b2.user("dan")
        b2.permission("core.users.list")
        b2.role("lister")
        b2.grant("lister", "core.users.list", .tenant)
        b2.bind("dan", "lister", .global)
        try b2.commit(engine)
        try expect(b2, [
            ("dan", "core.users.list", .tenant, .granted),
            ("dan", "core.users.list", .global, .noGrant),
        ])
    }

    func testInheritanceChainsAndDiamonds() throws {
        let b = TenantBuilder()
        b.user("ana"); b.user("bob")
        b.permission("gmail.messages.read"); b.permission("gmail.messages.send"); b.permission("core.admin.all")
        b.role("viewer"); b.role("editor", inherits: ["viewer"]); b.role("admin", inherits: ["editor"])
        b.role("left", inherits: ["base"]); b.role("right", inherits: ["base"]); b.role("top", inherits: ["left", "right"]); b.role("base")
        b.grant("viewer", "gmail.messages.read", .tenant)
        b.grant("editor", "gmail.messages.send", .tenant)
        b.grant("admin", "core.admin.all", .global)
        b.grant("base", "core.admin.all", .self)
        b.bind("ana", "admin", .global)
        b.bind("bob", "top", .tenant)
        try b.commit(engine)
        try expect(b, [
            ("ana", "gmail.messages.read", .tenant, .granted),   // depth 2
            ("ana", "gmail.messages.read", .global, .noGrant),   // capped by the viewer grant
            ("ana", "gmail.messages.send", .tenant, .granted),
            ("ana", "core.admin.all", .global, .granted),
            ("bob", "core.admin.all", .self, .granted),          // through the diamond
            ("bob", "core.admin.all", .tenant, .noGrant),
            ("bob", "gmail.messages.read", .self, .noGrant),
        ])
        let ex = try engine.explain(tenant: b.tenant, user: b.id("ana"), permission: "gmail.messages.read", scope: .tenant)
        XCTAssertEqual(ex.roleChainNames, ["admin", "editor", "viewer"])
        XCTAssertEqual(ex.roleBindingId, b.id("rb:ana:admin:global"))
        XCTAssertEqual(ex.permissionBindingId, b.id("pb:viewer:gmail.messages.read:tenant"))
        // Deactivating the middle of the chain breaks it; re-activating restores it.
        try engine.write([.deactivate(RecordRef(kind: .role, tenantId: b.tenant, id: b.id("editor")))])
        try expect(b, [("ana", "gmail.messages.read", .tenant, .noGrant), ("ana", "core.admin.all", .global, .granted)])
        try engine.write([.activate(RecordRef(kind: .role, tenantId: b.tenant, id: b.id("editor")))])
        try expect(b, [("ana", "gmail.messages.read", .tenant, .granted)])
    }

    func testCyclesRejected() throws {
        let b = TenantBuilder()
        b.role("a", inherits: ["b"]); b.role("b", inherits: ["c"]); b.role("c")
        try b.commit(engine)
        let before = engine.revision
        b.role("c", inherits: ["a"])
        XCTAssertThrowsError(try b.commit(engine)) { e in
            let err = e as! AuthzError
            XCTAssertEqual(err.code, .failedPrecondition)
            XCTAssertTrue(err.message.contains("cycle"), err.message)
            XCTAssertEqual(err.field, "role.inherits")
        }
        XCTAssertEqual(engine.revision, before, "a rejected write changes nothing")
        b.role("d", inherits: ["d"])
        XCTAssertThrowsError(try b.commit(engine)) { XCTAssertEqual(($0 as! AuthzError).code, .invalidArgument) }
        // A cycle created within one batch is rejected too.
        b.role("x", inherits: ["y"]); b.role("y", inherits: ["x"])
        XCTAssertThrowsError(try b.commit(engine)) { XCTAssertEqual(($0 as! AuthzError).code, .failedPrecondition) }
    }

    func testSoftDeleteAndReactivationOfEveryKind() throws {
        let b = TenantBuilder()
        b.user("ana")
        b.permission("gmail.messages.read")
        b.role("reader")
        b.grant("reader", "gmail.messages.read", .tenant, name: "pb")
        b.bind("ana", "reader", .tenant, name: "rb")
        try b.commit(engine)
        let granted = [("ana", "gmail.messages.read", Scope.tenant, Reason.granted)]
        try expect(b, granted)
        let cases: [(EntityKind, String, Reason)] = [
            (.tenant, "acme", .inactiveTenant),
            (.user, "ana", .inactiveUser),
            (.role, "reader", .noGrant),
            (.permission, "gmail.messages.read", .inactivePermission),
            (.roleBinding, "rb", .noGrant),
            (.permissionBinding, "pb", .noGrant),
        ]
        for (kind, name, reason) in cases {
            let ref = RecordRef(kind: kind, tenantId: b.tenant, id: b.id(name))
            try engine.write([.deactivate(ref)])
            try expect(b, [("ana", "gmail.messages.read", .tenant, reason)])
            // Soft-deleted records stay readable.
            XCTAssertEqual(try engine.get(ref).fields.isActive, false)
            try engine.write([.activate(ref)])
            try expect(b, granted)
        }
    }

    /// Two permissions swapping names in one batch (the store allows it: names are unique
    /// after each op). The index once removed the name the other permission had just taken.
    func testPermissionsSwappingNamesInOneBatch() throws {
        let b = TenantBuilder()
        b.user("ana"); b.role("r")
        b.permission("a.read"); b.permission("b.read")
        b.bind("ana", "r", .tenant)
        b.grant("r", "a.read", .global)
        try b.commit(engine)
        try expect(b, [("ana", "a.read", .tenant, .granted), ("ana", "b.read", .tenant, .noGrant)])
        let p1 = b.id("a.read"), p2 = b.id("b.read")
        func perm(_ id: ID, _ name: String) -> WriteOp { .upsert(.permission(Permission(id: id, tenantId: b.tenant, name: name, service: String(name.split(separator: ".")[0])))) }
        try engine.write([perm(p1, "tmp.read"), perm(p2, "a.read"), perm(p1, "b.read")])
        // P1 (granted to r) is now "b.read", P2 (not granted) "a.read".
        try expect(b, [("ana", "b.read", .tenant, .granted), ("ana", "a.read", .tenant, .noGrant), ("ana", "tmp.read", .tenant, .unknownPermission)])
        XCTAssertEqual(engine.snapshot.tenant(b.tenant)?.users(with: "b.read", scope: .tenant), [b.id("ana")])
        // A new permission taking a name another gave up in the same batch.
        let p3 = ID.random()
        try engine.write([perm(p3, "tmp.read"), perm(p1, "c.read"), perm(p3, "b.read")])
        try expect(b, [("ana", "c.read", .tenant, .granted), ("ana", "b.read", .tenant, .noGrant), ("ana", "tmp.read", .tenant, .unknownPermission)])
        // A restart compiles the same answers from LMDB.
        engine = nil
        engine = try Engine(directory: dir)
        try expect(b, [("ana", "c.read", .tenant, .granted), ("ana", "b.read", .tenant, .noGrant), ("ana", "a.read", .tenant, .noGrant)])
    }

    /// The nil UUID names no record: never a tenant or a user, even though the index's empty
    /// hash slots are all zeros.
    func testTheNilUUIDIsNeverATenantOrAUser() throws {
        // An empty daemon: nothing to find, and nothing to crash on.
        XCTAssertEqual(try engine.check(tenant: .zero, user: .zero, permission: "a.read", scope: .self).reason, .unknownTenant)
        XCTAssertEqual(try engine.permissions(tenant: .zero, user: .random()).reason, .unknownTenant)
        let b = TenantBuilder()
        b.user("ana"); b.role("r"); b.permission("a.read")
        b.bind("ana", "r", .tenant)
        b.grant("r", "a.read", .global)
        try b.commit(engine)
        XCTAssertEqual(try engine.check(tenant: .zero, user: b.id("ana"), permission: "a.read", scope: .self).reason, .unknownTenant)
        XCTAssertEqual(try engine.check(tenant: b.tenant, user: .zero, permission: "a.read", scope: .self).reason, .unknownUser)
        XCTAssertEqual(try engine.permissions(tenant: b.tenant, user: .zero).reason, .unknownUser)
        XCTAssertEqual(try engine.permissions(tenant: .zero, user: b.id("ana")).reason, .unknownTenant)
    }

    func testCrossTenantReferencesRejected() throws {
        let a = TenantBuilder(name: "a")
        a.user("ana"); a.role("reader"); a.permission("gmail.messages.read")
        try a.commit(engine)
        let b = TenantBuilder(name: "b")
        b.user("bob")
        try b.commit(engine)
        let rb = RoleBinding(id: .random(), tenantId: b.tenant, userId: b.id("bob"), roleId: a.id("reader"), scope: .tenant)
        XCTAssertThrowsError(try engine.write([.upsert(.roleBinding(rb))])) { e in
            let err = e as! AuthzError
            // The same answer as for an id that does not exist: nothing of tenant a leaks.
            XCTAssertEqual(err.code, .notFound)
            XCTAssertEqual(err.field, "role_binding.role_id")
            XCTAssertEqual(err.message, "role_binding.role_id \(a.id("reader")) does not exist")
        }
        let role = Role(id: .random(), tenantId: b.tenant, name: "x", inherits: [a.id("reader")])
        XCTAssertThrowsError(try engine.write([.upsert(.role(role))])) { XCTAssertEqual(($0 as! AuthzError).field, "role.inherits[0]") }
        // A check naming tenant b never sees a's user.
        XCTAssertEqual(try engine.check(tenant: b.tenant, user: a.id("ana"), permission: "gmail.messages.read", scope: .self).reason, .unknownUser)
        // A reference to a record that does not exist.
        let dangling = RoleBinding(id: .random(), tenantId: b.tenant, userId: b.id("bob"), roleId: .random(), scope: .tenant)
        XCTAssertThrowsError(try engine.write([.upsert(.roleBinding(dangling))])) { XCTAssertEqual(($0 as! AuthzError).code, .notFound) }
    }

    func testUnknownVersusMalformed() throws {
        let b = TenantBuilder()
        b.user("ana"); b.permission("gmail.messages.read"); b.role("r")
        try b.commit(engine)
        try expect(b, [
            ("ana", "gmail.messages.write", .self, .unknownPermission),
            ("nobody", "gmail.messages.read", .self, .unknownUser),
        ])
        XCTAssertEqual(try engine.check(tenant: .random(), user: b.id("ana"), permission: "gmail.messages.read", scope: .self).reason, .unknownTenant)
        // Malformed records are errors naming the field and the rule.
        let bad: [(Entity, String)] = [
            (.permission(Permission(id: .random(), tenantId: b.tenant, name: "Gmail Read", service: "gmail")), "permission.name"),
            (.permission(Permission(id: .random(), tenantId: b.tenant, name: "gmail.read", service: "")), "permission.service"),
            (.role(Role(id: .random(), tenantId: b.tenant, name: "")), "role.name"),
            (.role(Role(id: .random(), tenantId: b.tenant, name: "x", scopes: ScopeSet(mask: 0))), "role.scopes"),
            (.user(User(id: .random(), tenantId: b.tenant, metadata: "[1]")), "user.metadata"),
            (.user(User(id: .random(), tenantId: b.tenant, metadata: "{\"a\":\"" + String(repeating: "x", count: 17000) + "\"}")), "user.metadata"),
            (.user(User(id: .random(), tenantId: b.tenant, email: "no-at-sign")), "user.email"),
            (.user(User(id: .zero, tenantId: b.tenant)), "user.id"),
        ]
        for (e, field) in bad {
            XCTAssertThrowsError(try engine.write([.upsert(e)])) { err in
                let ae = err as! AuthzError
                XCTAssertEqual(ae.code, .invalidArgument)
                XCTAssertEqual(ae.field, field, ae.message)
            }
        }
    }

    func testNamesUniqueAndScopesAllowed() throws {
        let b = TenantBuilder()
        b.user("ana"); b.role("viewer", scopes: [.self, .tenant]); b.permission("gmail.messages.read", scopes: [.self])
        try b.commit(engine)
        let dup = Role(id: .random(), tenantId: b.tenant, name: "viewer")
        XCTAssertThrowsError(try engine.write([.upsert(.role(dup))])) { XCTAssertEqual(($0 as! AuthzError).code, .alreadyExists) }
        // The same name in another tenant is fine.
        let other = TenantBuilder(name: "other")
        other.role("viewer")
        XCTAssertNoThrow(try other.commit(engine))
        b.bind("ana", "viewer", .global)
        XCTAssertThrowsError(try b.commit(engine)) { e in
            let err = e as! AuthzError
            XCTAssertEqual(err.field, "role_binding.scope")
            XCTAssertEqual(err.message, "role_binding.scope \"global\" is not in role \"viewer\".scopes [self, tenant]")
        }
        b.grant("viewer", "gmail.messages.read", .tenant)
        XCTAssertThrowsError(try b.commit(engine)) { XCTAssertEqual(($0 as! AuthzError).field, "permission_binding.scope") }
        // Narrowing a role's scopes under an existing binding is rejected.
        b.bind("ana", "viewer", .tenant)
        try b.commit(engine)
        b.role("viewer", scopes: [.self])
        XCTAssertThrowsError(try b.commit(engine)) { XCTAssertEqual(($0 as! AuthzError).field, "role.scopes") }
    }

    func testMinRevision() throws {
        let b = TenantBuilder()
        b.user("ana")
        let rev = try b.commit(engine)
        XCTAssertNoThrow(try engine.check(tenant: b.tenant, user: b.id("ana"), permission: "a.b", scope: .self, minRevision: rev))
        XCTAssertThrowsError(try engine.check(tenant: b.tenant, user: b.id("ana"), permission: "a.b", scope: .self, minRevision: rev + 1)) {
            XCTAssertEqual(($0 as! AuthzError).code, .unavailable)
        }
    }

    func testListings() throws {
        let b = TenantBuilder()
        b.user("ana"); b.user("bob"); b.user("cy", active: false)
        b.permission("gmail.messages.read"); b.permission("gmail.messages.send")
        b.role("reader"); b.role("sender", inherits: ["reader"])
        b.grant("reader", "gmail.messages.read", .global)
        b.grant("sender", "gmail.messages.send", .tenant)
        b.bind("ana", "sender", .global); b.bind("bob", "reader", .self); b.bind("cy", "reader", .global)
        try b.commit(engine)
        let p = try engine.permissions(tenant: b.tenant, user: b.id("ana"))
        XCTAssertEqual(p.permissions.map { "\($0.0)@\($0.1)" }, ["gmail.messages.read@global", "gmail.messages.send@tenant"])
        XCTAssertEqual(try engine.permissions(tenant: b.tenant, user: b.id("cy")).reason, .inactiveUser)
        XCTAssertEqual(Set(try engine.users(tenant: b.tenant, permission: "gmail.messages.read", scope: .self).users), [b.id("ana"), b.id("bob")])
        XCTAssertEqual(try engine.users(tenant: b.tenant, permission: "gmail.messages.read", scope: .global).users, [b.id("ana")])
    }
}
