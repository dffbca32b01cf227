import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// Health: `serving = true` whenever the daemon answers; open to every caller, authenticated or
/// not, on the event loop.
enum HealthCommand: Command {
    static let kind = CallKind.health
    static let open = true

    static func lane(_ call: Call) -> Lane { .inline }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? { nil }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .health = call else { throw mismatch(call) }
        return .health(serving: true)
    }
}
