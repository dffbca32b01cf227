import Atomics
import AuthzIndex
import AuthzModel
import AuthzStore
import Foundation
#if canImport(Glibc)
import Glibc
import NIOConcurrencyHelpers
#endif

/// An import being assembled from chunks (`Engine.stage`), applied at once by `Engine.commit`.
public struct ImportStaging: Sendable {
    /// With a tenant, only that tenant's records (and its own unchanged tenant line) are accepted.
    public let onlyTenant: ID?
    var entities: [Entity] = []
    var lines: [Int] = []
    var firstSeen: [ID: (line: Int, index: Int)] = [:]
    var ownTenantLines = 0
    /// The number of the last line staged (line numbers continue across chunks).
    public internal(set) var lastLine = 0
    /// Records staged so far.
    public var records: Int { entities.count }
    /// The distinct tenants of the records staged so far (a tenant record counts as its own),
    /// in the order they first appear. O(records).
    public var tenants: [ID] {
        var seen = Set<ID>()
        return entities.compactMap { seen.insert($0.tenantId).inserted ? $0.tenantId : nil }
    }

    public init(onlyTenant: ID?) { self.onlyTenant = onlyTenant }
}

/// A paged export in progress (`Engine.openExport`): a held snapshot and a position in it.
/// Close it (`close()`) when abandoning it before `done`.
public final class ExportCursor: @unchecked Sendable {
    let snapshot: StoreSnapshot
    let tenants: [ID]
    let includeSecrets: Bool
    /// The revision every page is read at.
    public let revision: UInt64
    var index = 0
    var after: [UInt8]?
    /// Every record has been returned (the snapshot is closed).
    public internal(set) var done = false

    init(snapshot: StoreSnapshot, tenants: [ID], includeSecrets: Bool, revision: UInt64) {
        self.snapshot = snapshot
        self.tenants = tenants
        self.includeSecrets = includeSecrets
        self.revision = revision
    }

    /// Releases the snapshot.
    public func close() { snapshot.close() }
}

/// Options of an `Engine`.
public struct EngineOptions: Sendable {
    public var store = StoreOptions()
    /// Per-tenant size and inheritance-depth limits, checked on every write and import.
    public var limits = TenantLimits()

    public init() {}
}

/// Summary figures for ServerInfo and metrics.
public struct EngineInfo: Sendable {
    public var revision: UInt64
    public var counts: [EntityKind: Int]
    public var indexBytes: Int
    public var mapSize: Int
    public var mapUsed: Int
}

/// The authorization engine: the store plus the compiled index, kept in step.
///
/// Checks read an immutable `IndexSnapshot` through an atomic reference: they never wait for
/// a writer, never touch LMDB and allocate nothing. Writes are serialised: each commits to
/// LMDB, recompiles only what it touched, then publishes a new snapshot before it returns, so
/// every acknowledged write is visible to every check that starts afterwards.
///
/// Thread safety: every method may be called from any thread. Writes block for the LMDB
/// commit (an fsync in the default sync mode): call them off event loops.
public final class Engine: @unchecked Sendable {
    /// The records, kept in LMDB: internal (the facades of EngineServices.swift offer the rest).
    let store: Store
    private let current: ManagedAtomic<IndexSnapshot>
    /// Bumped (releasing) after every publish; checks compare it with their thread's cache.
    private let version = ManagedAtomic<UInt64>(1)
    private let engineId = engineIds.wrappingIncrementThenLoad(ordering: .relaxed)
    private let cacheKey = snapshotCacheKey
    private var compilers: [ID: TenantCompiler] = [:]
    private let writeLock = NIOLock()
    /// The limits writes are held to.
    public let limits: TenantLimits
    /// Callbacks waiting for a published revision: the next one (`atLeast` nil) or the first
    /// at or above `atLeast`.
    private let waiters = NIOLock()
    private var revisionWaiters: [UInt64: (atLeast: UInt64?, body: () -> Void)] = [:]
    private var nextWaiter: UInt64 = 0
    /// Most callbacks waiting for a revision at once; more are refused (the caller answers).
    public static let maxRevisionWaiters = 65_536

