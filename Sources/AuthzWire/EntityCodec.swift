internal import CAuthzProto
import AuthzModel

/// Field readers for decoding: each names the field it failed on.
struct FieldReader {
    let prefix: String

    func string(_ p: UnsafeMutablePointer<CChar>?, _ name: String) throws -> String {
        guard let s = swiftString(p) else { throw AuthzError.invalid(prefix + name, "must be valid UTF-8") }
        return s
    }

    func optionalString(_ p: UnsafeMutablePointer<CChar>?, _ name: String) throws -> String? {
        let s = try string(p, name)
        return s.isEmpty ? nil : s
    }

    func id(_ p: UnsafeMutablePointer<CChar>?, _ name: String) throws -> ID {
        let s = try string(p, name)
        if s.isEmpty { throw AuthzError.invalid(prefix + name, "is required") }
        guard let id = ID(s) else {
            throw AuthzError.invalid(prefix + name, "must be a UUID in 8-4-4-4-12 form (got \(WireCodec.quote(s)))")
        }
        return id
    }

    func optionalID(_ p: UnsafeMutablePointer<CChar>?, _ name: String) throws -> ID? {
        let s = try string(p, name)
        if s.isEmpty { return nil }
        guard let id = ID(s) else {
            throw AuthzError.invalid(prefix + name, "must be a UUID in 8-4-4-4-12 form (got \(WireCodec.quote(s)))")
        }
        return id
    }

    func ids(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ name: String) throws -> [ID] {
        guard n <= FieldLimits.maxListItems else { throw AuthzError.invalid(prefix + name, "must have at most \(FieldLimits.maxListItems) items") }
        return try (0..<n).map { try id(p![$0], "\(name)[\($0)]") }
    }

    func strings(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ name: String) throws -> [String] {
        guard n <= FieldLimits.maxListItems else { throw AuthzError.invalid(prefix + name, "must have at most \(FieldLimits.maxListItems) items") }
        return try (0..<n).map { try string(p![$0], "\(name)[\($0)]") }
    }

    func scope(_ raw: UInt32, _ name: String) throws -> Scope {
        guard raw >= 1 && raw <= 3 else {
            throw AuthzError.invalid(prefix + name, raw == 0 ? "is required (SCOPE_SELF, SCOPE_TENANT or SCOPE_GLOBAL)" : "has unknown value \(raw); must be SCOPE_SELF, SCOPE_TENANT or SCOPE_GLOBAL")
        }
        return Scope(rawValue: UInt8(raw - 1))!
    }

    func scopes(_ n: Int, _ p: UnsafeMutablePointer<Authz__V1__Scope>?, _ name: String) throws -> ScopeSet {
        if n == 0 { return .all }
        guard n <= 3 else { throw AuthzError.invalid(prefix + name, "must have at most 3 items") }
        var set = ScopeSet(mask: 0)
        for i in 0..<n { set.mask |= 1 << (try scope(p![i].rawValue, "\(name)[\(i)]")).rawValue }
        return set
    }

    func active(_ b: UnsafeMutablePointer<Authz__V1__BoolValue>?) -> Bool {
        guard let b else { return true }
        return b.pointee.value != 0
    }

    func metadata(_ p: UnsafeMutablePointer<CChar>?) throws -> String {
        let s = try string(p, "metadata")
        return s == "{}" ? "" : s
    }
}

/// The seven fields every entity message has (proto/authz.proto, "Common fields"): the
/// generated C struct of each kind has them under these names, so each conforms with an empty
/// extension, and `EntityCodec` reads and writes them in one place (`decodeCommon`,
/// `encodeCommon`) instead of once per kind.
protocol EntityMessage {
    var id: UnsafeMutablePointer<CChar>! { get set }
    var tenant_id: UnsafeMutablePointer<CChar>! { get set }
    var is_active: UnsafeMutablePointer<Authz__V1__BoolValue>! { get set }
    var created_at: Int64 { get set }
    var updated_at: Int64 { get set }
    var metadata: UnsafeMutablePointer<CChar>! { get set }
    var schema_version: UInt32 { get set }
    /// The message is a tenant's: its `tenant_id` may be empty and must otherwise equal its id.
    static var isTenant: Bool { get }
}

