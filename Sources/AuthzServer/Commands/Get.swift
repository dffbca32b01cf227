import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// Get: one record from LMDB, on the reader pool. Operator keys read tenants, admin keys their
/// tenant's records (a tenant ref: their own tenant); credential secrets only for keys that
/// may read them (`secretsField`).
enum GetCommand: Command {
    static let kind = CallKind.get

    static func lane(_ call: Call) -> Lane { .reader }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        guard case .get(let ref, _) = call else { return mismatch(call) }
        switch caller.role {
        case .operator: return ref.kind == .tenant ? nil : caller.refused(call)
        case .admin: return caller.sameTenant(ref.kind == .tenant ? ref.id : ref.tenantId, "get.ref.tenant_id")
        case .checker, .gateway: return caller.refused(call)
        }
    }

    static func readTenants(_ call: Call) -> [ID]? {
        guard case .get(let ref, _) = call else { return nil }
        return [ref.tenantId]
    }

    static func secretsField(_ call: Call) -> String? {
        guard case .get(let ref, true) = call, ref.kind == .platformCredential else { return nil }
        return "get.include_secrets"
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .get(let ref, let secrets) = call else { throw mismatch(call) }
        return .get(try d.engine.get(ref, includeSecrets: secrets))
    }
}
