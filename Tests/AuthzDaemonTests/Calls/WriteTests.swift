import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Write: `Calls/Write.swift` and `Commands/Write.swift`.
final class WriteCallTests: XCTestCase {
    let t = CallTest.tenant, u = CallTest.user

    func testCodec() {
        var role = Role(id: CallTest.key, tenantId: t, name: "admin", scopes: [.tenant], inherits: [u])
        role.fields.updatedAt = 9
        CallTest.assertRoundTrips(.write([.upsert(.user(User(id: u, tenantId: t, email: "a@b.c"))), .upsertIfNewer(.role(role)),
                                          .deactivate(RecordRef(kind: .user, tenantId: t, id: u)), .activate(RecordRef(kind: .tenant, tenantId: t, id: t))]))
        CallTest.assertRoundTrips(.write(revision: 6))
        // An op's error names the op.
        let op = CallTest.field(2, CallTest.varint(1, 2) + CallTest.field(2, t.description) + CallTest.field(3, "nope"))
        XCTAssertEqual(CallTest.decodeError(.write, CallTest.field(1, []) + CallTest.field(1, op))?.field, "write.ops[0]")
        XCTAssertEqual(CallTest.decodeError(.write, CallTest.field(1, op))?.field, "write.ops[0].deactivate.id")
    }

    func testCommand() {
        let user = Call.write([.upsert(.user(User(id: u, tenantId: t)))])
        let tenant = Call.write([.deactivate(RecordRef(kind: .tenant, tenantId: t, id: t))])
        XCTAssertEqual(Dispatcher.lane(user), .writer)
        CallTest.assertSharedRules(user)
        XCTAssertNil(CallTest.refusal(.admin, user))
        XCTAssertEqual(CallTest.refusal(.admin, user, tenant: CallTest.other)?.field, "write.ops[0].tenant_id")
        XCTAssertEqual(CallTest.refusal(.admin, tenant)?.message, "an admin key may not write tenants (write.ops[0])")
        XCTAssertNil(CallTest.refusal(.operator, tenant))
        XCTAssertEqual(CallTest.refusal(.operator, user)?.message, "an operator key may only write tenants (write.ops[0])")
        XCTAssertNotNil(CallTest.refusal(.checker, user))
        XCTAssertNotNil(CallTest.refusal(.gateway, user))
        XCTAssertNil(WriteCommand.readTenants(user))
    }
}