extension EntityMessage {
    static var isTenant: Bool { false }
}

extension Authz__V1__Tenant: EntityMessage {
    static var isTenant: Bool { true }
}
extension Authz__V1__User: EntityMessage {}
extension Authz__V1__Role: EntityMessage {}
extension Authz__V1__Permission: EntityMessage {}
extension Authz__V1__RoleBinding: EntityMessage {}
extension Authz__V1__PermissionBinding: EntityMessage {}
extension Authz__V1__PlatformCredential: EntityMessage {}

enum EntityCodec {
    static func scopeValue(_ s: Scope) -> Authz__V1__Scope { Authz__V1__Scope(rawValue: UInt32(s.rawValue) + 1) }

    static func kind(_ raw: UInt32, field: String) throws -> EntityKind {
        guard let k = EntityKind(rawValue: UInt8(truncatingIfNeeded: raw)), raw <= 7 else {
            throw AuthzError.invalid(field, raw == 0 ? "is required" : "has unknown value \(raw)")
        }
        return k
    }

    // MARK: decode

    /// Decodes an entity message of any kind. The common fields are read by `decodeCommon`
    /// around the kind's own (`body`); the server-owned `created_at`, `updated_at` and
    /// `schema_version` are kept only when `keepTimestamps` (a credential's `created_at` always).
    /// INVALID_ARGUMENT naming the first bad field, in the order id, tenant_id, the kind's
    /// fields, metadata (a role binding's user_id and owner_user_id come first).
    static func decode(_ e: UnsafeMutablePointer<Authz__V1__Entity>?, field: String, keepTimestamps: Bool = false) throws -> Entity {
        guard let e else { throw AuthzError.invalid(field, "is required") }
        switch e.pointee.entity_case {
        case AUTHZ__V1__ENTITY__ENTITY_TENANT:
            let m = e.pointee.tenant!.pointee
            return try decodeCommon(m, FieldReader(prefix: "tenant."), keepTimestamps: keepTimestamps) { r, id, _ in
                .tenant(Tenant(id: id, name: try r.string(m.name, "name")))
            }
        case AUTHZ__V1__ENTITY__ENTITY_USER:
            let m = e.pointee.user!.pointee
            return try decodeCommon(m, FieldReader(prefix: "user."), keepTimestamps: keepTimestamps) { r, id, tenant in
                .user(User(id: id, tenantId: tenant, email: try r.optionalString(m.email, "email"), displayName: try r.optionalString(m.display_name, "display_name"),
                           externalId: try r.optionalString(m.external_id, "external_id")))
            }
        case AUTHZ__V1__ENTITY__ENTITY_ROLE:
            let m = e.pointee.role!.pointee
            return try decodeCommon(m, FieldReader(prefix: "role."), keepTimestamps: keepTimestamps) { r, id, tenant in
                .role(Role(id: id, tenantId: tenant, name: try r.string(m.name, "name"), description: try r.string(m.description, "description"),
                           scopes: try r.scopes(m.n_scopes, m.scopes, "scopes"), inherits: try r.ids(m.n_inherits, m.inherits, "inherits")))
            }
        case AUTHZ__V1__ENTITY__ENTITY_PERMISSION:
            let m = e.pointee.permission!.pointee
            return try decodeCommon(m, FieldReader(prefix: "permission."), keepTimestamps: keepTimestamps) { r, id, tenant in
                .permission(Permission(id: id, tenantId: tenant, name: try r.string(m.name, "name"), service: try r.string(m.service, "service"),
                                       scopes: try r.scopes(m.n_scopes, m.scopes, "scopes")))
            }
        case AUTHZ__V1__ENTITY__ENTITY_ROLE_BINDING:
            let m = e.pointee.role_binding!.pointee
            let r = FieldReader(prefix: "role_binding.")
            let user = try r.id(m.user_id, "user_id")
            if let owner = try r.optionalID(m.owner_user_id, "owner_user_id"), owner != user {
                throw AuthzError.invalid("role_binding.owner_user_id", "must equal user_id")
            }
            return try decodeCommon(m, r, keepTimestamps: keepTimestamps) { r, id, tenant in
                .roleBinding(RoleBinding(id: id, tenantId: tenant, userId: user, roleId: try r.id(m.role_id, "role_id"), scope: try r.scope(m.scope.rawValue, "scope")))
            }
        case AUTHZ__V1__ENTITY__ENTITY_PERMISSION_BINDING:
            let m = e.pointee.permission_binding!.pointee
            return try decodeCommon(m, FieldReader(prefix: "permission_binding."), keepTimestamps: keepTimestamps) { r, id, tenant in
                .permissionBinding(PermissionBinding(id: id, tenantId: tenant, roleId: try r.id(m.role_id, "role_id"),
                                                     permissionId: try r.id(m.permission_id, "permission_id"), scope: try r.scope(m.scope.rawValue, "scope")))
            }
        case AUTHZ__V1__ENTITY__ENTITY_PLATFORM_CREDENTIAL:
            let m = e.pointee.platform_credential!.pointee
            return try decodeCommon(m, FieldReader(prefix: "platform_credential."), keepTimestamps: keepTimestamps) { r, id, tenant in
                var c = PlatformCredential(id: id, tenantId: tenant, ownerUserId: try r.id(m.owner_user_id, "owner_user_id"), platform: try r.string(m.platform, "platform"),
                                           externalAccountId: try r.string(m.external_account_id, "external_account_id"),
                                           accessToken: try r.string(m.access_token, "access_token"),
                                           refreshToken: try r.string(m.refresh_token, "refresh_token"), tokenExpiresAt: m.token_expires_at,
                                           oauthScopes: try r.strings(m.n_oauth_scopes, m.oauth_scopes, "oauth_scopes"))
                c.secretsRedacted = m.secrets_redacted != 0
                c.secretUnreadable = m.secret_unreadable != 0  // server-owned: the store decides it on write
                c.fields.createdAt = m.created_at
                return .platformCredential(c)
            }
        default:
            throw AuthzError.invalid(field, "must hold one of tenant, user, role, permission, role_binding, permission_binding, platform_credential")
        }
    }

