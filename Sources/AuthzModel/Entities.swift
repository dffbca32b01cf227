/// The kinds of record authzd keeps. Raw values are stable: they appear in LMDB keys and on
/// the wire (offset by the proto's `KIND_UNSPECIFIED = 0`).
public enum EntityKind: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case tenant = 1
    case user = 2
    case role = 3
    case permission = 4
    case roleBinding = 5
    case permissionBinding = 6
    case platformCredential = 7

    /// The snake_case name used in bulk files (`"role_binding"`).
    public var name: String {
        switch self {
        case .tenant: return "tenant"
        case .user: return "user"
        case .role: return "role"
        case .permission: return "permission"
        case .roleBinding: return "role_binding"
        case .permissionBinding: return "permission_binding"
        case .platformCredential: return "platform_credential"
        }
    }

    public init?(name: some StringProtocol) {
        guard let kind = EntityKind.allCases.first(where: { $0.name == name }) else { return nil }
        self = kind
    }

    public var description: String { name }
}

/// The fields every record has (spec, "Common fields").
///
/// `createdAt`, `updatedAt` and `schemaVersion` belong to the server: whatever a client sends
/// in them is replaced when the record is written.
public struct RecordFields: Hashable, Sendable {
    public var id: ID
    /// For a tenant, its own id.
    public var tenantId: ID
    public var isActive: Bool
    /// Microseconds since the Unix epoch, UTC.
    public var createdAt: Int64
    public var updatedAt: Int64
    /// A JSON object's text; empty means `{}`.
    public var metadata: String
    public var schemaVersion: UInt16

    public init(id: ID, tenantId: ID, isActive: Bool = true, createdAt: Int64 = 0, updatedAt: Int64 = 0,
                metadata: String = "", schemaVersion: UInt16 = RecordFields.currentSchemaVersion) {
        self.id = id
        self.tenantId = tenantId
        self.isActive = isActive
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.metadata = metadata
        self.schemaVersion = schemaVersion
    }

    /// The version of the record encoding this build writes.
    public static let currentSchemaVersion: UInt16 = 1
}

public struct Tenant: Hashable, Sendable {
    public var fields: RecordFields
    public var name: String

    public init(id: ID, name: String, isActive: Bool = true, metadata: String = "") {
        fields = RecordFields(id: id, tenantId: id, isActive: isActive, metadata: metadata)
        self.name = name
    }
}

public struct User: Hashable, Sendable {
    public var fields: RecordFields
    public var email: String?
    public var displayName: String?
    public var externalId: String?

    public init(id: ID, tenantId: ID, email: String? = nil, displayName: String? = nil,
                externalId: String? = nil, isActive: Bool = true, metadata: String = "") {
        fields = RecordFields(id: id, tenantId: tenantId, isActive: isActive, metadata: metadata)
        self.email = email
        self.displayName = displayName
        self.externalId = externalId
    }
}

public struct Role: Hashable, Sendable {
    public var fields: RecordFields
    public var name: String
    public var description: String
    /// The scopes this role may be bound at.
    public var scopes: ScopeSet
    /// Roles of the same tenant whose grants this role also has.
    public var inherits: [ID]

    public init(id: ID, tenantId: ID, name: String, description: String = "", scopes: ScopeSet = .all,
                inherits: [ID] = [], isActive: Bool = true, metadata: String = "") {
        fields = RecordFields(id: id, tenantId: tenantId, isActive: isActive, metadata: metadata)
        self.name = name
        self.description = description
        self.scopes = scopes
        self.inherits = inherits
    }
}

public struct Permission: Hashable, Sendable {
    public var fields: RecordFields
    /// Dotted lowercase, e.g. `gmail.messages.read`.
    public var name: String
    public var service: String
    /// The scopes this permission may be granted at.
    public var scopes: ScopeSet

    public init(id: ID, tenantId: ID, name: String, service: String, scopes: ScopeSet = .all,
                isActive: Bool = true, metadata: String = "") {
        fields = RecordFields(id: id, tenantId: tenantId, isActive: isActive, metadata: metadata)
        self.name = name
        self.service = service
        self.scopes = scopes
    }
}

/// Binds a user to a role at a scope. Its `owner_user_id` is its `userId`.
public struct RoleBinding: Hashable, Sendable {
    public var fields: RecordFields
    public var userId: ID
    public var roleId: ID
    public var scope: Scope

