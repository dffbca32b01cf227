import AuthzModel

/// Hand-written protobuf reading and writing for the hot messages (Check and BatchCheck
/// requests, their responses), byte-compatible with the generated protobuf-c code and tested
/// against it. Anything it does not recognise (another call, a wire-type mismatch, a malformed
/// varint) makes it give up and the protobuf-c path decides, so behaviour on odd input is
/// always protobuf-c's.
enum FastPath {
    struct Reader {
        let p: UnsafeRawBufferPointer
        var i = 0
        let end: Int

        init(_ p: UnsafeRawBufferPointer, from: Int = 0, to: Int? = nil) {
            self.p = p
            i = from
            end = to ?? p.count
        }

        var atEnd: Bool { i >= end }

        @inline(__always) mutating func varint() -> UInt64? {
            // Tags and short lengths are one byte: no loop.
            if i < end, p[i] < 0x80 {
                defer { i += 1 }
                return UInt64(p[i])
            }
            return longVarint()
        }

        /// A field key, or a length prefix: as protobuf-c reads them, at most 5 bytes long (a
        /// longer encoding of either, which protobuf-c refuses, is nil here too).
        @inline(__always) mutating func key() -> UInt64? {
            if i < end, p[i] < 0x80 {
                defer { i += 1 }
                return UInt64(p[i])
            }
            return longKey()
        }

        /// A field key of one byte (fields 1-15); nil for any other, which the in-place check
        /// path leaves to the general one.
        @inline(__always) mutating func oneByteKey() -> UInt64? {
            guard i < end, p[i] < 0x80 else { return nil }
            defer { i += 1 }
            return UInt64(p[i])
        }

        /// A varint of two bytes or more, at most 10 (a truncated or longer one: nil).
        mutating func longVarint() -> UInt64? {
            var v: UInt64 = 0
            var shift: UInt64 = 0
            while i < end {
                let b = p[i]
                i += 1
                v |= UInt64(b & 0x7F) << shift
                if b < 0x80 { return v }
                shift += 7
                if shift > 63 { return nil }
            }
            return nil
        }

        /// A key or length of two bytes or more, at most 5 (a truncated or longer one: nil):
        /// `longVarint`, refused when it took more than 5 bytes.
        mutating func longKey() -> UInt64? {
            let start = i
            guard let v = longVarint(), i - start <= 5 else { return nil }
            return v
        }

        /// A length-delimited field's bounds.
        @inline(__always) mutating func bytes() -> Range<Int>? {
            let n: UInt64
            if i < end, p[i] < 0x80 {
                n = UInt64(p[i])
                i += 1
            } else {
                // At most 5 bytes, as protobuf-c reads a length prefix.
                guard let long = longKey() else { return nil }
                n = long
            }
            guard n <= UInt64(end - i) else { return nil }
            let r = i..<(i + Int(n))
            i += Int(n)
            return r
        }

        /// Skips a field of `wireType`; false for an unknown wire type or a truncation.
        mutating func skip(_ wireType: UInt64) -> Bool {
            switch wireType {
            case 0: return varint() != nil
            case 1: i += 8; return i <= end
            case 2: return bytes() != nil
            case 5: i += 4; return i <= end
            default: return false
            }
        }
    }

