import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Watch: `Calls/Watch.swift` and `Commands/Watch.swift` (the stream itself: WatchTests).
final class WatchCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.watch(WatchCall(fromRevision: nil)))
        CallTest.assertRoundTrips(.watch(WatchCall(fromRevision: 5, tenantId: CallTest.tenant, kinds: [.user, .role])))
        CallTest.assertRoundTrips(.watch(WatchBatch(changes: [Change(revision: 3, entity: .tenant(Tenant(id: CallTest.tenant, name: "a")))], revision: 3, caughtUp: true)))
        XCTAssertEqual(CallTest.decodeError(.watch, CallTest.varint(1, 4) + CallTest.varint(2, 1))?.field, "watch.from_revision")
        XCTAssertEqual(CallTest.decodeError(.watch, CallTest.varint(4, 0))?.field, "watch.kinds[0]")
    }

    func testCommand() {
        let all = Call.watch(WatchCall(fromRevision: nil))
        XCTAssertEqual(Dispatcher.lane(all), .stream)
        CallTest.assertSharedRules(all)
        XCTAssertNil(CallTest.refusal(.gateway, all))
        XCTAssertEqual(CallTest.refusal(.gateway, .watch(WatchCall(fromRevision: nil, kinds: [.platformCredential])))?.field, "watch.kinds")
        XCTAssertNil(CallTest.refusal(.operator, .watch(WatchCall(fromRevision: nil, kinds: [.tenant]))))
        XCTAssertEqual(CallTest.refusal(.operator, .watch(WatchCall(fromRevision: nil, kinds: [.user])))?.field, "watch.kinds")
        XCTAssertNil(CallTest.refusal(.admin, all))
        XCTAssertEqual(CallTest.refusal(.admin, .watch(WatchCall(fromRevision: nil, tenantId: CallTest.other)))?.field, "watch.tenant_id")
        XCTAssertNotNil(CallTest.refusal(.checker, all))
        XCTAssertEqual(WatchCommand.readTenants(all), [])
    }
}
