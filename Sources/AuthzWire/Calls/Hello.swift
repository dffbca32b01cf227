internal import CAuthzProto
import AuthzModel

/// Hello (`HelloRequest`, `HelloResponse`): authenticates the connection with an API key and
/// answers with the key's role, tenant and id (the daemon's protocol version always).
enum HelloWire: WireCall {
    static let kind = CallKind.hello
    static let name = "Hello"
    static let field = "hello"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let r = FieldReader(prefix: "hello.")
        return .hello(apiKey: try r.string(m.hello.pointee.api_key, "api_key"), protocolVersion: m.hello.pointee.protocol_version)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .hello(let key, let version) = call else { preconditionFailure("\(call.name) given to the Hello codec") }
        msg.pointee.hello = a.make(Authz__V1__HelloRequest.self) {
            authz__v1__hello_request__init($0)
            $0.pointee.api_key = a.cString(key)
            $0.pointee.protocol_version = version
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .hello(let role, let tenant, let keyId) = reply else { preconditionFailure("\(reply.kind.name) reply given to the Hello codec") }
        msg.pointee.hello = a.make(Authz__V1__HelloResponse.self) {
            authz__v1__hello_response__init($0)
            $0.pointee.protocol_version = protocolVersion
            $0.pointee.role = Authz__V1__KeyRole(rawValue: UInt32(role?.rawValue ?? 0))
            $0.pointee.tenant_id = a.cString(tenant.map { $0 == .zero ? "" : $0.description } ?? "")
            $0.pointee.key_id = a.cString(keyId?.description ?? "")
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let h = m.hello.pointee
        return .hello(role: KeyRole(rawValue: UInt8(truncatingIfNeeded: h.role.rawValue)), tenantId: ID(swiftString(h.tenant_id) ?? ""),
                      keyId: ID(swiftString(h.key_id) ?? ""))
    }
}
