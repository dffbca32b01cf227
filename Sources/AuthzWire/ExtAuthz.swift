internal import CAuthzProto
import AuthzModel

/// One decoded Envoy `envoy.service.auth.v3.CheckRequest`: the fields authzd uses.
///
/// Built only by `ExtAuthzCodec.decodeCheckRequest`; holds Swift values, never a C pointer.
public struct ExtAuthzRequest: Sendable, Equatable {
    /// `attributes.request.http.method` (`GET`, `POST`, …).
    public var method: String
    /// `attributes.request.http.path` as Envoy sends it: the request target, which may
    /// include the query string.
    public var path: String
    /// The request's headers, names lower-cased, in the order: every entry of
    /// `attributes.request.http.headers` (a map: Envoy joins repeated headers there with `,`;
    /// sorted by name here, since a map has no order; entries whose names are equal after
    /// lower-casing, which Envoy never sends, are joined the same way), then every entry of
    /// `attributes.request.http.header_map.headers` (a list: Envoy sends one entry per header
    /// line there when `encode_raw_headers` is set) with its `value`, or its `raw_value` read
    /// as UTF-8 (invalid sequences become U+FFFD) when `value` is empty.
    public var headers: [(name: String, value: String)]
    /// `attributes.context_extensions` (set per route in Envoy's configuration).
    public var contextExtensions: [String: String]

    /// A request from its parts, as given (names are not lower-cased here).
    public init(method: String, path: String, headers: [(name: String, value: String)], contextExtensions: [String: String]) {
        self.method = method
        self.path = path
        self.headers = headers
        self.contextExtensions = contextExtensions
    }

    /// The value of the first header named `lowercaseName`, nil when there is none. Linear in
    /// the number of headers; allocates nothing.
    public func header(_ lowercaseName: String) -> String? {
        for h in headers where h.name == lowercaseName { return h.value }
        return nil
    }

    /// Every value of the headers named `lowercaseName` joined with `,` (how Envoy itself
    /// folds repeated headers into the `headers` map), nil when there is none. A header sent
    /// twice with different values so reads the same whichever form Envoy used, and two
    /// identities never silently become the first one.
    public func combinedHeader(_ lowercaseName: String) -> String? {
        var found: String?
        for h in headers where h.name == lowercaseName {
            found = found.map { $0 + "," + h.value } ?? h.value
        }
        return found
    }

    /// Equal when every field is, headers compared in order.
    public static func == (a: ExtAuthzRequest, b: ExtAuthzRequest) -> Bool {
        a.method == b.method && a.path == b.path && a.contextExtensions == b.contextExtensions
            && a.headers.count == b.headers.count
            && zip(a.headers, b.headers).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }
}

/// Envoy's ext_authz gRPC messages (`envoy.service.auth.v3.CheckRequest` and
/// `CheckResponse`) to and from Swift values, through the protobuf-c code generated from
/// `proto/envoy/ext_authz.proto` (a pruned, wire-compatible copy of Envoy's API; fields it
/// does not list are skipped when read). The only code that sees those C messages.
public enum ExtAuthzCodec {
    /// Most items any one repeated or map field of a CheckRequest may hold (headers, header
    /// map entries, context extensions). Envoy sends at most its `max_headers_count` headers
    /// (100 by default). Unknown fields need no bound: protobuf-c keeps each as one copy of
    /// its bytes, so they cost no more than the message's size.
    public static let maxItemsPerField = 1024

