@testable import AuthzStore
import XCTest

/// `WriteBatch.sortedOrder`, which orders an import's keys for `MDB_APPEND`: it must agree
/// with LMDB's own order (bytes compared as unsigned, a prefix before its extensions) on keys
/// that tie in their first 40 bytes, differ only past them, or end in zero bytes.
final class SortedOrderTests: XCTestCase {
    func testAgreesWithLexicographicOrder() {
        var rng = SystemRandomNumberGenerator()
        let prefix = (0..<33).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var keys: [[UInt8]] = []
        for _ in 0..<3000 {
            var k: [UInt8]
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: k = (0..<Int.random(in: 0...60, using: &rng)).map { _ in UInt8.random(in: 0...3, using: &rng) }
            case 1: k = prefix + (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }  // a reference key
            case 2: k = Array(repeating: 7, count: 40) + (0..<Int.random(in: 0...8, using: &rng)).map { _ in UInt8.random(in: 0...2, using: &rng) }
            case 3: k = Array(repeating: 0, count: Int.random(in: 0...45, using: &rng))
            default: k = (0..<33).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
            keys.append(k)
        }
        keys.append(contentsOf: keys.prefix(50))  // duplicates tie completely
        let entries = keys.map { (key: $0, value: [UInt8]()) }
        let order = WriteBatch.sortedOrder(entries).map { keys[Int($0)] }
        XCTAssertEqual(order, keys.sorted { $0.lexicographicallyPrecedes($1) })
        XCTAssertEqual(Set(WriteBatch.sortedOrder(entries)).count, keys.count, "every position exactly once")
    }
}
