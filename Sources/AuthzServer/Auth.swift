import AuthzEngine
import AuthzModel
import AuthzStore
import AuthzWire
import Crypto
import Logging
import NIOConcurrencyHelpers
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Who is calling, for one request.
enum Principal: Equatable {
    /// Nothing presented (TCP without a key, a Unix peer not on the allowlist).
    case unauthenticated
    /// Everything: a Unix peer running as the daemon's own uid or root (it can read the data
    /// directory anyway), or any caller under `--insecure-no-auth`.
    case superuser
    /// A verified API key (re-checked on every request).
    case key(id: ID, role: KeyRole, tenant: ID)
    /// A Unix peer uid on the allowlist.
    case uid(UInt32, role: KeyRole, tenant: ID)

    var role: KeyRole? {
        switch self {
        case .key(_, let r, _), .uid(_, let r, _): return r
        default: return nil
        }
    }

    var tenant: ID? {
        switch self {
        case .key(_, _, let t), .uid(_, _, let t): return t
        default: return nil
        }
    }
}

/// The daemon's API keys: loaded from the store at start, changed only through the writer
/// thread, read by every connection (a lock held for a dictionary lookup).
final class KeyTable: @unchecked Sendable {
    private let keys: NIOLockedValueBox<[ID: ApiKey]>
    let store: Store

    init(store: Store) throws {
        self.store = store
        keys = NIOLockedValueBox(Dictionary(uniqueKeysWithValues: try store.keys().map { ($0.id, $0) }))
    }

    /// Verifies a presented key. UNAUTHENTICATED for a malformed, unknown, wrong, expired or
    /// revoked key (the message says which, never echoing the secret).
    func authenticate(_ presented: String, now: Int64 = Timestamp.now()) -> Result<ApiKey, AuthzError> {
        guard let (id, secret) = ApiKey.parse(presented) else {
            return .failure(AuthzError(.unauthenticated, "api_key is malformed (expected azk_<32 hex>_<64 hex>)", field: "api_key"))
        }
        guard let k = keys.withLockedValue({ $0[id] }) else {
            return .failure(AuthzError(.unauthenticated, "api_key \(id) is not known", field: "api_key"))
        }
        let hash = Array(SHA256.hash(data: secret))
        var diff: UInt8 = 0
        for (a, b) in zip(hash, k.secretHash) { diff |= a ^ b }
        if diff != 0 || hash.count != k.secretHash.count {
            return .failure(AuthzError(.unauthenticated, "api_key \(id) does not match", field: "api_key"))
        }
        if let why = k.unusable(at: now) { return .failure(AuthzError(.unauthenticated, "api_key \(id) is \(why)", field: "api_key")) }
        return .success(k)
    }

    /// Re-validates a key a connection authenticated with earlier.
    func stillValid(_ id: ID, now: Int64 = Timestamp.now()) -> AuthzError? {
        guard let k = keys.withLockedValue({ $0[id] }) else { return AuthzError(.unauthenticated, "api_key \(id) is not known", field: "api_key") }
        if let why = k.unusable(at: now) { return AuthzError(.unauthenticated, "api_key \(id) is \(why)", field: "api_key") }
        return nil
    }

    /// Creates a key: returns the record and the secret to show once. Blocks for the commit.
    func create(tenant: ID?, role: KeyRole, name: String, expiresAt: Int64) throws -> (ApiKey, String) {
        if role == .operator && tenant != nil {
            throw AuthzError.invalid("create_key.tenant_id", "must be empty for an operator key")
        }
        if role != .operator {
            guard let t = tenant else { throw AuthzError.invalid("create_key.tenant_id", "is required for a \(role) key") }
            guard try store.read({ try $0.entity(.tenant, tenant: t, id: t) }) != nil else {
                throw AuthzError(.notFound, "create_key.tenant_id \(t) does not exist", field: "create_key.tenant_id")
            }
        }
        var g = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }
        let k = ApiKey(id: .random(), tenantId: tenant ?? .zero, role: role, name: name, createdAt: Timestamp.now(),
                       expiresAt: expiresAt, secretHash: Array(SHA256.hash(data: secret)))
        try store.putKey(k)
        keys.withLockedValue { $0[k.id] = k }
        return (k, ApiKey.format(id: k.id, secret: secret))
    }

    /// Revokes now (`expiresAt == 0`) or sets the expiry. NOT_FOUND for an unknown key.
    func revoke(_ id: ID, expiresAt: Int64) throws -> ApiKey {
        guard var k = keys.withLockedValue({ $0[id] }) else { throw AuthzError.notFound("key \(id) does not exist", field: "revoke_key.key_id") }
        if expiresAt == 0 { k.revokedAt = Timestamp.now() } else { k.expiresAt = expiresAt }
        try store.putKey(k)
        keys.withLockedValue { $0[id] = k }
        return k
    }

    func list(tenant: ID?) -> [ApiKey] {
        keys.withLockedValue { Array($0.values) }.filter { tenant == nil || $0.tenantId == tenant }.sorted { $0.createdAt < $1.createdAt }
    }
}

