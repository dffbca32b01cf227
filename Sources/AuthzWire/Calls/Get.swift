internal import CAuthzProto
import AuthzModel

/// Get (`GetRequest`, `GetResponse`): one record by reference; secrets only with
/// `include_secrets`.
enum GetWire: WireCall {
    static let kind = CallKind.get
    static let name = "Get"
    static let field = "get"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        .get(try EntityCodec.decodeRef(m.get.pointee.ref, field: "get.ref"), includeSecrets: m.get.pointee.include_secrets != 0)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .get(let ref, let secrets) = call else { preconditionFailure("\(call.name) given to the Get codec") }
        msg.pointee.get = a.make(Authz__V1__GetRequest.self) {
            authz__v1__get_request__init($0)
            $0.pointee.ref = EntityCodec.encodeRef(ref, a)
            $0.pointee.include_secrets = secrets ? 1 : 0
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .get(let e) = reply else { preconditionFailure("\(reply.kind.name) reply given to the Get codec") }
        msg.pointee.get = a.make(Authz__V1__GetResponse.self) {
            authz__v1__get_response__init($0)
            $0.pointee.entity = EntityCodec.encode(e, a)
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        .get(try EntityCodec.decodeStored(m.get.pointee.entity))
    }
}
