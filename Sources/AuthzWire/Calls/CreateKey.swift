internal import CAuthzProto
import AuthzModel

/// CreateKey (`CreateKeyRequest`, `CreateKeyResponse`): a new API key and its secret, shown
/// once.
enum CreateKeyWire: WireCall {
    static let kind = CallKind.createKey
    static let name = "CreateKey"
    static let field = "create_key"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let x = m.create_key.pointee
        let r = FieldReader(prefix: "create_key.")
        guard let role = KeyRole(rawValue: UInt8(truncatingIfNeeded: x.role.rawValue)), x.role.rawValue <= 4 else {
            throw AuthzError.invalid("create_key.role", "must be KEY_ROLE_CHECKER, KEY_ROLE_ADMIN, KEY_ROLE_OPERATOR or KEY_ROLE_GATEWAY")
        }
        let name = try r.string(x.name, "name")
        try Validate.text(name, field: "create_key.name", max: FieldLimits.maxNameBytes, allowEmpty: true)
        return .createKey(tenantId: try r.optionalID(x.tenant_id, "tenant_id"), role: role, name: name, expiresAt: x.expires_at)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .createKey(let t, let role, let name, let expires) = call else { preconditionFailure("\(call.name) given to the CreateKey codec") }
        msg.pointee.create_key = a.make(Authz__V1__CreateKeyRequest.self) {
            authz__v1__create_key_request__init($0)
            $0.pointee.tenant_id = a.cString(t?.description ?? "")
            $0.pointee.role = Authz__V1__KeyRole(rawValue: UInt32(role.rawValue))
            $0.pointee.name = a.cString(name)
            $0.pointee.expires_at = expires
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .createKey(let k, let secret) = reply else { preconditionFailure("\(reply.kind.name) reply given to the CreateKey codec") }
        msg.pointee.create_key = a.make(Authz__V1__CreateKeyResponse.self) {
            authz__v1__create_key_response__init($0)
            $0.pointee.key = WireCodec.encodeKey(k, a)
            $0.pointee.secret = a.cString(secret)
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        guard let k = WireCodec.decodeKey(m.create_key.pointee.key) else { throw AuthzError(.internal, "malformed key in response") }
        return .createKey(k, secret: swiftString(m.create_key.pointee.secret) ?? "")
    }
}
