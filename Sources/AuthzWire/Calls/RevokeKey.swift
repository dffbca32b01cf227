internal import CAuthzProto
import AuthzModel

/// RevokeKey (`RevokeKeyRequest`, `RevokeKeyResponse`): revokes a key now (`expires_at` 0) or
/// sets its expiry; answers with the changed record.
enum RevokeKeyWire: WireCall {
    static let kind = CallKind.revokeKey
    static let name = "RevokeKey"
    static let field = "revoke_key"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        .revokeKey(id: try FieldReader(prefix: "revoke_key.").id(m.revoke_key.pointee.key_id, "key_id"), expiresAt: m.revoke_key.pointee.expires_at)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .revokeKey(let id, let expires) = call else { preconditionFailure("\(call.name) given to the RevokeKey codec") }
        msg.pointee.revoke_key = a.make(Authz__V1__RevokeKeyRequest.self) {
            authz__v1__revoke_key_request__init($0)
            $0.pointee.key_id = a.cString(id.description)
            $0.pointee.expires_at = expires
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .revokeKey(let k) = reply else { preconditionFailure("\(reply.kind.name) reply given to the RevokeKey codec") }
        msg.pointee.revoke_key = a.make(Authz__V1__RevokeKeyResponse.self) {
            authz__v1__revoke_key_response__init($0)
            $0.pointee.key = WireCodec.encodeKey(k, a)
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        guard let k = WireCodec.decodeKey(m.revoke_key.pointee.key) else { throw AuthzError(.internal, "malformed key in response") }
        return .revokeKey(k)
    }
}
