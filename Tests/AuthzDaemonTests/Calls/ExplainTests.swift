import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Explain: `Calls/Explain.swift` and `Commands/Explain.swift`.
final class ExplainCallTests: XCTestCase {
    let c = CheckCall(tenantId: CallTest.tenant, userId: CallTest.user, permission: "a.b", scope: .global, minRevision: 1)

    func testCodec() {
        CallTest.assertRoundTrips(.explain(c))
        var x = Explanation(decision: Decision(reason: .granted, revision: 4))
        x.roleBindingId = CallTest.key; x.roleBindingScope = .tenant; x.roleChain = [CallTest.user]; x.roleChainNames = ["admin"]
        CallTest.assertRoundTrips(.explain(x))
        XCTAssertEqual(CallTest.decodeError(.explain, [])?.field, "explain.check")
    }

    func testCommand() {
        XCTAssertEqual(Dispatcher.lane(.explain(c)), .reader)
        CallTest.assertSharedRules(.explain(c))
        XCTAssertNil(CallTest.refusal(.checker, .explain(c)))
        XCTAssertEqual(CallTest.refusal(.admin, .explain(c), tenant: CallTest.other)?.field, "explain.check.tenant_id")
        XCTAssertEqual(CallTest.refusal(.gateway, .explain(c))?.message, "a gateway key may not call Explain (gateway keys may check, batch check, list a user's permissions and watch only)")
        XCTAssertNotNil(CallTest.refusal(.operator, .explain(c)))
    }
}
