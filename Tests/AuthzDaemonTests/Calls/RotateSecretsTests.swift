import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// RotateSecrets: `Calls/RotateSecrets.swift` and `Commands/RotateSecrets.swift` (the rotation: SecretRotationTests).
final class RotateSecretsCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.rotateSecrets)
        CallTest.assertRoundTrips(.rotateSecrets(SecretRotationStatus(activeKeyId: "k2", keyIds: ["k1", "k2"], running: true, remaining: 1, reencrypted: 2)))
    }

    func testCommand() {
        XCTAssertEqual(Dispatcher.lane(.rotateSecrets), .writer)
        CallTest.assertSharedRules(.rotateSecrets)
        for role in KeyRole.allCases { XCTAssertNotNil(CallTest.refusal(role, .rotateSecrets)) }
    }
}
