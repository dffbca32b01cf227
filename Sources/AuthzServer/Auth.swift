import Atomics
import AuthzEngine
import AuthzModel
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
    /// A TLS client certificate whose URI SAN (`identity`) the identity map maps to a role.
    case certificate(String, role: KeyRole, tenant: ID)

    var role: KeyRole? {
        switch self {
        case .key(_, let r, _), .uid(_, let r, _), .certificate(_, let r, _): return r
        default: return nil
        }
    }

    var tenant: ID? {
        switch self {
        case .key(_, _, let t), .uid(_, _, let t), .certificate(_, _, let t): return t
        default: return nil
        }
    }
}

/// Why an authentication was refused, for the caller (`error`, UNAUTHENTICATED) and for the
/// audit trail (`reason`, `keyId`). Never holds the presented text or its secret.
struct AuthRefusal: Error {
    /// The audit trail's `reason` of the refusal.
    let reason: AuthRefusalReason
    /// The key id, when the presented key was well-formed (an unknown id included).
    let keyId: ID?
    /// The stored record, only when the secret matched (the key is revoked or expired).
    let key: ApiKey?
    /// The answer the caller gets.
    let error: AuthzError

    /// A refusal for `reason`, answered with `error`; `keyId` and `key` as known.
    init(reason: AuthRefusalReason, keyId: ID? = nil, key: ApiKey? = nil, error: AuthzError) {
        self.reason = reason
        self.keyId = keyId
        self.key = key
        self.error = error
    }
}

/// The daemon's API keys: loaded from the store at start, changed only through the writer
/// thread, read by every connection (a lock held for a dictionary lookup).
final class KeyTable: @unchecked Sendable {  // keys: locked box, epoch: atomic; `persist` is set once, before serving
    private let keys: NIOLockedValueBox<[ID: ApiKey]>
    let storage: KeyStorage
    /// Bumped whenever a key is revoked or its expiry changes: a connection that authenticated
    /// earlier re-validates its key only when this moved (one atomic load per read burst).
    let epoch = ManagedAtomic<UInt64>(0)

    /// Where key records are stored: the store (default) or, in log mode, the replicated log
    /// (which applies them here through `applied` before returning).
    var persist: ((ApiKey) throws -> Void)?

    init(storage: KeyStorage) throws {
        self.storage = storage
        keys = NIOLockedValueBox(Dictionary(uniqueKeysWithValues: try storage.all().map { ($0.id, $0) }))
    }

    /// Compared against when a presented key id is unknown, so that an unknown id and a wrong
    /// secret cost the same hash and compare.
    private static let decoyHash = hash(secret: [UInt8](repeating: 0, count: 32))

