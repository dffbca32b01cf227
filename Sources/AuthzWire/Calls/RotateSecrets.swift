internal import CAuthzProto
import AuthzModel

/// RotateSecrets (`RotateSecretsRequest`, `RotateSecretsResponse`): reloads the key ring and
/// re-encrypts credential secrets in the background; answers with its progress.
enum RotateSecretsWire: WireCall {
    static let kind = CallKind.rotateSecrets
    static let name = "RotateSecrets"
    static let field = "rotate_secrets"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call { .rotateSecrets }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .rotateSecrets = call else { preconditionFailure("\(call.name) given to the RotateSecrets codec") }
        msg.pointee.rotate_secrets = a.make(Authz__V1__RotateSecretsRequest.self) { authz__v1__rotate_secrets_request__init($0) }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .rotateSecrets(let s) = reply else { preconditionFailure("\(reply.kind.name) reply given to the RotateSecrets codec") }
        msg.pointee.rotate_secrets = a.make(Authz__V1__RotateSecretsResponse.self) {
            authz__v1__rotate_secrets_response__init($0)
            $0.pointee.active_key_id = a.cString(s.activeKeyId)
            let arr = a.array(UnsafeMutablePointer<CChar>?.self, count: s.keyIds.count)
            for (i, id) in s.keyIds.enumerated() { arr[i] = a.cString(id) }
            $0.pointee.n_key_ids = s.keyIds.count
            $0.pointee.key_ids = arr
            $0.pointee.running = s.running ? 1 : 0
            $0.pointee.remaining = s.remaining
            $0.pointee.reencrypted = s.reencrypted
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let x = m.rotate_secrets.pointee
        return .rotateSecrets(SecretRotationStatus(activeKeyId: swiftString(x.active_key_id) ?? "", keyIds: (0..<x.n_key_ids).map { swiftString(x.key_ids[$0]) ?? "" },
                                                   running: x.running != 0, remaining: x.remaining, reencrypted: x.reencrypted))
    }
}
