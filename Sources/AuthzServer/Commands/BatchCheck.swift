import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// BatchCheck on the general path: every item decided on one snapshot, at the highest
/// `min_revision` asked (UNAVAILABLE-style wait error when the snapshot is older). At most
/// `max-batch-checks` items; a malformed item keeps its own error. The item loop is concrete:
/// no boxing per item.
enum BatchCheckCommand: Command {
    static let kind = CallKind.batchCheck

    static func lane(_ call: Call) -> Lane { .inline }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        guard case .batchCheck(let items, _) = call else { return mismatch(call) }
        switch caller.role {
        case .gateway: return nil
        case .checker, .admin:
            for (i, item) in items.enumerated() {
                if case .success(let c) = item, let e = caller.sameTenant(c.tenantId, "batch_check.checks[\(i)].tenant_id") { return e }
            }
            return nil
        case .operator: return caller.refused(call)
        }
    }

    static func readTenants(_ call: Call) -> [ID]? {
        guard case .batchCheck(let items, _) = call else { return nil }
        return items.compactMap { try? $0.get().tenantId }
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .batchCheck(let items, let minRevision) = call else { throw mismatch(call) }
        if items.count > d.config.maxBatchChecks {
            throw AuthzError.invalid("batch_check.checks", "must have at most \(d.config.maxBatchChecks) items (got \(items.count))")
        }
        var needed = minRevision
        for case .success(let c) in items { needed = max(needed, c.minRevision) }
        return try d.engine.withSnapshot { snapshot -> Result<Reply, AuthzError> in
            if needed > snapshot.revision { return .failure(Engine.notYetAt(needed, snapshot.revision)) }
            var out: [Result<Decision, AuthzError>] = []
            out.reserveCapacity(items.count)
            for item in items {
                switch item {
                case .success(let c): out.append(.success(snapshot.decide(tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope)))
                case .failure(let e): out.append(.failure(e))
                }
            }
            return .success(.batchCheck(out, revision: snapshot.revision))
        }.get()
    }
}
