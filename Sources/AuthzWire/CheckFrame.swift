import AuthzModel

/// One check of a Check or BatchCheck frame, read in place: ids parsed, the permission left as
/// the byte range of the frame that holds its name (looked up by bytes in the index).
public struct CheckQuery: Sendable {
    public var tenant: ID
    public var user: ID
    /// Offsets of the permission name in the frame.
    public var permissionStart: Int
    public var permissionEnd: Int
    public var scope: Scope

    public init(tenant: ID, user: ID, permissionStart: Int, permissionEnd: Int, scope: Scope) {
        self.tenant = tenant
        self.user = user
        self.permissionStart = permissionStart
        self.permissionEnd = permissionEnd
        self.scope = scope
    }
}

/// The allocation-free codec of the check path: reads a request frame that is a plain Check
/// or BatchCheck straight from the read buffer, and writes the answers straight into the
/// output buffer. Byte-compatible with the generated protobuf-c code (tests compare them).
///
/// "Plain" means: no per-request `api_key`, no `min_revision`, every item well formed (UUIDs in
/// 8-4-4-4-12 form, a permission of 1...128 printable ASCII bytes, a scope), at most
/// `maxItems` items, and nothing the general decoder would treat differently (unknown fields
/// inside the call, repeated singular fields, wire-type surprises). Anything else returns nil
/// and the caller hands the frame to the general path, which gives the reference answer: so
/// every error a client sees is the general path's.
///
/// Allocates nothing once `items` has grown to the largest batch seen; no Swift String is made.
public enum CheckFrame {
    /// What `parse` found: the request id, and whether it was a BatchCheck (else a Check).
    public struct Parsed: Sendable {
        public var requestId: UInt64
        public var deadlineMs: UInt32
        public var isBatch: Bool
    }

    /// The last tenant id read on a connection, by its text: a sidecar's checks name one tenant,
    /// and comparing 36 bytes is cheaper than parsing them (`ID(bytes:)`).
    public struct TenantCache: Sendable {
        /// The text's five words (bytes 0-31 as four, 32-35 as the fifth); valid when `id` is set.
        var words: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
        var id: ID?

        public init() {}

        /// The id `text` (36 bytes or not) names, or nil when it is not a UUID in 8-4-4-4-12 form;
        /// remembers the last one parsed.
        @inline(__always)
        mutating func id(_ text: UnsafeRawBufferPointer) -> ID? {
            guard text.count == 36, let base = text.baseAddress else { return nil }
            let w = (base.loadUnaligned(as: UInt64.self), base.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                     base.loadUnaligned(fromByteOffset: 16, as: UInt64.self), base.loadUnaligned(fromByteOffset: 24, as: UInt64.self),
                     UInt64(base.loadUnaligned(fromByteOffset: 32, as: UInt32.self)))
            if let known = id, w.0 == words.0, w.1 == words.1, w.2 == words.2, w.3 == words.3, w.4 == words.4 { return known }
            guard let parsed = ID(bytes: text) else { return nil }
            words = w
            id = parsed
            return parsed
        }
    }

    /// Parses `p` (one frame's payload). On success `items` holds the checks, in order.
    public static func parse(_ p: UnsafeRawBufferPointer, maxItems: Int, into items: inout [CheckQuery]) -> Parsed? {
        var cache = TenantCache()
        return parse(p, maxItems: maxItems, into: &items, tenants: &cache)
    }

    /// `parse(_:maxItems:into:)`, reading tenant ids through `tenants` (kept per connection).
    public static func parse(_ p: UnsafeRawBufferPointer, maxItems: Int, into items: inout [CheckQuery], tenants: inout TenantCache) -> Parsed? {
        if !items.isEmpty { items.removeAll(keepingCapacity: true) }
        var r = FastPath.Reader(p)
        var requestId: UInt64 = 0, deadline: UInt64 = 0
        var call = 0
        while !r.atEnd {
            guard let key = r.oneByteKey() else { return nil }
            switch key {
            case 1 << 3: guard let v = r.varint() else { return nil }; requestId = v
            case 2 << 3: guard let v = r.varint(), v <= UInt64(UInt32.max) else { return nil }; deadline = v
            case 10 << 3 | 2:
                guard call == 0, let range = r.bytes(), let q = check(p, range, &tenants) else { return nil }
                items.append(q)
                call = 10
            case 11 << 3 | 2:
                guard call == 0, let range = r.bytes() else { return nil }
                var b = FastPath.Reader(p, from: range.lowerBound, to: range.upperBound)
                while !b.atEnd {
                    // Only items; a batch-wide min_revision (field 2) goes to the general path.
                    guard b.oneByteKey() == 1 << 3 | 2, let sub = b.bytes(), items.count < maxItems, let q = check(p, sub, &tenants) else { return nil }
                    items.append(q)
                }
                call = 11
            default:
                return nil  // api_key, another call, field 0, unknown fields: the general path decides
            }
        }
        guard call != 0, !items.isEmpty else { return nil }
        return Parsed(requestId: requestId, deadlineMs: UInt32(deadline), isBatch: call == 11)
    }

