import Atomics
import AuthzIndex
import AuthzModel
#if canImport(Glibc)
import Glibc
#endif

/// What checks read: every tenant's compiled index at one revision. Immutable once published.
public final class IndexSnapshot: AtomicReference, @unchecked Sendable {
    public let revision: UInt64
    let tenantList: [TenantIndex]
    /// `tenantList` without reference counting, for the check path.
    let tenantRefs: UnsafeMutablePointer<Unmanaged<TenantIndex>>
    let tenantTable: IDTable

    init(revision: UInt64, tenants: [ID: TenantIndex]) {
        self.revision = revision
        tenantList = Array(tenants.values)
        let table = IDTable(capacity: tenants.count)
        tenantRefs = .allocate(capacity: max(1, tenantList.count))
        for (i, t) in tenantList.enumerated() {
            table.set(t.tenantId, UInt32(i))
            (tenantRefs + i).initialize(to: Unmanaged.passUnretained(t))
        }
        tenantTable = table
    }

    deinit { tenantRefs.deallocate() }

    /// Tenants by id (a copy; for writers and listings, not the check path).
    var tenants: [ID: TenantIndex] {
        Dictionary(uniqueKeysWithValues: tenantList.map { ($0.tenantId, $0) })
    }

    /// The compiled index of one tenant, or nil for an unknown tenant.
    @inline(__always)
    public func tenant(_ id: ID) -> TenantIndex? {
        guard let i = tenantTable.find(id) else { return nil }
        return tenantList[Int(i)]
    }

    /// Every tenant's index.
    public var allTenants: [TenantIndex] { tenantList }

    /// Decides a check against this snapshot. Allocates nothing; never blocks; never reads LMDB.
    @inline(__always)
    public func decide(tenant: ID, user: ID, permission: String, scope: Scope) -> Decision {
        guard let i = tenantTable.find(tenant) else { return Decision(reason: .unknownTenant, revision: revision) }
        let reason = tenantRefs[Int(i)]._withUnsafeGuaranteedRef { $0.reason(user: user, permission: permission, scope: scope) }
        return Decision(reason: reason, revision: revision)
    }
}

extension IndexSnapshot {
    /// `decide` with the permission given by the bytes of its name. Allocates nothing; never
    /// blocks; never reads LMDB.
    @inline(__always)
    public func decide(tenant: ID, user: ID, permissionBytes: UnsafeRawBufferPointer, scope: Scope) -> Decision {
        guard let i = tenantTable.find(tenant) else { return Decision(reason: .unknownTenant, revision: revision) }
        let reason = tenantRefs[Int(i)]._withUnsafeGuaranteedRef { $0.reason(user: user, permissionBytes: permissionBytes, scope: scope) }
        return Decision(reason: reason, revision: revision)
    }
}

/// Each thread's cached reference to the newest snapshot it has seen, so that a check reads
/// one shared counter instead of retaining and releasing the shared snapshot object (which
/// would bounce its cache line between cores on every check).
struct SnapshotCacheEntry {
    var engineId: UInt64
    var version: UInt64
    var snapshot: Unmanaged<IndexSnapshot>?
}

let snapshotCacheKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { raw in
        guard let raw else { return }
        let p = raw.assumingMemoryBound(to: SnapshotCacheEntry.self)
        p.pointee.snapshot?.release()
        p.deinitialize(count: 1)
        p.deallocate()
    }
    return key
}()

/// This thread's cache entry under `key` (the engine passes `snapshotCacheKey`, read once, so
/// that the check path does not pay for a lazy global's `swift_once`).
@inline(__always) func threadSnapshotCache(_ key: pthread_key_t) -> UnsafeMutablePointer<SnapshotCacheEntry> {
    if let raw = pthread_getspecific(key) {
        return raw.assumingMemoryBound(to: SnapshotCacheEntry.self)
    }
    let p = UnsafeMutablePointer<SnapshotCacheEntry>.allocate(capacity: 1)
    p.initialize(to: SnapshotCacheEntry(engineId: 0, version: 0, snapshot: nil))
    pthread_setspecific(key, p)
    return p
}

let engineIds = ManagedAtomic<UInt64>(0)