/// What a principal may call. Returns nil when allowed; PERMISSION_DENIED (naming the field
/// that crosses a tenant) or UNAUTHENTICATED otherwise. Never evaluates anything.
func authorize(_ p: Principal, _ call: Call) -> AuthzError? {
    if case .health = call { return nil }
    if case .hello = call { return nil }
    switch p {
    case .unauthenticated:
        return AuthzError(.unauthenticated, "this connection presented no API key: send a Hello with api_key first, or set Request.api_key", field: "api_key")
    case .superuser:
        return nil
    case .key, .uid:
        break
    }
    let role = p.role!, tenant = p.tenant!
    func denied(_ what: String) -> AuthzError { AuthzError(.permissionDenied, "a \(role) key may not \(what)") }
    func sameTenant(_ t: ID, _ field: String) -> AuthzError? {
        t == tenant ? nil : AuthzError(.permissionDenied, "\(field) names another tenant than the key's", field: field)
    }
    switch role {
    case .operator:
        switch call {
        case .serverInfo, .createKey, .listKeys, .revokeKey: return nil
        case .list(.tenant, _, _, _, _): return nil
        case .get(let ref, _) where ref.kind == .tenant: return nil
        case .write(let ops):
            for (i, op) in ops.enumerated() {
                let isTenant: Bool
                switch op {
                case .upsert(let e): isTenant = e.kind == .tenant
                case .deactivate(let r), .activate(let r): isTenant = r.kind == .tenant
                }
                if !isTenant {
                    return AuthzError(.permissionDenied, "an operator key may only write tenants (write.ops[\(i)])", field: "write.ops[\(i)]")
                }
            }
            return nil
        default: return denied("call \(call.name) (operators manage tenants and keys only)")
        }
    case .checker, .admin:
        switch call {
        case .check(let c): return sameTenant(c.tenantId, "check.tenant_id")
        case .explain(let c): return sameTenant(c.tenantId, "explain.check.tenant_id")
        case .batchCheck(let items, _):
            for (i, item) in items.enumerated() {
                if case .success(let c) = item, let e = sameTenant(c.tenantId, "batch_check.checks[\(i)].tenant_id") { return e }
            }
            return nil
        case .listUserPermissions(let t, _, _): return sameTenant(t, "list_user_permissions.tenant_id")
        case .listPermissionUsers(let t, _, _, _, _, _): return sameTenant(t, "list_permission_users.tenant_id")
        default: break
        }
        guard role == .admin else { return denied("call \(call.name) (checker keys may check, explain and list only)") }
        switch call {
        case .write(let ops):
            for (i, op) in ops.enumerated() {
                switch op {
                case .upsert(let e):
                    if e.kind == .tenant { return AuthzError(.permissionDenied, "an admin key may not write tenants (write.ops[\(i)])", field: "write.ops[\(i)]") }
                    if let err = sameTenant(e.tenantId, "write.ops[\(i)].tenant_id") { return err }
                case .deactivate(let r), .activate(let r):
                    if r.kind == .tenant { return AuthzError(.permissionDenied, "an admin key may not write tenants (write.ops[\(i)])", field: "write.ops[\(i)]") }
                    if let err = sameTenant(r.tenantId, "write.ops[\(i)].tenant_id") { return err }
                }
            }
            return nil
        case .get(let ref, _): return sameTenant(ref.kind == .tenant ? ref.id : ref.tenantId, "get.ref.tenant_id")
        case .list(let kind, let t, _, _, _):
            if kind == .tenant { return denied("list tenants") }
            return sameTenant(t, "list.tenant_id")
        case .export(let t, _): return t.map { sameTenant($0, "export.tenant_id") } ?? nil
        case .importJSONL: return nil  // each line's tenant is checked after parsing (Dispatcher)
        default: return denied("call \(call.name)")
        }
    }
}

/// Reads the Unix peer's uid (`SO_PEERCRED`).
func peerUID(_ channel: Channel) -> EventLoopFuture<UInt32?> {
    guard let provider = channel as? SocketOptionProvider else { return channel.eventLoop.makeSucceededFuture(nil) }
    let future: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
    return future.map { Optional($0.uid) }.recover { _ in nil }
}

/// `struct ucred` (pid, uid, gid), as `getsockopt(SO_PEERCRED)` fills it.
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// Key management on a data directory with no daemon running (`authzd keys … --offline`),
/// e.g. to create the first operator key.
public enum OfflineKeys {
    /// Creates a key; returns it and the secret to show once.
    public static func create(dataDir: String, keyRing: String?, tenant: ID?, role: KeyRole, name: String, expiresAt: Int64) throws -> (ApiKey, String) {
        var o = StoreOptions()
        o.keyRingPath = keyRing
        o.keyRing = .loadIfPresent  // key management seals nothing: never invent a key ring
        return try KeyTable(store: try Store(directory: dataDir, options: o)).create(tenant: tenant, role: role, name: name, expiresAt: expiresAt)
    }

    public static func list(dataDir: String, keyRing: String?, tenant: ID?) throws -> [ApiKey] {
        var o = StoreOptions()
        o.keyRingPath = keyRing
        o.keyRing = .loadIfPresent  // key management seals nothing: never invent a key ring
        return try KeyTable(store: try Store(directory: dataDir, options: o)).list(tenant: tenant)
    }

    public static func revoke(dataDir: String, keyRing: String?, id: ID, expiresAt: Int64) throws -> ApiKey {
        var o = StoreOptions()
        o.keyRingPath = keyRing
        o.keyRing = .loadIfPresent  // key management seals nothing: never invent a key ring
        return try KeyTable(store: try Store(directory: dataDir, options: o)).revoke(id, expiresAt: expiresAt)
    }
}
