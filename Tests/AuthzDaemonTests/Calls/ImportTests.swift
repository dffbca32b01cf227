import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Import: `Calls/Import.swift` and `Commands/Import.swift` (chunked sessions: ChunkedImportTests).
final class ImportCallTests: XCTestCase {
    func testCodec() {
        CallTest.assertRoundTrips(.importJSONL(Array("{}\n".utf8)))
        CallTest.assertRoundTrips(.importChunk(session: CallTest.key, jsonl: [1, 2], firstLine: 3, more: true))
        CallTest.assertRoundTrips(.importResult(revision: 7, records: 8))
        XCTAssertEqual(CallTest.decodeError(.importJSONL, CallTest.varint(3, 1))?.message, "import.more needs import.session")
        XCTAssertEqual(CallTest.decodeError(.importJSONL, CallTest.field(2, "x"))?.field, "import.session")
    }

    func testCommand() {
        let whole = Call.importJSONL([])
        XCTAssertEqual(Dispatcher.lane(whole), .writer)
        XCTAssertEqual(Dispatcher.lane(.importChunk(session: CallTest.key, jsonl: [], firstLine: 1, more: true)), .reader)
        XCTAssertEqual(Dispatcher.lane(.importChunk(session: CallTest.key, jsonl: [], firstLine: 2, more: false)), .writer)
        CallTest.assertSharedRules(whole)
        XCTAssertNil(CallTest.refusal(.admin, whole))
        XCTAssertEqual(CallTest.refusal(.checker, whole)?.message, "a checker key may not call Import (checker keys may check, explain and list only)")
        XCTAssertNotNil(CallTest.refusal(.operator, whole))
        XCTAssertNotNil(CallTest.refusal(.gateway, whole))
    }
}
