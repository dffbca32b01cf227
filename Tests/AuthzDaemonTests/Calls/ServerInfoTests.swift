import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// ServerInfo: `Calls/ServerInfo.swift` and `Commands/ServerInfo.swift`.
final class ServerInfoCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.serverInfo)
        var info = ServerInfo(version: "v", revision: 11, protocolVersion: 1, counts: [.tenant: 1, .user: 2])
        CallTest.assertRoundTrips(.serverInfo(info))
        info.log = LogStatus(stream: "s", applied: 1, streamLast: 2, lag: 1, connected: false, shard: "all", refusal: "")
        CallTest.assertRoundTrips(.serverInfo(info))
    }

    func testCommand() {
        XCTAssertEqual(Dispatcher.lane(.serverInfo), .inline)
        CallTest.assertSharedRules(.serverInfo)
        XCTAssertNil(CallTest.refusal(.operator, .serverInfo))
        XCTAssertEqual(CallTest.refusal(.admin, .serverInfo)?.message, "a admin key may not call ServerInfo")
        XCTAssertNotNil(CallTest.refusal(.checker, .serverInfo))
        XCTAssertNotNil(CallTest.refusal(.gateway, .serverInfo))
    }
}