    /// SHA-256 of a key's secret: the only form of it the daemon keeps (docs/security.md). The
    /// one place keys are hashed, for creation and verification alike.
    static func hash(secret: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: secret)) }

    /// Verifies a presented key. The refusal's `error` is UNAUTHENTICATED for a malformed,
    /// unknown, wrong, expired or revoked key, never echoing the secret. An unknown key id and a
    /// wrong secret get the same message ("api_key ID is not valid") and the same reason
    /// (`invalidKey`) after the same work, so a caller cannot learn which key ids exist; expired
    /// and revoked are named (only the holder of the secret sees them). The refusal carries the
    /// key id when the text was well-formed, and the stored record only once the secret matched.
    func authenticate(_ presented: String, now: Int64 = Timestamp.now()) -> Result<ApiKey, AuthRefusal> {
        guard let (id, secret) = ApiKey.parse(presented) else {
            return .failure(AuthRefusal(reason: .malformedKey, keyId: nil, key: nil,
                                       error: AuthzError(.unauthenticated, "api_key is malformed (expected azk_<32 lowercase hex>_<64 lowercase hex>)", field: "api_key")))
        }
        let known = keys.withLockedValue({ $0[id] })
        let expected = known?.secretHash ?? KeyTable.decoyHash
        let hash = KeyTable.hash(secret: secret)
        var diff: UInt8 = known == nil ? 1 : 0
        for (a, b) in zip(hash, expected) { diff |= a ^ b }
        guard let k = known, diff == 0, hash.count == expected.count else {
            return .failure(AuthRefusal(reason: .invalidKey, keyId: id, key: nil, error: KeyTable.notValid(id)))
        }
        if let refusal = KeyTable.unusable(k, at: now) { return .failure(refusal) }
        return .success(k)
    }

    /// The refusal for a stored key that cannot be used at `now` (revoked, or expired), or nil.
    private static func unusable(_ k: ApiKey, at now: Int64) -> AuthRefusal? {
        guard let why = k.unusable(at: now) else { return nil }
        return AuthRefusal(reason: why == "revoked" ? .revokedKey : .expiredKey, keyId: k.id, key: k,
                          error: AuthzError(.unauthenticated, "api_key \(k.id) is \(why)", field: "api_key"))
    }

    /// When the key `id` stops being usable on its own (its expiry; `Int64.max` for none), for
    /// connections that re-validate only when the clock passes it or `epoch` moves.
    func expiry(of id: ID) -> Int64 {
        guard let k = keys.withLockedValue({ $0[id] }) else { return 0 }
        return k.expiresAt == 0 ? .max : k.expiresAt
    }

    /// The one answer for an unknown key id and a wrong secret.
    static func notValid(_ id: ID) -> AuthzError {
        AuthzError(.unauthenticated, "api_key \(id) is not valid", field: "api_key")
    }

    /// Re-validates a key a connection authenticated with earlier: nil while it is usable, else
    /// the refusal (revoked, expired, or gone: `invalidKey`). One locked dictionary lookup.
    func stillValid(_ id: ID, now: Int64 = Timestamp.now()) -> AuthRefusal? {
        guard let k = keys.withLockedValue({ $0[id] }) else {
            return AuthRefusal(reason: .invalidKey, keyId: id, key: nil, error: KeyTable.notValid(id))
        }
        return KeyTable.unusable(k, at: now)
    }

    /// PERMISSION_DENIED when `call` asks for credential secrets (`include_secrets` on a Get or
    /// List of platform credentials, or on an Export: `Command.secretsField`) and `principal` is
    /// an API key whose record does not allow reading them (`ApiKey.maySeeSecrets`) or a
    /// client certificate (whose admin role never reads secrets, docs/security.md); nil
    /// otherwise. A superuser and an allowlisted uid are configured by whoever runs the daemon
    /// and are not limited here. Never touches the store: one locked dictionary lookup.
    func secretsDenied(_ principal: Principal, _ call: Call) -> AuthzError? {
        guard let field = Commands.command(for: call).secretsField(call) else { return nil }
        if case .certificate(let identity, _, _) = principal {
            return AuthzError(.permissionDenied, "client certificate \(identity) may not read credential secrets (\(field)): certificate principals never may; omit include_secrets", field: field)
        }
        guard case .key(let id, _, _) = principal else { return nil }
        if keys.withLockedValue({ $0[id] })?.maySeeSecrets == true { return nil }
        return AuthzError(.permissionDenied, "api_key \(id) may not read credential secrets (\(field)): only admin keys created by a local superuser may (keys an operator key created never can); omit include_secrets", field: field)
    }

    /// Creates a key on behalf of `creator`: returns the record and the secret to show once.
    /// An admin key may read credential secrets only when `creator` is `.superuser` (the
    /// daemon's uid or root on the Unix socket, or the offline CLI); a key an operator key
    /// creates records that operator key in `createdBy` and may never read secrets. Blocks for
    /// the commit. INVALID_ARGUMENT for a tenant given to an operator key or missing for another
    /// role; NOT_FOUND for an unknown tenant.
    func create(tenant: ID?, role: KeyRole, name: String, expiresAt: Int64, creator: Principal) throws -> (ApiKey, String) {
        if (role == .operator || role == .gateway) && tenant != nil {
            throw AuthzError.invalid("create_key.tenant_id", "must be empty for an \(role) key (it is not bound to a tenant)")
        }
        if role != .operator && role != .gateway {
            guard let t = tenant else { throw AuthzError.invalid("create_key.tenant_id", "is required for a \(role) key") }
            guard try storage.tenantExists(t) else {
                throw AuthzError(.notFound, "create_key.tenant_id \(t) does not exist", field: "create_key.tenant_id")
            }
        }
        var createdBy = ID.zero
        if case .key(let id, _, _) = creator { createdBy = id }
        var g = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }
        let k = ApiKey(id: .random(), tenantId: tenant ?? .zero, role: role, name: name, createdAt: Timestamp.now(),
                       expiresAt: expiresAt, secretHash: KeyTable.hash(secret: secret),
                       maySeeSecrets: role == .admin && creator == .superuser, createdBy: createdBy)
        if let p = persist {
            try p(k)  // applied here (`applied`) before it returns; a later change may already follow
        } else {
            try storage.save(k)
            keys.withLockedValue { $0[k.id] = k }
        }
        return (k, ApiKey.format(id: k.id, secret: secret))
    }

    /// Revokes now (`expiresAt == 0`) or sets the expiry. NOT_FOUND for an unknown key.
    func revoke(_ id: ID, expiresAt: Int64) throws -> ApiKey {
        guard var k = keys.withLockedValue({ $0[id] }) else { throw AuthzError.notFound("key \(id) does not exist", field: "revoke_key.key_id") }
        if expiresAt == 0 { k.revokedAt = Timestamp.now() } else { k.expiresAt = expiresAt }
        if let p = persist {
            try p(k)  // applied here (`applied`) before it returns
            return keys.withLockedValue { $0[id] } ?? k
        }
        try storage.save(k)
        keys.withLockedValue { $0[id] = k }
        epoch.wrappingIncrement(ordering: .releasing)
        return k
    }

    /// A key record the replicated log applied (created, revoked or re-dated on any daemon).
    /// A revocation is final here as in the store (`Store.applyLogged`): a record that does
    /// not carry one (re-dated on a daemon that had not yet seen the revocation) keeps it.
    func applied(_ k: ApiKey) {
        keys.withLockedValue { keys in
            var k = k
            if let old = keys[k.id], old.revokedAt != 0 {
                k.revokedAt = k.revokedAt == 0 ? old.revokedAt : min(k.revokedAt, old.revokedAt)
            }
            keys[k.id] = k
        }
        epoch.wrappingIncrement(ordering: .releasing)
    }

    func list(tenant: ID?) -> [ApiKey] {
        keys.withLockedValue { Array($0.values) }.filter { tenant == nil || $0.tenantId == tenant }.sorted { $0.createdAt < $1.createdAt }
    }
}

