/// What an API key may do. Raw values match the wire's `KeyRole`.
public enum KeyRole: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// check, batch check, explain and the list calls of its tenant.
    case checker = 1
    /// Also writes, reads, import and export of its tenant.
    case admin = 2
    /// Tenants (create, soft-delete) and keys; no checks, no tenant data.
    case `operator` = 3
    /// Check, batch check and list a user's permissions in every tenant; nothing else. For
    /// gateways (nginx, Envoy) that front many tenants.
    case gateway = 4

    public init?(name: String) {
        guard let r = KeyRole.allCases.first(where: { $0.name == name }) else { return nil }
        self = r
    }

    public var name: String {
        switch self {
        case .checker: return "checker"
        case .admin: return "admin"
        case .operator: return "operator"
        case .gateway: return "gateway"
        }
    }

    public var description: String { name }
}

/// An API key as stored: never the secret, only its SHA-256 (the secret is 256 random bits, so
/// a fast hash is enough; see docs/security.md).
public struct ApiKey: Hashable, Sendable {
    public var id: ID
    /// `.zero` for operator keys.
    public var tenantId: ID
    public var role: KeyRole
    public var name: String
    public var createdAt: Int64
    /// 0 = never.
    public var expiresAt: Int64
    /// 0 = not revoked; otherwise when it was revoked (a record, not a schedule: a revoked key
    /// is unusable whatever the reader's clock says).
    public var revokedAt: Int64
    public var secretHash: [UInt8]
    /// Whether the key may read credential secrets (`include_secrets`). True only for an admin key
    /// created by a local superuser (the daemon's uid on the Unix socket, root, or the offline
    /// CLI); false for keys an operator key created and for keys stored before this flag existed
    /// (fail closed). See docs/security.md.
    public var maySeeSecrets: Bool
    /// The operator key that created this key; `.zero` when a local superuser created it or the
    /// record predates the field.
    public var createdBy: ID

    public init(id: ID, tenantId: ID, role: KeyRole, name: String, createdAt: Int64, expiresAt: Int64 = 0, revokedAt: Int64 = 0,
                secretHash: [UInt8] = [], maySeeSecrets: Bool = false, createdBy: ID = .zero) {
        self.id = id
        self.tenantId = tenantId
        self.role = role
        self.name = name
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.secretHash = secretHash
        self.maySeeSecrets = maySeeSecrets
        self.createdBy = createdBy
    }

    /// Why the key cannot be used at `now`, or nil when it can.
    public func unusable(at now: Int64) -> String? {
        // Revocation does not wait for the clock: a replica behind the revoking daemon's clock,
        // or a clock stepped back, must not bring the key back.
        if revokedAt != 0 { return "revoked" }
        if expiresAt != 0 && expiresAt <= now { return "expired" }
        return nil
    }

    /// The presented form of a key: `azk_` ‖ 32 lowercase hex digits of the key id ‖ `_` ‖ 64
    /// lowercase hex digits of the secret.
    public static func format(id: ID, secret: [UInt8]) -> String {
        let hex = String(id.description.filter { $0 != "-" })
        return "azk_" + hex + "_" + secret.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// Splits a presented key into its id and 32-byte secret. Accepts exactly the form `format`
    /// writes, `azk_<32 lowercase hex>_<64 lowercase hex>` (no upper case, signs, spaces or other
    /// spellings of the same bytes); nil otherwise. Never echoes or logs the text.
    public static func parse(_ text: String) -> (ID, [UInt8])? {
        let u = Array(text.utf8)
        guard u.count == 4 + 32 + 1 + 64, u[0..<4].elementsEqual("azk_".utf8), u[36] == UInt8(ascii: "_") else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            default: return nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(48)
        for i in stride(from: 4, to: 36, by: 2) {
            guard let h = nibble(u[i]), let l = nibble(u[i + 1]) else { return nil }
            bytes.append(h << 4 | l)
        }
        for i in stride(from: 37, to: 101, by: 2) {
            guard let h = nibble(u[i]), let l = nibble(u[i + 1]) else { return nil }
            bytes.append(h << 4 | l)
        }
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<8 { hi = hi << 8 | UInt64(bytes[i]) }
        for i in 8..<16 { lo = lo << 8 | UInt64(bytes[i]) }
        return (ID(hi: hi, lo: lo), Array(bytes[16...]))
    }
}
