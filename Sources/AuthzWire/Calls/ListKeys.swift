internal import CAuthzProto
import AuthzModel

/// ListKeys (`ListKeysRequest`, `ListKeysResponse`): API key records (never secrets), of one
/// tenant or all.
enum ListKeysWire: WireCall {
    static let kind = CallKind.listKeys
    static let name = "ListKeys"
    static let field = "list_keys"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        .listKeys(tenantId: try FieldReader(prefix: "list_keys.").optionalID(m.list_keys.pointee.tenant_id, "tenant_id"))
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .listKeys(let t) = call else { preconditionFailure("\(call.name) given to the ListKeys codec") }
        msg.pointee.list_keys = a.make(Authz__V1__ListKeysRequest.self) {
            authz__v1__list_keys_request__init($0)
            $0.pointee.tenant_id = a.cString(t?.description ?? "")
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .listKeys(let keys) = reply else { preconditionFailure("\(reply.kind.name) reply given to the ListKeys codec") }
        msg.pointee.list_keys = a.make(Authz__V1__ListKeysResponse.self) {
            authz__v1__list_keys_response__init($0)
            let arr = a.array(UnsafeMutablePointer<Authz__V1__ApiKey>?.self, count: keys.count)
            for (i, k) in keys.enumerated() { arr[i] = WireCodec.encodeKey(k, a) }
            $0.pointee.n_keys = keys.count
            $0.pointee.keys = arr
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let x = m.list_keys.pointee
        return .listKeys((0..<x.n_keys).compactMap { WireCodec.decodeKey(x.keys[$0]) })
    }
}