/// What a principal may call. Returns nil when allowed; PERMISSION_DENIED (naming the field
/// that crosses a tenant) or UNAUTHENTICATED otherwise. Never evaluates anything.
///
/// Open calls (Health, Hello) are allowed to everyone; an unauthenticated principal may make
/// nothing else; the superuser may make everything; any other principal acts as its role and
/// tenant, which the call's command judges (`Command.authorize`, `Commands/`).
func authorize(_ p: Principal, _ call: Call) -> AuthzError? {
    let command = Commands.command(for: call)
    if command.open { return nil }
    switch p {
    case .unauthenticated:
        return AuthzError(.unauthenticated, "this connection presented no API key: send a Hello with api_key first, or set Request.api_key", field: "api_key")
    case .superuser:
        return nil
    case .key(_, let role, let tenant), .uid(_, let role, let tenant), .certificate(_, let role, let tenant):
        return command.authorize(Caller(role: role, tenant: tenant), call)
    }
}

/// Which changes a Watch by `p` sees: the call's tenant and kinds, narrowed to the key's
/// tenant (admin keys) or to tenant records (operator keys). Call after `authorize`.
func watchFilter(_ w: WatchCall, principal p: Principal) -> @Sendable (ID, EntityKind) -> Bool {
    let e = effectiveWatch(w, principal: p)
    let t = e.tenantId, k = e.kinds
    return { changeTenant, kind in
        if let t, changeTenant != t { return false }
        return k.isEmpty || k.contains(kind)
    }
}

/// The Watch `p` actually gets: admin keys are held to their tenant, operator keys to tenant
/// records, gateway keys to the kinds that decide checks (no platform credentials: they grant
/// nothing, and a gateway has no business reading account ids).
func effectiveWatch(_ w: WatchCall, principal p: Principal) -> WatchCall {
    var e = w
    switch p.role {
    case .admin?, .checker?: e.tenantId = p.tenant
    case .operator?: e.kinds = [.tenant]
    case .gateway?:
        let decisive = Set(EntityKind.allCases).subtracting([.platformCredential])
        e.kinds = w.kinds.isEmpty ? decisive : w.kinds.intersection(decisive)  // never empty: `authorize` refused that
    default: break
    }
    return e
}

/// Who a Unix-socket peer is by its uid, on every listener: the daemon's own uid or root is the
/// superuser (when `local-superuser` is on), an allowlisted uid (`--allow-uid`) has its role and
/// tenant; anyone else is nil (then only a key or certificate identifies it).
func unixPeerPrincipal(uid: UInt32, config: ServerConfig) -> Principal? {
    if config.localSuperuser && (uid == getuid() || uid == 0) { return .superuser }
    if let (role, tenant) = config.allowUIDs[uid] { return .uid(uid, role: role, tenant: tenant) }
    return nil
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
        try KeyTable(storage: KeyStorage(directory: dataDir, keyRingPath: keyRing)).create(tenant: tenant, role: role, name: name, expiresAt: expiresAt, creator: .superuser)
    }

    public static func list(dataDir: String, keyRing: String?, tenant: ID?) throws -> [ApiKey] {
        try KeyTable(storage: KeyStorage(directory: dataDir, keyRingPath: keyRing)).list(tenant: tenant)
    }

    public static func revoke(dataDir: String, keyRing: String?, id: ID, expiresAt: Int64) throws -> ApiKey {
        try KeyTable(storage: KeyStorage(directory: dataDir, keyRingPath: keyRing)).revoke(id, expiresAt: expiresAt)
    }
}
