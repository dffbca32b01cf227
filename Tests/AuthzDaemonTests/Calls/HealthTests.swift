import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Health: `Calls/Health.swift` and `Commands/Health.swift`.
final class HealthCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.health)
        CallTest.assertRoundTrips(.health(serving: true))
    }

    func testCommand() {
        XCTAssertEqual(Dispatcher.lane(.health), .inline)
        CallTest.assertSharedRules(.health, open: true)
        for role in KeyRole.allCases { XCTAssertNil(CallTest.refusal(role, .health)) }
    }
}
