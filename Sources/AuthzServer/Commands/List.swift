import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// List: records of one kind by id, a page at a time, on the reader pool. Operator keys list
/// tenants, admin keys their tenant's other records; credential secrets only for keys that may
/// read them (`secretsField`).
enum ListCommand: Command {
    static let kind = CallKind.list

    static func lane(_ call: Call) -> Lane { .reader }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        guard case .list(let kind, let t, _, _, _) = call else { return mismatch(call) }
        switch caller.role {
        case .operator: return kind == .tenant ? nil : caller.refused(call)
        case .admin:
            if kind == .tenant { return caller.denied("list tenants") }
            return caller.sameTenant(t, "list.tenant_id")
        case .checker, .gateway: return caller.refused(call)
        }
    }

    static func readTenants(_ call: Call) -> [ID]? {
        guard case .list(_, let t, _, _, _) = call else { return nil }
        return [t]
    }

    static func secretsField(_ call: Call) -> String? {
        guard case .list(.platformCredential, _, _, _, true) = call else { return nil }
        return "list.include_secrets"
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .list(let kind, let t, let size, let after, let secrets) = call else { throw mismatch(call) }
        let page = try d.engine.list(kind, tenant: t, after: after, limit: size + 1, includeSecrets: secrets)
        let more = page.count > size
        let items = Array(page.prefix(size))
        return .list(items, nextPageToken: more ? (items.last?.id.description ?? "") : "")
    }
}
