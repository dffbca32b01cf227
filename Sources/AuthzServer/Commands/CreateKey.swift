import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// CreateKey: a new API key committed on the writer thread (`KeyTable.create`), audited and
/// logged (never its secret). Operator keys (and the superuser) only.
enum CreateKeyCommand: Command {
    static let kind = CallKind.createKey

    static func lane(_ call: Call) -> Lane { .writer }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? { caller.operatorOnly(call) }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .createKey(let t, let role, let name, let expires) = call else { throw mismatch(call) }
        let (k, secret) = try d.keys.create(tenant: t, role: role, name: name, expiresAt: expires, creator: principal)
        d.audit?.keyCreated(k, who: d.actor(principal, peer), peer: peer)
        d.logger.notice("api key created", metadata: ["key.id": "\(k.id)", "key.role": "\(k.role)", "key.tenant": "\(k.tenantId)",
                                                      "key.created_by": "\(k.createdBy == .zero ? "local" : k.createdBy.description)",
                                                      "key.may_see_secrets": "\(k.maySeeSecrets)"])
        return .createKey(k, secret: secret)
    }
}
