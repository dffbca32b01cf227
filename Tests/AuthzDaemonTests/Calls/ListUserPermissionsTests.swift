import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// ListUserPermissions: `Calls/ListUserPermissions.swift` and `Commands/ListUserPermissions.swift`.
final class ListUserPermissionsCallTests: XCTestCase {
    let call = Call.listUserPermissions(tenantId: CallTest.tenant, userId: CallTest.user, minRevision: 2)

    func testCodec() {
        CallTest.assertRoundTrips(call)
        CallTest.assertRoundTrips(.userPermissions(reason: .granted, permissions: [("a.b", .self), ("c.d", .global)], revision: 4))
        XCTAssertEqual(CallTest.decodeError(.listUserPermissions, CallTest.field(1, CallTest.tenant.description))?.message, "list_user_permissions.user_id is required")
    }

    func testCommand() {
        XCTAssertEqual(Dispatcher.lane(call), .inline)
        CallTest.assertSharedRules(call)
        XCTAssertNil(CallTest.refusal(.gateway, call))
        XCTAssertNil(CallTest.refusal(.checker, call))
        XCTAssertEqual(CallTest.refusal(.checker, call, tenant: CallTest.other)?.field, "list_user_permissions.tenant_id")
        XCTAssertNotNil(CallTest.refusal(.operator, call))
    }
}