    /// The common fields of `m` around its kind's own: reads `id` and `tenant_id` (a tenant's
    /// may be empty and must otherwise equal its id), then calls `body` with them, then sets
    /// `is_active` (absent = true) and `metadata` (`{}` = empty) and, when `keepTimestamps`,
    /// `created_at`, `updated_at` and `schema_version` on what `body` made. INVALID_ARGUMENT
    /// naming `r.prefix` + the field.
    static func decodeCommon<M: EntityMessage>(_ m: M, _ r: FieldReader, keepTimestamps: Bool,
                                               _ body: (FieldReader, _ id: ID, _ tenantId: ID) throws -> Entity) throws -> Entity {
        let id = try r.id(m.id, "id")
        let tenant: ID
        if M.isTenant {
            if let t = try r.optionalID(m.tenant_id, "tenant_id"), t != id {
                throw AuthzError.invalid("tenant.tenant_id", "must equal the tenant's own id")
            }
            tenant = id
        } else {
            tenant = try r.id(m.tenant_id, "tenant_id")
        }
        var entity = try body(r, id, tenant)
        entity.fields.isActive = r.active(m.is_active)
        entity.fields.metadata = try r.metadata(m.metadata)
        if keepTimestamps {
            entity.fields.createdAt = m.created_at
            entity.fields.updatedAt = m.updated_at
            entity.fields.schemaVersion = UInt16(truncatingIfNeeded: m.schema_version)
        }
        return entity
    }