    /// Decodes a CheckRequest.
    ///
    /// Before protobuf-c unpacks anything, the bytes are walked with the generated
    /// descriptors (as `RequestInspector` does for authz.v1): a truncated or malformed field,
    /// a string field holding a NUL byte (which protobuf-c would silently cut at), or a
    /// repeated field with more than `maxItemsPerField` items throws INVALID_ARGUMENT naming
    /// the field by its path (`attributes.request.http.headers[3].value`) and unpacks nothing.
    ///
    /// Throws INVALID_ARGUMENT also when protobuf-c cannot unpack the bytes, when
    /// `attributes.request.http` is absent (not an HTTP check: Envoy's network ext_authz
    /// filter pointed at authzd), or when a `string` field is not UTF-8 (protobuf requires
    /// it, and authzd never decides on a replacement character). Never returns a partial
    /// request.
    ///
    /// Cost: one pass over the bytes, then protobuf-c's allocations, all freed before it
    /// returns (`…__free_unpacked`).
    public static func decodeCheckRequest(_ bytes: UnsafeRawBufferPointer) throws -> ExtAuthzRequest {
        if let problem = ExtAuthzInspector.problem(in: bytes, maxItems: maxItemsPerField) { throw problem }
        // The corresponding C function is `authz__envoy__v3__check_request__unpack`; NULL on
        // malformed input, the message to free with `…__free_unpacked` otherwise.
        guard let msg = authz__envoy__v3__check_request__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
            throw AuthzError.invalid("CheckRequest", "is not a valid envoy.service.auth.v3.CheckRequest protobuf message")
        }
        defer { authz__envoy__v3__check_request__free_unpacked(msg, nil) }

