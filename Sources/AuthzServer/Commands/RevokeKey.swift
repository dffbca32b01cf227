import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// RevokeKey: revokes a key or sets its expiry on the writer thread (`KeyTable.revoke`),
/// audited and logged. Operator keys (and the superuser) only.
enum RevokeKeyCommand: Command {
    static let kind = CallKind.revokeKey

    static func lane(_ call: Call) -> Lane { .writer }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? { caller.operatorOnly(call) }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .revokeKey(let id, let expires) = call else { throw mismatch(call) }
        let k = try d.keys.revoke(id, expiresAt: expires)
        if expires == 0 {
            d.audit?.keyRevoked(k, who: d.actor(principal, peer), peer: peer)
        } else {
            d.audit?.keyExpirySet(k, who: d.actor(principal, peer), peer: peer)
        }
        d.logger.notice(expires == 0 ? "api key revoked" : "api key expiry set", metadata: ["key.id": "\(id)"])
        return .revokeKey(k)
    }
}
