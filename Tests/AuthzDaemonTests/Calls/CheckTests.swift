import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Check: `Calls/Check.swift` and `Commands/Check.swift`.
final class CheckCallTests: XCTestCase {
    let c = CheckCall(tenantId: CallTest.tenant, userId: CallTest.user, permission: "gmail.messages.read", scope: .tenant, minRevision: 5)

    func testCodec() {
        CallTest.assertRoundTrips(.check(c))
        CallTest.assertRoundTrips(.check(Decision(reason: .granted, revision: 3)))
        let message = CallTest.field(1, CallTest.tenant.description) + CallTest.field(2, "nope") + CallTest.field(3, "a.b") + CallTest.varint(4, 1)
        XCTAssertEqual(CallTest.decodeError(.check, message)?.message, "check.user_id must be a UUID in 8-4-4-4-12 form (got \"nope\")")
        XCTAssertEqual(CallTest.decodeError(.check, CallTest.field(1, CallTest.tenant.description) + CallTest.field(2, CallTest.user.description) + CallTest.varint(4, 1))?.field, "check.permission")
    }

    func testCommand() {
        XCTAssertEqual(Dispatcher.lane(.check(c)), .inline)
        CallTest.assertSharedRules(.check(c))
        XCTAssertNil(CallTest.refusal(.gateway, .check(c)))
        XCTAssertNil(CallTest.refusal(.checker, .check(c)))
        XCTAssertEqual(CallTest.refusal(.admin, .check(c), tenant: CallTest.other)?.field, "check.tenant_id")
        XCTAssertEqual(CallTest.refusal(.operator, .check(c))?.message, "a operator key may not call Check (operators manage tenants and keys only)")
        XCTAssertEqual(CheckCommand.readTenants(.check(c)), [CallTest.tenant])
    }
}
