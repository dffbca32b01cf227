import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// BatchCheck: `Calls/BatchCheck.swift` and `Commands/BatchCheck.swift`.
final class BatchCheckCallTests: XCTestCase {
    let c = CheckCall(tenantId: CallTest.tenant, userId: CallTest.user, permission: "a.b", scope: .self)

    func testCodec() {
        CallTest.assertRoundTrips(.batchCheck([.success(c), .success(c)], minRevision: 3))
        CallTest.assertRoundTrips(.batchCheck([.success(Decision(reason: .noGrant, revision: 2)), .failure(AuthzError.invalid("batch_check.checks[1].scope", "is required"))], revision: 2))
        // A malformed item is its own error; the batch still decodes.
        let good = CallTest.field(1, CallTest.tenant.description) + CallTest.field(2, CallTest.user.description) + CallTest.field(3, "a.b") + CallTest.varint(4, 1)
        let bytes = CallTest.varint(1, 1) + CallTest.field(11, CallTest.field(1, good) + CallTest.field(1, []))
        guard case .success(.batchCheck(let items, 0)) = bytes.withUnsafeBytes({ WireCodec.decodeRequestWithProtobufC($0) }).call else { return XCTFail() }
        XCTAssertEqual(try items[0].get(), c)
        guard case .failure(let e) = items[1] else { return XCTFail() }
        XCTAssertEqual(e.field, "batch_check.checks[1].tenant_id")
    }

    func testCommand() {
        let call = Call.batchCheck([.success(c), .failure(AuthzError.invalid("x", "y")), .success(CheckCall(tenantId: CallTest.other, userId: CallTest.user, permission: "a.b", scope: .self))], minRevision: 0)
        XCTAssertEqual(Dispatcher.lane(call), .inline)
        CallTest.assertSharedRules(call)
        XCTAssertNil(CallTest.refusal(.gateway, call))
        XCTAssertEqual(CallTest.refusal(.checker, call)?.field, "batch_check.checks[2].tenant_id")
        XCTAssertNotNil(CallTest.refusal(.operator, call))
        XCTAssertEqual(BatchCheckCommand.readTenants(call), [CallTest.tenant, CallTest.other])
    }
}
