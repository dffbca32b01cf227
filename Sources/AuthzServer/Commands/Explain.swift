import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// Explain: a check evaluated from LMDB with the grant's path, on the reader pool. Checker and
/// admin keys explain in their tenant.
enum ExplainCommand: Command {
    static let kind = CallKind.explain

    static func lane(_ call: Call) -> Lane { .reader }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        guard case .explain(let c) = call else { return mismatch(call) }
        switch caller.role {
        case .checker, .admin: return caller.sameTenant(c.tenantId, "explain.check.tenant_id")
        case .gateway, .operator: return caller.refused(call)
        }
    }

    static func readTenants(_ call: Call) -> [ID]? {
        guard case .explain(let c) = call else { return nil }
        return [c.tenantId]
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .explain(let c) = call else { throw mismatch(call) }
        return .explain(try d.engine.explain(tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope, minRevision: c.minRevision))
    }
}
