internal import CAuthzProto
import AuthzModel
#if canImport(Glibc)
import Glibc
#endif

/// Converts between frames' bytes and the typed `WireRequest` / `WireResponse`. The only code
/// that sees a protobuf-c message: everything above it sees Swift types.
public enum WireCodec {
    /// Default and ceiling of page sizes.
    public static let defaultListPageSize = 100
    public static let defaultUsersPageSize = 1000
    public static let maxPageSize = 1000

    static func quote(_ s: String) -> String {
        let cut = s.utf8.count > 64 ? String(decoding: s.utf8.prefix(64), as: UTF8.self) + "…" : s
        return "\"" + cut + "\""
    }

    // MARK: requests

    /// Decodes a request frame's payload. Never throws: a payload that is not a `Request`
    /// gives request id 0 and an INVALID_ARGUMENT naming the problem; a valid envelope with a
    /// malformed call keeps its request id.
    ///
    /// Before protobuf-c unpacks anything, every string field is checked for NUL bytes (which
    /// protobuf-c would silently cut at) and every repeated field is counted against `limits`:
    /// either problem is INVALID_ARGUMENT naming the field, and nothing is unpacked.
    public static func decodeRequest(_ bytes: UnsafeRawBufferPointer, limits: WireLimits = WireLimits()) -> WireRequest {
        if let fast = FastPath.decodeRequest(bytes, limits: limits) { return fast }
        return decodeRequestWithProtobufC(bytes, limits: limits)
    }

    /// The envelope of a request (request id, api key, which call), read without decoding the
    /// call: what the daemon looks at before a connection has authenticated. Nil when the
    /// bytes are not a protobuf message.
    public static func peekEnvelope(_ bytes: UnsafeRawBufferPointer) -> RequestEnvelope? {
        RequestInspector.envelope(bytes)
    }

    /// The hand-written fast path alone: nil when it defers to protobuf-c. For the fuzzer and
    /// tests, which compare it with `decodeRequestWithProtobufC`.
    public static func decodeRequestFastPathOnly(_ bytes: UnsafeRawBufferPointer, limits: WireLimits = WireLimits()) -> WireRequest? {
        FastPath.decodeRequest(bytes, limits: limits)
    }