        guard let attributes = msg.pointee.attributes else { throw AuthzError.invalid("attributes", "is required") }
        var extensions: [String: String] = [:]
        let a = attributes.pointee
        for i in 0..<a.n_context_extensions {
            guard let e = a.context_extensions[i] else { continue }
            let field = "attributes.context_extensions[\(i)]"
            // A map: the last entry of a key wins, as in every protobuf implementation.
            extensions[try utf8(e.pointee.key, field + ".key")] = try utf8(e.pointee.value, field + ".value")
        }
        guard let http = a.request?.pointee.http?.pointee else {
            throw AuthzError.invalid("attributes.request.http", "is required (authzd answers HTTP checks only)")
        }
        let method = try utf8(http.method, "attributes.request.http.method")
        let path = try utf8(http.path, "attributes.request.http.path")

        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(http.n_headers + Int(http.header_map?.pointee.n_headers ?? 0))
        var mapped: [String: String] = [:]
        for i in 0..<http.n_headers {
            guard let e = http.headers[i] else { continue }
            let field = "attributes.request.http.headers[\(i)]"
            let name = try utf8(e.pointee.key, field + ".key").lowercased(), value = try utf8(e.pointee.value, field + ".value")
            mapped[name] = mapped[name].map { $0 + "," + value } ?? value
        }
        for (name, value) in mapped.sorted(by: { $0.key < $1.key }) { headers.append((name, value)) }
        if let list = http.header_map?.pointee {
            for i in 0..<list.n_headers {
                guard let h = list.headers[i]?.pointee else { continue }
                let field = "attributes.request.http.header_map.headers[\(i)]"
                let name = try utf8(h.key, field + ".key").lowercased()
                var value = try utf8(h.value, field + ".value")
                if value.isEmpty, h.raw_value.len > 0 {
                    value = String(decoding: UnsafeBufferPointer(start: h.raw_value.data, count: h.raw_value.len), as: UTF8.self)
                }
                headers.append((name, value))
            }
        }
        return ExtAuthzRequest(method: method, path: path, headers: headers, contextExtensions: extensions)
    }

    /// Encodes a CheckResponse.
    ///
    /// - allowed: `status.code` 0 and `ok_response.headers` = `headers` (Envoy adds them to
    ///   the request it forwards upstream).
    /// - denied: `status.code` = `grpcCode` (7 PERMISSION_DENIED, 16 UNAUTHENTICATED,
    ///   14 UNAVAILABLE), `denied_response` with HTTP status `httpStatus` (clamped to 0…999),
    ///   `headers` (Envoy adds them to the response to the client) and an empty body.
    ///
    /// `status.message` is `message`. Every header is sent with `append_action`
    /// OVERWRITE_IF_EXISTS_OR_ADD, so a client cannot pre-set one of them (the deprecated
    /// `append` is left unset, which Envoy reads the same way). Strings are C strings on the
    /// way out: one holding a NUL byte is cut there, so callers pass authzd's own values.
    ///
    /// Byte-identical to what Python's protobuf serializes for the same message (tests hold
    /// the golden bytes). Allocates the message tree in an `Arena`, freed before it returns.
    public static func encodeCheckResponse(allowed: Bool, grpcCode: Int32, httpStatus: Int, message: String,
                                           headers: [(String, String)]) -> [UInt8] {
        let a = Arena()
        let msg = a.make(Authz__Envoy__V3__CheckResponse.self) { authz__envoy__v3__check_response__init($0) }
        msg.pointee.status = a.make(Authz__Envoy__V3__Status.self) {
            authz__envoy__v3__status__init($0)
            $0.pointee.code = allowed ? 0 : grpcCode
            $0.pointee.message = a.cString(message)
        }
        let options = a.array(UnsafeMutablePointer<Authz__Envoy__V3__HeaderValueOption>?.self, count: headers.count)
        for (i, (name, value)) in headers.enumerated() {
            options[i] = a.make(Authz__Envoy__V3__HeaderValueOption.self) { o in
                authz__envoy__v3__header_value_option__init(o)
                o.pointee.header = a.make(Authz__Envoy__V3__HeaderValue.self) { h in
                    authz__envoy__v3__header_value__init(h)
                    h.pointee.key = a.cString(name)
                    h.pointee.value = a.cString(value)
                }
                o.pointee.append_action = AUTHZ__ENVOY__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS_OR_ADD
            }
        }
        if allowed {
            msg.pointee.http_response_case = AUTHZ__ENVOY__V3__CHECK_RESPONSE__HTTP_RESPONSE_OK_RESPONSE
            msg.pointee.ok_response = a.make(Authz__Envoy__V3__OkHttpResponse.self) {
                authz__envoy__v3__ok_http_response__init($0)
                $0.pointee.n_headers = headers.count
                $0.pointee.headers = options
            }
        } else {
            msg.pointee.http_response_case = AUTHZ__ENVOY__V3__CHECK_RESPONSE__HTTP_RESPONSE_DENIED_RESPONSE
            msg.pointee.denied_response = a.make(Authz__Envoy__V3__DeniedHttpResponse.self) { d in
                authz__envoy__v3__denied_http_response__init(d)
                d.pointee.status = a.make(Authz__Envoy__V3__HttpStatus.self) {
                    authz__envoy__v3__http_status__init($0)
                    $0.pointee.code = Authz__Envoy__V3__StatusCode(rawValue: UInt32(min(max(httpStatus, 0), 999)))
                }
                d.pointee.n_headers = headers.count
                d.pointee.headers = options
            }
        }
        // The corresponding C functions are `authz__envoy__v3__check_response__get_packed_size`
        // and `…__pack`, which writes exactly that many bytes.
        let n = authz__envoy__v3__check_response__get_packed_size(msg)
        return [UInt8](unsafeUninitializedCapacity: n) { buf, count in
            count = authz__envoy__v3__check_response__pack(msg, buf.baseAddress)
        }
    }

    /// A C string field as Swift; INVALID_ARGUMENT naming `field` when it is not UTF-8.
    private static func utf8(_ p: UnsafeMutablePointer<CChar>?, _ field: String) throws -> String {
        guard let s = swiftString(p) else { throw AuthzError.invalid(field, "is not valid UTF-8") }
        return s
    }
}

/// Walks a CheckRequest's protobuf bytes with the generated descriptors before protobuf-c
/// unpacks them, and names the first field that is malformed (truncated, a wire type that
/// does not match its declared type, a field number 0), holds a NUL byte in a string, or
/// repeats more than the bound. Unknown fields (everything Envoy sends that ext_authz.proto
/// prunes) are only checked to be well-formed and skipped.
///
/// Cost: one pass over the bytes; allocates one small count array per message it enters,
/// the path of each known message field it enters, and the error it returns. Never recurses
/// on the data: nesting follows the schema (which has no recursive message) and is capped.
enum ExtAuthzInspector {
    /// The first problem in `bytes` read as a CheckRequest; nil when there is none.
    static func problem(in bytes: UnsafeRawBufferPointer, maxItems: Int) -> AuthzError? {
        withUnsafePointer(to: authz__envoy__v3__check_request__descriptor) { d in
            walk(bytes, 0..<bytes.count, d, path: "", depth: 0, maxItems: maxItems)
        }
    }

