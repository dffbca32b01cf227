import AuthzModel

/// One shard of a tenant's user map: user id → role-set offset in the pool, with bit 31 set
/// for an inactive user. Published shards are never mutated.
final class UserShard: @unchecked Sendable {
    var users: [ID: UInt32]

    init(users: [ID: UInt32] = [:]) { self.users = users }
}

let inactiveUserBit: UInt32 = 1 << 31
let inactivePermissionBit: UInt32 = 1 << 31

/// An immutable, compiled snapshot of one tenant's grants: what a check reads.
///
/// Permissions have dense bit positions. Each role has three bitsets, one per scope `s`,
/// holding the permissions its inheritance closure grants at `s` or higher (soft deletes
/// already resolved). Each user maps to an interned role set: its active role bindings as
/// `(role index, binding scope)` pairs. A check is three hash lookups (tenant, permission
/// name, user) and at most one bit test per role binding of the user: no graph walk, no
/// LMDB read, no heap allocation.
public final class TenantIndex: @unchecked Sendable {
    public let tenantId: ID
    public let isActive: Bool
    /// Permission name → bit, with `inactivePermissionBit` set for an inactive permission.
    let permissionBits: [String: UInt32]
    /// Bit → permission name.
    let permissionNames: [String]
    /// 64-bit words per bitset.
    let words: Int
    /// `roleBits[(role * 3 + scope) * words + word]`.
    let roleBits: [UInt64]
    let shards: [UserShard]
    let shardMask: UInt64
    let pool: AppendOnlyBuffer
    let poolCount: Int
    /// Users (active or not) in the tenant.
    public let userCount: Int
    /// Roles and distinct role sets, for metrics.
    public let roleCount: Int
    public let roleSetCount: Int

    init(tenantId: ID, isActive: Bool, permissionBits: [String: UInt32], permissionNames: [String], words: Int,
         roleBits: [UInt64], shards: [UserShard], pool: AppendOnlyBuffer, poolCount: Int, userCount: Int,
         roleCount: Int, roleSetCount: Int) {
        self.tenantId = tenantId
        self.isActive = isActive
        self.permissionBits = permissionBits
        self.permissionNames = permissionNames
        self.words = words
        self.roleBits = roleBits
        self.shards = shards
        self.shardMask = UInt64(shards.count - 1)
        self.pool = pool
        self.poolCount = poolCount
        self.userCount = userCount
        self.roleCount = roleCount
        self.roleSetCount = roleSetCount
    }

    @inline(__always) func userValue(_ user: ID) -> UInt32? {
        shards[Int(truncatingIfNeeded: (user.lo ^ (user.hi >> 7)) & shardMask)].users[user]
    }

    /// Decides `check(user, permission, scope)` in this tenant (rules 2–6 of the spec; the
    /// caller has settled rule 1 by finding the tenant). Allocates nothing; never blocks.
    @inline(__always)
    public func reason(user: ID, permission: String, scope: Scope) -> Reason {
        if !isActive { return .inactiveTenant }
        guard let value = userValue(user) else { return .unknownUser }
        if value & inactiveUserBit != 0 { return .inactiveUser }
        guard let bitValue = permissionBits[permission] else { return .unknownPermission }
        if bitValue & inactivePermissionBit != 0 { return .inactivePermission }
        let bit = Int(bitValue)
        let s = Int(scope.rawValue)
        let wordOffset = s &* words &+ (bit >> 6)
        let mask = UInt64(1) << UInt64(bit & 63)
        let p = pool.base + Int(value)
        let n = Int(p[0])
        var i = 1
        while i <= n {
            let entry = p[i]
            if Int(entry & 3) >= s {
                let role = Int(entry >> 2)
                if roleBits[role &* 3 &* words &+ wordOffset] & mask != 0 { return .granted }
            }
            i &+= 1
        }
        return .noGrant
    }

    /// The user's permissions with the highest scope each is held at, sorted by name; or the
    /// reason the user holds none (unknown / inactive user or tenant). Allocates the result.
    public func permissions(of user: ID) -> (Reason, [(String, Scope)]) {
        if !isActive { return (.inactiveTenant, []) }
        guard let value = userValue(user) else { return (.unknownUser, []) }
        if value & inactiveUserBit != 0 { return (.inactiveUser, []) }
        var masks = [[UInt64]](repeating: [UInt64](repeating: 0, count: words), count: 3)
        let p = pool.base + Int(value)
        for i in 0..<Int(p[0]) {
            let entry = p[1 + i]
            let role = Int(entry >> 2)
            for s in 0...Int(entry & 3) {
                let base = (role * 3 + s) * words
                for w in 0..<words { masks[s][w] |= roleBits[base + w] }
            }
        }
        var out: [(String, Scope)] = []
        for bit in 0..<permissionNames.count {
            let w = bit >> 6, m = UInt64(1) << UInt64(bit & 63)
            for s in Scope.allCases.reversed() where masks[Int(s.rawValue)][w] & m != 0 {
                out.append((permissionNames[bit], s))
                break
            }
        }
        out.sort { $0.0 < $1.0 }
        return (.granted, out)
    }

    /// Ids of the active users allowed `permission` at `scope`, sorted. O(users).
    public func users(with permission: String, scope: Scope) -> [ID] {
        guard isActive, let bitValue = permissionBits[permission], bitValue & inactivePermissionBit == 0 else { return [] }
        var out: [ID] = []
        for shard in shards {
            for (user, _) in shard.users where reason(user: user, permission: permission, scope: scope) == .granted {
                out.append(user)
            }
        }
        out.sort()
        return out
    }

    /// Approximate bytes held by this snapshot's structures (hash tables at their capacity).
    public var approximateBytes: Int {
        var bytes = roleBits.count * 8 + poolCount * 4 + permissionBits.capacity * 40
        for s in shards { bytes += s.users.capacity * (MemoryLayout<ID>.stride + MemoryLayout<UInt32>.stride) + 64 }
        return bytes
    }

    /// Every user id with its active flag, in no particular order (for tests and listings).
    public func allUsers() -> [(ID, Bool)] {
        shards.flatMap { $0.users.map { ($0.key, $0.value & inactiveUserBit == 0) } }
    }

    /// The known permission names, active or not.
    public var allPermissionNames: [String] { permissionNames }
}