    /// Decodes a record read back from the server (client side): server-owned fields kept.
    static func decodeStored(_ e: UnsafeMutablePointer<Authz__V1__Entity>?) throws -> Entity {
        try decodeWithTimestamps(e, field: "entity")
    }

    /// `decode`, keeping `created_at`, `updated_at` and `schema_version` as sent.
    static func decodeWithTimestamps(_ e: UnsafeMutablePointer<Authz__V1__Entity>?, field: String) throws -> Entity {
        try decode(e, field: field, keepTimestamps: true)
    }

    static func decodeRef(_ r: UnsafeMutablePointer<Authz__V1__Ref>?, field: String) throws -> RecordRef {
        guard let r else { throw AuthzError.invalid(field, "is required") }
        let reader = FieldReader(prefix: field + ".")
        let kind = try kind(r.pointee.kind.rawValue, field: field + ".kind")
        let id = try reader.id(r.pointee.id, "id")
        let tenant = kind == .tenant ? (try reader.optionalID(r.pointee.tenant_id, "tenant_id") ?? id) : try reader.id(r.pointee.tenant_id, "tenant_id")
        return RecordRef(kind: kind, tenantId: tenant, id: id)
    }

    // MARK: encode

    static func boolValue(_ v: Bool, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__BoolValue> {
        a.make(Authz__V1__BoolValue.self) {
            authz__v1__bool_value__init($0)
            $0.pointee.value = v ? 1 : 0
        }
    }

    static func encodeRef(_ ref: RecordRef, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__Ref> {
        a.make(Authz__V1__Ref.self) {
            authz__v1__ref__init($0)
            $0.pointee.kind = Authz__V1__Kind(rawValue: UInt32(ref.kind.rawValue))
            $0.pointee.tenant_id = a.cString(ref.tenantId.description)
            $0.pointee.id = a.cString(ref.id.description)
        }
    }

    /// A message of kind `M`, initialised by `initialize` (the generated `…__init`), holding
    /// the common fields `f`, then the kind's own fields set by `body`; allocated from `a`.
    static func encodeCommon<M: EntityMessage>(_ type: M.Type, _ f: RecordFields, _ a: Arena, _ initialize: (UnsafeMutablePointer<M>) -> Void,
                                               _ body: (UnsafeMutablePointer<M>) -> Void) -> UnsafeMutablePointer<M> {
        a.make(M.self) { m in
            initialize(m)
            m.pointee.id = a.cString(f.id.description)
            m.pointee.tenant_id = a.cString(f.tenantId.description)
            m.pointee.is_active = boolValue(f.isActive, a)
            m.pointee.created_at = f.createdAt
            m.pointee.updated_at = f.updatedAt
            m.pointee.metadata = a.cString(f.metadata)
            m.pointee.schema_version = UInt32(f.schemaVersion)
            body(m)
        }
    }

    /// An `Entity` message holding `entity`, every field set (secrets as they are in `entity`:
    /// redaction is the store's job), allocated from `a`.
    static func encode(_ entity: Entity, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__Entity> {
        let f = entity.fields
        return a.make(Authz__V1__Entity.self) { e in
            authz__v1__entity__init(e)
            switch entity {
            case .tenant(let t):
                e.pointee.entity_case = AUTHZ__V1__ENTITY__ENTITY_TENANT
                e.pointee.tenant = encodeCommon(Authz__V1__Tenant.self, f, a, { authz__v1__tenant__init($0) }) { m in
                    m.pointee.name = a.cString(t.name)
                }
            case .user(let u):
                e.pointee.entity_case = AUTHZ__V1__ENTITY__ENTITY_USER
                e.pointee.user = encodeCommon(Authz__V1__User.self, f, a, { authz__v1__user__init($0) }) { m in
                    m.pointee.email = a.cString(u.email ?? ""); m.pointee.display_name = a.cString(u.displayName ?? "")
                    m.pointee.external_id = a.cString(u.externalId ?? "")
                }
            case .role(let r):
                e.pointee.entity_case = AUTHZ__V1__ENTITY__ENTITY_ROLE
                e.pointee.role = encodeCommon(Authz__V1__Role.self, f, a, { authz__v1__role__init($0) }) { m in
                    m.pointee.name = a.cString(r.name); m.pointee.description = a.cString(r.description)
                    let (n, p) = scopes(r.scopes, a)
                    m.pointee.n_scopes = n; m.pointee.scopes = p
                    m.pointee.n_inherits = r.inherits.count; m.pointee.inherits = a.cStrings(r.inherits.map(\.description))
                }
            case .permission(let p):
                e.pointee.entity_case = AUTHZ__V1__ENTITY__ENTITY_PERMISSION
                e.pointee.permission = encodeCommon(Authz__V1__Permission.self, f, a, { authz__v1__permission__init($0) }) { m in
                    m.pointee.name = a.cString(p.name); m.pointee.service = a.cString(p.service)
                    let (n, sp) = scopes(p.scopes, a)
                    m.pointee.n_scopes = n; m.pointee.scopes = sp
                }
            case .roleBinding(let b):
                e.pointee.entity_case = AUTHZ__V1__ENTITY__ENTITY_ROLE_BINDING
                e.pointee.role_binding = encodeCommon(Authz__V1__RoleBinding.self, f, a, { authz__v1__role_binding__init($0) }) { m in
                    m.pointee.user_id = a.cString(b.userId.description); m.pointee.role_id = a.cString(b.roleId.description)
                    m.pointee.scope = scopeValue(b.scope); m.pointee.owner_user_id = a.cString(b.userId.description)
                }
            case .permissionBinding(let b):
                e.pointee.entity_case = AUTHZ__V1__ENTITY__ENTITY_PERMISSION_BINDING
                e.pointee.permission_binding = encodeCommon(Authz__V1__PermissionBinding.self, f, a, { authz__v1__permission_binding__init($0) }) { m in
                    m.pointee.role_id = a.cString(b.roleId.description); m.pointee.permission_id = a.cString(b.permissionId.description)
                    m.pointee.scope = scopeValue(b.scope)
                }
            case .platformCredential(let c):
                e.pointee.entity_case = AUTHZ__V1__ENTITY__ENTITY_PLATFORM_CREDENTIAL
                e.pointee.platform_credential = encodeCommon(Authz__V1__PlatformCredential.self, f, a, { authz__v1__platform_credential__init($0) }) { m in
                    m.pointee.owner_user_id = a.cString(c.ownerUserId.description); m.pointee.platform = a.cString(c.platform)
                    m.pointee.external_account_id = a.cString(c.externalAccountId)
                    m.pointee.access_token = a.cString(c.accessToken); m.pointee.refresh_token = a.cString(c.refreshToken)
                    m.pointee.token_expires_at = c.tokenExpiresAt
                    m.pointee.n_oauth_scopes = c.oauthScopes.count; m.pointee.oauth_scopes = a.cStrings(c.oauthScopes)
                    m.pointee.secrets_redacted = c.secretsRedacted ? 1 : 0
                    m.pointee.secret_unreadable = c.secretUnreadable ? 1 : 0
                }
            }
        }
    }

    /// A repeated `Scope` field holding `s`, in ascending order.
    static func scopes(_ s: ScopeSet, _ a: Arena) -> (Int, UnsafeMutablePointer<Authz__V1__Scope>) {
        let list = s.scopes
        let p = a.array(Authz__V1__Scope.self, count: list.count)
        for (i, x) in list.enumerated() { p[i] = scopeValue(x) }
        return (list.count, p)
    }
}