    public init(id: ID, tenantId: ID, userId: ID, roleId: ID, scope: Scope, isActive: Bool = true,
                metadata: String = "") {
        fields = RecordFields(id: id, tenantId: tenantId, isActive: isActive, metadata: metadata)
        self.userId = userId
        self.roleId = roleId
        self.scope = scope
    }

    public var ownerUserId: ID { userId }
}

/// Grants a permission to a role at a scope.
public struct PermissionBinding: Hashable, Sendable {
    public var fields: RecordFields
    public var roleId: ID
    public var permissionId: ID
    public var scope: Scope

    public init(id: ID, tenantId: ID, roleId: ID, permissionId: ID, scope: Scope, isActive: Bool = true,
                metadata: String = "") {
        fields = RecordFields(id: id, tenantId: tenantId, isActive: isActive, metadata: metadata)
        self.roleId = roleId
        self.permissionId = permissionId
        self.scope = scope
    }
}

/// A user's linked account on a platform. `accessToken` and `refreshToken` are secrets: never
/// logged, and returned to a caller only when it asks for them and may read them.
public struct PlatformCredential: Hashable, Sendable {
    public var fields: RecordFields
    public var ownerUserId: ID
    public var platform: String
    public var externalAccountId: String
    public var accessToken: String
    public var refreshToken: String
    /// Microseconds since the epoch; 0 = unknown.
    public var tokenExpiresAt: Int64
    public var oauthScopes: [String]
    /// True when the tokens above were blanked out for the reader.
    public var secretsRedacted: Bool
    /// True when the stored tokens cannot be decrypted (their key is not in the key ring, or
    /// the ciphertext was altered or moved). Set only by the store when it reads the record:
    /// the tokens are then empty and `secretsRedacted` is set. A read that needs the tokens
    /// fails with DATA_LOSS; a redacted read, a listing or a redacted export shows the record
    /// with this marker. Whatever a client sends in it is ignored on write.
    public var secretUnreadable: Bool
    /// When `secretUnreadable`, the ciphertexts as stored, so that rewriting the record without
    /// new tokens (deactivate, activate, a redacted write-back) keeps them byte for byte.
    /// Only the store reads or fills it; never on the wire, in a bulk file or in a log.
    public var unreadableSecret: UnreadableSecret?

    public init(id: ID, tenantId: ID, ownerUserId: ID, platform: String, externalAccountId: String,
                accessToken: String = "", refreshToken: String = "", tokenExpiresAt: Int64 = 0,
                oauthScopes: [String] = [], isActive: Bool = true, metadata: String = "") {
        fields = RecordFields(id: id, tenantId: tenantId, isActive: isActive, metadata: metadata)
        self.ownerUserId = ownerUserId
        self.platform = platform
        self.externalAccountId = externalAccountId
        self.accessToken = accessToken
        self.refreshToken = refreshToken
        self.tokenExpiresAt = tokenExpiresAt
        self.oauthScopes = oauthScopes
        self.secretsRedacted = false
        self.secretUnreadable = false
        self.unreadableSecret = nil
    }

    /// A copy with both tokens blanked and `secretsRedacted` set.
    public func redacted() -> PlatformCredential {
        var copy = self
        copy.accessToken = ""
        copy.refreshToken = ""
        copy.secretsRedacted = true
        copy.unreadableSecret = nil
        return copy
    }
}

/// The stored ciphertexts of a platform credential that could not be decrypted, kept opaque.
///
/// Built only by the store's record decoder. `reason` says why opening failed (a key id
/// missing from the ring, or a failed authentication) and never holds secret material.
public struct UnreadableSecret: Hashable, Sendable {
    /// Why the ciphertexts could not be opened; safe to return to a caller and to log.
    public var reason: String
    /// The sealed access token exactly as stored (empty when the token is empty).
    public var sealedAccessToken: [UInt8]
    /// The sealed refresh token exactly as stored (empty when the token is empty).
    public var sealedRefreshToken: [UInt8]

    /// Wraps ciphertexts as read from a record; copies the bytes, checks nothing.
    public init(reason: String, sealedAccessToken: [UInt8], sealedRefreshToken: [UInt8]) {
        self.reason = reason
        self.sealedAccessToken = sealedAccessToken
        self.sealedRefreshToken = sealedRefreshToken
    }
}