    /// Opens the store in `directory` and compiles every tenant's index from it.
    /// Throws what `Store.init` throws.
    public init(directory: String, options: EngineOptions = EngineOptions()) throws {
        store = try Store(directory: directory, options: options.store)
        limits = options.limits
        var tenants: [ID: TenantIndex] = [:]
        var compilers: [ID: TenantCompiler] = [:]
        // Tenants compile independently: spread them over the cores, each worker with its own
        // read transaction (nothing writes while the engine opens; the directory lock is ours).
        let (ids, revision) = try store.read { (try $0.tenantIDs(), try $0.revision()) }
        let store = self.store
        let workers = max(1, min(ids.count, ProcessInfo.processInfo.activeProcessorCount))
        // Each worker writes only its own indices of `built`, under `lock`; read after all joined.
        nonisolated(unsafe) var built = [(TenantCompiler, TenantIndex)?](repeating: nil, count: ids.count)
        nonisolated(unsafe) var failure: Error?
        let lock = NIOLock()
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for i in stride(from: w, to: ids.count, by: workers) {
                do {
                    let c = try store.read { try Engine.compile(tenant: ids[i], from: $0) }
                    let index = c.publish()
                    lock.lock(); built[i] = (c, index); lock.unlock()
                } catch {
                    lock.lock(); failure = error; lock.unlock()
                }
            }
        }
        if let failure { throw failure }
        for (i, t) in ids.enumerated() {
            // Every index was built or `failure` was set (and thrown above).
            guard let (c, index) = built[i] else { throw AuthzError.internalError("tenant \(t) was not compiled") }
            compilers[t] = c
            tenants[t] = index
        }
        self.compilers = compilers
        current = ManagedAtomic(IndexSnapshot(revision: revision, tenants: tenants))
    }

    /// Builds one tenant's compiler from the store (used at open and by consistency checks).
    static func compile(tenant: ID, from r: StoreReader) throws -> TenantCompiler {
        var users: [(ID, Bool)] = []
        try r.forEachUser(tenant: tenant) { users.append(($0, $1)) }
        let c = TenantCompiler(tenantId: tenant, expectedUsers: users.count)
        if case .tenant(let t)? = try r.entity(.tenant, tenant: tenant, id: tenant) { c.setTenant(active: t.fields.isActive) }
        var after: ID? = nil
        func each(_ kind: EntityKind, _ body: (Entity) -> Void) throws {
            after = nil
            while true {
                let page = try r.list(kind, tenant: tenant, after: after, limit: 4096)
                page.forEach(body)
                if page.count < 4096 { break }
                after = page.last!.id
            }
        }
        try each(.permission) { if case .permission(let p) = $0 { c.upsertPermission(id: p.fields.id, name: p.name, active: p.fields.isActive) } }
        try each(.role) { if case .role(let x) = $0 { c.upsertRole(id: x.fields.id, active: x.fields.isActive, inherits: x.inherits) } }
        try each(.permissionBinding) {
            if case .permissionBinding(let b) = $0 {
                c.upsertPermissionBinding(id: b.fields.id, role: b.roleId, permission: b.permissionId, scope: b.scope, active: b.fields.isActive)
            }
        }
        for (u, active) in users { c.upsertUser(id: u, active: active) }
        var bindings: [ID: [(role: ID, scope: Scope)]] = [:]
        bindings.reserveCapacity(users.count)
        var roleBindings = 0
        try r.forEachRoleBinding(tenant: tenant) { active, user, role, scope in
            roleBindings += 1
            if active { bindings[user, default: []].append((role, scope)) }
        }
        c.roleBindingCount = roleBindings
        for (u, list) in bindings { c.setUserBindings(user: u, bindings: list) }
        return c
    }

    // MARK: decisions

    /// The current snapshot. Lock-free; safe from any thread.
    @inline(__always)
    public var snapshot: IndexSnapshot { current.load(ordering: .acquiring) }

    /// The revision of the current snapshot: every write acknowledged so far.
    public var revision: UInt64 { snapshot.revision }

    /// `check(tenant, user, permission, scope)` per the spec. An unknown tenant, user or
    /// permission is a deny with its reason. With `minRevision` above the current revision it
    /// throws UNAVAILABLE ("not yet at revision"); callers that want to wait retry (the daemon
    /// retries up to its bound). Allocates nothing on success; never touches LMDB.
    @inline(__always)
    public func check(tenant: ID, user: ID, permission: String, scope: Scope, minRevision: UInt64 = 0) throws -> Decision {
        let d = withSnapshot { $0.decide(tenant: tenant, user: user, permission: permission, scope: scope) }
        if minRevision > d.revision { throw Engine.notYetAt(minRevision, d.revision) }
        return d
    }

    /// Runs `body` with the newest published snapshot (or a newer one), without touching the
    /// snapshot's reference count on the fast path: each thread caches a retained reference
    /// and refreshes it when the shared version counter moved. `body` must not keep the
    /// snapshot beyond its return.
    @inline(__always)
    public func withSnapshot<T>(_ body: (IndexSnapshot) -> T) -> T {
        let cache = threadSnapshotCache(cacheKey)
        let v = version.load(ordering: .acquiring)
        if cache.pointee.engineId != engineId || cache.pointee.version != v || cache.pointee.snapshot == nil {
            let fresh = current.load(ordering: .acquiring)
            cache.pointee.snapshot?.release()
            cache.pointee.snapshot = Unmanaged.passRetained(fresh)
            cache.pointee.version = v
            cache.pointee.engineId = engineId
        }
        // Set just above when it was nil: the cache always holds a snapshot here.
        return cache.pointee.snapshot!._withUnsafeGuaranteedRef(body)
    }

    /// The error for a minimum revision not yet reached: UNAVAILABLE, carrying the revision
    /// awaited (`AuthzError.awaitedRevision`) so that a caller may wait for it.
    public static func notYetAt(_ wanted: UInt64, _ current: UInt64) -> AuthzError {
        var e = AuthzError(.unavailable, "min_revision \(wanted) is not yet reached (at revision \(current))", field: "min_revision")
        e.awaitedRevision = wanted
        return e
    }

    /// Explains a decision from the stored records: the role binding, role chain (shortest,
    /// through active roles only) and permission binding that grant it. Reads LMDB (explain is
    /// not on the check path). The decision it carries follows the spec from the stored state.
    public func explain(tenant: ID, user: ID, permission: String, scope: Scope, minRevision: UInt64 = 0) throws -> Explanation {
        if minRevision > revision { throw Engine.notYetAt(minRevision, revision) }
        return try store.read { r in
            let rev = try r.revision()
            func deny(_ reason: Reason) -> Explanation { Explanation(decision: Decision(reason: reason, revision: rev)) }
            guard case .tenant(let t)? = try r.entity(.tenant, tenant: tenant, id: tenant) else { return deny(.unknownTenant) }
            if !t.fields.isActive { return deny(.inactiveTenant) }
            guard case .user(let u)? = try r.entity(.user, tenant: tenant, id: user) else { return deny(.unknownUser) }
            if !u.fields.isActive { return deny(.inactiveUser) }
            guard let pid = try r.id(named: permission, kind: .permission, tenant: tenant),
                  case .permission(let p)? = try r.entity(.permission, tenant: tenant, id: pid) else { return deny(.unknownPermission) }
            if !p.fields.isActive { return deny(.inactivePermission) }
            var roles: [ID: Role] = [:]
            func role(_ id: ID) throws -> Role? {
                if let x = roles[id] { return x }
                guard case .role(let x)? = try r.entity(.role, tenant: tenant, id: id) else { return nil }
                roles[id] = x
                return x
            }
            let bindings = try r.roleBindings(ofUser: user, tenant: tenant)
                .filter { $0.fields.isActive && $0.scope >= scope }
                .sorted { ($0.scope, $1.fields.id) > ($1.scope, $0.fields.id) }
            for rb in bindings {
                guard let r0 = try role(rb.roleId), r0.fields.isActive else { continue }
                // Breadth-first over active roles: the first hit has the shortest chain. Each role
                // keeps the one it was reached from, so no chain is copied (any depth is linear).
                var queue: [ID] = [r0.fields.id]
                var reachedFrom: [ID: ID] = [r0.fields.id: r0.fields.id]
                var head = 0
                while head < queue.count {
                    let rk = queue[head]
                    head += 1
                    for pb in try r.permissionBindings(ofRole: rk, tenant: tenant)
                    where pb.fields.isActive && pb.permissionId == pid && pb.scope >= scope {
                        var chain = [rk]
                        while let from = reachedFrom[chain.last!], from != chain.last! { chain.append(from) }
                        chain.reverse()
                        var e = Explanation(decision: Decision(reason: .granted, revision: rev))
                        e.roleBindingId = rb.fields.id
                        e.roleBindingScope = rb.scope
                        e.roleChain = chain
                        e.roleChainNames = try chain.map { try role($0)?.name ?? "" }
                        e.permissionBindingId = pb.fields.id
                        e.permissionBindingScope = pb.scope
                        return e
                    }
                    for parent in try role(rk)?.inherits ?? [] {
                        guard reachedFrom[parent] == nil, let pr = try role(parent), pr.fields.isActive else { continue }
                        reachedFrom[parent] = rk
                        queue.append(parent)
                    }
                }
            }
            return deny(.noGrant)
        }
    }

    /// A user's permissions with the highest scope each is held at, sorted by name, from the
    /// compiled index; or the reason the list is empty.
    public func permissions(tenant: ID, user: ID, minRevision: UInt64 = 0) throws -> (reason: Reason, permissions: [(String, Scope)], revision: UInt64) {
        let s = snapshot
        if minRevision > s.revision { throw Engine.notYetAt(minRevision, s.revision) }
        guard let t = s.tenant(tenant) else { return (.unknownTenant, [], s.revision) }
        let (reason, list) = t.permissions(of: user)
        return (reason, list, s.revision)
    }

    /// Active users allowed `permission` at `scope`, sorted by id, ids > `after`, at most
    /// `limit`. O(users in the tenant).
    public func users(tenant: ID, permission: String, scope: Scope, after: ID? = nil, limit: Int = 1000,
                      minRevision: UInt64 = 0) throws -> (users: [ID], revision: UInt64, more: Bool) {
        let s = snapshot
        if minRevision > s.revision { throw Engine.notYetAt(minRevision, s.revision) }
        guard let t = s.tenant(tenant) else { return ([], s.revision, false) }
        var all = t.users(with: permission, scope: scope)
        if let after { all = all.filter { $0 > after } }
        return (Array(all.prefix(limit)), s.revision, all.count > limit)
    }

    // MARK: writes

    /// Applies `ops` atomically (see `Store.write` for the rules and errors), updates the
    /// compiled index incrementally and publishes it. Returns the new revision. Blocks for the
    /// commit; call off event loops.
    @discardableResult
    public func write(_ ops: [WriteOp], label: (Int) -> String = { "ops[\($0)]" }) throws -> UInt64 {
        try write(ops, label: label, keepTimestamps: false)
    }

    /// In log mode, where writes and imports go instead of the store: it checks them
    /// (`precheck`), publishes them and returns once they are applied here (`applyLogged`).
    public var replicate: ((_ ops: [WriteOp], _ keepTimestamps: Bool, _ label: (Int) -> String) throws -> UInt64)?

    func write(_ ops: [WriteOp], label: (Int) -> String, keepTimestamps: Bool) throws -> UInt64 {
        if let r = replicate { return try r(ops, keepTimestamps, label) }
        writeLock.lock()
        defer { writeLock.unlock() }
        let outcome = try store.write(ops, label: label, keepTimestamps: keepTimestamps, precommit: { try self.checkLimits($0) })
        try apply(outcome)
        return outcome.revision
    }

    /// Checks `ops` as `write` would (every store rule and the tenant limits) against the
    /// current state, and keeps nothing: a replicated write's local check before it is
    /// published. Throws what `write` would.
    public func precheck(_ ops: [WriteOp], label: (Int) -> String = { "ops[\($0)]" }, keepTimestamps: Bool = false) throws {
        struct Checked: Error {}
        writeLock.lock()
        defer { writeLock.unlock() }
        do {
            _ = try store.write(ops, label: label, keepTimestamps: keepTimestamps, precommit: { try self.checkLimits($0); throw Checked() })
        } catch is Checked {
            return
        }
    }

    /// Applies consecutive messages of the replicated log in one commit (`Store.applyLogged`),
    /// updates the index with each change that held, in order, and publishes the last
    /// message's revision. Returns each message's result (a rule it broke, or success); throws
    /// for failures that are not the message's (nothing of the batch is then kept).
    public func applyLogged(_ changes: [(revision: UInt64, change: LoggedChange)]) throws -> [Result<WriteOutcome?, AuthzError>] {
        guard let last = changes.last?.revision else { return [] }
        writeLock.lock()
        defer { writeLock.unlock() }
        let results = try store.applyLogged(changes)
        var published = false
        for case .success(let outcome?) in results {
            try apply(outcome)
            published = outcome.revision == last
        }
        if !published { publish(revision: last, tenants: snapshot.tenants) }
        return results
    }

    /// Moves the revision to `revision` without changing a record (a log message that changes
    /// nothing here) and publishes it, waking checks waiting for it.
    public func advance(to revision: UInt64) throws {
        writeLock.lock()
        defer { writeLock.unlock() }
        try store.advanceRevision(to: revision)
        publish(revision: revision, tenants: snapshot.tenants)
    }

    /// Refuses (FAILED_PRECONDITION naming the limit) a batch that would take a tenant past
    /// one of `limits`. Counts come from the compiled index plus what the batch creates; the
    /// depth check walks, in memory, only the ancestors and descendants of roles whose
    /// `inherits` gained a role, each once (linear in what the write reaches; never recursive).
    /// A batch that creates nothing and lengthens no chain passes even where older data is
    /// already past a limit, so such data can still be repaired.
    private func checkLimits(_ outcome: WriteOutcome) throws {
        var created: [ID: [EntityKind: Int]] = [:]
        var changedRoles: [ID: Role] = [:]
        var grown: [Role] = []
        for (before, after) in outcome.changes {
            if before == nil { created[after.tenantId, default: [:]][after.kind, default: 0] += 1 }
            guard case .role(let r) = after else { continue }
            changedRoles[r.fields.id] = r
            var old: Set<ID> = []
            if case .role(let o)? = before { old = Set(o.inherits) }
            if r.inherits.contains(where: { !old.contains($0) }) { grown.append(r) }
        }
        for (t, kinds) in created {
            let c = compilers[t]
            let have = c?.counts
            func bound(_ kind: EntityKind, _ count: Int, _ limit: Int, _ setting: String) throws {
                guard let n = kinds[kind], count + n > limit else { return }
                throw AuthzError(.failedPrecondition, "tenant \(t) would hold \(count + n) \(kind.name)s; the limit \(setting) is \(limit)", field: "\(kind.name)")
            }
            try bound(.role, have?.roles ?? 0, limits.maxRoles, "max-roles-per-tenant")
            try bound(.permission, have?.permissions ?? 0, limits.maxPermissions, "max-permissions-per-tenant")
            try bound(.permissionBinding, have?.permissionBindings ?? 0, limits.maxPermissionBindings, "max-permission-bindings-per-tenant")
            try bound(.roleBinding, c?.roleBindingCount ?? 0, limits.maxRoleBindings, "max-role-bindings-per-tenant")
        }
        if grown.isEmpty { return }
        // The role graph as the batch leaves it: the index's edges overlaid with the batch's roles.
        var addedChildren: [ID: [ID]] = [:]
        for r in changedRoles.values { for p in r.inherits { addedChildren[p, default: []].append(r.fields.id) } }
        var up: [ID: Int] = [:], down: [ID: Int] = [:]
        for r in grown {
            let t = r.fields.tenantId
            let c = compilers[t]
            func parents(_ id: ID) -> [ID] {
                if let x = changedRoles[id] { return x.fields.tenantId == t ? x.inherits : [] }
                return c?.parents(of: id) ?? []
            }
            func children(_ id: ID) -> [ID] {
                var out = (c?.children(of: id) ?? []).filter { child in changedRoles[child].map { $0.inherits.contains(id) } ?? true }
                for child in addedChildren[id] ?? [] where changedRoles[child]?.fields.tenantId == t && !out.contains(child) { out.insert(child) }
                return Array(out)
            }
            let above = Engine.longestChain(from: r.fields.id, next: parents, memo: &up)
            let below = Engine.longestChain(from: r.fields.id, next: children, memo: &down)
            let hops = above + below - 2
            if hops > limits.maxInheritanceDepth {
                throw AuthzError(.failedPrecondition, "role.inherits of role \"\(r.name)\" would make an inheritance chain of \(hops) hops; the limit max-inheritance-depth is \(limits.maxInheritanceDepth)", field: "role.inherits")
            }
        }
    }

    /// The number of roles on the longest path from `start` along `next` (start included),
    /// memoised in `memo`. Iterative post-order; a role met again while still on the path (a
    /// cycle, which the store rejects) counts as a dead end.
    static func longestChain(from start: ID, next: (ID) -> [ID], memo: inout [ID: Int]) -> Int {
        if let v = memo[start] { return v }
        var onPath: Set<ID> = [start]
        var stack: [(id: ID, edges: [ID], i: Int, best: Int)] = [(start, next(start), 0, 0)]
        while !stack.isEmpty {
            let top = stack.count - 1
            if stack[top].i < stack[top].edges.count {
                let n = stack[top].edges[stack[top].i]
                stack[top].i += 1
                if let v = memo[n] {
                    stack[top].best = max(stack[top].best, v)
                } else if !onPath.contains(n) {
                    onPath.insert(n)
                    stack.append((n, next(n), 0, 0))
                }
                continue
            }
            let done = stack.removeLast()
            let length = done.best + 1
            memo[done.id] = length
            onPath.remove(done.id)
            if !stack.isEmpty { stack[stack.count - 1].best = max(stack[stack.count - 1].best, length) }
        }
        return memo[start] ?? 1
    }

    private func compiler(_ tenant: ID) -> TenantCompiler {
        if let c = compilers[tenant] { return c }
        let c = TenantCompiler(tenantId: tenant)
        compilers[tenant] = c
        return c
    }

    private func apply(_ outcome: WriteOutcome) throws {
        var touched: Set<ID> = []
        // Order matters: permissions and roles before the bindings that name them.
        let order: [EntityKind] = [.tenant, .permission, .role, .permissionBinding, .user, .roleBinding]
        // The changes of each kind, found in one pass (a bulk import has hundreds of thousands).
        var byKind = [[Int]](repeating: [], count: Int(EntityKind.allCases.map(\.rawValue).max()!) + 1)
        for (i, change) in outcome.changes.enumerated() { byKind[Int(change.after.kind.rawValue)].append(i) }
        for kind in order {
            for i in byKind[Int(kind.rawValue)] {
                let (before, after) = outcome.changes[i]
                let t = after.tenantId
                let c = compiler(t)
                touched.insert(t)
                switch after {
                case .tenant(let x): c.setTenant(active: x.fields.isActive)
                case .permission(let p): c.upsertPermission(id: p.fields.id, name: p.name, active: p.fields.isActive)
                case .role(let x): c.upsertRole(id: x.fields.id, active: x.fields.isActive, inherits: x.inherits)
                case .permissionBinding(let b):
                    c.upsertPermissionBinding(id: b.fields.id, role: b.roleId, permission: b.permissionId, scope: b.scope, active: b.fields.isActive)
                case .user(let u): c.upsertUser(id: u.fields.id, active: u.fields.isActive)
                case .roleBinding:
                    if before == nil { c.roleBindingCount += 1 }
                case .platformCredential: break
                }
            }
        }
        // The write batch hands over every touched user's bindings as it left them.
        for (t, users) in outcome.roleBindings {
            let c = compiler(t)
            for (u, list) in users { c.setUserBindings(user: u, bindings: list) }
        }
        let old = snapshot
        var tenants = old.tenants
        // Every touched tenant got its compiler above (`compiler(t)` makes one when missing).
        for t in touched { tenants[t] = compiler(t).publish() }
        publish(revision: outcome.revision, tenants: tenants)
    }

    /// Publishes a snapshot at `revision` and wakes the revision waiters it satisfies.
    private func publish(revision: UInt64, tenants: [ID: TenantIndex]) {
        current.store(IndexSnapshot(revision: revision, tenants: tenants), ordering: .releasing)
        version.wrappingIncrement(ordering: .releasing)
        var woken: [() -> Void] = []
        waiters.lock()
        for (token, w) in revisionWaiters where w.atLeast.map({ $0 <= revision }) ?? true {
            woken.append(w.body)
            revisionWaiters.removeValue(forKey: token)
        }
        waiters.unlock()
        for w in woken { w() }
    }

    /// Calls `body` once, on the writer's thread, right after the next revision is published
    /// (a Watch or a push reading what a write committed). `body` must be quick and must not
    /// write; hop to your own thread in it. Returns a token for `cancelRevisionWait`, or nil
    /// when `maxRevisionWaiters` are already waiting.
    public func whenRevisionAdvances(_ body: @escaping () -> Void) -> UInt64? {
        waiters.lock()
        defer { waiters.unlock() }
        return register(atLeast: nil, body)
    }

    /// Calls `body` once when a revision at or above `revision` is published: on the writer's
    /// thread right after that publish, or at once on the caller's thread when it already is
    /// (then the result is `.reached`). A check waiting for its `min_revision` is woken by the
    /// write that reaches it, never by earlier ones, and never polls. `body` must be quick and
    /// must not write. `.refused` when `maxRevisionWaiters` are already waiting (body is not
    /// called); `.waiting(token)` is withdrawn by `cancelRevisionWait(token)`.
    public func whenRevision(reaches revision: UInt64, _ body: @escaping () -> Void) -> RevisionWait {
        waiters.lock()
        // `publish` stores the snapshot before it takes this lock: no wake-up can be missed.
        if current.load(ordering: .acquiring).revision >= revision {
            waiters.unlock()
            body()
            return .reached
        }
        defer { waiters.unlock() }
        return register(atLeast: revision, body).map { .waiting($0) } ?? .refused
    }

    /// What `whenRevision(reaches:)` did.
    public enum RevisionWait: Equatable, Sendable {
        /// The revision was already published; the callback has run.
        case reached
        /// The callback waits; the token withdraws it.
        case waiting(UInt64)
        /// Too many waiters; the callback will not run.
        case refused
    }

    /// Adds a waiter (the caller holds `waiters`).
    private func register(atLeast: UInt64?, _ body: @escaping () -> Void) -> UInt64? {
        if revisionWaiters.count >= Engine.maxRevisionWaiters { return nil }
        nextWaiter &+= 1
        revisionWaiters[nextWaiter] = (atLeast, body)
        return nextWaiter
    }

    /// Callbacks currently waiting for a revision (for tests and metrics).
    public var pendingRevisionWaiters: Int {
        waiters.lock()
        defer { waiters.unlock() }
        return revisionWaiters.count
    }

    /// Forgets a waiter registered by `whenRevisionAdvances` (its request was answered).
    public func cancelRevisionWait(_ token: UInt64) {
        waiters.lock()
        revisionWaiters.removeValue(forKey: token)
        waiters.unlock()
    }

    // MARK: changes (Watch)

    /// A page of committed changes after `position` whose tenant and kind `matches`, read from
    /// the store's change log (see `StoreReader.changes`): OUT_OF_RANGE when the changes after
    /// `position` are no longer kept. Blocks on LMDB (call off event loops for large pages).
    public func changes(after position: ChangePosition, limit: Int, includeBeforeImages: Bool = false,
                        where matches: (ID, EntityKind) -> Bool) throws -> ChangePage {
        try store.read { try $0.changes(after: position, limit: limit, includeBeforeImages: includeBeforeImages, where: matches) }
    }

    /// Users of one tenant whose effective permissions a set of changes may have changed.
    public enum AffectedUsers: Equatable, Sendable {
        /// Every user of the tenant (the tenant record changed).
        case all
        /// These users (possibly none).
        case some(Set<ID>)
    }

    /// What a tenant's changes touched that can change effective permissions, gathered change by
    /// change (a revision of any size holds only ids here), resolved by `affectedUsers`.
    public struct ChangeImpact: Sendable {
        var all = false
        var users = Set<ID>()
        var roles = Set<ID>()
        var permissions = Set<ID>()

        public init() {}

        /// Adds a changed record (the record after the change).
        public mutating func add(_ e: Entity) {
            switch e {
            case .tenant: all = true
            case .user(let u): users.insert(u.fields.id)
            case .roleBinding(let b): users.insert(b.userId)
            case .role(let r): roles.insert(r.fields.id)
            case .permission(let p): permissions.insert(p.fields.id)
            case .permissionBinding(let b): roles.insert(b.roleId)
            case .platformCredential: break
            }
        }
    }

    /// The users of `tenant` whose effective permissions the changes gathered in `impact` may
    /// have changed, read from the store as it is now: a superset, never missing one. A user
    /// or role-binding change names its user; a role, permission or permission-binding change
    /// names every user bound (active or not: soft-deleted bindings are kept) to the roles
    /// concerned or to any role inheriting from them; a tenant change is `.all`; platform
    /// credentials change no permission. Reads LMDB (call off event loops).
    ///
    /// A binding re-pointed to another user, role or permission counts twice: as it is and as
    /// its before-image (`ChangePage.beforeImages`) — add both.
    public func affectedUsers(_ impact: ChangeImpact, tenant: ID) throws -> AffectedUsers {
        if impact.all { return .all }
        var users = impact.users
        var roles = impact.roles
        if roles.isEmpty && impact.permissions.isEmpty { return .some(users) }
        return try store.read { r in
            for p in impact.permissions {
                for b in try r.permissionBindings(ofPermission: p, tenant: tenant) { roles.insert(b.roleId) }
            }
            // Roles inheriting from a concerned role hold what it grants: follow the
            // inheritance backwards (every role of the tenant, active or not).
            var heirs: [ID: [ID]] = [:]
            var after: ID? = nil
            while true {
                let page = try r.list(.role, tenant: tenant, after: after, limit: 1000)
                for case .role(let role) in page {
                    for parent in role.inherits { heirs[parent, default: []].append(role.fields.id) }
                }
                guard page.count == 1000, let last = page.last else { break }
                after = last.id
            }
            var queue = Array(roles)
            while let role = queue.popLast() {
                for heir in heirs[role] ?? [] where roles.insert(heir).inserted { queue.append(heir) }
            }
            for role in roles {
                for b in try r.roleBindings(ofRole: role, tenant: tenant) { users.insert(b.userId) }
            }
            return .some(users)
        }
    }

    /// The oldest revision a watcher may resume after (`StoreReader.changeFloor`).
    public func changeFloor() throws -> UInt64 {
        try store.read { try $0.changeFloor() }
    }

    // MARK: reads

    /// The record named by `ref`. NOT_FOUND when absent. Platform-credential secrets are
    /// redacted unless `includeSecrets`; with it, a credential whose stored tokens cannot be
    /// decrypted is DATA_LOSS (without it, it is returned with `secretUnreadable` set).
    public func get(_ ref: RecordRef, includeSecrets: Bool = false) throws -> Entity {
        let tenant = ref.kind == .tenant ? ref.id : ref.tenantId
        guard let e = try store.read({ try $0.entity(ref.kind, tenant: tenant, id: ref.id) }) else {
            throw AuthzError.notFound("\(ref.kind.name) \(ref.id) does not exist in tenant \(tenant)", field: "ref.id")
        }
        if includeSecrets { try e.requireReadableSecrets() }
        return includeSecrets ? e : e.redacted()
    }

    /// Up to `limit` records of `kind` in `tenant`, ids > `after`, in id order (tenants: every
    /// tenant). Secrets redacted unless `includeSecrets`; with it, a page holding a credential
    /// whose tokens cannot be decrypted is DATA_LOSS naming that credential.
    public func list(_ kind: EntityKind, tenant: ID, after: ID? = nil, limit: Int = 100, includeSecrets: Bool = false) throws -> [Entity] {
        let page = try store.read { try $0.list(kind, tenant: tenant, after: after, limit: limit) }
        if includeSecrets { for e in page { try e.requireReadableSecrets() } }
        return includeSecrets ? page : page.map { $0.redacted() }
    }

    // MARK: bulk

    /// Imports the spec's JSON Lines atomically: a bad line (its number and reason in the
    /// error) changes nothing. Lines may come in any order; importing twice is idempotent.
    /// Returns the new revision and the number of records.
    ///
    /// The same id on two lines is INVALID_ARGUMENT naming both line numbers, unless the two
    /// lines decode to the same record (then the later one is dropped).
    ///
    /// With `onlyTenant` (an admin key): a line of another tenant, or another tenant's tenant
    /// line, is PERMISSION_DENIED naming the line. The tenant line of `onlyTenant` itself is
    /// accepted when it matches the stored tenant (name, active flag and metadata; server-owned
    /// fields are ignored), so that the tenant's own export imports back, and is then not
    /// written; when it would change anything it is PERMISSION_DENIED naming the line and the
    /// fields. Nothing is written on any error. When every accepted line was such an unchanged
    /// tenant line, nothing is written and the current revision is returned.
    public func importJSONL(_ bytes: [UInt8], onlyTenant: ID? = nil) throws -> (revision: UInt64, records: Int) {
        var staging = ImportStaging(onlyTenant: onlyTenant)
        try stage(bytes, into: &staging)
        return try commit(staging)
    }

    /// Parses and checks one chunk of an import into `staging` (nothing is written): every line
    /// is decoded and validated, tenant scoping and duplicate ids are checked across all chunks
    /// staged so far, and line numbers continue from the previous chunk. Throws the first bad
    /// line's error ("line N: …", N counted from the start of the whole import); `staging` is
    /// then unusable. Reads LMDB only for an admin's own tenant line.
    public func stage(_ bytes: [UInt8], into staging: inout ImportStaging) throws {
        // The lines that hold something, with their numbers (counted over blank lines too).
        var lines: [(number: Int, range: Range<Int>)] = []
        var lineNo = staging.lastLine
        bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return }
            var start = 0
            while start < b.count {
                let end = memchr(base + start, 0x0A, b.count - start).map { UnsafePointer($0.assumingMemoryBound(to: UInt8.self)) - base } ?? b.count
                lineNo += 1
                var stop = end
                if stop > start, b[stop - 1] == 0x0D { stop -= 1 }
                var blank = true
                for i in start..<stop where b[i] != 0x20 && b[i] != 0x09 { blank = false; break }
                if !blank { lines.append((lineNo, start..<stop)) }
                start = end + 1
            }
        }
        // Room for the chunk, growing geometrically (an exact reservation per chunk would copy
        // everything staged so far on every chunk).
        let needed = staging.entities.count + lines.count
        if staging.entities.capacity < needed {
            staging.entities.reserveCapacity(max(needed, 2 * staging.entities.capacity))
            staging.lines.reserveCapacity(max(needed, 2 * staging.lines.capacity))
            staging.firstSeen.reserveCapacity(staging.entities.capacity)
        }
        // Decoded a block at a time (each on two threads): the decoded records of a whole large
        // chunk would be one more full copy of the import in memory.
        let block = 32_768
        for blockStart in stride(from: 0, to: lines.count, by: block) {
            let blockLines = Array(lines[blockStart..<min(blockStart + block, lines.count)])
            try stage(Engine.decodeLines(bytes, blockLines), lines: blockLines, into: &staging)
        }
        // A chunk that does not end with a newline still ends its last line.
        staging.lastLine = lineNo
    }

    /// Adds decoded lines to `staging` in order (the duplicate and tenant rules of `stage`).
    private func stage(_ decoded: [Result<Entity, AuthzError>], lines: [(number: Int, range: Range<Int>)], into staging: inout ImportStaging) throws {
        for (i, result) in decoded.enumerated() {
            let number = lines[i].number
            do {
                let e = try result.get()
                if let first = staging.firstSeen[e.id] {
                    if staging.entities[first.index] == e { continue }
                    throw AuthzError.invalid("\(e.kind.name).id", "\(e.id) is also on line \(first.line) with different content (lines \(first.line) and \(number) name the same record)")
                }
                if let only = staging.onlyTenant {
                    if e.kind == .tenant && e.id == only {
                        try checkUnchangedTenant(e)
                        staging.ownTenantLines += 1
                    } else if e.kind == .tenant {
                        throw AuthzError(.permissionDenied, "tenant \(e.id) is not this key's tenant; only the key's own tenant line may be imported, unchanged", field: "tenant.id")
                    } else if e.tenantId != only {
                        throw AuthzError(.permissionDenied, "\(e.kind.name) of another tenant may not be imported with this key", field: "\(e.kind.name).tenant_id")
                    }
                }
                staging.firstSeen[e.id] = (number, staging.entities.count)
                staging.entities.append(e)
                staging.lines.append(number)
            } catch var e as AuthzError {
                e.message = "line \(number): \(e.message)"
                throw e
            }
        }
    }

    /// Decodes `lines` of `bytes` (`BulkFormat.decode`), in order; a large chunk is split in
    /// two halves decoded on two threads (parsing is a third of an import's time).
    static func decodeLines(_ bytes: [UInt8], _ lines: [(number: Int, range: Range<Int>)]) -> [Result<Entity, AuthzError>] {
        @Sendable func decode(_ i: Int) -> Result<Entity, AuthzError> {
            do {
                return .success(try BulkFormat.decode(line: Array(bytes[lines[i].range])))
            } catch let e as AuthzError {
                return .failure(e)
            } catch {
                return .failure(AuthzError.invalid("line", "cannot be decoded: \(error)"))
            }
        }
        let parts = lines.count >= 4096 ? 2 : 1
        if parts == 1 { return lines.indices.map(decode) }
        let half = lines.count / 2
        var out = [Result<Entity, AuthzError>?](repeating: nil, count: lines.count)
        out.withUnsafeMutableBufferPointer { buffer in
            // Each thread writes its own half of the buffer.
            nonisolated(unsafe) let b = buffer
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                for i in (part == 0 ? 0..<half : half..<lines.count) { b[i] = decode(i) }
            }
        }
        return out.map { $0! }  // every index was written by one of the two halves
    }

    /// Applies everything staged as one atomic write (see `importJSONL`): `created_at` and
    /// `updated_at` given in the lines are kept. Returns the new revision and the records.
    public func commit(_ staging: ImportStaging) throws -> (revision: UInt64, records: Int) {
        if staging.entities.isEmpty { throw AuthzError.invalid("jsonl", "holds no records") }
        // An admin's own, unchanged tenant line is checked, not written.
        var writeLines: [Int] = []
        var ops: [WriteOp] = []
        writeLines.reserveCapacity(staging.entities.count)
        ops.reserveCapacity(staging.entities.count)
        for (i, e) in staging.entities.enumerated() where !(staging.onlyTenant != nil && e.kind == .tenant) {
            ops.append(.upsert(e))
            writeLines.append(staging.lines[i])
        }
        if ops.isEmpty { return (try store.revision(), staging.ownTenantLines) }
        let revision = try write(ops, label: { "line \(writeLines[$0])" }, keepTimestamps: true)
        return (revision, staging.entities.count)
    }

    /// PERMISSION_DENIED unless `line` (a tenant line) matches the stored tenant in every field a
    /// client controls: name, active flag, metadata (compared in canonical form).
    private func checkUnchangedTenant(_ line: Entity) throws {
        guard case .tenant(let wanted) = line else { return }
        let stored = try store.read { try $0.entity(.tenant, tenant: wanted.fields.id, id: wanted.fields.id) }
        guard case .tenant(let have)? = stored else {
            throw AuthzError(.permissionDenied, "tenant \(wanted.fields.id) does not exist and an admin key may not create it", field: "tenant.id")
        }
        var differs: [String] = []
        if have.name != wanted.name { differs.append("name") }
        if have.fields.isActive != wanted.fields.isActive { differs.append("is_active") }
        let a = (try? Validate.canonicalMetadata(have.fields.metadata, field: "")) ?? have.fields.metadata
        let b = (try? Validate.canonicalMetadata(wanted.fields.metadata, field: "")) ?? wanted.fields.metadata
        if a != b { differs.append("metadata") }
        if !differs.isEmpty {
            throw AuthzError(.permissionDenied, "the tenant line would change tenant \(wanted.fields.id) (\(differs.joined(separator: ", "))); an admin key may import its own tenant's line only unchanged", field: "tenant." + differs[0])
        }
    }

    /// Exports every record (of one tenant, or all) in the bulk format, one line each, tenant
    /// records first. Secrets only with `includeSecrets`; with it, a credential whose stored
    /// tokens cannot be decrypted makes the export DATA_LOSS naming it (without it, its line
    /// carries `"secret_unreadable":true`).
    public func exportJSONL(tenant: ID? = nil, includeSecrets: Bool = false) throws -> (bytes: [UInt8], revision: UInt64) {
        try store.read { r in
            var out: [UInt8] = []
            let tenants = try tenant.map { [$0] } ?? r.tenantIDs()
            for t in tenants {
                guard try r.entity(.tenant, tenant: t, id: t) != nil else {
                    throw AuthzError.notFound("tenant \(t) does not exist", field: "tenant_id")
                }
                try r.forEachRecord(tenant: t) { e in
                    if includeSecrets { try e.requireReadableSecrets() }
                    out.append(contentsOf: BulkFormat.encode(e, includeSecrets: includeSecrets).utf8)
                    out.append(0x0A)
                }
            }
            return (out, try r.revision())
        }
    }

    /// Starts a paged export: one LMDB snapshot held until the cursor is closed, so every page
    /// comes from the same revision. NOT_FOUND for an unknown tenant.
    public func openExport(tenant: ID?, includeSecrets: Bool) throws -> ExportCursor {
        let snapshot = try store.openSnapshot()
        do {
            let (tenants, revision) = try snapshot.read { r -> ([ID], UInt64) in
                let list = try tenant.map { [$0] } ?? r.tenantIDs()
                for t in list where try r.entity(.tenant, tenant: t, id: t) == nil {
                    throw AuthzError.notFound("tenant \(t) does not exist", field: "tenant_id")
                }
                return (list, try r.revision())
            }
            return ExportCursor(snapshot: snapshot, tenants: tenants, includeSecrets: includeSecrets, revision: revision)
        } catch {
            snapshot.close()
            throw error
        }
    }

    /// The next at most `records` lines of a paged export (tenant records first within each
    /// tenant, as `exportJSONL`); sets `cursor.done` after the last. Memory: one page.
    public func nextPage(_ cursor: ExportCursor, records: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        var n = 0
        try cursor.snapshot.read { r in
            while cursor.index < cursor.tenants.count && n < records {
                var finished = true
                try r.forEachRecord(tenant: cursor.tenants[cursor.index], after: cursor.after) { key, e in
                    if n == records { finished = false; return false }
                    out.append(contentsOf: BulkFormat.encode(e, includeSecrets: cursor.includeSecrets).utf8)
                    out.append(0x0A)
                    n += 1
                    cursor.after = key
                    return true
                }
                if finished {
                    cursor.index += 1
                    cursor.after = nil
                }
            }
        }
        if cursor.index >= cursor.tenants.count {
            cursor.done = true
            cursor.snapshot.close()
        }
        return out
    }

    /// Figures for ServerInfo and metrics.
    public func info() throws -> EngineInfo {
        let counts = try store.read { try $0.counts() }
        let s = snapshot
        let usage = store.mapUsage()
        return EngineInfo(revision: s.revision, counts: counts.byKind,
                          indexBytes: s.allTenants.reduce(0) { $0 + $1.approximateBytes },
                          mapSize: usage.size, mapUsed: usage.used)
    }

    /// Rebuilds every tenant's index from LMDB and reports whether each one decides exactly
    /// like the live index (every user × permission × scope). For tests and `authzd verify`.
    public func verifyIndex() throws -> [String] {
        let live = snapshot
        var problems: [String] = []
        try store.read { r in
            let tenantIDs = try r.tenantIDs()
            if Set(tenantIDs) != Set(live.tenants.keys) { problems.append("tenant sets differ") }
            for t in tenantIDs {
                let rebuilt = try Engine.compile(tenant: t, from: r).publish()
                guard let l = live.tenant(t) else { continue }
                if rebuilt.isActive != l.isActive { problems.append("tenant \(t): active flag differs") }
                let users = rebuilt.allUsers()
                if users.count != l.userCount { problems.append("tenant \(t): \(users.count) users rebuilt, \(l.userCount) live") }
                for (u, _) in users {
                    let a = rebuilt.permissions(of: u), b = l.permissions(of: u)
                    if a.0 != b.0 || a.1.map({ "\($0.0)@\($0.1)" }) != b.1.map({ "\($0.0)@\($0.1)" }) {
                        problems.append("tenant \(t) user \(u): rebuilt \(a.1.map { "\($0.0)@\($0.1)" }) live \(b.1.map { "\($0.0)@\($0.1)" })")
                    }
                }
            }
        }
        return problems
    }
}
