import AuthzModel

/// The writer's side of one tenant's index: it takes record changes and publishes immutable
/// `TenantIndex` snapshots.
///
/// Incremental by construction: a change to a user or a user's role bindings touches that
/// user's shard only; a change to roles, permissions or permission bindings recompiles the
/// tenant's role bitsets (O(roles × permissions / 64)), never the users. Not thread-safe:
/// one writer at a time (the engine's write lock).
public final class TenantCompiler {
    struct RoleInfo {
        var id: ID
        var active: Bool
        var inherits: [ID]
    }

    struct PermInfo {
        var id: ID
        var name: String
        var active: Bool
    }

    struct BindingInfo {
        var role: Int
        var bit: Int
        var scope: Scope
        var active: Bool
    }

    public let tenantId: ID
    var active = true
    var roleIndex: [ID: Int] = [:]
    var roles: [RoleInfo] = []
    var permIndex: [ID: Int] = [:]
    var perms: [PermInfo] = []
    var permissionBits: [String: UInt32] = [:]
    var permissionTable = NameTable([])
    var permissionsDirty = true
    var permissionNames: [String] = []
    var bindings: [ID: BindingInfo] = [:]
    var rolesDirty = true
    var roleBits = WordBuffer([])
    var words = 1

    var shards: [IDTable] = [IDTable()]
    var copiedShards: Set<Int> = []
    var userCount = 0

    var pool = AppendOnlyBuffer(capacity: 1024)
    var poolCount = 1  // offset 0 is the empty role set: [0]
    var roleSets: [[UInt32]: (offset: UInt32, users: Int)] = [[]: (0, 0)]
    var roleSetByOffset: [UInt32: [UInt32]] = [0: []]
    /// Pool words of role sets no user holds any more; compacted away past a threshold.
    var deadWords = 0

    /// A compiler for an empty tenant. `expectedUsers` sizes the user map up front.
    public init(tenantId: ID, expectedUsers: Int = 0) {
        self.tenantId = tenantId
        pool.base[0] = 0
        // Shards of a few hundred users; among the candidate counts, the one whose power-of-two
        // tables waste the fewest slots.
        var shardCount = 1
        if expectedUsers > 1024 {
            var best = Int.max
            var candidate = 1
            while candidate * 256 <= expectedUsers * 2 {
                if candidate * 2048 >= expectedUsers {
                    let total = candidate * IDTable.slotsFor(expectedUsers / candidate + 1)
                    if total < best { best = total; shardCount = candidate }
                }
                candidate *= 2
            }
        }
        shards = (0..<shardCount).map { _ in IDTable(capacity: expectedUsers / shardCount + 1) }
        copiedShards = Set(0..<shardCount)
    }

    public func setTenant(active: Bool) { self.active = active }

    /// Roles whose `inherits` name a role id, by that id (the reverse of `inherits`).
    var children: [ID: Set<ID>] = [:]

    /// Role bindings the tenant holds (active or not); kept by the engine for its limits.
    public var roleBindingCount = 0

    /// How many roles, permissions and permission bindings the tenant holds (active or not).
    public var counts: (roles: Int, permissions: Int, permissionBindings: Int) { (roles.count, perms.count, bindings.count) }

    /// The roles `role` inherits, as last upserted; nil for an unknown role.
    public func parents(of role: ID) -> [ID]? { roleIndex[role].map { roles[$0].inherits } }

    /// The roles that inherit `role`.
    public func children(of role: ID) -> Set<ID> { children[role] ?? [] }

    /// Adds or updates a role. `inherits` may name roles not yet known (they must arrive in
    /// the same batch); unknown ones grant nothing.
    public func upsertRole(id: ID, active: Bool, inherits: [ID]) {
        if let i = roleIndex[id] {
            for p in roles[i].inherits { children[p]?.remove(id) }
            for p in inherits { children[p, default: []].insert(id) }
            roles[i].active = active
            roles[i].inherits = inherits
        } else {
            for p in inherits { children[p, default: []].insert(id) }
            roleIndex[id] = roles.count
            roles.append(RoleInfo(id: id, active: active, inherits: inherits))
        }
        rolesDirty = true
    }

