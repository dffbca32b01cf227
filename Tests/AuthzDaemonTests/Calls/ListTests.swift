import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// List: `Calls/List.swift` and `Commands/List.swift`.
final class ListCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.list(.user, tenantId: CallTest.tenant, pageSize: 50, after: CallTest.user, includeSecrets: false))
        CallTest.assertRoundTrips(.list(.tenant, tenantId: .zero, pageSize: 100, after: nil, includeSecrets: false))
        CallTest.assertRoundTrips(.list([.tenant(Tenant(id: CallTest.tenant, name: "acme"))], nextPageToken: CallTest.tenant.description))
        XCTAssertEqual(CallTest.decodeError(.list, CallTest.varint(1, 2))?.message, "list.tenant_id is required")
        XCTAssertNil(CallTest.decodeError(.list, CallTest.varint(1, 1)))  // tenants: no tenant_id
    }

    func testCommand() {
        let users = Call.list(.user, tenantId: CallTest.tenant, pageSize: 10, after: nil, includeSecrets: false)
        let tenants = Call.list(.tenant, tenantId: .zero, pageSize: 10, after: nil, includeSecrets: false)
        XCTAssertEqual(Dispatcher.lane(users), .reader)
        CallTest.assertSharedRules(users)
        XCTAssertNil(CallTest.refusal(.admin, users))
        XCTAssertEqual(CallTest.refusal(.admin, users, tenant: CallTest.other)?.field, "list.tenant_id")
        XCTAssertEqual(CallTest.refusal(.admin, tenants)?.message, "a admin key may not list tenants")
        XCTAssertNil(CallTest.refusal(.operator, tenants))
        XCTAssertNotNil(CallTest.refusal(.operator, users))
        XCTAssertEqual(ListCommand.secretsField(.list(.platformCredential, tenantId: CallTest.tenant, pageSize: 1, after: nil, includeSecrets: true)), "list.include_secrets")
        XCTAssertNil(ListCommand.secretsField(.list(.user, tenantId: CallTest.tenant, pageSize: 1, after: nil, includeSecrets: true)))
    }
}