    /// The generated protobuf-c decoder: the reference for every message (tests compare the
    /// fast path with it).
    public static func decodeRequestWithProtobufC(_ bytes: UnsafeRawBufferPointer, limits: WireLimits = WireLimits()) -> WireRequest {
        if let problem = RequestInspector.problem(in: bytes, limits: limits) {
            let envelope = RequestInspector.envelope(bytes)
            return WireRequest(requestId: envelope?.requestId ?? 0, call: .failure(problem), apiKey: envelope?.apiKey)
        }
        guard let msg = authz__v1__request__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
            return WireRequest(requestId: 0, call: .failure(AuthzError.invalid("request", "is not a valid authz.v1.Request protobuf message")))
        }
        defer { authz__v1__request__free_unpacked(msg, nil) }
        let m = msg.pointee
        let key = swiftString(m.api_key).flatMap { $0.isEmpty ? nil : $0 }
        do {
            return WireRequest(requestId: m.request_id, deadlineMs: m.deadline_ms, call: .success(try decodeCall(m)), apiKey: key)
        } catch let e as AuthzError {
            return WireRequest(requestId: m.request_id, deadlineMs: m.deadline_ms, call: .failure(e), apiKey: key)
        } catch {
            return WireRequest(requestId: m.request_id, deadlineMs: m.deadline_ms, call: .failure(AuthzError.invalid("request", "\(error)")), apiKey: key)
        }
    }

    static func pageSize(_ raw: UInt32, default d: Int) -> Int {
        raw == 0 ? d : min(Int(raw), maxPageSize)
    }

    /// The call a request carries, decoded by that call's codec (`WireCalls`, `Calls/`).
    /// INVALID_ARGUMENT (`request.call`) when no call is set or its number is unknown.
    static func decodeCall(_ m: Authz__V1__Request) throws -> Call {
        guard let codec = WireCalls.codec(field: m.call_case.rawValue) else {
            throw AuthzError.invalid("request.call", "must set one of \(WireCalls.fieldList)")
        }
        return try codec.decodeRequest(m)
    }

    /// Encodes a request (client side). Batch items that are failures are sent empty (the
    /// server then reports them as malformed).
    ///
    /// A string holding a NUL byte cannot be carried (the C message would cut it): use
    /// `encodeRequestChecked` to refuse such a request instead of sending a different question.
    public static func encodeRequest(_ r: WireRequest) -> [UInt8] {
        (try? encodeRequestChecked(r)) ?? encodeRequestUnchecked(r).bytes
    }

    /// Encodes a request, or throws INVALID_ARGUMENT when one of its strings holds a NUL byte
    /// (the message never quotes the value: it may be a secret). Nothing is sent by the caller
    /// then, so a question is never silently changed.
    public static func encodeRequestChecked(_ r: WireRequest) throws -> [UInt8] {
        let (bytes, sawNUL) = encodeRequestUnchecked(r)
        if sawNUL {
            throw AuthzError.invalid("request", "has a string field holding a NUL byte, which authz strings may not contain; nothing was sent")
        }
        return bytes
    }

    static func encodeRequestUnchecked(_ r: WireRequest) -> (bytes: [UInt8], sawNUL: Bool) {
        let a = Arena()
        let bytes = encodeRequest(r, a)
        return (bytes, a.sawNUL)
    }

    /// The envelope, then the call's message by its codec (`WireCalls`). A failed `r.call`
    /// sends no call.
    static func encodeRequest(_ r: WireRequest, _ a: Arena) -> [UInt8] {
        let msg = a.make(Authz__V1__Request.self) { authz__v1__request__init($0) }
        msg.pointee.request_id = r.requestId
        msg.pointee.deadline_ms = r.deadlineMs
        if let key = r.apiKey { msg.pointee.api_key = a.cString(key) }
        guard case .success(let call) = r.call else { return pack(msg) }
        msg.pointee.call_case = Authz__V1__Request__CallCase(rawValue: call.kind.rawValue)
        WireCalls.codec(call.kind).encodeRequest(call, into: msg, a)
        return pack(msg)
    }

    static func pack(_ msg: UnsafeMutablePointer<Authz__V1__Request>) -> [UInt8] {
        let n = authz__v1__request__get_packed_size(msg)
        return [UInt8](unsafeUninitializedCapacity: n) { buf, count in
            count = authz__v1__request__pack(msg, buf.baseAddress)
        }
    }

    // MARK: responses

    /// Encodes a response (server side).
    public static func encodeResponse(_ r: WireResponse) -> [UInt8] {
        if let fast = FastPath.encodeResponse(r) { return fast }
        return encodeResponseWithProtobufC(r)
    }

    /// The generated protobuf-c encoder: the reference for every message. The envelope, then
    /// the reply's message by its call's codec (`WireCalls`).
    public static func encodeResponseWithProtobufC(_ r: WireResponse) -> [UInt8] {
        let a = Arena()
        let msg = a.make(Authz__V1__Response.self) { authz__v1__response__init($0) }
        msg.pointee.request_id = r.requestId
        switch r.result {
        case .failure(let e):
            msg.pointee.status = encodeStatus(e, a)
        case .success(let reply):
            msg.pointee.result_case = Authz__V1__Response__ResultCase(rawValue: reply.kind.rawValue)
            WireCalls.codec(reply.kind).encodeReply(reply, into: msg, a)
        }
        let n = authz__v1__response__get_packed_size(msg)
        return [UInt8](unsafeUninitializedCapacity: n) { buf, count in
            count = authz__v1__response__pack(msg, buf.baseAddress)
        }
    }

    /// Decodes a response frame (client side). Throws INTERNAL for bytes that are not a
    /// `Response`, or a response with neither a status nor a result.
    public static func decodeResponse(_ bytes: UnsafeRawBufferPointer) throws -> WireResponse {
        guard let msg = authz__v1__response__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
            throw AuthzError(.internal, "the server sent a frame that is not an authz.v1.Response")
        }
        defer { authz__v1__response__free_unpacked(msg, nil) }
        let m = msg.pointee
        if let s = m.status, s.pointee.code.rawValue != 0 {
            return WireResponse(requestId: m.request_id, result: .failure(decodeStatus(s)))
        }
        guard let codec = WireCalls.codec(field: m.result_case.rawValue) else {
            throw AuthzError(.internal, "the server's response has neither a status nor a result")
        }
        return WireResponse(requestId: m.request_id, result: .success(try codec.decodeReply(m)))
    }

    // MARK: messages and values several calls share

    static func reasonValue(_ r: Reason) -> Authz__V1__Reason { Authz__V1__Reason(rawValue: UInt32(r.rawValue)) }

    /// A `Status` holding `e` (code, message, field), allocated from `a`.
    static func encodeStatus(_ e: AuthzError, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__Status> {
        a.make(Authz__V1__Status.self) {
            authz__v1__status__init($0)
            $0.pointee.code = Authz__V1__Code(rawValue: UInt32(e.code.rawValue))
            $0.pointee.message = a.cString(e.message)
            $0.pointee.field = a.cString(e.field)
        }
    }

    /// A `Status` as an `AuthzError`; an unknown code is UNKNOWN.
    static func decodeStatus(_ s: UnsafeMutablePointer<Authz__V1__Status>) -> AuthzError {
        let code = AuthzError.Code(rawValue: Int(s.pointee.code.rawValue)) ?? .unknown
        return AuthzError(code, swiftString(s.pointee.message) ?? "", field: swiftString(s.pointee.field) ?? "")
    }

    /// An `ApiKey` message (CreateKey, ListKeys, RevokeKey) holding `k` (never a secret).
    static func encodeKey(_ k: ApiKey, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__ApiKey> {
        a.make(Authz__V1__ApiKey.self) {
            authz__v1__api_key__init($0)
            $0.pointee.id = a.cString(k.id.description)
            $0.pointee.tenant_id = a.cString(k.tenantId == .zero ? "" : k.tenantId.description)
            $0.pointee.role = Authz__V1__KeyRole(rawValue: UInt32(k.role.rawValue))
            $0.pointee.name = a.cString(k.name)
            $0.pointee.created_at = k.createdAt
            $0.pointee.expires_at = k.expiresAt
            $0.pointee.revoked_at = k.revokedAt
            $0.pointee.may_read_secrets = k.maySeeSecrets ? 1 : 0
            $0.pointee.created_by = a.cString(k.createdBy == .zero ? "" : k.createdBy.description)
        }
    }

    /// An `ApiKey` message as a record; nil when absent or its id or role is malformed.
    static func decodeKey(_ p: UnsafeMutablePointer<Authz__V1__ApiKey>?) -> ApiKey? {
        guard let k = p?.pointee, let id = ID(swiftString(k.id) ?? ""), let role = KeyRole(rawValue: UInt8(truncatingIfNeeded: k.role.rawValue)) else { return nil }
        return ApiKey(id: id, tenantId: ID(swiftString(k.tenant_id) ?? "") ?? .zero, role: role, name: swiftString(k.name) ?? "",
                      createdAt: k.created_at, expiresAt: k.expires_at, revokedAt: k.revoked_at,
                      maySeeSecrets: k.may_read_secrets != 0, createdBy: ID(swiftString(k.created_by) ?? "") ?? .zero)
    }

    /// A `Reason` from a response. INTERNAL for a value this client does not know.
    static func decodeReason(_ r: Authz__V1__Reason) throws -> Reason {
        guard let reason = Reason(rawValue: UInt8(truncatingIfNeeded: r.rawValue)), r.rawValue <= 8 else {
            throw AuthzError(.internal, "response has unknown reason \(r.rawValue)")
        }
        return reason
    }

    /// A scope from a response; nil for SCOPE_UNSPECIFIED or an unknown value.
    static func scopeFrom(_ s: Authz__V1__Scope) -> Scope? {
        s.rawValue >= 1 && s.rawValue <= 3 ? Scope(rawValue: UInt8(s.rawValue - 1)) : nil
    }

    /// The ids among `n` C strings from a response; malformed ones are skipped.
    static func ids(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> [ID] {
        (0..<n).compactMap { ID(swiftString(p![$0]) ?? "") }
    }
}