    /// Decodes `Request` when it holds a check or a batch check; nil to let protobuf-c decide.
    static func decodeRequest(_ raw: UnsafeRawBufferPointer, limits: WireLimits = WireLimits()) -> WireRequest? {
        var r = Reader(raw)
        var requestId: UInt64 = 0
        var deadline: UInt64 = 0
        var call: Result<Call, AuthzError>?
        var apiKey: String?
        while !r.atEnd {
            guard let key = r.key() else { return nil }
            let field = key >> 3, wt = key & 7
            if field == 0 { return nil }  // invalid in protobuf: protobuf-c rejects the message
            switch (field, wt) {
            case (1, 0): guard let v = r.varint() else { return nil }; requestId = v
            case (2, 0): guard let v = r.varint() else { return nil }; deadline = v
            case (3, 2):
                guard let range = r.bytes() else { return nil }
                for k in range where raw[k] == 0 || raw[k] >= 0x80 { return nil }
                apiKey = range.isEmpty ? nil : String(decoding: UnsafeRawBufferPointer(rebasing: raw[range]), as: UTF8.self)
            case (10, 2):
                guard call == nil, let range = r.bytes() else { return nil }
                guard let c = check(raw, range, field: "check") else { return nil }
                call = c.map { .check($0) }
            case (11, 2):
                guard call == nil, let range = r.bytes() else { return nil }
                guard let c = batch(raw, range, limits: limits) else { return nil }
                call = .success(c)
            default: return nil  // other calls, unknown fields, wire-type surprises: protobuf-c decides
            }
        }
        guard let call, deadline <= UInt64(UInt32.max) else { return nil }
        return WireRequest(requestId: requestId, deadlineMs: UInt32(deadline), call: call, apiKey: apiKey)
    }

    static func batch(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>, limits: WireLimits) -> Call? {
        // Count the items before decoding any: the bound, not the frame, sizes what is built.
        var counter = Reader(raw, from: range.lowerBound, to: range.upperBound)
        var count = 0
        while !counter.atEnd {
            guard let key = counter.key(), key >> 3 != 0 else { return nil }
            if key == (1 << 3 | 2) { count += 1 }
            guard counter.skip(key & 7) else { return nil }
        }
        if count > limits.maxBatchChecks { return nil }  // protobuf-c path answers with the same bound
        var r = Reader(raw, from: range.lowerBound, to: range.upperBound)
        var items: [Result<CheckCall, AuthzError>] = []
        var minRevision: UInt64 = 0
        while !r.atEnd {
            guard let key = r.key(), key >> 3 != 0 else { return nil }
            switch (key >> 3, key & 7) {
            case (1, 2):
                guard let sub = r.bytes(), let c = check(raw, sub, field: "batch_check.checks[\(items.count)]") else { return nil }
                items.append(c)
            case (2, 0): guard let v = r.varint() else { return nil }; minRevision = v
            case (1, _), (2, _): return nil
            default: guard r.skip(key & 7) else { return nil }
            }
        }
        return .batchCheck(items, minRevision: minRevision)
    }

