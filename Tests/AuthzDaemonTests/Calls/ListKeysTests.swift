import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// ListKeys: `Calls/ListKeys.swift` and `Commands/ListKeys.swift`.
final class ListKeysCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.listKeys(tenantId: nil))
        CallTest.assertRoundTrips(.listKeys(tenantId: CallTest.tenant))
        CallTest.assertRoundTrips(.listKeys([ApiKey(id: CallTest.key, tenantId: .zero, role: .gateway, name: "edge", createdAt: 1)]))
        XCTAssertEqual(CallTest.decodeError(.listKeys, CallTest.field(1, "x"))?.field, "list_keys.tenant_id")
    }

    func testCommand() {
        let call = Call.listKeys(tenantId: nil)
        XCTAssertEqual(Dispatcher.lane(call), .inline)
        CallTest.assertSharedRules(call)
        XCTAssertNil(CallTest.refusal(.operator, call))
        for role in [KeyRole.admin, .checker, .gateway] { XCTAssertNotNil(CallTest.refusal(role, call)) }
    }
}
