internal import CAuthzProto
import AuthzModel

/// ListPermissionUsers (`ListPermissionUsersRequest`, `ListPermissionUsersResponse`): the users
/// holding a permission at a scope, by id, a page at a time (`page_size` default and ceiling
/// `WireCodec.defaultUsersPageSize`/`maxPageSize`; the token is the last id of a page).
enum ListPermissionUsersWire: WireCall {
    static let kind = CallKind.listPermissionUsers
    static let name = "ListPermissionUsers"
    static let field = "list_permission_users"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let x = m.list_permission_users.pointee
        let r = FieldReader(prefix: "list_permission_users.")
        let permission = try r.string(x.permission, "permission")
        if permission.isEmpty { throw AuthzError.invalid("list_permission_users.permission", "must not be empty") }
        return .listPermissionUsers(tenantId: try r.id(x.tenant_id, "tenant_id"), permission: permission,
                                    scope: try r.scope(x.scope.rawValue, "scope"),
                                    pageSize: WireCodec.pageSize(x.page_size, default: WireCodec.defaultUsersPageSize),
                                    after: try r.optionalID(x.page_token, "page_token"), minRevision: x.min_revision)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .listPermissionUsers(let t, let p, let s, let size, let after, let minRevision) = call else {
            preconditionFailure("\(call.name) given to the ListPermissionUsers codec")
        }
        msg.pointee.list_permission_users = a.make(Authz__V1__ListPermissionUsersRequest.self) {
            authz__v1__list_permission_users_request__init($0)
            $0.pointee.tenant_id = a.cString(t.description)
            $0.pointee.permission = a.cString(p)
            $0.pointee.scope = EntityCodec.scopeValue(s)
            $0.pointee.page_size = UInt32(clamping: size)
            $0.pointee.page_token = a.cString(after?.description ?? "")
            $0.pointee.min_revision = minRevision
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .permissionUsers(let users, let token, let revision) = reply else { preconditionFailure("\(reply.kind.name) reply given to the ListPermissionUsers codec") }
        msg.pointee.list_permission_users = a.make(Authz__V1__ListPermissionUsersResponse.self) {
            authz__v1__list_permission_users_response__init($0)
            $0.pointee.n_user_ids = users.count
            $0.pointee.user_ids = a.cStrings(users.map(\.description))
            $0.pointee.next_page_token = a.cString(token)
            $0.pointee.revision = revision
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let x = m.list_permission_users.pointee
        return .permissionUsers(WireCodec.ids(x.n_user_ids, x.user_ids), nextPageToken: swiftString(x.next_page_token) ?? "", revision: x.revision)
    }
}