    /// A `CheckRequest`, validated like the protobuf-c path (same fields, rules and messages).
    static func check(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>, field: String) -> Result<CheckCall, AuthzError>? {
        var r = Reader(raw, from: range.lowerBound, to: range.upperBound)
        var tenant = 0..<0, user = 0..<0, permission = 0..<0
        var scope: UInt64 = 0, minRevision: UInt64 = 0
        while !r.atEnd {
            guard let key = r.key(), key >> 3 != 0 else { return nil }
            switch (key >> 3, key & 7) {
            case (1, 2): guard let b = r.bytes() else { return nil }; tenant = b
            case (2, 2): guard let b = r.bytes() else { return nil }; user = b
            case (3, 2): guard let b = r.bytes() else { return nil }; permission = b
            case (4, 0): guard let v = r.varint() else { return nil }; scope = v
            case (5, 0): guard let v = r.varint() else { return nil }; minRevision = v
            case (1...5, _): return nil
            default: guard r.skip(key & 7) else { return nil }
            }
        }
        // Anything unusual (embedded NUL, non-ASCII, odd enum values) goes to protobuf-c, whose
        // messages are the reference.
        func plain(_ b: Range<Int>) -> Bool {
            for k in b where raw[k] == 0 || raw[k] >= 0x80 { return false }
            return true
        }
        // Ids are checked by the UUID parser (hex and hyphens only); the permission here. A NUL
        // anywhere is refused for the whole request by the protobuf-c path (RequestInspector):
        // defer to it before reporting any per-item error.
        guard plain(permission), scope <= 3 else { return nil }
        for k in tenant where raw[k] == 0 { return nil }
        for k in user where raw[k] == 0 { return nil }
        func id(_ b: Range<Int>, _ name: String) -> Result<ID, AuthzError>? {
            let text = UnsafeRawBufferPointer(rebasing: raw[b])
            if b.isEmpty { return .failure(AuthzError.invalid("\(field).\(name)", "is required")) }
            guard let v = ID(bytes: text) else {
                if !plain(b) { return nil }
                let s = String(decoding: text, as: UTF8.self)
                return .failure(AuthzError.invalid("\(field).\(name)", "must be a UUID in 8-4-4-4-12 form (got \(WireCodec.quote(s)))"))
            }
            return .success(v)
        }
        let t: ID, u: ID
        switch id(tenant, "tenant_id") { case .success(let v)?: t = v; case .failure(let e)?: return .failure(e); case nil: return nil }
        switch id(user, "user_id") { case .success(let v)?: u = v; case .failure(let e)?: return .failure(e); case nil: return nil }
        if permission.isEmpty { return .failure(AuthzError.invalid("\(field).permission", "must not be empty")) }
        if permission.count > FieldLimits.maxNameBytes {
            return .failure(AuthzError.invalid("\(field).permission", "must be at most \(FieldLimits.maxNameBytes) bytes"))
        }
        guard scope >= 1 else { return .failure(AuthzError.invalid("\(field).scope", "is required (SCOPE_SELF, SCOPE_TENANT or SCOPE_GLOBAL)")) }
        let name = String(decoding: UnsafeRawBufferPointer(rebasing: raw[permission]), as: UTF8.self)
        return .success(CheckCall(tenantId: t, userId: u, permission: name, scope: Scope(rawValue: UInt8(scope - 1))!, minRevision: minRevision))
    }

    // MARK: responses

    @inline(__always) static func varint(_ v: UInt64, _ out: inout [UInt8]) {
        var v = v
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    @inline(__always) static func varintSize(_ v: UInt64) -> Int {
        var n = 1
        var v = v
        while v >= 0x80 { v >>= 7; n += 1 }
        return n
    }

    /// CheckResponse{decision=1, reason=2, revision=3} (proto3: zero fields omitted).
    @inline(__always) static func decisionSize(_ d: Decision) -> Int {
        2 + 2 + (d.revision == 0 ? 0 : 1 + varintSize(d.revision))
    }

    @inline(__always) static func writeDecision(_ d: Decision, _ out: inout [UInt8]) {
        out.append(0x08); out.append(d.allowed ? 1 : 2)
        out.append(0x10); out.append(d.reason.rawValue)
        if d.revision != 0 { out.append(0x18); varint(d.revision, &out) }
    }

    /// Encodes a successful check or batch check response; nil for anything else.
    static func encodeResponse(_ r: WireResponse) -> [UInt8]? {
        guard case .success(let reply) = r.result else { return nil }
        var out: [UInt8] = []
        switch reply {
        case .check(let d):
            out.reserveCapacity(24)
            if r.requestId != 0 { out.append(0x08); varint(r.requestId, &out) }
            out.append(10 << 3 | 2)
            varint(UInt64(decisionSize(d)), &out)
            writeDecision(d, &out)
            return out
        case .batchCheck(let items, let revision):
            var inner = 0
            for item in items {
                guard case .success(let d) = item else { return nil }  // errors: protobuf-c path
                let n = decisionSize(d)
                inner += 1 + varintSize(UInt64(n)) + n
            }
            if revision != 0 { inner += 1 + varintSize(revision) }
            out.reserveCapacity(inner + 16)
            if r.requestId != 0 { out.append(0x08); varint(r.requestId, &out) }
            out.append(11 << 3 | 2)
            varint(UInt64(inner), &out)
            for case .success(let d) in items {
                out.append(0x0A)
                varint(UInt64(decisionSize(d)), &out)
                writeDecision(d, &out)
            }
            if revision != 0 { out.append(0x10); varint(revision, &out) }
            return out
        default:
            return nil
        }
    }
}
