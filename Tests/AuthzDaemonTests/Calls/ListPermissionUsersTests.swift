import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// ListPermissionUsers: `Calls/ListPermissionUsers.swift` and `Commands/ListPermissionUsers.swift`.
final class ListPermissionUsersCallTests: XCTestCase {
    let call = Call.listPermissionUsers(tenantId: CallTest.tenant, permission: "a.b", scope: .global, pageSize: 10, after: CallTest.user, minRevision: 1)

    func testCodec() {
        CallTest.assertRoundTrips(call)
        CallTest.assertRoundTrips(.permissionUsers([CallTest.user], nextPageToken: CallTest.user.description, revision: 5))
        XCTAssertEqual(CallTest.decodeError(.listPermissionUsers, CallTest.field(1, CallTest.tenant.description))?.message, "list_permission_users.permission must not be empty")
        // page_size 0 is the default, and the ceiling holds.
        let base = CallTest.field(1, CallTest.tenant.description) + CallTest.field(2, "a.b") + CallTest.varint(3, 1)
        for (raw, expected) in [(0, WireCodec.defaultUsersPageSize), (5000, WireCodec.maxPageSize)] {
            let bytes = CallTest.varint(1, 1) + CallTest.field(14, base + CallTest.varint(4, UInt64(raw)))
            guard case .success(.listPermissionUsers(_, _, _, let size, nil, 0)) = bytes.withUnsafeBytes({ WireCodec.decodeRequestWithProtobufC($0) }).call else { return XCTFail() }
            XCTAssertEqual(size, expected)
        }
    }

    func testCommand() {
        XCTAssertEqual(Dispatcher.lane(call), .reader)
        CallTest.assertSharedRules(call)
        XCTAssertNil(CallTest.refusal(.checker, call))
        XCTAssertEqual(CallTest.refusal(.admin, call, tenant: CallTest.other)?.field, "list_permission_users.tenant_id")
        XCTAssertNotNil(CallTest.refusal(.gateway, call))
        XCTAssertNotNil(CallTest.refusal(.operator, call))
    }
}
