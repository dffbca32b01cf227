import AuthzModel

/// Per-process random seed for the index's hash functions, so that nobody can precompute ids
/// or names that collide.
let hashSeed: UInt64 = {
    var g = SystemRandomNumberGenerator()
    return g.next() | 1
}()


/// Hashes bytes 8 at a time (seeded multiply-mix). Not cryptographic; fast and unpredictable
/// without the process's seed.
@inline(__always) func hashBytes(_ p: UnsafeRawBufferPointer, seed: UInt64) -> UInt64 {
    var h = seed ^ UInt64(p.count) &* 0x9E3779B97F4A7C15
    var i = 0
    let n = p.count
    while i + 8 <= n {
        h = hashMix(h ^ p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
        i += 8
    }
    if i < n {
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < n {
            tail |= UInt64(p[i]) << shift
            shift += 8
            i += 1
        }
        h = hashMix(h ^ tail)
    }
    return h
}

/// One slot of an `IDTable`: key and value side by side, so that a lookup usually touches a
/// single cache line.
struct IDSlot {
    var hi: UInt64
    var lo: UInt64
    var value: UInt32
}

/// An open-addressing (linear probing) map from `ID` to `UInt32` in one flat C array of
/// slots. Lookups hash two integers and touch one or two cache lines; they never allocate,
/// retain or take an exclusivity check (the storage pointer is `let`). The all-zero id marks
/// an empty slot (it is never a record id). Maximum load 0.8. Fixed capacity:
/// `grownIfNeeded()` returns a larger copy. Copy-on-write by hand: `copy()` before mutating a
/// published table.
public final class IDTable: @unchecked Sendable {
    let slots: UnsafeMutablePointer<IDSlot>
    let mask: Int
    let seed: UInt64
    public private(set) var count = 0

    /// The number of slots needed to hold `entries` under the load factor.
    public static func slotsFor(_ entries: Int) -> Int {
        var n = 8
        while n * 4 < entries * 5 { n *= 2 }
        return n
    }

    /// A table holding `capacity` entries before it must grow.
    public convenience init(capacity: Int = 6) {
        self.init(slotCount: IDTable.slotsFor(capacity))
    }

    init(slotCount: Int) {
        slots = .allocate(capacity: slotCount)
        slots.initialize(repeating: IDSlot(hi: 0, lo: 0, value: 0), count: slotCount)
        mask = slotCount - 1
        seed = hashSeed
    }

    deinit { slots.deallocate() }

    /// An identical, independent table.
    public func copy() -> IDTable {
        let t = IDTable(slotCount: capacity)
        t.slots.update(from: slots, count: capacity)
        t.count = count
        return t
    }

    public var capacity: Int { mask + 1 }

    /// Self when one more entry fits under the load factor, else a larger copy.
    public func grownIfNeeded() -> IDTable {
        if (count + 1) * 5 <= capacity * 4 { return self }
        let t = IDTable(slotCount: capacity * 2)
        forEach { t.set($0, $1) }
        return t
    }

    @inline(__always) func slot(_ key: ID) -> Int {
        Int(truncatingIfNeeded: key.seededHash(seed)) & mask
    }

    /// The value of `key`; nil when absent, and always for the nil UUID (`.zero`, which no
    /// record may have: an empty slot is all zeros and must never match it).
    @inline(__always) public func find(_ key: ID) -> UInt32? {
        if key.hi | key.lo == 0 { return nil }
        var i = slot(key)
        while true {
            let p = slots + i
            if p.pointee.hi == key.hi && p.pointee.lo == key.lo { return p.pointee.value }
            if p.pointee.hi == 0 && p.pointee.lo == 0 { return nil }
            i = (i &+ 1) & mask
        }
    }

    /// Inserts or replaces. Preconditions: `key != .zero`; room (see `grownIfNeeded`).
    public func set(_ key: ID, _ value: UInt32) {
        var i = slot(key)
        while true {
            let p = slots + i
            if p.pointee.hi == key.hi && p.pointee.lo == key.lo {
                p.pointee.value = value
                return
            }
            if p.pointee.hi == 0 && p.pointee.lo == 0 {
                precondition(count + 1 < capacity, "IDTable full")
                p.pointee = IDSlot(hi: key.hi, lo: key.lo, value: value)
                count += 1
                return
            }
            i = (i &+ 1) & mask
        }
    }

    /// Every (key, value).
    public func forEach(_ body: (ID, UInt32) -> Void) {
        for j in 0..<capacity where slots[j].hi != 0 || slots[j].lo != 0 { body(ID(hi: slots[j].hi, lo: slots[j].lo), slots[j].value) }
    }

    var approximateBytes: Int { capacity * MemoryLayout<IDSlot>.stride + 64 }
}

/// An open-addressing map from a permission name to a `UInt32`, built once per change of the
/// permission set. Lookup hashes the name's UTF-8 bytes and compares them; it never
/// allocates or retains.
final class NameTable: @unchecked Sendable {
    let hashes: UnsafeMutablePointer<UInt64>
    /// Index into `offsets`/`values`, -1 = empty.
    let slots: UnsafeMutablePointer<Int32>
    /// Name k is `bytes[offsets[k] ..< offsets[k+1]]`.
    let offsets: UnsafeMutablePointer<Int>
    let bytes: UnsafeMutablePointer<UInt8>
    let values: UnsafeMutablePointer<UInt32>
    let mask: Int
    let seed: UInt64
    let byteCount: Int

    init(_ entries: [(String, UInt32)]) {
        var n = 8
        while n * 5 < entries.count * 10 { n *= 2 }
        mask = n - 1
        seed = hashSeed
        hashes = .allocate(capacity: n)
        hashes.initialize(repeating: 0, count: n)
        slots = .allocate(capacity: n)
        slots.initialize(repeating: -1, count: n)
        offsets = .allocate(capacity: entries.count + 1)
        values = .allocate(capacity: max(1, entries.count))
        let total = entries.reduce(0) { $0 + $1.0.utf8.count }
        byteCount = total
        bytes = .allocate(capacity: max(1, total))
        var off = 0
        for (k, (name, value)) in entries.enumerated() {
            offsets[k] = off
            for b in name.utf8 {
                bytes[off] = b
                off += 1
            }
            values[k] = value
        }
        offsets[entries.count] = off
        for k in 0..<entries.count {
            let h = hashBytes(UnsafeRawBufferPointer(start: bytes + offsets[k], count: offsets[k + 1] - offsets[k]), seed: seed)
            var i = Int(truncatingIfNeeded: h) & mask
            while slots[i] != -1 { i = (i + 1) & mask }
            slots[i] = Int32(k)
            hashes[i] = h
        }
    }

    deinit {
        hashes.deallocate()
        slots.deallocate()
        offsets.deallocate()
        bytes.deallocate()
        values.deallocate()
    }

    @inline(__always) func find(_ name: String) -> UInt32? {
        if let r = name.utf8.withContiguousStorageIfAvailable({ find(UnsafeRawBufferPointer($0)) }) { return r }
        return Array(name.utf8).withUnsafeBytes { find($0) }
    }

    @inline(__always) func find(_ key: UnsafeRawBufferPointer) -> UInt32? {
        let h = hashBytes(key, seed: seed)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let s = Int(slots[i])
            if s < 0 { return nil }
            if hashes[i] == h {
                let start = offsets[s], length = offsets[s + 1] - start
                if length == key.count && (length == 0 || memcmp(bytes + start, key.baseAddress!, length) == 0) { return values[s] }
            }
            i = (i &+ 1) & mask
        }
    }

    var approximateBytes: Int { (mask + 1) * 12 + byteCount + 16 * (mask + 1) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
