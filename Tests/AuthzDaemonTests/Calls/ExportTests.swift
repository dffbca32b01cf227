import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Export: `Calls/Export.swift` and `Commands/Export.swift` (paged sessions: ExportHardeningTests).
final class ExportCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.export(tenantId: nil, includeSecrets: false))
        CallTest.assertRoundTrips(.exportPage(tenantId: CallTest.tenant, includeSecrets: true, pageSize: 500, pageToken: ""))
        CallTest.assertRoundTrips(.export([1], revision: 2))
        CallTest.assertRoundTrips(.exportPage([1], revision: 2, nextPageToken: "\(CallTest.key).1"))
        // A token alone asks for pages of 10,000; sizes are capped at 100,000.
        let bytes = CallTest.varint(1, 1) + CallTest.field(19, CallTest.field(4, "x.1"))
        guard case .success(.exportPage(nil, false, 10_000, "x.1")) = bytes.withUnsafeBytes({ WireCodec.decodeRequestWithProtobufC($0) }).call else { return XCTFail() }
        let big = CallTest.varint(1, 1) + CallTest.field(19, CallTest.varint(3, 1_000_000))
        guard case .success(.exportPage(nil, false, 100_000, "")) = big.withUnsafeBytes({ WireCodec.decodeRequestWithProtobufC($0) }).call else { return XCTFail() }
    }

    func testCommand() {
        let mine = Call.export(tenantId: CallTest.tenant, includeSecrets: false)
        XCTAssertEqual(Dispatcher.lane(mine), .reader)
        CallTest.assertSharedRules(mine)
        XCTAssertNil(CallTest.refusal(.admin, mine))
        XCTAssertNil(CallTest.refusal(.admin, .export(tenantId: nil, includeSecrets: false)))
        XCTAssertEqual(CallTest.refusal(.admin, .exportPage(tenantId: CallTest.other, includeSecrets: false, pageSize: 1, pageToken: ""))?.field, "export.tenant_id")
        XCTAssertNotNil(CallTest.refusal(.operator, mine))
        XCTAssertEqual(ExportCommand.secretsField(.exportPage(tenantId: nil, includeSecrets: true, pageSize: 1, pageToken: "")), "export.include_secrets")
        XCTAssertEqual(ExportCommand.readTenants(.export(tenantId: nil, includeSecrets: false)), [])
    }
}
