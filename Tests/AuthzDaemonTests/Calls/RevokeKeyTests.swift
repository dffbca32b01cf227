import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// RevokeKey: `Calls/RevokeKey.swift` and `Commands/RevokeKey.swift`.
final class RevokeKeyCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.revokeKey(id: CallTest.key, expiresAt: 0))
        CallTest.assertRoundTrips(.revokeKey(ApiKey(id: CallTest.key, tenantId: CallTest.tenant, role: .checker, name: "", createdAt: 1, revokedAt: 2)))
        XCTAssertEqual(CallTest.decodeError(.revokeKey, [])?.message, "revoke_key.key_id is required")
    }

    func testCommand() {
        let call = Call.revokeKey(id: CallTest.key, expiresAt: 0)
        XCTAssertEqual(Dispatcher.lane(call), .writer)
        CallTest.assertSharedRules(call)
        XCTAssertNil(CallTest.refusal(.operator, call))
        for role in [KeyRole.admin, .checker, .gateway] { XCTAssertNotNil(CallTest.refusal(role, call)) }
    }
}
