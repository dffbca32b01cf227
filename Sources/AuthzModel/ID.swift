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

    /// Parses the canonical text form from UTF-8 bytes without building a String.
    /// Table-driven and branch-free per digit: each byte is looked up in a 256-entry table that
    /// gives its nibble, or 0x80 for a byte that is not a hex digit (upper case accepted);
    /// hyphens are checked at their four positions. Allocates nothing.
    @inline(__always)
    public init?(bytes text: UnsafeRawBufferPointer) {
        guard text.count == 36, let base = text.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return nil }
        if base[8] != 0x2D || base[13] != 0x2D || base[18] != 0x2D || base[23] != 0x2D { return nil }
        let table = hexNibbles
        var bad: UInt8 = 0
        @inline(__always) func run(_ from: Int, _ to: Int, _ acc: inout UInt64) {
            var i = from
            while i < to {
                let v = table[Int(base[i])]
                bad |= v
                acc = acc << 4 | UInt64(v & 0x0F)
                i &+= 1
            }
        }
        var hi: UInt64 = 0
        var lo: UInt64 = 0
        run(0, 8, &hi)
        run(9, 13, &hi)
        run(14, 18, &hi)
        run(19, 23, &lo)
        run(24, 36, &lo)
        if bad & 0x80 != 0 { return nil }
        self.hi = hi
        self.lo = lo
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
}

/// Hex digit values by byte (0x80: not a hex digit), allocated once and never freed.
let hexNibbles: UnsafePointer<UInt8> = {
    let t = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
    for b in 0..<256 {
        switch UInt8(b) {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): t[b] = UInt8(b) - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): t[b] = UInt8(b) - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): t[b] = UInt8(b) - UInt8(ascii: "A") + 10
        default: t[b] = 0x80
        }
    }
    return UnsafePointer(t)
}()
