import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// CreateKey: `Calls/CreateKey.swift` and `Commands/CreateKey.swift` (key rules: KeyHardeningTests).
final class CreateKeyCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.createKey(tenantId: CallTest.tenant, role: .admin, name: "ci", expiresAt: 5))
        CallTest.assertRoundTrips(.createKey(ApiKey(id: CallTest.key, tenantId: CallTest.tenant, role: .admin, name: "ci", createdAt: 1, maySeeSecrets: true), secret: "azk_s"))
        XCTAssertEqual(CallTest.decodeError(.createKey, CallTest.varint(2, 9))?.field, "create_key.role")
    }

    func testCommand() {
        let call = Call.createKey(tenantId: nil, role: .operator, name: "", expiresAt: 0)
        XCTAssertEqual(Dispatcher.lane(call), .writer)
        CallTest.assertSharedRules(call)
        XCTAssertNil(CallTest.refusal(.operator, call))
        for role in [KeyRole.admin, .checker, .gateway] { XCTAssertNotNil(CallTest.refusal(role, call)) }
    }
}
