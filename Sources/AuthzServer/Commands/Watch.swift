import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// Watch: a stream of committed changes, run by the connection (`WatchStream`, the `.stream`
/// lane), never by `run`. Admin keys watch their tenant, operator keys tenant records, gateway
/// keys every tenant but not credentials alone; checker keys nothing (`effectiveWatch` narrows
/// what an allowed Watch sees).
enum WatchCommand: Command {
    static let kind = CallKind.watch

    static func lane(_ call: Call) -> Lane { .stream }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        guard case .watch(let w) = call else { return mismatch(call) }
        switch caller.role {
        case .gateway:
            // A caching gateway learns which decisions changed (docs/watch.md); credentials
            // decide nothing and are not its to see.
            if !w.kinds.isEmpty && w.kinds.subtracting([.platformCredential]).isEmpty {
                return AuthzError(.permissionDenied, "a gateway key may not watch platform credentials (watch.kinds)", field: "watch.kinds")
            }
            return nil
        case .operator:
            if w.kinds.isEmpty || w.kinds == [.tenant] { return nil }
            return AuthzError(.permissionDenied, "an operator key may only watch tenant records (watch.kinds)", field: "watch.kinds")
        case .admin: return w.tenantId.map { caller.sameTenant($0, "watch.tenant_id") } ?? nil  // then only its tenant (watchFilter)
        case .checker: return caller.refused(call)
        }
    }

    static func readTenants(_ call: Call) -> [ID]? {
        guard case .watch(let w) = call else { return nil }
        return w.tenantId.map { [$0] } ?? []
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        throw AuthzError.internalError("Watch is a stream: the connection runs it (WatchStream)")
    }
}