    /// Adds or updates a permission (names are unique per tenant; the store guarantees it).
    public func upsertPermission(id: ID, name: String, active: Bool) {
        let bit: Int
        if let i = permIndex[id] {
            bit = i
            if perms[i].name != name {
                // The old name goes only if it still names this permission: in a batch that
                // swaps two names, the other permission may already have taken it.
                if let held = permissionBits[perms[i].name], Int(held & ~inactivePermissionBit) == i {
                    permissionBits.removeValue(forKey: perms[i].name)
                }
                perms[i].name = name
                permissionNames[i] = name
            }
            perms[i].active = active
        } else {
            bit = perms.count
            permIndex[id] = bit
            perms.append(PermInfo(id: id, name: name, active: active))
            permissionNames.append(name)
        }
        permissionBits[name] = UInt32(bit) | (active ? 0 : inactivePermissionBit)
        rolesDirty = true
        permissionsDirty = true
    }

    /// Adds or updates a permission binding. Role and permission must be known.
    public func upsertPermissionBinding(id: ID, role: ID, permission: ID, scope: Scope, active: Bool) {
        guard let r = roleIndex[role], let p = permIndex[permission] else { return }
        bindings[id] = BindingInfo(role: r, bit: p, scope: scope, active: active)
        rolesDirty = true
    }

    private func shardIndex(_ user: ID) -> Int {
        Int(truncatingIfNeeded: (user.lo ^ (user.hi >> 7)) & UInt64(shards.count - 1))
    }

    /// Shard `i`, copied first if a published snapshot holds it, grown if one more user
    /// would not fit.
    private func mutableShard(_ i: Int) -> IDTable {
        if !copiedShards.contains(i) {
            shards[i] = shards[i].copy()
            copiedShards.insert(i)
        }
        shards[i] = shards[i].grownIfNeeded()
        return shards[i]
    }

    /// Adds a user (with no role bindings yet) or updates its active flag.
    public func upsertUser(id: ID, active: Bool) {
        let shard = mutableShard(shardIndex(id))
        if let v = shard.find(id) {
            shard.set(id, active ? v & ~inactiveUserBit : v | inactiveUserBit)
        } else {
            shard.set(id, active ? 0 : inactiveUserBit)
            userCount += 1
            roleSets[[]]!.users += 1
            if userCount > shards.count * 2048 { reshard(shards.count * 4) }
        }
    }

    /// Replaces a user's role set with its *active* role bindings. Bindings to unknown roles
    /// are ignored. The user must have been added with `upsertUser`.
    public func setUserBindings(user: ID, bindings list: [(role: ID, scope: Scope)]) {
        var set: [UInt32] = []
        set.reserveCapacity(list.count)
        for (role, scope) in list {
            guard let r = roleIndex[role] else { continue }
            set.append(UInt32(r) << 2 | UInt32(scope.rawValue))
        }
        set.sort()
        var deduped: [UInt32] = []
        for e in set where deduped.last != e { deduped.append(e) }
        let shard = mutableShard(shardIndex(user))
        guard let old = shard.find(user) else { return }
        let oldOffset = old & ~inactiveUserBit
        let offset = intern(deduped)
        if offset == oldOffset { release(offset); return }
        release(oldOffset)
        shard.set(user, offset | (old & inactiveUserBit))
    }

    private func intern(_ set: [UInt32]) -> UInt32 {
        if let found = roleSets[set] {
            roleSets[set]?.users = found.users + 1  // `found` is roleSets[set]
            return found.offset
        }
        let offset = UInt32(poolCount)
        var encoded = [UInt32(set.count)]
        encoded.append(contentsOf: set)
        encoded.withUnsafeBufferPointer { pool = pool.appending($0, at: poolCount) }
        poolCount += encoded.count
        roleSets[set] = (offset, 1)
        roleSetByOffset[offset] = set
        return offset
    }

    /// Drops a user's hold on a role set. Sets nobody holds stay in the pool (reclaimed on the
    /// next rebuild, i.e. restart) but leave the intern table.
    private func release(_ offset: UInt32) {
        guard let set = roleSetByOffset[offset], let entry = roleSets[set] else { return }
        if entry.users <= 1 && offset != 0 {
            roleSets.removeValue(forKey: set)
            roleSetByOffset.removeValue(forKey: offset)
            deadWords += set.count + 1
        } else {
            roleSets[set]?.users = entry.users - 1  // `entry` is roleSets[set]
        }
    }

