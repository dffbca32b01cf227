/// What an API key may do. Raw values match the wire's `KeyRole`.
public enum KeyRole: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// check, batch check, explain and the list calls of its tenant.
    case checker = 1
    /// Also writes, reads, import and export of its tenant.
    case admin = 2
    /// Tenants (create, soft-delete) and keys; no checks, no tenant data.
    case `operator` = 3

    public init?(name: String) {
        guard let r = KeyRole.allCases.first(where: { $0.name == name }) else { return nil }
        self = r
    }

    public var name: String {
        switch self {
        case .checker: return "checker"
        case .admin: return "admin"
        case .operator: return "operator"
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
    /// 0 = not revoked.
    public var revokedAt: Int64
    public var secretHash: [UInt8]

    public init(id: ID, tenantId: ID, role: KeyRole, name: String, createdAt: Int64, expiresAt: Int64 = 0, revokedAt: Int64 = 0, secretHash: [UInt8] = []) {
        self.id = id
        self.tenantId = tenantId
        self.role = role
        self.name = name
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.secretHash = secretHash
    }

    /// Why the key cannot be used at `now`, or nil when it can.
    public func unusable(at now: Int64) -> String? {
        if revokedAt != 0 && revokedAt <= now { return "revoked" }
        if expiresAt != 0 && expiresAt <= now { return "expired" }
        return nil
    }

    /// The presented form of a key: `azk_` ‖ 32 hex digits of the key id ‖ `_` ‖ 64 hex digits
    /// of the secret.
    public static func format(id: ID, secret: [UInt8]) -> String {
        let hex = String(id.description.filter { $0 != "-" })
        return "azk_" + hex + "_" + secret.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// Splits a presented key into its id and secret; nil when malformed.
    public static func parse(_ text: String) -> (ID, [UInt8])? {
        let parts = text.split(separator: "_")
        guard parts.count == 3, parts[0] == "azk", parts[1].utf8.count == 32, parts[2].utf8.count == 64 else { return nil }
        let h = Array(parts[1].utf8)
        let dashed = String(decoding: h[0..<8], as: UTF8.self) + "-" + String(decoding: h[8..<12], as: UTF8.self) + "-" + String(decoding: h[12..<16], as: UTF8.self) + "-" + String(decoding: h[16..<20], as: UTF8.self) + "-" + String(decoding: h[20..<32], as: UTF8.self)
        guard let id = ID(dashed) else { return nil }
        var secret: [UInt8] = []
        let s = Array(parts[2].utf8)
        for i in stride(from: 0, to: 64, by: 2) {
            guard let b = UInt8(String(decoding: s[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            secret.append(b)
        }
        return (id, secret)
    }
}
