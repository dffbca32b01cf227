internal import CAuthzProto
import AuthzModel

/// Bounds the codec enforces on a request's bytes before anything is unpacked, so that the size
/// of what a request decodes into is fixed by configuration, not by the frame.
public struct WireLimits: Sendable, Equatable {
    /// Most items of `BatchCheckRequest.checks`.
    public var maxBatchChecks: Int
    /// Most items of `WriteRequest.ops`.
    public var maxWriteOps: Int
    /// Most items of any other repeated field (role inherits, scopes, OAuth scopes).
    public var maxListItems: Int

    public init(maxBatchChecks: Int = 10_000, maxWriteOps: Int = 100_000, maxListItems: Int = 1024) {
        self.maxBatchChecks = maxBatchChecks
        self.maxWriteOps = maxWriteOps
        self.maxListItems = maxListItems
    }
}

/// What a request's envelope says, read without decoding its call.
public struct RequestEnvelope: Sendable, Equatable {
    /// The `request_id` (0 when absent).
    public var requestId: UInt64 = 0
    /// The per-request `api_key`, when present and non-empty. Not validated.
    public var apiKey: String?
    /// The field number of the call the request carries (0: none).
    public var callField: Int = 0

    /// The call the request carries, or nil (none, or a field this build does not know). Which
    /// calls an unauthenticated connection may make is the commands' rule (`Command.open`).
    public var callKind: CallKind? { CallKind(rawValue: UInt32(clamping: callField)) }
}

/// Walks a request's protobuf bytes with the generated descriptors before protobuf-c unpacks
/// them. protobuf-c keeps a string as a NUL-terminated C string, so an embedded NUL would
/// silently cut it (`gmail.messages.read\0core.admin` would be decided as
/// `gmail.messages.read`); and it allocates every repeated item before anyone counts them.
/// This walk sees each string with its length and counts each repeated field first.
///
/// Cost: one pass over the bytes, allocation-free but for the error it returns. Never recurses
/// on the data: nesting follows the schema (which has no recursive message) and is capped.
enum RequestInspector {
    /// The first problem in `bytes` read as a `Request`: a string field holding a NUL byte,
    /// or a repeated field over its bound. Nil when neither occurs (malformed protobuf is left
    /// for protobuf-c to refuse).
    static func problem(in bytes: UnsafeRawBufferPointer, limits: WireLimits) -> AuthzError? {
        withUnsafePointer(to: authz__v1__request__descriptor) { d in
            walk(bytes, 0..<bytes.count, descriptor: d, path: "", depth: 0, limits: limits)
        }
    }

    /// Reads only the envelope: request id, api key and which call is set. Nil when the bytes
    /// are not a well-formed protobuf message at the top level.
    static func envelope(_ bytes: UnsafeRawBufferPointer) -> RequestEnvelope? {
        var r = FastPath.Reader(bytes)
        var e = RequestEnvelope()
        while !r.atEnd {
            guard let key = r.key(), key >> 3 != 0 else { return nil }
            let field = Int(key >> 3), wt = key & 7
            switch (field, wt) {
            case (1, 0):
                guard let v = r.varint() else { return nil }
                e.requestId = v
            case (3, 2):
                guard let range = r.bytes() else { return nil }
                if range.isEmpty { e.apiKey = nil; continue }
                // A key is printable ASCII; anything else cannot match and is not echoed.
                var plain = true
                for k in range where bytes[k] < 0x21 || bytes[k] > 0x7E { plain = false }
                e.apiKey = plain ? String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self) : "\u{FFFD}"
            case _ where CallKind(rawValue: UInt32(truncatingIfNeeded: field)) != nil:
                // Any call of `Request.call`, the last one winning as in protobuf-c (which
                // refuses a call field of another wire type).
                guard wt == 2, r.bytes() != nil else { return nil }
                e.callField = field
            default:
                guard r.skip(wt) else { return nil }
            }
        }
        return e
    }

    private static func walk(_ p: UnsafeRawBufferPointer, _ range: Range<Int>, descriptor d: UnsafePointer<ProtobufCMessageDescriptor>,
                             path: String, depth: Int, limits: WireLimits) -> AuthzError? {
        if depth > 8 { return nil }
        var r = FastPath.Reader(p, from: range.lowerBound, to: range.upperBound)
        // Occurrences of each repeated field of this message, by field index.
        var counts = [Int](repeating: 0, count: Int(d.pointee.n_fields))
        while !r.atEnd {
            guard let key = r.key() else { return nil }
            let number = UInt32(truncatingIfNeeded: key >> 3), wt = key & 7
            guard let index = fieldIndex(d, number) else {
                guard r.skip(wt) else { return nil }
                continue
            }
            let f = d.pointee.fields[index]
            let name = String(cString: f.name)
            let repeated = f.label == PROTOBUF_C_LABEL_REPEATED
            let here = path.isEmpty ? name : path + "." + name
            if repeated {
                let bound = bound(for: here, limits)
                if wt == 2 && f.type != PROTOBUF_C_TYPE_STRING && f.type != PROTOBUF_C_TYPE_BYTES && f.type != PROTOBUF_C_TYPE_MESSAGE {
                    // A packed run of varints: one item per byte without the continuation bit.
                    guard let sub = r.bytes() else { return nil }
                    for k in sub where p[k] < 0x80 { counts[index] += 1 }
                } else {
                    counts[index] += 1
                    if counts[index] <= bound, wt == 2 {
                        guard let sub = r.bytes() else { return nil }
                        if let e = inspectValue(p, sub, f, path: "\(here)[\(counts[index] - 1)]", depth: depth, limits: limits) { return e }
                        continue
                    }
                    guard r.skip(wt) else { return nil }
                }
                if counts[index] > bound {
                    return AuthzError.invalid(here, "must have at most \(bound) items")
                }
                continue
            }
            guard wt == 2 else {
                guard r.skip(wt) else { return nil }
                continue
            }
            guard let sub = r.bytes() else { return nil }
            if let e = inspectValue(p, sub, f, path: here, depth: depth, limits: limits) { return e }
        }
        return nil
    }

    private static func inspectValue(_ p: UnsafeRawBufferPointer, _ sub: Range<Int>, _ f: ProtobufCFieldDescriptor,
                                     path: String, depth: Int, limits: WireLimits) -> AuthzError? {
        switch f.type {
        case PROTOBUF_C_TYPE_STRING:
            for k in sub where p[k] == 0 {
                return AuthzError.invalid(path, "must not contain a NUL byte (at byte \(k - sub.lowerBound))")
            }
        case PROTOBUF_C_TYPE_MESSAGE:
            guard let child = f.descriptor?.assumingMemoryBound(to: ProtobufCMessageDescriptor.self) else { return nil }
            return walk(p, sub, descriptor: child, path: path, depth: depth + 1, limits: limits)
        default:
            break
        }
        return nil
    }

    private static func fieldIndex(_ d: UnsafePointer<ProtobufCMessageDescriptor>, _ number: UInt32) -> Int? {
        let n = Int(d.pointee.n_fields)
        for i in 0..<n where d.pointee.fields[i].id == number { return i }
        return nil
    }

    private static func bound(for path: String, _ limits: WireLimits) -> Int {
        if path == "batch_check.checks" { return limits.maxBatchChecks }
        if path == "write.ops" { return limits.maxWriteOps }
        return limits.maxListItems
    }
}
