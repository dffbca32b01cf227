internal import CAuthzProto
import AuthzModel

/// Health (`HealthRequest`, `HealthResponse`): `serving = true` when the daemon answers.
enum HealthWire: WireCall {
    static let kind = CallKind.health
    static let name = "Health"
    static let field = "health"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call { .health }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .health = call else { preconditionFailure("\(call.name) given to the Health codec") }
        msg.pointee.health = a.make(Authz__V1__HealthRequest.self) { authz__v1__health_request__init($0) }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .health(let serving) = reply else { preconditionFailure("\(reply.kind.name) reply given to the Health codec") }
        msg.pointee.health = a.make(Authz__V1__HealthResponse.self) {
            authz__v1__health_response__init($0)
            $0.pointee.serving = serving ? 1 : 0
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        .health(serving: m.health.pointee.serving != 0)
    }
}
