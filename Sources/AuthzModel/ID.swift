/// A record id: a 128-bit UUID held as two integers, so that it hashes and compares without
/// touching the heap.
///
/// Text form is the canonical lowercase `8-4-4-4-12`. Parsing also accepts upper-case hex
/// (normalised on output); anything else is rejected.
public struct ID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var hi: UInt64
    public var lo: UInt64

    public init(hi: UInt64, lo: UInt64) {
        self.hi = hi
        self.lo = lo
    }

    /// The all-zero id; never a valid record id.
    public static let zero = ID(hi: 0, lo: 0)

    /// Parses the canonical text form. Returns nil for anything else.
    public init?(_ text: String) {
        var copy = text
        guard let parsed = copy.withUTF8({ ID(bytes: UnsafeRawBufferPointer($0)) }) else { return nil }
        self = parsed
    }

    /// Parses the canonical text form from any string type. Returns nil for anything else.
    public init?(_ text: some StringProtocol) {
        var hi: UInt64 = 0
        var lo: UInt64 = 0
        var nibbles = 0
        var index = 0
        for byte in text.utf8 {
            defer { index += 1 }
            if index == 8 || index == 13 || index == 18 || index == 23 {
                guard byte == UInt8(ascii: "-") else { return nil }
                continue
            }
            let value: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte &- UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = byte &- UInt8(ascii: "a") &+ 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = byte &- UInt8(ascii: "A") &+ 10
            default: return nil
            }
            if nibbles < 16 {
                hi = hi << 4 | UInt64(value)
            } else {
                lo = lo << 4 | UInt64(value)
            }
            nibbles += 1
            if nibbles > 32 { return nil }
        }
        guard index == 36, nibbles == 32 else { return nil }
        self.hi = hi
        self.lo = lo
    }

    /// Parses the canonical text form from UTF-8 bytes without building a String: hex digits of
    /// either case in 8-4-4-4-12 form, nothing else (the same set as the String parser).
    /// Eight digits at a time in one 64-bit word (SWAR: range checks and nibble packing with
    /// word arithmetic, no table, no per-digit branch); hyphens are checked at their four
    /// positions. Allocates nothing; about 120 instructions.
    @inline(__always)
    public init?(bytes text: UnsafeRawBufferPointer) {
        guard text.count == 36, let base = text.baseAddress else { return nil }
        let t = base.assumingMemoryBound(to: UInt8.self)
        if t[8] != 0x2D || t[13] != 0x2D || t[18] != 0x2D || t[23] != 0x2D { return nil }
        @inline(__always) func word(_ at: Int) -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        @inline(__always) func halves(_ a: Int, _ b: Int) -> UInt64 {
            UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: a, as: UInt32.self)))
                | UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: b, as: UInt32.self))) << 32
        }
        guard let g0 = ID.hex8(word(0)), let g1 = ID.hex8(halves(9, 14)),
              let g2 = ID.hex8(halves(19, 24)), let g3 = ID.hex8(word(28)) else { return nil }
        self.hi = UInt64(g0) << 32 | UInt64(g1)
        self.lo = UInt64(g2) << 32 | UInt64(g3)
    }

    /// The value of eight ASCII hex digits held in `x` (the first digit in the lowest byte),
    /// or nil when a byte is not a hex digit of either case.
    @inline(__always)
    static func hex8(_ x: UInt64) -> UInt32? {
        let high = ByteWords.high
        guard x & high == 0 else { return nil }
        let digit = ByteWords.inRange(x, 0x30, 0x39)
        let letter = ByteWords.inRange(x | 0x2020_2020_2020_2020, 0x61, 0x66)
        guard digit | letter == high else { return nil }
        // Nibbles: the low four bits, plus 9 for a letter ('a' = 0x61 → 1 + 9).
        let nibbles = (x & 0x0F0F_0F0F_0F0F_0F0F) &+ (letter >> 7) &* 9
        // Pairs: byte 2k = digit 2k << 4 | digit 2k+1; then the four pair bytes, first highest.
        let pairs = (nibbles << 4 | nibbles >> 8) & 0x00FF_00FF_00FF_00FF
        let b0 = UInt32(truncatingIfNeeded: pairs) << 24
        let b1 = (UInt32(truncatingIfNeeded: pairs >> 16) & 0xFF) << 16
        let b2 = (UInt32(truncatingIfNeeded: pairs >> 32) & 0xFF) << 8
        let b3 = UInt32(truncatingIfNeeded: pairs >> 48) & 0xFF
        return b0 | b1 | b2 | b3
    }

    /// The 16 raw bytes, big-endian.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            out[i] = UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64(i)))
            out[8 + i] = UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64(i)))
        }
        return out
    }

    /// Builds an id from 16 big-endian bytes. Precondition: `bytes.count == 16`.
    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 16, "an ID is 16 bytes")
        var hi: UInt64 = 0
        var lo: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { hi = hi << 8 | UInt64(b) } else { lo = lo << 8 | UInt64(b) }
        }
        self.hi = hi
        self.lo = lo
    }

    /// A random version-4 UUID.
    public static func random() -> ID {
        var g = SystemRandomNumberGenerator()
        return random(using: &g)
    }

    /// A version-4 UUID drawn from `generator` (deterministic generators give deterministic ids).
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> ID {
        let hi = (generator.next() & ~0xF000) | 0x4000
        let lo = (generator.next() & ~(UInt64(0xC) << 60)) | (UInt64(0x8) << 60)
        return ID(hi: hi, lo: lo)
    }

    public var description: String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: 36) { buffer in
            var pos = 0
            for nibble in 0..<32 {
                if nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20 {
                    buffer[pos] = UInt8(ascii: "-")
                    pos += 1
                }
                let word = nibble < 16 ? hi : lo
                let shift = UInt64(60 - 4 * (nibble % 16))
                buffer[pos] = digits[Int((word >> shift) & 0xF)]
                pos += 1
            }
            return 36
        }
    }

    public static func < (a: ID, b: ID) -> Bool { (a.hi, a.lo) < (b.hi, b.lo) }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(hi)
        hasher.combine(lo)
    }

    /// The id's hash under `seed`: a multiply-mix of the two words, the mix applied twice so
    /// that the words cannot be traded against each other without knowing the seed. Not
    /// cryptographic; with a secret random seed, ids that collide cannot be chosen in advance.
    /// The index's id tables (seeded per process) and `_rawHashValue` use it.
    @inlinable @inline(__always)
    public func seededHash(_ seed: UInt64) -> UInt64 {
        hashMix(hi ^ seed ^ hashMix(lo ^ (seed << 1)))
    }

    /// What a `Dictionary` or `Set` of ids hashes with: `seededHash` under the table's seed
    /// (derived from the process's random hashing seed), not a full SipHash run (an import
    /// hashes each id several times).
    public func _rawHashValue(seed: Int) -> Int {
        Int(truncatingIfNeeded: seededHash(UInt64(bitPattern: Int64(seed))))
    }
}

