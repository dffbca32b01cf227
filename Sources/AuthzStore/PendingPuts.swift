internal import CLMDB
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// The puts a bulk write defers for one database (`WriteBatch.deferPuts`), to be written in key
/// order through one cursor.
///
/// Every key and value is copied, in the order they were put, into one growing byte arena:
/// collecting a put allocates nothing, and writing them in key order reads one place per put.
/// (A list of separately allocated key and value arrays cost three cache and TLB misses a put
/// in that walk, and two allocations a put to build: together the largest single cost of a
/// bulk import.) Not thread-safe: one `WriteBatch` owns it; `sortedOffsets` only reads.
final class PendingPuts: @unchecked Sendable {  // written by its batch only; read concurrently only while nothing writes
    /// Entries back to back: key length and value length (UInt32 each, native order), key, value.
    private var base: UnsafeMutableRawPointer
    private var capacity: Int
    /// Bytes of the arena in use.
    private(set) var used = 0
    /// Puts collected.
    private(set) var count = 0

    /// An empty list with room for `bytes` bytes of keys and values (it grows past that).
    init(reservingBytes bytes: Int) {
        capacity = max(bytes, 256)
        base = malloc(capacity)!
    }

    deinit { free(base) }

    /// Collects one put. A key of the same bytes as an earlier one is kept as well (both are
    /// written, in put order).
    func append(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let need = 8 + key.count + value.count
        if used + need > capacity {
            // realloc moves a large block by remapping its pages, not by copying them.
            capacity = max(2 * capacity, used + need)
            base = realloc(base, capacity)!
        }
        base.storeBytes(of: UInt32(key.count), toByteOffset: used, as: UInt32.self)
        base.storeBytes(of: UInt32(value.count), toByteOffset: used + 4, as: UInt32.self)
        if let k = key.baseAddress, key.count > 0 { (base + used + 8).copyMemory(from: k, byteCount: key.count) }
        if let v = value.baseAddress, value.count > 0 { (base + used + 8 + key.count).copyMemory(from: v, byteCount: value.count) }
        used += need
        count += 1
    }

    /// Collects one put.
    func append(key: [UInt8], value: [UInt8]) {
        key.withUnsafeBytes { k in value.withUnsafeBytes { v in append(key: k, value: v) } }
    }

    /// The key of the entry at `offset` (one of `sortedOffsets()`), valid until the next append.
    func key(at offset: Int) -> UnsafeRawBufferPointer {
        let n = Int(base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
        return UnsafeRawBufferPointer(start: base + offset + 8, count: n)
    }

    /// The value of the entry at `offset`, valid until the next append.
    func value(at offset: Int) -> UnsafeRawBufferPointer {
        let k = Int(base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
        let n = Int(base.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
        return UnsafeRawBufferPointer(start: base + offset + 8 + k, count: n)
    }

    /// Starts the entry at `offset` on its way into the cache (a prefetch: nothing waits for it).
    @inline(__always) func prefetch(_ offset: Int) {
        authz_prefetch(base + offset)
    }

    /// The offsets of the entries in ascending key order, as LMDB orders keys (bytes compared
    /// unsigned, a prefix before its extensions); entries with equal keys in put order.
    ///
    /// Sorts plain values (the first 40 bytes of each key as five big-endian words, then the
    /// offset), comparing whole keys only where 40 bytes do not decide. Forty bytes reach into
    /// the last id of a reference key (tenant, kind, parent, child), so references under one
    /// parent rarely tie.
    func sortedOffsets() -> [Int] {
        struct Item { var w0, w1, w2, w3, w4: UInt64; var offset: Int }
        var items: [Item] = []
        items.reserveCapacity(count)
        var at = 0
        while at < used {
            let k = key(at: at)
            items.append(Item(w0: Self.word(k, 0), w1: Self.word(k, 8), w2: Self.word(k, 16), w3: Self.word(k, 24), w4: Self.word(k, 32), offset: at))
            at += 8 + k.count + Int(base.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self))
        }
        items.sort { a, b in
            if a.w0 != b.w0 { return a.w0 < b.w0 }
            if a.w1 != b.w1 { return a.w1 < b.w1 }
            if a.w2 != b.w2 { return a.w2 < b.w2 }
            if a.w3 != b.w3 { return a.w3 < b.w3 }
            if a.w4 != b.w4 { return a.w4 < b.w4 }
            return a.offset < b.offset
        }
        // Runs that tie on 40 bytes (long names, or keys padded with zero bytes) by whole key.
        var i = 0
        while i < items.count {
            var j = i + 1
            while j < items.count, items[j].w0 == items[i].w0, items[j].w1 == items[i].w1, items[j].w2 == items[i].w2,
                  items[j].w3 == items[i].w3, items[j].w4 == items[i].w4 { j += 1 }
            if j - i > 1 {
                items[i..<j].sort { a, b in
                    let x = key(at: a.offset), y = key(at: b.offset)
                    if Self.precedes(x, y) { return true }
                    if Self.precedes(y, x) { return false }
                    return a.offset < b.offset
                }
            }
            i = j
        }
        return items.map(\.offset)
    }

    /// `sortedOffsets` of each list; large lists sort on two threads (one list per database).
    static func sortedOffsets(_ lists: [PendingPuts]) -> [[Int]] {
        if lists.count < 2 || lists.reduce(0, { $0 + $1.count }) < 50_000 { return lists.map { $0.sortedOffsets() } }
        var orders = [[Int]](repeating: [], count: lists.count)
        orders.withUnsafeMutableBufferPointer { buffer in
            // Each iteration writes its own element; the lists are only read.
            nonisolated(unsafe) let b = buffer
            DispatchQueue.concurrentPerform(iterations: lists.count) { i in b[i] = lists[i].sortedOffsets() }
        }
        return orders
    }

    /// Bytes `at..<at+8` of `k` as a big-endian word, zero past its end.
    @inline(__always) private static func word(_ k: UnsafeRawBufferPointer, _ at: Int) -> UInt64 {
        if at + 8 <= k.count { return k.loadUnaligned(fromByteOffset: at, as: UInt64.self).bigEndian }
        var w: UInt64 = 0
        for j in at..<(at + 8) { w = w << 8 | UInt64(j < k.count ? k[j] : 0) }
        return w
    }

    /// Whether `a` sorts before `b` as LMDB orders keys: bytes compared unsigned (memcmp), a
    /// prefix before its extensions.
    static func precedes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        let n = min(a.count, b.count)
        let c = n == 0 ? 0 : memcmp(a.baseAddress!, b.baseAddress!, n)
        return c != 0 ? c < 0 : a.count < b.count
    }
}
