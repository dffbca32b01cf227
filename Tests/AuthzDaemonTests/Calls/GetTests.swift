import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Get: `Calls/Get.swift` and `Commands/Get.swift`.
final class GetCallTests: XCTestCase {
    let ref = RecordRef(kind: .platformCredential, tenantId: CallTest.tenant, id: CallTest.key)

    func testCodec() {
        CallTest.assertRoundTrips(.get(ref, includeSecrets: true))
        var c = PlatformCredential(id: CallTest.key, tenantId: CallTest.tenant, ownerUserId: CallTest.user, platform: "gmail", externalAccountId: "a")
        c.secretsRedacted = true
        c.fields.createdAt = 5
        CallTest.assertRoundTrips(.get(.platformCredential(c)))
        XCTAssertEqual(CallTest.decodeError(.get, [])?.field, "get.ref")
        XCTAssertEqual(CallTest.decodeError(.get, CallTest.field(1, CallTest.varint(1, 9)))?.message, "get.ref.kind has unknown value 9")
    }

    func testCommand() {
        let tenantRef = RecordRef(kind: .tenant, tenantId: CallTest.tenant, id: CallTest.tenant)
        XCTAssertEqual(Dispatcher.lane(.get(ref, includeSecrets: false)), .reader)
        CallTest.assertSharedRules(.get(ref, includeSecrets: false))
        XCTAssertNil(CallTest.refusal(.admin, .get(ref, includeSecrets: false)))
        XCTAssertNil(CallTest.refusal(.admin, .get(tenantRef, includeSecrets: false)))
        XCTAssertEqual(CallTest.refusal(.admin, .get(ref, includeSecrets: false), tenant: CallTest.other)?.field, "get.ref.tenant_id")
        XCTAssertNil(CallTest.refusal(.operator, .get(tenantRef, includeSecrets: false)))
        XCTAssertNotNil(CallTest.refusal(.operator, .get(ref, includeSecrets: false)))
        XCTAssertNotNil(CallTest.refusal(.checker, .get(ref, includeSecrets: false)))
        XCTAssertEqual(GetCommand.secretsField(.get(ref, includeSecrets: true)), "get.include_secrets")
        XCTAssertNil(GetCommand.secretsField(.get(ref, includeSecrets: false)))
        XCTAssertNil(GetCommand.secretsField(.get(tenantRef, includeSecrets: true)))
    }
}