/// A bijective 64-bit multiply-xorshift finaliser: every input bit reaches every output bit.
/// The building block of the seeded hashes (`ID.seededHash`, the index's byte hash).
@inlinable @inline(__always)
public func hashMix(_ x: UInt64) -> UInt64 {
    var z = x &* 0x9E37_79B9_7F4A_7C15
    z ^= z >> 32
    z = z &* 0xD6E8_FEB8_6659_FD93
    z ^= z >> 32
    return z
}

/// Eight ASCII bytes at a time in one 64-bit word (the first byte in the lowest), for the
/// parsers of the check path (`ID(bytes:)`, `CheckFrame`).
public enum ByteWords {
    /// The high bit of every byte.
    @inlinable public static var high: UInt64 { 0x8080_8080_8080_8080 }

    /// Per byte of `v`, its high bit set when `lo <= b <= hi`, every other bit clear. Every
    /// byte of `v` must be below 0x80 (check `v & high == 0` first), so that no carry crosses
    /// a byte: the high bit of `b + (0x80 - lo)` says `b >= lo`, of `b + (0x7F - hi)` that
    /// `b > hi`.
    @inlinable @inline(__always)
    public static func inRange(_ v: UInt64, _ lo: UInt64, _ hi: UInt64) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101
        return (v &+ ones &* (0x80 - lo)) & ~(v &+ ones &* (0x7F - hi)) & high
    }
}