    @inline(__always)
    static func check(_ p: UnsafeRawBufferPointer, _ range: Range<Int>, _ tenants: inout TenantCache) -> CheckQuery? {
        var r = FastPath.Reader(p, from: range.lowerBound, to: range.upperBound)
        var tenant: ID?, user: ID?
        var permission = 0..<0
        var scope: UInt64 = 0
        while !r.atEnd {
            guard let key = r.oneByteKey() else { return nil }
            switch key {
            case 1 << 3 | 2:
                guard tenant == nil, let b = r.bytes(), let v = tenants.id(UnsafeRawBufferPointer(rebasing: p[b])) else { return nil }
                tenant = v
            case 2 << 3 | 2:
                guard user == nil, let b = r.bytes(), let v = ID(bytes: UnsafeRawBufferPointer(rebasing: p[b])) else { return nil }
                user = v
            case 3 << 3 | 2:
                guard permission.isEmpty, let b = r.bytes() else { return nil }
                permission = b
            case 4 << 3:
                guard let v = r.varint(), v >= 1, v <= 3 else { return nil }
                scope = v
            default:
                return nil  // min_revision (5), unknown fields, wire-type surprises
            }
        }
        guard let tenant, let user, scope != 0, !permission.isEmpty, permission.count <= FieldLimits.maxNameBytes else { return nil }
        guard printable(UnsafeRawBufferPointer(rebasing: p[permission])) else { return nil }
        return CheckQuery(tenant: tenant, user: user, permissionStart: permission.lowerBound, permissionEnd: permission.upperBound,
                          scope: Scope(rawValue: UInt8(scope - 1))!)
    }

    /// Every byte of `bytes` is printable ASCII without space (0x21...0x7E); eight at a time.
    @inline(__always)
    static func printable(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        var i = 0
        while i + 8 <= bytes.count {
            let x = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            guard x & ByteWords.high == 0, ByteWords.inRange(x, 0x21, 0x7E) == ByteWords.high else { return false }
            i += 8
        }
        while i < bytes.count {
            let b = bytes[i]
            if b < 0x21 || b > 0x7E { return false }
            i += 1
        }
        return true
    }

    // MARK: answers

    /// The bytes `writeCheckResponse` writes, frame header included.
    @inline(__always)
    public static func checkResponseSize(requestId: UInt64, _ d: Decision) -> Int {
        let body = FastPath.decisionSize(d)
        return 4 + (requestId == 0 ? 0 : 1 + FastPath.varintSize(requestId)) + 1 + FastPath.varintSize(UInt64(body)) + body
    }

    /// Writes a framed Response{request_id, check} at `out` (which has room for
    /// `checkResponseSize` bytes); returns the bytes written.
    @inline(__always)
    public static func writeCheckResponse(requestId: UInt64, _ d: Decision, to out: UnsafeMutableRawBufferPointer) -> Int {
        var w = Writer(out, at: 4)
        if requestId != 0 { w.byte(0x08); w.varint(requestId) }
        w.byte(10 << 3 | 2)
        w.varint(UInt64(FastPath.decisionSize(d)))
        w.decision(d)
        w.header()
        return w.i
    }

    /// The bytes `writeBatchResponse` writes for `decisions`, frame header included.
    public static func batchResponseSize(requestId: UInt64, _ decisions: UnsafeBufferPointer<Decision>, revision: UInt64) -> Int {
        let inner = batchInnerSize(decisions, revision: revision)
        return 4 + (requestId == 0 ? 0 : 1 + FastPath.varintSize(requestId)) + 1 + FastPath.varintSize(UInt64(inner)) + inner
    }

    static func batchInnerSize(_ decisions: UnsafeBufferPointer<Decision>, revision: UInt64) -> Int {
        var inner = revision == 0 ? 0 : 1 + FastPath.varintSize(revision)
        for d in decisions {
            let n = FastPath.decisionSize(d)
            inner += 1 + FastPath.varintSize(UInt64(n)) + n
        }
        return inner
    }

    /// Writes a framed Response{request_id, batch_check{results, revision}} at `out` (room for
    /// `batchResponseSize` bytes); returns the bytes written.
    public static func writeBatchResponse(requestId: UInt64, _ decisions: UnsafeBufferPointer<Decision>, revision: UInt64,
                                          to out: UnsafeMutableRawBufferPointer) -> Int {
        var w = Writer(out, at: 4)
        if requestId != 0 { w.byte(0x08); w.varint(requestId) }
        w.byte(11 << 3 | 2)
        w.varint(UInt64(batchInnerSize(decisions, revision: revision)))
        for d in decisions {
            w.byte(0x0A)
            w.varint(UInt64(FastPath.decisionSize(d)))
            w.decision(d)
        }
        if revision != 0 { w.byte(0x10); w.varint(revision) }
        w.header()
        return w.i
    }

    struct Writer {
        let p: UnsafeMutableRawBufferPointer
        var i: Int

        init(_ p: UnsafeMutableRawBufferPointer, at i: Int) {
            self.p = p
            self.i = i
        }

        @inline(__always) mutating func byte(_ b: UInt8) {
            p[i] = b
            i &+= 1
        }

        @inline(__always) mutating func varint(_ v: UInt64) {
            var v = v
            while v >= 0x80 {
                byte(UInt8(truncatingIfNeeded: v) | 0x80)
                v >>= 7
            }
            byte(UInt8(v))
        }

        @inline(__always) mutating func decision(_ d: Decision) {
            byte(0x08); byte(d.allowed ? 1 : 2)
            byte(0x10); byte(d.reason.rawValue)
            if d.revision != 0 { byte(0x18); varint(d.revision) }
        }

        /// The 4-byte big-endian length of what follows it.
        @inline(__always) func header() {
            let n = UInt32(i - 4)
            p[0] = UInt8(n >> 24); p[1] = UInt8((n >> 16) & 0xFF); p[2] = UInt8((n >> 8) & 0xFF); p[3] = UInt8(n & 0xFF)
        }
    }
}