    private static func walk(_ p: UnsafeRawBufferPointer, _ range: Range<Int>, _ d: UnsafePointer<ProtobufCMessageDescriptor>,
                             path: String, depth: Int, maxItems: Int) -> AuthzError? {
        if depth > 8 { return nil }
        let here = path.isEmpty ? "CheckRequest" : path
        var r = FastPath.Reader(p, from: range.lowerBound, to: range.upperBound)
        var counts = [Int](repeating: 0, count: Int(d.pointee.n_fields))
        while !r.atEnd {
            let at = r.i - range.lowerBound
            guard let key = r.varint() else { return AuthzError.invalid(here, "has a truncated field key at byte \(at)") }
            let number = key >> 3, wt = key & 7
            if number == 0 || number > 536_870_911 {
                return AuthzError.invalid(here, "has an invalid field number \(number) at byte \(at)")
            }
            guard let index = fieldIndex(d, UInt32(number)) else {
                guard r.skip(wt) else { return AuthzError.invalid(here, "has a malformed or truncated unknown field \(number) at byte \(at)") }
                continue
            }
            let f = d.pointee.fields[index]
            let repeated = f.label == PROTOBUF_C_LABEL_REPEATED
            let item = counts[index]
            // The field's path, built only when it is needed (an error, a message to enter).
            func name(indexed: Bool = true) -> String {
                let bare = path.isEmpty ? String(cString: f.name) : path + "." + String(cString: f.name)
                return repeated && indexed ? "\(bare)[\(item)]" : bare
            }
            let expected = wireType(f.type)
            guard wt == expected || (repeated && wt == 2 && expected != 2) else {
                return AuthzError.invalid(name(), "has wire type \(wt), not \(expected) as its type requires")
            }
            if repeated {
                counts[index] += 1
                if counts[index] > maxItems { return AuthzError.invalid(name(indexed: false), "must have at most \(maxItems) items") }
            }
            guard wt == 2 else {
                guard r.skip(wt) else { return AuthzError.invalid(name(), "is truncated") }
                continue
            }
            guard let sub = r.bytes() else { return AuthzError.invalid(name(), "is truncated") }
            switch f.type {
            case PROTOBUF_C_TYPE_STRING:
                for k in sub where p[k] == 0 {
                    return AuthzError.invalid(name(), "must not contain a NUL byte (at byte \(k - sub.lowerBound))")
                }
            case PROTOBUF_C_TYPE_MESSAGE:
                guard let child = f.descriptor?.assumingMemoryBound(to: ProtobufCMessageDescriptor.self) else { continue }
                if let e = walk(p, sub, child, path: name(), depth: depth + 1, maxItems: maxItems) { return e }
            default:
                break
            }
        }
        return nil
    }

    /// The wire type a field of `type` is written with (a repeated scalar may also be packed: 2).
    private static func wireType(_ type: ProtobufCType) -> UInt64 {
        switch type {
        case PROTOBUF_C_TYPE_STRING, PROTOBUF_C_TYPE_BYTES, PROTOBUF_C_TYPE_MESSAGE: return 2
        case PROTOBUF_C_TYPE_FIXED64, PROTOBUF_C_TYPE_SFIXED64, PROTOBUF_C_TYPE_DOUBLE: return 1
        case PROTOBUF_C_TYPE_FIXED32, PROTOBUF_C_TYPE_SFIXED32, PROTOBUF_C_TYPE_FLOAT: return 5
        default: return 0
        }
    }

    private static func fieldIndex(_ d: UnsafePointer<ProtobufCMessageDescriptor>, _ number: UInt32) -> Int? {
        for i in 0..<Int(d.pointee.n_fields) where d.pointee.fields[i].id == number { return i }
        return nil
    }
}
