internal import CAuthzProto
import AuthzModel

/// List (`ListRequest`, `ListResponse`): records of one kind in one tenant (tenants: in the
/// daemon), by id, a page at a time (`page_size` default `WireCodec.defaultListPageSize`,
/// ceiling `maxPageSize`; the token is the last id of a page).
enum ListWire: WireCall {
    static let kind = CallKind.list
    static let name = "List"
    static let field = "list"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let x = m.list.pointee
        let r = FieldReader(prefix: "list.")
        let kind = try EntityCodec.kind(x.kind.rawValue, field: "list.kind")
        let tenant = kind == .tenant ? (try r.optionalID(x.tenant_id, "tenant_id") ?? .zero) : try r.id(x.tenant_id, "tenant_id")
        return .list(kind, tenantId: tenant, pageSize: WireCodec.pageSize(x.page_size, default: WireCodec.defaultListPageSize),
                     after: try r.optionalID(x.page_token, "page_token"), includeSecrets: x.include_secrets != 0)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .list(let kind, let t, let size, let after, let secrets) = call else { preconditionFailure("\(call.name) given to the List codec") }
        msg.pointee.list = a.make(Authz__V1__ListRequest.self) {
            authz__v1__list_request__init($0)
            $0.pointee.kind = Authz__V1__Kind(rawValue: UInt32(kind.rawValue))
            $0.pointee.tenant_id = a.cString(t == .zero ? "" : t.description)
            $0.pointee.page_size = UInt32(clamping: size)
            $0.pointee.page_token = a.cString(after?.description ?? "")
            $0.pointee.include_secrets = secrets ? 1 : 0
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .list(let entities, let token) = reply else { preconditionFailure("\(reply.kind.name) reply given to the List codec") }
        msg.pointee.list = a.make(Authz__V1__ListResponse.self) { m in
            authz__v1__list_response__init(m)
            let arr = a.array(UnsafeMutablePointer<Authz__V1__Entity>?.self, count: entities.count)
            for (i, e) in entities.enumerated() { arr[i] = EntityCodec.encode(e, a) }
            m.pointee.n_entities = entities.count
            m.pointee.entities = arr
            m.pointee.next_page_token = a.cString(token)
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let x = m.list.pointee
        return .list(try (0..<x.n_entities).map { try EntityCodec.decodeStored(x.entities[$0]) }, nextPageToken: swiftString(x.next_page_token) ?? "")
    }
}