    private func reshard(_ count: Int) {
        let per = userCount / count + 1
        var fresh = (0..<count).map { _ in IDTable(capacity: per) }
        for s in shards {
            s.forEach { k, v in
                let i = Int(truncatingIfNeeded: (k.lo ^ (k.hi >> 7)) & UInt64(count - 1))
                fresh[i] = fresh[i].grownIfNeeded()
                fresh[i].set(k, v)
            }
        }
        shards = fresh
        copiedShards = Set(0..<count)
        fresh = []
    }

    private func compileRoles() {
        words = max(1, (perms.count + 63) / 64)
        let n = roles.count
        var own = [UInt64](repeating: 0, count: n * 3 * words)
        for b in bindings.values where b.active && perms[b.bit].active && roles[b.role].active {
            let w = b.bit >> 6, m = UInt64(1) << UInt64(b.bit & 63)
            for s in 0...Int(b.scope.rawValue) { own[(b.role * 3 + s) * words + w] |= m }
        }
        var eff = [UInt64](repeating: 0, count: n * 3 * words)
        // Post-order over `inherits` with an explicit stack: a role's bits are final once every
        // active parent's are. Never recurses, so any depth of data compiles.
        var state = [UInt8](repeating: 0, count: n)  // 0 new, 1 in progress, 2 done
        var stack: [(role: Int, next: Int)] = []
        for root in 0..<n where state[root] == 0 {
            state[root] = 1
            stack.append((root, 0))
            while let (r, next) = stack.last {
                let parents = roles[r].active ? roles[r].inherits : []
                if next < parents.count {
                    stack[stack.count - 1].next += 1
                    guard let p = roleIndex[parents[next]], roles[p].active, state[p] == 0 else { continue }
                    state[p] = 1
                    stack.append((p, 0))
                    continue
                }
                stack.removeLast()
                if roles[r].active {
                    let base = r * 3 * words
                    for i in 0..<(3 * words) { eff[base + i] = own[base + i] }
                    for parentID in parents {
                        // A parent still in progress is a cycle (the store rejects them): it grants nothing here.
                        guard let p = roleIndex[parentID], roles[p].active, state[p] == 2 else { continue }
                        let pbase = p * 3 * words
                        for i in 0..<(3 * words) { eff[base + i] |= eff[pbase + i] }
                    }
                }
                state[r] = 2
            }
        }
        roleBits = WordBuffer(eff)
        rolesDirty = false
    }

    /// Rewrites the pool with only the role sets users hold and remaps every user (O(users)):
    /// keeps memory flat under churn. Snapshots already published keep the old pool alive.
    func compactPool() {
        var remap: [UInt32: UInt32] = [0: 0]
        var fresh = AppendOnlyBuffer(capacity: max(1024, poolCount - deadWords + 16))
        fresh.base[0] = 0
        var count = 1
        var newByOffset: [UInt32: [UInt32]] = [0: []]
        for (set, entry) in roleSets where entry.offset != 0 {
            var encoded = [UInt32(set.count)]
            encoded.append(contentsOf: set)
            encoded.withUnsafeBufferPointer { fresh = fresh.appending($0, at: count) }
            remap[entry.offset] = UInt32(count)
            roleSets[set] = (UInt32(count), entry.users)
            newByOffset[UInt32(count)] = set
            count += encoded.count
        }
        for i in shards.indices {
            let copy = shards[i].copy()
            var updates: [(ID, UInt32)] = []
            copy.forEach { id, v in
                let off = v & ~inactiveUserBit
                if let n = remap[off], n != off { updates.append((id, n | (v & inactiveUserBit))) }
            }
            for (id, v) in updates { copy.set(id, v) }
            shards[i] = copy
            copiedShards.insert(i)
        }
        pool = fresh
        poolCount = count
        roleSetByOffset = newByOffset
        deadWords = 0
    }

    /// Publishes the current state as an immutable snapshot. Shards changed since the last
    /// publish are handed over and will be copied before the next change.
    public func publish() -> TenantIndex {
        if rolesDirty { compileRoles() }
        if deadWords > 16_384 && deadWords * 2 > poolCount { compactPool() }
        if permissionsDirty {
            permissionTable = NameTable(permissionBits.map { ($0.key, $0.value) })
            permissionsDirty = false
        }
        copiedShards.removeAll(keepingCapacity: true)
        return TenantIndex(tenantId: tenantId, isActive: active, permissionBits: permissionTable,
                           permissionNames: permissionNames, words: words, roleBits: roleBits, shards: shards,
                           pool: pool, poolCount: poolCount, userCount: userCount, roleCount: roles.count,
                           roleSetCount: roleSets.count)
    }
}
