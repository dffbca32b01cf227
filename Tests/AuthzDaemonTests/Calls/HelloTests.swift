import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Hello: `Calls/Hello.swift` and `Commands/Hello.swift` (authentication itself: SecurityTests).
final class HelloCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.hello(apiKey: "azk_x", protocolVersion: 1))
        CallTest.assertRoundTrips(.hello(role: .checker, tenantId: CallTest.tenant, keyId: CallTest.key))
        CallTest.assertRoundTrips(.hello(role: nil, tenantId: nil, keyId: nil))
        XCTAssertEqual(CallTest.decodeError(.hello, CallTest.field(2, [0x61, 0xFF]))?.message, "hello.api_key must be valid UTF-8")
    }

    func testCommand() {
        let call = Call.hello(apiKey: "", protocolVersion: 1)
        XCTAssertEqual(Dispatcher.lane(call), .inline)
        CallTest.assertSharedRules(call, open: true)
        for role in KeyRole.allCases { XCTAssertNil(CallTest.refusal(role, call)) }
    }
}
