@testable import AuthzStore
import AuthzModel
import XCTest

/// `PendingPuts`, which holds an import's deferred puts and orders them for `MDB_APPEND`: its
/// order must agree with LMDB's own (bytes compared as unsigned, a prefix before its
/// extensions) on keys that tie in their first 40 bytes, differ only past them, or end in zero
/// bytes; and every key must come back with its own value.
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
        // A small reservation: the arena grows (and moves) many times on the way.
        let puts = PendingPuts(reservingBytes: 16)
        for (i, k) in keys.enumerated() { puts.append(key: k, value: Array("value \(i)".utf8)) }
        XCTAssertEqual(puts.count, keys.count)
        let offsets = puts.sortedOffsets()
        XCTAssertEqual(Set(offsets).count, keys.count, "every entry exactly once")
        let sortedKeys = offsets.map { Array(puts.key(at: $0)) }
        XCTAssertEqual(sortedKeys, keys.sorted { $0.lexicographicallyPrecedes($1) })
        // Each key with its own value; equal keys in put order.
        var lastIndexOfKey: [[UInt8]: Int] = [:]
        for o in offsets {
            let key = Array(puts.key(at: o))
            let text = String(decoding: puts.value(at: o), as: UTF8.self)
            guard let i = Int(text.dropFirst("value ".count)) else { return XCTFail("value \(text)") }
            XCTAssertEqual(keys[i], key)
            if let previous = lastIndexOfKey[key] { XCTAssertLessThan(previous, i, "equal keys in put order") }
            lastIndexOfKey[key] = i
        }
        // Two lists sorted together (as a batch sorts its databases on two threads).
        let other = PendingPuts(reservingBytes: 1 << 20)
        for k in keys.reversed() { other.append(key: k, value: []) }
        let both = PendingPuts.sortedOffsets([puts, other])
        XCTAssertEqual(both[0], offsets)
        XCTAssertEqual(both[1].map { Array(other.key(at: $0)) }, sortedKeys)
        XCTAssertTrue(both[1].allSatisfy { other.value(at: $0).isEmpty })
    }
}

/// `FixedKey`, the allocation-free keys of bulk writes: the same bytes as the array keys that
/// every reader uses.
final class FixedKeyTests: XCTestCase {
    func testBytesMatchTheStoreKeys() {
        let t = ID.random(), a = ID.random(), b = ID.random()
        XCTAssertEqual(FixedKey(id: a).bytes, Store.idKey(a))
        for kind in EntityKind.allCases {
            XCTAssertEqual(FixedKey(record: t, kind, a).bytes, Store.recordKey(t, kind, a))
            XCTAssertEqual(FixedKey(location: t, kind).bytes, Store.idKey(t) + [kind.rawValue])
        }
        for tag in [RefTag.userRoleBinding, .roleRoleBinding, .rolePermissionBinding, .permissionBinding, .userCredential, .tenant] {
            XCTAssertEqual(FixedKey(ref: t, tag, a, b).bytes, Store.refPrefix(t, tag, a) + Store.idKey(b))
        }
        XCTAssertEqual(FixedKey(ref: t, .userRoleBinding, a, b), FixedKey(ref: t, .userRoleBinding, a, b))
        XCTAssertNotEqual(FixedKey(ref: t, .userRoleBinding, a, b), FixedKey(ref: t, .roleRoleBinding, a, b))
        XCTAssertNotEqual(FixedKey(id: a), FixedKey(location: a, .user), "a prefix is not equal")
    }
}
