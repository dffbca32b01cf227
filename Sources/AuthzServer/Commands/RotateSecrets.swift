import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// RotateSecrets: reloads the key ring and starts (or reports) the background re-encryption
/// (`SecretRotator`), on the writer thread. The superuser only: every key is refused.
enum RotateSecretsCommand: Command {
    static let kind = CallKind.rotateSecrets

    static func lane(_ call: Call) -> Lane { .writer }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? { caller.refused(call) }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .rotateSecrets = call else { throw mismatch(call) }
        return .rotateSecrets(try d.rotator.rotate())
    }
}