/// Any record.
public enum Entity: Hashable, Sendable {
    case tenant(Tenant)
    case user(User)
    case role(Role)
    case permission(Permission)
    case roleBinding(RoleBinding)
    case permissionBinding(PermissionBinding)
    // Boxed: the largest payload by far; unboxed it would make every Entity (and every copy of
    // one in a write batch) about twice the size of the next largest.
    indirect case platformCredential(PlatformCredential)

    public var kind: EntityKind {
        switch self {
        case .tenant: return .tenant
        case .user: return .user
        case .role: return .role
        case .permission: return .permission
        case .roleBinding: return .roleBinding
        case .permissionBinding: return .permissionBinding
        case .platformCredential: return .platformCredential
        }
    }

    /// The common fields, read and written in place.
    public var fields: RecordFields {
        get {
            switch self {
            case .tenant(let e): return e.fields
            case .user(let e): return e.fields
            case .role(let e): return e.fields
            case .permission(let e): return e.fields
            case .roleBinding(let e): return e.fields
            case .permissionBinding(let e): return e.fields
            case .platformCredential(let e): return e.fields
            }
        }
        set {
            switch self {
            case .tenant(var e): e.fields = newValue; self = .tenant(e)
            case .user(var e): e.fields = newValue; self = .user(e)
            case .role(var e): e.fields = newValue; self = .role(e)
            case .permission(var e): e.fields = newValue; self = .permission(e)
            case .roleBinding(var e): e.fields = newValue; self = .roleBinding(e)
            case .permissionBinding(var e): e.fields = newValue; self = .permissionBinding(e)
            case .platformCredential(var e): e.fields = newValue; self = .platformCredential(e)
            }
        }
    }

    public var id: ID { fields.id }
    public var tenantId: ID { fields.tenantId }

    /// The same entity with platform-credential secrets blanked; other kinds are unchanged.
    public func redacted() -> Entity {
        if case .platformCredential(let c) = self { return .platformCredential(c.redacted()) }
        return self
    }

    /// Throws DATA_LOSS (naming the credential and why) when this is a platform credential
    /// whose stored tokens cannot be decrypted; returns otherwise. Call it before handing a
    /// record to a reader that asked for secrets: such a read fails closed rather than return
    /// empty tokens.
    public func requireReadableSecrets() throws {
        guard case .platformCredential(let c) = self, c.secretUnreadable else { return }
        let why = c.unreadableSecret.map { ": \($0.reason)" } ?? ""
        throw AuthzError(.dataLoss, "platform_credential \(c.fields.id) holds tokens that cannot be decrypted\(why); read it without include_secrets, overwrite it with new tokens, or restore the key ring", field: "platform_credential.secret_unreadable")
    }
}

/// Names a record: its kind, tenant and id.
public struct RecordRef: Hashable, Sendable, CustomStringConvertible {
    public var kind: EntityKind
    public var tenantId: ID
    public var id: ID

    public init(kind: EntityKind, tenantId: ID, id: ID) {
        self.kind = kind
        self.tenantId = tenantId
        self.id = id
    }

    public var description: String { "\(kind.name) \(id)" }
}

/// One operation of an atomic write batch.
public enum WriteOp: Hashable, Sendable {
    /// Insert or replace by id. `createdAt` is kept from the existing record.
    case upsert(Entity)
    /// Soft delete: `is_active = false`. The record stays readable.
    case deactivate(RecordRef)
    /// Re-activation: `is_active = true`.
    case activate(RecordRef)
    /// Upsert unless the stored record's `updatedAt` is at or after this one's, in which case
    /// nothing changes (not an error). `updatedAt` is required (> 0) and kept; `createdAt` is
    /// the stored record's, or for a new record this one's (else its `updatedAt`). For changes
    /// ordered by another system's clock (user events): a redelivered or older change is a no-op.
    case upsertIfNewer(Entity)

    /// The tenant the operation changes (a tenant record's own id for a tenant).
    public var tenantId: ID {
        switch self {
        case .upsert(let e), .upsertIfNewer(let e): return e.tenantId
        case .deactivate(let r), .activate(let r): return r.kind == .tenant ? r.id : r.tenantId
        }
    }
}
