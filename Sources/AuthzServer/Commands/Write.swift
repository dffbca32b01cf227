import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire
import NIOCore

/// Write: operations applied atomically in one LMDB transaction, on the writer thread; at most
/// `max-write-ops`. Operator keys write tenants only, admin keys their tenant's other records.
/// The commit is audited and measured; a failure for lack of space (not a change too large
/// for the log) makes the daemon unready until a write succeeds.
enum WriteCommand: Command {
    static let kind = CallKind.write

    static func lane(_ call: Call) -> Lane { .writer }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        guard case .write(let ops) = call else { return mismatch(call) }
        switch caller.role {
        case .operator:
            for (i, op) in ops.enumerated() {
                let isTenant: Bool
                switch op {
                case .upsert(let e), .upsertIfNewer(let e): isTenant = e.kind == .tenant
                case .deactivate(let r), .activate(let r): isTenant = r.kind == .tenant
                }
                if !isTenant {
                    return AuthzError(.permissionDenied, "an operator key may only write tenants (write.ops[\(i)])", field: "write.ops[\(i)]")
                }
            }
            return nil
        case .admin:
            for (i, op) in ops.enumerated() {
                switch op {
                case .upsert(let e), .upsertIfNewer(let e):
                    if e.kind == .tenant { return AuthzError(.permissionDenied, "an admin key may not write tenants (write.ops[\(i)])", field: "write.ops[\(i)]") }
                    if let err = caller.sameTenant(e.tenantId, "write.ops[\(i)].tenant_id") { return err }
                case .deactivate(let r), .activate(let r):
                    if r.kind == .tenant { return AuthzError(.permissionDenied, "an admin key may not write tenants (write.ops[\(i)])", field: "write.ops[\(i)]") }
                    if let err = caller.sameTenant(r.tenantId, "write.ops[\(i)].tenant_id") { return err }
                }
            }
            return nil
        case .checker, .gateway: return caller.refused(call)
        }
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .write(let ops) = call else { throw mismatch(call) }
        if ops.count > d.config.maxWriteOps {
            throw AuthzError.invalid("write.ops", "must have at most \(d.config.maxWriteOps) operations (got \(ops.count))")
        }
        let started = NIODeadline.now()
        let revision: UInt64
        do {
            revision = try d.engine.write(ops)
        } catch let e as AuthzError {
            d.noteStorageFailure(e)
            throw e
        }
        d.audit?.write(ops, revision: revision, who: d.actor(principal, peer), peer: peer)
        d.metrics.writes.increment()
        d.metrics.writeLatency.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
        d.clearStorageFailure()
        return .write(revision: revision)
    }
}
