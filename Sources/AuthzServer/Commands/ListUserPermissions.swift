import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// ListUserPermissions: a user's permissions from the index, on the event loop. Gateway keys
/// in every tenant, checker and admin keys in theirs.
enum ListUserPermissionsCommand: Command {
    static let kind = CallKind.listUserPermissions

    static func lane(_ call: Call) -> Lane { .inline }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        guard case .listUserPermissions(let t, _, _) = call else { return mismatch(call) }
        switch caller.role {
        case .gateway: return nil
        case .checker, .admin: return caller.sameTenant(t, "list_user_permissions.tenant_id")
        case .operator: return caller.refused(call)
        }
    }

    static func readTenants(_ call: Call) -> [ID]? {
        guard case .listUserPermissions(let t, _, _) = call else { return nil }
        return [t]
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .listUserPermissions(let t, let u, let minRevision) = call else { throw mismatch(call) }
        let r = try d.engine.permissions(tenant: t, user: u, minRevision: minRevision)
        return .userPermissions(reason: r.reason, permissions: r.permissions, revision: r.revision)
    }
}
