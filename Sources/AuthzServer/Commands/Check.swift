import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// Check on the general path (plain checks of an authenticated connection are answered in
/// place by the connection, `CheckFrame`, with the same answers): one decision from the index,
/// on the event loop. Gateway keys check in every tenant, checker and admin keys in theirs.
enum CheckCommand: Command {
    static let kind = CallKind.check

    static func lane(_ call: Call) -> Lane { .inline }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        guard case .check(let c) = call else { return mismatch(call) }
        switch caller.role {
        case .gateway: return nil
        case .checker, .admin: return caller.sameTenant(c.tenantId, "check.tenant_id")
        case .operator: return caller.refused(call)
        }
    }

    static func readTenants(_ call: Call) -> [ID]? {
        guard case .check(let c) = call else { return nil }
        return [c.tenantId]
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .check(let c) = call else { throw mismatch(call) }
        return .check(try d.engine.check(tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope, minRevision: c.minRevision))
    }
}
