import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// ListPermissionUsers: the users holding a permission, a page at a time (O(users)), on the
/// reader pool. Checker and admin keys in their tenant.
enum ListPermissionUsersCommand: Command {
    static let kind = CallKind.listPermissionUsers

    static func lane(_ call: Call) -> Lane { .reader }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        guard case .listPermissionUsers(let t, _, _, _, _, _) = call else { return mismatch(call) }
        switch caller.role {
        case .checker, .admin: return caller.sameTenant(t, "list_permission_users.tenant_id")
        case .gateway, .operator: return caller.refused(call)
        }
    }

    static func readTenants(_ call: Call) -> [ID]? {
        guard case .listPermissionUsers(let t, _, _, _, _, _) = call else { return nil }
        return [t]
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .listPermissionUsers(let t, let p, let s, let size, let after, let minRevision) = call else { throw mismatch(call) }
        let r = try d.engine.users(tenant: t, permission: p, scope: s, after: after, limit: size, minRevision: minRevision)
        return .permissionUsers(r.users, nextPageToken: r.more ? (r.users.last?.description ?? "") : "", revision: r.revision)
    }
}
