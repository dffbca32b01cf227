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

    static func decodeCheck(_ c: UnsafeMutablePointer<Authz__V1__CheckRequest>?, field: String) throws -> CheckCall {
        guard let c else { throw AuthzError.invalid(field, "is required") }
        let r = FieldReader(prefix: field + ".")
        let tenant = try r.id(c.pointee.tenant_id, "tenant_id")
        let user = try r.id(c.pointee.user_id, "user_id")
        let permission = try r.string(c.pointee.permission, "permission")
        if permission.isEmpty { throw AuthzError.invalid(field + ".permission", "must not be empty") }
        if permission.utf8.count > FieldLimits.maxNameBytes {
            throw AuthzError.invalid(field + ".permission", "must be at most \(FieldLimits.maxNameBytes) bytes")
        }
        let scope = try r.scope(c.pointee.scope.rawValue, "scope")
        return CheckCall(tenantId: tenant, userId: user, permission: permission, scope: scope, minRevision: c.pointee.min_revision)
    }

    static func pageSize(_ raw: UInt32, default d: Int) -> Int {
        raw == 0 ? d : min(Int(raw), maxPageSize)
    }

    static func decodeCall(_ m: Authz__V1__Request) throws -> Call {
        switch m.call_case {
        case AUTHZ__V1__REQUEST__CALL_CHECK:
            return .check(try decodeCheck(m.check, field: "check"))
        case AUTHZ__V1__REQUEST__CALL_BATCH_CHECK:
            let b = m.batch_check.pointee
            var items: [Result<CheckCall, AuthzError>] = []
            items.reserveCapacity(b.n_checks)
            for i in 0..<b.n_checks {
                do { items.append(.success(try decodeCheck(b.checks[i], field: "batch_check.checks[\(i)]"))) } catch let e as AuthzError { items.append(.failure(e)) }
            }
            return .batchCheck(items, minRevision: b.min_revision)
        case AUTHZ__V1__REQUEST__CALL_EXPLAIN:
            return .explain(try decodeCheck(m.explain.pointee.check, field: "explain.check"))
        case AUTHZ__V1__REQUEST__CALL_LIST_USER_PERMISSIONS:
            let x = m.list_user_permissions.pointee
            let r = FieldReader(prefix: "list_user_permissions.")
            return .listUserPermissions(tenantId: try r.id(x.tenant_id, "tenant_id"), userId: try r.id(x.user_id, "user_id"), minRevision: x.min_revision)
        case AUTHZ__V1__REQUEST__CALL_LIST_PERMISSION_USERS:
            let x = m.list_permission_users.pointee
            let r = FieldReader(prefix: "list_permission_users.")
            let permission = try r.string(x.permission, "permission")
            if permission.isEmpty { throw AuthzError.invalid("list_permission_users.permission", "must not be empty") }
            return .listPermissionUsers(tenantId: try r.id(x.tenant_id, "tenant_id"), permission: permission,
                                        scope: try r.scope(x.scope.rawValue, "scope"), pageSize: pageSize(x.page_size, default: defaultUsersPageSize),
                                        after: try r.optionalID(x.page_token, "page_token"), minRevision: x.min_revision)
        case AUTHZ__V1__REQUEST__CALL_WRITE:
            let w = m.write.pointee
            var ops: [WriteOp] = []
            ops.reserveCapacity(w.n_ops)
            for i in 0..<w.n_ops {
                guard let op = w.ops[i] else { throw AuthzError.invalid("write.ops[\(i)]", "is required") }
                switch op.pointee.op_case {
                case AUTHZ__V1__WRITE_OP__OP_UPSERT:
                    // Timestamps are decoded too: the store ignores them on a Write, keeps them for an
                    // import or a conditional upsert (which go through the log in log mode).
                    do { ops.append(.upsert(try EntityCodec.decodeWithTimestamps(op.pointee.upsert, field: "write.ops[\(i)].upsert"))) } catch var e as AuthzError {
                        e.message = "write.ops[\(i)]: " + e.message
                        throw e
                    }
                case AUTHZ__V1__WRITE_OP__OP_UPSERT_IF_NEWER:
                    do { ops.append(.upsertIfNewer(try EntityCodec.decodeWithTimestamps(op.pointee.upsert_if_newer, field: "write.ops[\(i)].upsert_if_newer"))) } catch var e as AuthzError {
                        e.message = "write.ops[\(i)]: " + e.message
                        throw e
                    }
                case AUTHZ__V1__WRITE_OP__OP_DEACTIVATE:
                    ops.append(.deactivate(try EntityCodec.decodeRef(op.pointee.deactivate, field: "write.ops[\(i)].deactivate")))
                case AUTHZ__V1__WRITE_OP__OP_ACTIVATE:
                    ops.append(.activate(try EntityCodec.decodeRef(op.pointee.activate, field: "write.ops[\(i)].activate")))
                default:
                    throw AuthzError.invalid("write.ops[\(i)]", "must set one of upsert, deactivate, activate, upsert_if_newer")
                }
            }
            return .write(ops)
        case AUTHZ__V1__REQUEST__CALL_GET:
            return .get(try EntityCodec.decodeRef(m.get.pointee.ref, field: "get.ref"), includeSecrets: m.get.pointee.include_secrets != 0)
        case AUTHZ__V1__REQUEST__CALL_LIST:
            let x = m.list.pointee
            let r = FieldReader(prefix: "list.")
            let kind = try EntityCodec.kind(x.kind.rawValue, field: "list.kind")
            let tenant = kind == .tenant ? (try r.optionalID(x.tenant_id, "tenant_id") ?? .zero) : try r.id(x.tenant_id, "tenant_id")
            return .list(kind, tenantId: tenant, pageSize: pageSize(x.page_size, default: defaultListPageSize),
                         after: try r.optionalID(x.page_token, "page_token"), includeSecrets: x.include_secrets != 0)
        case AUTHZ__V1__REQUEST__CALL_IMPORT:
            let d = m.import.pointee.jsonl
            let bytes = d.len == 0 ? [] : Array(UnsafeBufferPointer(start: d.data, count: d.len))
            if let session = try FieldReader(prefix: "import.").optionalID(m.import.pointee.session, "session") {
                return .importChunk(session: session, jsonl: bytes, firstLine: m.import.pointee.first_line, more: m.import.pointee.more != 0)
            }
            if m.import.pointee.more != 0 { throw AuthzError.invalid("import.more", "needs import.session") }
            return .importJSONL(bytes)
        case AUTHZ__V1__REQUEST__CALL_EXPORT:
            let r = FieldReader(prefix: "export.")
            let x = m.export.pointee
            let tenant = try r.optionalID(x.tenant_id, "tenant_id")
            let token = try r.string(x.page_token, "page_token")
            if x.page_size > 0 || !token.isEmpty {
                return .exportPage(tenantId: tenant, includeSecrets: x.include_secrets != 0, pageSize: Int(min(x.page_size == 0 ? 10_000 : x.page_size, 100_000)), pageToken: token)
            }
            return .export(tenantId: tenant, includeSecrets: x.include_secrets != 0)
        case AUTHZ__V1__REQUEST__CALL_SERVER_INFO:
            return .serverInfo
        case AUTHZ__V1__REQUEST__CALL_HEALTH:
            return .health
        case AUTHZ__V1__REQUEST__CALL_HELLO:
            let r = FieldReader(prefix: "hello.")
            return .hello(apiKey: try r.string(m.hello.pointee.api_key, "api_key"), protocolVersion: m.hello.pointee.protocol_version)
        case AUTHZ__V1__REQUEST__CALL_CREATE_KEY:
            let x = m.create_key.pointee
            let r = FieldReader(prefix: "create_key.")
            guard let role = KeyRole(rawValue: UInt8(truncatingIfNeeded: x.role.rawValue)), x.role.rawValue <= 4 else {
                throw AuthzError.invalid("create_key.role", "must be KEY_ROLE_CHECKER, KEY_ROLE_ADMIN, KEY_ROLE_OPERATOR or KEY_ROLE_GATEWAY")
            }
            let name = try r.string(x.name, "name")
            try Validate.text(name, field: "create_key.name", max: FieldLimits.maxNameBytes, allowEmpty: true)
            return .createKey(tenantId: try r.optionalID(x.tenant_id, "tenant_id"), role: role, name: name, expiresAt: x.expires_at)
        case AUTHZ__V1__REQUEST__CALL_LIST_KEYS:
            return .listKeys(tenantId: try FieldReader(prefix: "list_keys.").optionalID(m.list_keys.pointee.tenant_id, "tenant_id"))
        case AUTHZ__V1__REQUEST__CALL_REVOKE_KEY:
            return .revokeKey(id: try FieldReader(prefix: "revoke_key.").id(m.revoke_key.pointee.key_id, "key_id"), expiresAt: m.revoke_key.pointee.expires_at)
        case AUTHZ__V1__REQUEST__CALL_ROTATE_SECRETS:
            return .rotateSecrets
        case AUTHZ__V1__REQUEST__CALL_WATCH:
            let x = m.watch.pointee
            var kinds = Set<EntityKind>()
            for i in 0..<x.n_kinds { kinds.insert(try EntityCodec.kind(x.kinds[i].rawValue, field: "watch.kinds[\(i)]")) }
            if x.from_now != 0 && x.from_revision != 0 {
                throw AuthzError.invalid("watch.from_revision", "must be 0 when watch.from_now is set")
            }
            return .watch(WatchCall(fromRevision: x.from_now != 0 ? nil : x.from_revision,
                                    tenantId: try FieldReader(prefix: "watch.").optionalID(x.tenant_id, "tenant_id"), kinds: kinds))
        default:
            throw AuthzError.invalid("request.call", "must set one of check, batch_check, explain, list_user_permissions, list_permission_users, write, get, list, import, export, server_info, health, hello, create_key, list_keys, revoke_key, rotate_secrets, watch")
        }
    }

    static func encodeCheck(_ c: CheckCall, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__CheckRequest> {
        a.make(Authz__V1__CheckRequest.self) { m in
            authz__v1__check_request__init(m)
            m.pointee.tenant_id = a.cString(c.tenantId.description)
            m.pointee.user_id = a.cString(c.userId.description)
            m.pointee.permission = a.cString(c.permission)
            m.pointee.scope = EntityCodec.scopeValue(c.scope)
            m.pointee.min_revision = c.minRevision
        }
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

    static func encodeRequest(_ r: WireRequest, _ a: Arena) -> [UInt8] {
        let msg = a.make(Authz__V1__Request.self) { authz__v1__request__init($0) }
        msg.pointee.request_id = r.requestId
        msg.pointee.deadline_ms = r.deadlineMs
        if let key = r.apiKey { msg.pointee.api_key = a.cString(key) }
        guard case .success(let call) = r.call else { return pack(msg) }
        switch call {
        case .check(let c):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_CHECK
            msg.pointee.check = encodeCheck(c, a)
        case .batchCheck(let items, let minRevision):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_BATCH_CHECK
            msg.pointee.batch_check = a.make(Authz__V1__BatchCheckRequest.self) { m in
                authz__v1__batch_check_request__init(m)
                m.pointee.min_revision = minRevision
                let arr = a.array(UnsafeMutablePointer<Authz__V1__CheckRequest>?.self, count: items.count)
                for (i, item) in items.enumerated() {
                    switch item {
                    case .success(let c): arr[i] = encodeCheck(c, a)
                    case .failure: arr[i] = a.make(Authz__V1__CheckRequest.self) { authz__v1__check_request__init($0) }
                    }
                }
                m.pointee.n_checks = items.count
                m.pointee.checks = arr
            }
        case .explain(let c):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_EXPLAIN
            msg.pointee.explain = a.make(Authz__V1__ExplainRequest.self) {
                authz__v1__explain_request__init($0)
                $0.pointee.check = encodeCheck(c, a)
            }
        case .listUserPermissions(let t, let u, let minRevision):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_LIST_USER_PERMISSIONS
            msg.pointee.list_user_permissions = a.make(Authz__V1__ListUserPermissionsRequest.self) {
                authz__v1__list_user_permissions_request__init($0)
                $0.pointee.tenant_id = a.cString(t.description)
                $0.pointee.user_id = a.cString(u.description)
                $0.pointee.min_revision = minRevision
            }
        case .listPermissionUsers(let t, let p, let s, let size, let after, let minRevision):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_LIST_PERMISSION_USERS
            msg.pointee.list_permission_users = a.make(Authz__V1__ListPermissionUsersRequest.self) {
                authz__v1__list_permission_users_request__init($0)
                $0.pointee.tenant_id = a.cString(t.description)
                $0.pointee.permission = a.cString(p)
                $0.pointee.scope = EntityCodec.scopeValue(s)
                $0.pointee.page_size = UInt32(clamping: size)
                $0.pointee.page_token = a.cString(after?.description ?? "")
                $0.pointee.min_revision = minRevision
            }
        case .write(let ops):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_WRITE
            msg.pointee.write = a.make(Authz__V1__WriteRequest.self) { m in
                authz__v1__write_request__init(m)
                let arr = a.array(UnsafeMutablePointer<Authz__V1__WriteOp>?.self, count: ops.count)
                for (i, op) in ops.enumerated() {
                    arr[i] = a.make(Authz__V1__WriteOp.self) { o in
                        authz__v1__write_op__init(o)
                        switch op {
                        case .upsert(let e):
                            o.pointee.op_case = AUTHZ__V1__WRITE_OP__OP_UPSERT
                            o.pointee.upsert = EntityCodec.encode(e, a)
                        case .upsertIfNewer(let e):
                            o.pointee.op_case = AUTHZ__V1__WRITE_OP__OP_UPSERT_IF_NEWER
                            o.pointee.upsert_if_newer = EntityCodec.encode(e, a)
                        case .deactivate(let ref):
                            o.pointee.op_case = AUTHZ__V1__WRITE_OP__OP_DEACTIVATE
                            o.pointee.deactivate = EntityCodec.encodeRef(ref, a)
                        case .activate(let ref):
                            o.pointee.op_case = AUTHZ__V1__WRITE_OP__OP_ACTIVATE
                            o.pointee.activate = EntityCodec.encodeRef(ref, a)
                        }
                    }
                }
                m.pointee.n_ops = ops.count
                m.pointee.ops = arr
            }
        case .get(let ref, let secrets):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_GET
            msg.pointee.get = a.make(Authz__V1__GetRequest.self) {
                authz__v1__get_request__init($0)
                $0.pointee.ref = EntityCodec.encodeRef(ref, a)
                $0.pointee.include_secrets = secrets ? 1 : 0
            }
        case .list(let kind, let t, let size, let after, let secrets):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_LIST
            msg.pointee.list = a.make(Authz__V1__ListRequest.self) {
                authz__v1__list_request__init($0)
                $0.pointee.kind = Authz__V1__Kind(rawValue: UInt32(kind.rawValue))
                $0.pointee.tenant_id = a.cString(t == .zero ? "" : t.description)
                $0.pointee.page_size = UInt32(clamping: size)
                $0.pointee.page_token = a.cString(after?.description ?? "")
                $0.pointee.include_secrets = secrets ? 1 : 0
            }
        case .importJSONL(let bytes):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_IMPORT
            msg.pointee.import = a.make(Authz__V1__ImportRequest.self) {
                authz__v1__import_request__init($0)
                $0.pointee.jsonl = a.binary(bytes)
            }
        case .importChunk(let session, let bytes, let firstLine, let more):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_IMPORT
            msg.pointee.import = a.make(Authz__V1__ImportRequest.self) {
                authz__v1__import_request__init($0)
                $0.pointee.jsonl = a.binary(bytes)
                $0.pointee.session = a.cString(session.description)
                $0.pointee.more = more ? 1 : 0
                $0.pointee.first_line = firstLine
            }
        case .export(let t, let secrets):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_EXPORT
            msg.pointee.export = a.make(Authz__V1__ExportRequest.self) {
                authz__v1__export_request__init($0)
                $0.pointee.tenant_id = a.cString(t?.description ?? "")
                $0.pointee.include_secrets = secrets ? 1 : 0
            }
        case .exportPage(let t, let secrets, let size, let token):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_EXPORT
            msg.pointee.export = a.make(Authz__V1__ExportRequest.self) {
                authz__v1__export_request__init($0)
                $0.pointee.tenant_id = a.cString(t?.description ?? "")
                $0.pointee.include_secrets = secrets ? 1 : 0
                $0.pointee.page_size = UInt32(clamping: size)
                $0.pointee.page_token = a.cString(token)
            }
        case .serverInfo:
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_SERVER_INFO
            msg.pointee.server_info = a.make(Authz__V1__ServerInfoRequest.self) { authz__v1__server_info_request__init($0) }
        case .health:
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_HEALTH
            msg.pointee.health = a.make(Authz__V1__HealthRequest.self) { authz__v1__health_request__init($0) }
        case .hello(let key, let version):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_HELLO
            msg.pointee.hello = a.make(Authz__V1__HelloRequest.self) {
                authz__v1__hello_request__init($0)
                $0.pointee.api_key = a.cString(key)
                $0.pointee.protocol_version = version
            }
        case .createKey(let t, let role, let name, let expires):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_CREATE_KEY
            msg.pointee.create_key = a.make(Authz__V1__CreateKeyRequest.self) {
                authz__v1__create_key_request__init($0)
                $0.pointee.tenant_id = a.cString(t?.description ?? "")
                $0.pointee.role = Authz__V1__KeyRole(rawValue: UInt32(role.rawValue))
                $0.pointee.name = a.cString(name)
                $0.pointee.expires_at = expires
            }
        case .listKeys(let t):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_LIST_KEYS
            msg.pointee.list_keys = a.make(Authz__V1__ListKeysRequest.self) {
                authz__v1__list_keys_request__init($0)
                $0.pointee.tenant_id = a.cString(t?.description ?? "")
            }
        case .revokeKey(let id, let expires):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_REVOKE_KEY
            msg.pointee.revoke_key = a.make(Authz__V1__RevokeKeyRequest.self) {
                authz__v1__revoke_key_request__init($0)
                $0.pointee.key_id = a.cString(id.description)
                $0.pointee.expires_at = expires
            }
        case .watch(let w):
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_WATCH
            msg.pointee.watch = a.make(Authz__V1__WatchRequest.self) {
                authz__v1__watch_request__init($0)
                $0.pointee.from_revision = w.fromRevision ?? 0
                $0.pointee.from_now = w.fromRevision == nil ? 1 : 0
                if let t = w.tenantId { $0.pointee.tenant_id = a.cString(t.description) }
                let kinds = w.kinds.sorted { $0.rawValue < $1.rawValue }
                let arr = a.array(Authz__V1__Kind.self, count: kinds.count)
                for (i, k) in kinds.enumerated() { arr[i] = Authz__V1__Kind(rawValue: UInt32(k.rawValue)) }
                $0.pointee.n_kinds = kinds.count
                $0.pointee.kinds = arr
            }
        case .rotateSecrets:
            msg.pointee.call_case = AUTHZ__V1__REQUEST__CALL_ROTATE_SECRETS
            msg.pointee.rotate_secrets = a.make(Authz__V1__RotateSecretsRequest.self) { authz__v1__rotate_secrets_request__init($0) }
        }
        return pack(msg)
    }

    static func pack(_ msg: UnsafeMutablePointer<Authz__V1__Request>) -> [UInt8] {
        let n = authz__v1__request__get_packed_size(msg)
        return [UInt8](unsafeUninitializedCapacity: n) { buf, count in
            count = authz__v1__request__pack(msg, buf.baseAddress)
        }
    }

    // MARK: responses

    static func reasonValue(_ r: Reason) -> Authz__V1__Reason { Authz__V1__Reason(rawValue: UInt32(r.rawValue)) }
    static func decisionValue(_ d: Decision) -> Authz__V1__Decision {
        d.allowed ? AUTHZ__V1__DECISION__DECISION_ALLOW : AUTHZ__V1__DECISION__DECISION_DENY
    }

    static func encodeStatus(_ e: AuthzError, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__Status> {
        a.make(Authz__V1__Status.self) {
            authz__v1__status__init($0)
            $0.pointee.code = Authz__V1__Code(rawValue: UInt32(e.code.rawValue))
            $0.pointee.message = a.cString(e.message)
            $0.pointee.field = a.cString(e.field)
        }
    }

    static func encodeDecision(_ d: Decision, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__CheckResponse> {
        a.make(Authz__V1__CheckResponse.self) {
            authz__v1__check_response__init($0)
            $0.pointee.decision = decisionValue(d)
            $0.pointee.reason = reasonValue(d.reason)
            $0.pointee.revision = d.revision
        }
    }

    /// Encodes a response (server side).
    public static func encodeResponse(_ r: WireResponse) -> [UInt8] {
        if let fast = FastPath.encodeResponse(r) { return fast }
        return encodeResponseWithProtobufC(r)
    }

    /// The generated protobuf-c encoder: the reference for every message.
    public static func encodeResponseWithProtobufC(_ r: WireResponse) -> [UInt8] {
        let a = Arena()
        let msg = a.make(Authz__V1__Response.self) { authz__v1__response__init($0) }
        msg.pointee.request_id = r.requestId
        switch r.result {
        case .failure(let e):
            msg.pointee.status = encodeStatus(e, a)
        case .success(let reply):
            switch reply {
            case .check(let d):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_CHECK
                msg.pointee.check = encodeDecision(d, a)
            case .batchCheck(let items, let revision):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_BATCH_CHECK
                msg.pointee.batch_check = a.make(Authz__V1__BatchCheckResponse.self) { m in
                    authz__v1__batch_check_response__init(m)
                    m.pointee.revision = revision
                    let arr = a.array(UnsafeMutablePointer<Authz__V1__CheckResponse>?.self, count: items.count)
                    for (i, item) in items.enumerated() {
                        switch item {
                        case .success(let d): arr[i] = encodeDecision(d, a)
                        case .failure(let e):
                            arr[i] = a.make(Authz__V1__CheckResponse.self) {
                                authz__v1__check_response__init($0)
                                $0.pointee.revision = revision
                                $0.pointee.error = encodeStatus(e, a)
                            }
                        }
                    }
                    m.pointee.n_results = items.count
                    m.pointee.results = arr
                }
            case .explain(let x):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_EXPLAIN
                msg.pointee.explain = a.make(Authz__V1__ExplainResponse.self) { m in
                    authz__v1__explain_response__init(m)
                    m.pointee.result = encodeDecision(x.decision, a)
                    m.pointee.role_binding_id = a.cString(x.roleBindingId?.description ?? "")
                    m.pointee.n_role_chain = x.roleChain.count
                    m.pointee.role_chain = a.cStrings(x.roleChain.map(\.description))
                    m.pointee.n_role_chain_names = x.roleChainNames.count
                    m.pointee.role_chain_names = a.cStrings(x.roleChainNames)
                    m.pointee.permission_binding_id = a.cString(x.permissionBindingId?.description ?? "")
                    if let s = x.roleBindingScope { m.pointee.role_binding_scope = EntityCodec.scopeValue(s) }
                    if let s = x.permissionBindingScope { m.pointee.permission_binding_scope = EntityCodec.scopeValue(s) }
                }
            case .userPermissions(let reason, let list, let revision):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_LIST_USER_PERMISSIONS
                msg.pointee.list_user_permissions = a.make(Authz__V1__ListUserPermissionsResponse.self) { m in
                    authz__v1__list_user_permissions_response__init(m)
                    m.pointee.revision = revision
                    m.pointee.reason = reasonValue(reason)
                    let arr = a.array(UnsafeMutablePointer<Authz__V1__UserPermission>?.self, count: list.count)
                    for (i, (name, scope)) in list.enumerated() {
                        arr[i] = a.make(Authz__V1__UserPermission.self) {
                            authz__v1__user_permission__init($0)
                            $0.pointee.permission = a.cString(name)
                            $0.pointee.scope = EntityCodec.scopeValue(scope)
                        }
                    }
                    m.pointee.n_permissions = list.count
                    m.pointee.permissions = arr
                }
            case .permissionUsers(let users, let token, let revision):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_LIST_PERMISSION_USERS
                msg.pointee.list_permission_users = a.make(Authz__V1__ListPermissionUsersResponse.self) {
                    authz__v1__list_permission_users_response__init($0)
                    $0.pointee.n_user_ids = users.count
                    $0.pointee.user_ids = a.cStrings(users.map(\.description))
                    $0.pointee.next_page_token = a.cString(token)
                    $0.pointee.revision = revision
                }
            case .write(let revision):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_WRITE
                msg.pointee.write = a.make(Authz__V1__WriteResponse.self) {
                    authz__v1__write_response__init($0)
                    $0.pointee.revision = revision
                }
            case .get(let e):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_GET
                msg.pointee.get = a.make(Authz__V1__GetResponse.self) {
                    authz__v1__get_response__init($0)
                    $0.pointee.entity = EntityCodec.encode(e, a)
                }
            case .list(let entities, let token):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_LIST
                msg.pointee.list = a.make(Authz__V1__ListResponse.self) { m in
                    authz__v1__list_response__init(m)
                    let arr = a.array(UnsafeMutablePointer<Authz__V1__Entity>?.self, count: entities.count)
                    for (i, e) in entities.enumerated() { arr[i] = EntityCodec.encode(e, a) }
                    m.pointee.n_entities = entities.count
                    m.pointee.entities = arr
                    m.pointee.next_page_token = a.cString(token)
                }
            case .importResult(let revision, let records):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_IMPORT
                msg.pointee.import = a.make(Authz__V1__ImportResponse.self) {
                    authz__v1__import_response__init($0)
                    $0.pointee.revision = revision
                    $0.pointee.records = records
                }
            case .export(let bytes, let revision):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_EXPORT
                msg.pointee.export = a.make(Authz__V1__ExportResponse.self) {
                    authz__v1__export_response__init($0)
                    $0.pointee.jsonl = a.binary(bytes)
                    $0.pointee.revision = revision
                }
            case .exportPage(let bytes, let revision, let next):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_EXPORT
                msg.pointee.export = a.make(Authz__V1__ExportResponse.self) {
                    authz__v1__export_response__init($0)
                    $0.pointee.jsonl = a.binary(bytes)
                    $0.pointee.revision = revision
                    $0.pointee.next_page_token = a.cString(next)
                }
            case .serverInfo(let info):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_SERVER_INFO
                msg.pointee.server_info = a.make(Authz__V1__ServerInfoResponse.self) {
                    authz__v1__server_info_response__init($0)
                    $0.pointee.version = a.cString(info.version)
                    $0.pointee.revision = info.revision
                    $0.pointee.protocol_version = info.protocolVersion
                    $0.pointee.tenants = info.counts[.tenant] ?? 0
                    $0.pointee.users = info.counts[.user] ?? 0
                    $0.pointee.roles = info.counts[.role] ?? 0
                    $0.pointee.permissions = info.counts[.permission] ?? 0
                    $0.pointee.role_bindings = info.counts[.roleBinding] ?? 0
                    $0.pointee.permission_bindings = info.counts[.permissionBinding] ?? 0
                    if let l = info.log {
                        $0.pointee.log = a.make(Authz__V1__LogStatus.self) {
                            authz__v1__log_status__init($0)
                            $0.pointee.stream = a.cString(l.stream)
                            $0.pointee.applied = l.applied
                            $0.pointee.stream_last = l.streamLast
                            $0.pointee.lag = l.lag
                            $0.pointee.connected = l.connected ? 1 : 0
                            $0.pointee.shard = a.cString(l.shard)
                            $0.pointee.refusal = a.cString(l.refusal)
                        }
                    }
                }
            case .health(let serving):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_HEALTH
                msg.pointee.health = a.make(Authz__V1__HealthResponse.self) {
                    authz__v1__health_response__init($0)
                    $0.pointee.serving = serving ? 1 : 0
                }
            case .hello(let role, let tenant, let keyId):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_HELLO
                msg.pointee.hello = a.make(Authz__V1__HelloResponse.self) {
                    authz__v1__hello_response__init($0)
                    $0.pointee.protocol_version = protocolVersion
                    $0.pointee.role = Authz__V1__KeyRole(rawValue: UInt32(role?.rawValue ?? 0))
                    $0.pointee.tenant_id = a.cString(tenant.map { $0 == .zero ? "" : $0.description } ?? "")
                    $0.pointee.key_id = a.cString(keyId?.description ?? "")
                }
            case .createKey(let k, let secret):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_CREATE_KEY
                msg.pointee.create_key = a.make(Authz__V1__CreateKeyResponse.self) {
                    authz__v1__create_key_response__init($0)
                    $0.pointee.key = encodeKey(k, a)
                    $0.pointee.secret = a.cString(secret)
                }
            case .listKeys(let keys):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_LIST_KEYS
                msg.pointee.list_keys = a.make(Authz__V1__ListKeysResponse.self) {
                    authz__v1__list_keys_response__init($0)
                    let arr = a.array(UnsafeMutablePointer<Authz__V1__ApiKey>?.self, count: keys.count)
                    for (i, k) in keys.enumerated() { arr[i] = encodeKey(k, a) }
                    $0.pointee.n_keys = keys.count
                    $0.pointee.keys = arr
                }
            case .revokeKey(let k):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_REVOKE_KEY
                msg.pointee.revoke_key = a.make(Authz__V1__RevokeKeyResponse.self) {
                    authz__v1__revoke_key_response__init($0)
                    $0.pointee.key = encodeKey(k, a)
                }
            case .rotateSecrets(let s):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_ROTATE_SECRETS
                msg.pointee.rotate_secrets = a.make(Authz__V1__RotateSecretsResponse.self) {
                    authz__v1__rotate_secrets_response__init($0)
                    $0.pointee.active_key_id = a.cString(s.activeKeyId)
                    let arr = a.array(UnsafeMutablePointer<CChar>?.self, count: s.keyIds.count)
                    for (i, id) in s.keyIds.enumerated() { arr[i] = a.cString(id) }
                    $0.pointee.n_key_ids = s.keyIds.count
                    $0.pointee.key_ids = arr
                    $0.pointee.running = s.running ? 1 : 0
                    $0.pointee.remaining = s.remaining
                    $0.pointee.reencrypted = s.reencrypted
                }
            case .watch(let b):
                msg.pointee.result_case = AUTHZ__V1__RESPONSE__RESULT_WATCH
                msg.pointee.watch = a.make(Authz__V1__WatchResponse.self) { m in
                    authz__v1__watch_response__init(m)
                    let arr = a.array(UnsafeMutablePointer<Authz__V1__Change>?.self, count: b.changes.count)
                    for (i, c) in b.changes.enumerated() {
                        arr[i] = a.make(Authz__V1__Change.self) {
                            authz__v1__change__init($0)
                            $0.pointee.revision = c.revision
                            $0.pointee.kind = Authz__V1__Kind(rawValue: UInt32(c.entity.kind.rawValue))
                            $0.pointee.tenant_id = a.cString(c.entity.tenantId.description)
                            $0.pointee.id = a.cString(c.entity.id.description)
                            $0.pointee.entity = EntityCodec.encode(c.entity, a)
                        }
                    }
                    m.pointee.n_changes = b.changes.count
                    m.pointee.changes = arr
                    m.pointee.revision = b.revision
                    m.pointee.caught_up = b.caughtUp ? 1 : 0
                }
            }
        }
        let n = authz__v1__response__get_packed_size(msg)
        return [UInt8](unsafeUninitializedCapacity: n) { buf, count in
            count = authz__v1__response__pack(msg, buf.baseAddress)
        }
    }

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

    static func decodeKey(_ p: UnsafeMutablePointer<Authz__V1__ApiKey>?) -> ApiKey? {
        guard let k = p?.pointee, let id = ID(swiftString(k.id) ?? ""), let role = KeyRole(rawValue: UInt8(truncatingIfNeeded: k.role.rawValue)) else { return nil }
        return ApiKey(id: id, tenantId: ID(swiftString(k.tenant_id) ?? "") ?? .zero, role: role, name: swiftString(k.name) ?? "",
                      createdAt: k.created_at, expiresAt: k.expires_at, revokedAt: k.revoked_at,
                      maySeeSecrets: k.may_read_secrets != 0, createdBy: ID(swiftString(k.created_by) ?? "") ?? .zero)
    }

    static func decodeStatus(_ s: UnsafeMutablePointer<Authz__V1__Status>) -> AuthzError {
        let code = AuthzError.Code(rawValue: Int(s.pointee.code.rawValue)) ?? .unknown
        return AuthzError(code, swiftString(s.pointee.message) ?? "", field: swiftString(s.pointee.field) ?? "")
    }

    static func decodeReason(_ r: Authz__V1__Reason) throws -> Reason {
        guard let reason = Reason(rawValue: UInt8(truncatingIfNeeded: r.rawValue)), r.rawValue <= 8 else {
            throw AuthzError(.internal, "response has unknown reason \(r.rawValue)")
        }
        return reason
    }

    static func decodeDecision(_ c: UnsafeMutablePointer<Authz__V1__CheckResponse>?) throws -> Decision {
        guard let c else { throw AuthzError(.internal, "response lacks its result") }
        return Decision(reason: try decodeReason(c.pointee.reason), revision: c.pointee.revision)
    }

    static func scopeFrom(_ s: Authz__V1__Scope) -> Scope? {
        s.rawValue >= 1 && s.rawValue <= 3 ? Scope(rawValue: UInt8(s.rawValue - 1)) : nil
    }

    static func ids(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> [ID] {
        (0..<n).compactMap { ID(swiftString(p![$0]) ?? "") }
    }

    /// Decodes a response frame (client side). Throws INTERNAL for bytes that are not a
    /// `Response`.
    public static func decodeResponse(_ bytes: UnsafeRawBufferPointer) throws -> WireResponse {
        guard let msg = authz__v1__response__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
            throw AuthzError(.internal, "the server sent a frame that is not an authz.v1.Response")
        }
        defer { authz__v1__response__free_unpacked(msg, nil) }
        let m = msg.pointee
        if let s = m.status, s.pointee.code.rawValue != 0 {
            return WireResponse(requestId: m.request_id, result: .failure(decodeStatus(s)))
        }
        let reply: Reply
        switch m.result_case {
        case AUTHZ__V1__RESPONSE__RESULT_CHECK:
            reply = .check(try decodeDecision(m.check))
        case AUTHZ__V1__RESPONSE__RESULT_BATCH_CHECK:
            let b = m.batch_check.pointee
            var items: [Result<Decision, AuthzError>] = []
            items.reserveCapacity(b.n_results)
            for i in 0..<b.n_results {
                if let s = b.results[i]!.pointee.error, s.pointee.code.rawValue != 0 {
                    items.append(.failure(decodeStatus(s)))
                } else {
                    items.append(.success(try decodeDecision(b.results[i])))
                }
            }
            reply = .batchCheck(items, revision: b.revision)
        case AUTHZ__V1__RESPONSE__RESULT_EXPLAIN:
            let x = m.explain.pointee
            var e = Explanation(decision: try decodeDecision(x.result))
            e.roleBindingId = ID(swiftString(x.role_binding_id) ?? "")
            e.roleChain = ids(x.n_role_chain, x.role_chain)
            e.roleChainNames = (0..<x.n_role_chain_names).map { swiftString(x.role_chain_names[$0]) ?? "" }
            e.permissionBindingId = ID(swiftString(x.permission_binding_id) ?? "")
            e.roleBindingScope = scopeFrom(x.role_binding_scope)
            e.permissionBindingScope = scopeFrom(x.permission_binding_scope)
            reply = .explain(e)
        case AUTHZ__V1__RESPONSE__RESULT_LIST_USER_PERMISSIONS:
            let x = m.list_user_permissions.pointee
            let list: [(String, Scope)] = (0..<x.n_permissions).compactMap {
                let p = x.permissions[$0]!.pointee
                guard let s = scopeFrom(p.scope) else { return nil }
                return (swiftString(p.permission) ?? "", s)
            }
            reply = .userPermissions(reason: try decodeReason(x.reason), permissions: list, revision: x.revision)
        case AUTHZ__V1__RESPONSE__RESULT_LIST_PERMISSION_USERS:
            let x = m.list_permission_users.pointee
            reply = .permissionUsers(ids(x.n_user_ids, x.user_ids), nextPageToken: swiftString(x.next_page_token) ?? "", revision: x.revision)
        case AUTHZ__V1__RESPONSE__RESULT_WRITE:
            reply = .write(revision: m.write.pointee.revision)
        case AUTHZ__V1__RESPONSE__RESULT_GET:
            reply = .get(try EntityCodec.decodeStored(m.get.pointee.entity))
        case AUTHZ__V1__RESPONSE__RESULT_LIST:
            let x = m.list.pointee
            reply = .list(try (0..<x.n_entities).map { try EntityCodec.decodeStored(x.entities[$0]) }, nextPageToken: swiftString(x.next_page_token) ?? "")
        case AUTHZ__V1__RESPONSE__RESULT_IMPORT:
            reply = .importResult(revision: m.import.pointee.revision, records: m.import.pointee.records)
        case AUTHZ__V1__RESPONSE__RESULT_EXPORT:
            let d = m.export.pointee.jsonl
            let bytes = d.len == 0 ? [] : Array(UnsafeBufferPointer(start: d.data, count: d.len))
            let next = swiftString(m.export.pointee.next_page_token) ?? ""
            reply = next.isEmpty ? .export(bytes, revision: m.export.pointee.revision) : .exportPage(bytes, revision: m.export.pointee.revision, nextPageToken: next)
        case AUTHZ__V1__RESPONSE__RESULT_SERVER_INFO:
            let x = m.server_info.pointee
            reply = .serverInfo(ServerInfo(version: swiftString(x.version) ?? "", revision: x.revision, protocolVersion: x.protocol_version,
                                           counts: [.tenant: x.tenants, .user: x.users, .role: x.roles, .permission: x.permissions,
                                                    .roleBinding: x.role_bindings, .permissionBinding: x.permission_bindings],
                                           log: x.log.map { l in
                                               LogStatus(stream: swiftString(l.pointee.stream) ?? "", applied: l.pointee.applied, streamLast: l.pointee.stream_last,
                                                         lag: l.pointee.lag, connected: l.pointee.connected != 0, shard: swiftString(l.pointee.shard) ?? "",
                                                         refusal: swiftString(l.pointee.refusal) ?? "")
                                           }))
        case AUTHZ__V1__RESPONSE__RESULT_HEALTH:
            reply = .health(serving: m.health.pointee.serving != 0)
        case AUTHZ__V1__RESPONSE__RESULT_HELLO:
            let h = m.hello.pointee
            reply = .hello(role: KeyRole(rawValue: UInt8(truncatingIfNeeded: h.role.rawValue)), tenantId: ID(swiftString(h.tenant_id) ?? ""),
                           keyId: ID(swiftString(h.key_id) ?? ""))
        case AUTHZ__V1__RESPONSE__RESULT_CREATE_KEY:
            guard let k = decodeKey(m.create_key.pointee.key) else { throw AuthzError(.internal, "malformed key in response") }
            reply = .createKey(k, secret: swiftString(m.create_key.pointee.secret) ?? "")
        case AUTHZ__V1__RESPONSE__RESULT_LIST_KEYS:
            let x = m.list_keys.pointee
            reply = .listKeys((0..<x.n_keys).compactMap { decodeKey(x.keys[$0]) })
        case AUTHZ__V1__RESPONSE__RESULT_REVOKE_KEY:
            guard let k = decodeKey(m.revoke_key.pointee.key) else { throw AuthzError(.internal, "malformed key in response") }
            reply = .revokeKey(k)
        case AUTHZ__V1__RESPONSE__RESULT_ROTATE_SECRETS:
            let x = m.rotate_secrets.pointee
            reply = .rotateSecrets(SecretRotationStatus(activeKeyId: swiftString(x.active_key_id) ?? "", keyIds: (0..<x.n_key_ids).map { swiftString(x.key_ids[$0]) ?? "" },
                                                        running: x.running != 0, remaining: x.remaining, reencrypted: x.reencrypted))
        case AUTHZ__V1__RESPONSE__RESULT_WATCH:
            let x = m.watch.pointee
            let changes = try (0..<x.n_changes).map { i -> Change in
                let c = x.changes[i]!.pointee
                return Change(revision: c.revision, entity: try EntityCodec.decodeStored(c.entity))
            }
            reply = .watch(WatchBatch(changes: changes, revision: x.revision, caughtUp: x.caught_up != 0))
        default:
            throw AuthzError(.internal, "the server's response has neither a status nor a result")
        }
        return WireResponse(requestId: m.request_id, result: .success(reply))
    }
}
