import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// ListKeys: key records from the in-memory key table, on the event loop. Operator keys (and
/// the superuser) only.
enum ListKeysCommand: Command {
    static let kind = CallKind.listKeys

    static func lane(_ call: Call) -> Lane { .inline }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? { caller.operatorOnly(call) }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .listKeys(let t) = call else { throw mismatch(call) }
        return .listKeys(d.keys.list(tenant: t))
    }
}
