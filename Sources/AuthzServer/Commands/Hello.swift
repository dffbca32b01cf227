import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// Hello on the dispatcher: answers with the principal's role and tenant. Open to every caller;
/// the connection handles a Hello that presents a key itself (authenticating the connection)
/// before the dispatcher sees it.
enum HelloCommand: Command {
    static let kind = CallKind.hello
    static let open = true

    static func lane(_ call: Call) -> Lane { .inline }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? { nil }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .hello = call else { throw mismatch(call) }
        return .hello(role: principal.role, tenantId: principal.tenant, keyId: nil)
    }
}
