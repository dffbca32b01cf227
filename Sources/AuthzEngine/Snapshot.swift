import Atomics
import AuthzIndex
import AuthzModel

/// What checks read: every tenant's compiled index at one revision. Immutable once published.
public final class IndexSnapshot: AtomicReference, @unchecked Sendable {
    public let revision: UInt64
    let tenants: [ID: TenantIndex]

    init(revision: UInt64, tenants: [ID: TenantIndex]) {
        self.revision = revision
        self.tenants = tenants
    }

    /// The compiled index of one tenant, or nil for an unknown tenant.
    public func tenant(_ id: ID) -> TenantIndex? { tenants[id] }

    /// Every tenant's index.
    public var allTenants: [TenantIndex] { Array(tenants.values) }

    /// Decides a check against this snapshot. Allocates nothing; never blocks; never reads LMDB.
    @inline(__always)
    public func decide(tenant: ID, user: ID, permission: String, scope: Scope) -> Decision {
        guard let t = tenants[tenant] else { return Decision(reason: .unknownTenant, revision: revision) }
        return Decision(reason: t.reason(user: user, permission: permission, scope: scope), revision: revision)
    }
}
