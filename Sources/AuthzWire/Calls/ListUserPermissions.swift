internal import CAuthzProto
import AuthzModel

/// ListUserPermissions (`ListUserPermissionsRequest`, `ListUserPermissionsResponse`): every
/// permission a user holds, with the highest scope, or the reason the list is empty.
enum ListUserPermissionsWire: WireCall {
    static let kind = CallKind.listUserPermissions
    static let name = "ListUserPermissions"
    static let field = "list_user_permissions"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let x = m.list_user_permissions.pointee
        let r = FieldReader(prefix: "list_user_permissions.")
        return .listUserPermissions(tenantId: try r.id(x.tenant_id, "tenant_id"), userId: try r.id(x.user_id, "user_id"), minRevision: x.min_revision)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .listUserPermissions(let t, let u, let minRevision) = call else { preconditionFailure("\(call.name) given to the ListUserPermissions codec") }
        msg.pointee.list_user_permissions = a.make(Authz__V1__ListUserPermissionsRequest.self) {
            authz__v1__list_user_permissions_request__init($0)
            $0.pointee.tenant_id = a.cString(t.description)
            $0.pointee.user_id = a.cString(u.description)
            $0.pointee.min_revision = minRevision
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .userPermissions(let reason, let list, let revision) = reply else { preconditionFailure("\(reply.kind.name) reply given to the ListUserPermissions codec") }
        msg.pointee.list_user_permissions = a.make(Authz__V1__ListUserPermissionsResponse.self) { m in
            authz__v1__list_user_permissions_response__init(m)
            m.pointee.revision = revision
            m.pointee.reason = WireCodec.reasonValue(reason)
            let arr = a.array(UnsafeMutablePointer<Authz__V1__UserPermission>?.self, count: list.count)
            for (i, (name, scope)) in list.enumerated() {
                arr[i] = a.make(Authz__V1__UserPermission.self) {
                    authz__v1__user_permission__init($0)
                    $0.pointee.permission = a.cString(name)
                    $0.pointee.scope = EntityCodec.scopeValue(scope)
                }
            }
            m.pointee.n_permissions = list.count
            m.pointee.permissions = arr
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let x = m.list_user_permissions.pointee
        let list: [(String, Scope)] = (0..<x.n_permissions).compactMap {
            let p = x.permissions[$0]!.pointee
            guard let s = WireCodec.scopeFrom(p.scope) else { return nil }
            return (swiftString(p.permission) ?? "", s)
        }
        return .userPermissions(reason: try WireCodec.decodeReason(x.reason), permissions: list, revision: x.revision)
    }
}
