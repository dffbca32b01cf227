import AuthzModel
import Foundation
import XCTest
@testable import AuthzStore

/// The store's one translation of LMDB and system-call failures (`Store.translate`, `posix`):
/// the same code means different things in different operations, and nothing is matched by
/// message or field text.
final class StoreErrorTests: XCTestCase {
    func code(_ e: Error) -> AuthzError.Code? { (e as? AuthzError)?.code }

    func testTheSameCodeIsTranslatedByTheOperationItFailedIn() {
        let dir = temporaryDirectory("authzd-errors")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A file that is not LMDB: at open it is someone's data, never reset.
        XCTAssertEqual(code(Store.translate(.invalid, .openEnvironment, directory: dir)), .dataLoss)
        XCTAssertEqual(code(Store.translate(.notFound, .openEnvironment, directory: dir)), .failedPrecondition)
        // MAP_FULL in a write is the grow-and-retry signal, a type of its own.
        XCTAssertTrue(Store.translate(.mapFull, .write, directory: dir) is Store.MapFull)
        // EIO in a write, with space on the device: an I/O error (retry elsewhere), not "disk full".
        XCTAssertEqual(code(Store.translate(LMDBError(code: EIO), .write, directory: dir)), .unavailable)
        XCTAssertEqual(code(Store.translate(.noSpace, .write, directory: dir)), .resourceExhausted)
        // Reader slots: retry, and the message says how many there are when the store knows.
        let readers = Store.translate(.readersFull, .beginRead, directory: dir, maxReaders: 126)
        XCTAssertEqual(code(readers), .unavailable)
        XCTAssertTrue((readers as? AuthzError)?.message.contains("126") == true)
        XCTAssertEqual(code(Store.translate(.invalid, .beginRead, directory: dir)), .internal)
        XCTAssertEqual(code(Store.translate(.invalid, .readBackup("/b"), directory: dir)), .failedPrecondition)
    }

    func testPosixNamesTheCallAndPathAndPassesResultsThrough() throws {
        XCTAssertEqual(try posix("getpid", "") { Int32(7) }, 7)
        XCTAssertThrowsError(try posix("open", "/nonexistent/x") { open("/nonexistent/x", O_RDONLY) }) { e in
            guard let f = e as? POSIXFailure else { return XCTFail("\(e)") }
            XCTAssertEqual(f.call, "open")
            XCTAssertEqual(f.errno, ENOENT)
            XCTAssertTrue(f.description.contains("/nonexistent/x"))
        }
        // mkdir of an existing directory is not an error for makeDirectory.
        let dir = temporaryDirectory("authzd-mkdir")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertNoThrow(try Store.makeDirectory(dir))
    }
}
