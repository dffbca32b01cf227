import AuthzModel

/// A heap array of words whose address never changes, for lock-free readers.
final class WordBuffer: @unchecked Sendable {
    let base: UnsafeMutablePointer<UInt64>
    let count: Int

    init(_ words: [UInt64]) {
        count = words.count
        base = .allocate(capacity: max(1, count))
        base.initialize(repeating: 0, count: max(1, count))
        words.withUnsafeBufferPointer { if let b = $0.baseAddress { base.update(from: b, count: count) } }
    }

    deinit { base.deallocate() }
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
    let permissionBits: NameTable
    /// Bit → permission name.
    let permissionNames: [String]
    /// 64-bit words per bitset.
    let words: Int
    /// `roleBits[(role * 3 + scope) * words + word]`, owned by `roleBitsStorage`.
    let roleBitsStorage: WordBuffer
    let roleBits: UnsafeMutablePointer<UInt64>
    /// User id → role-set offset in the pool (bit 31: inactive user), sharded so that a write
    /// copies one shard, not the tenant. `shardRefs` mirrors `shards` without reference counting.
    let shards: [IDTable]
    let shardRefs: UnsafeMutablePointer<Unmanaged<IDTable>>
    let shardMask: UInt64
    let pool: AppendOnlyBuffer
    let poolBase: UnsafeMutablePointer<UInt32>
    let poolCount: Int
    /// Users (active or not) in the tenant.
    public let userCount: Int
    /// Roles and distinct role sets, for metrics.
    public let roleCount: Int
    public let roleSetCount: Int

    init(tenantId: ID, isActive: Bool, permissionBits: NameTable, permissionNames: [String], words: Int,
         roleBits: WordBuffer, shards: [IDTable], pool: AppendOnlyBuffer, poolCount: Int, userCount: Int,
         roleCount: Int, roleSetCount: Int) {
        self.tenantId = tenantId
        self.isActive = isActive
        self.permissionBits = permissionBits
        self.permissionNames = permissionNames
        self.words = words
        self.roleBitsStorage = roleBits
        self.roleBits = roleBits.base
        self.shards = shards
        shardRefs = .allocate(capacity: shards.count)
        for (i, t) in shards.enumerated() { (shardRefs + i).initialize(to: Unmanaged.passUnretained(t)) }
        self.shardMask = UInt64(shards.count - 1)
        self.pool = pool
        self.poolBase = pool.base
        self.poolCount = poolCount
        self.userCount = userCount
        self.roleCount = roleCount
        self.roleSetCount = roleSetCount
    }

    deinit { shardRefs.deallocate() }

    @inline(__always) func userValue(_ user: ID) -> UInt32? {
        shardRefs[Int(truncatingIfNeeded: (user.lo ^ (user.hi >> 7)) & shardMask)]._withUnsafeGuaranteedRef { $0.find(user) }
    }

    /// Decides `check(user, permission, scope)` in this tenant (rules 2–6 of the spec; the
    /// caller has settled rule 1 by finding the tenant). Allocates nothing; never blocks.
    @inline(__always)
    public func reason(user: ID, permission: String, scope: Scope) -> Reason {
        if !isActive { return .inactiveTenant }
        guard let value = userValue(user) else { return .unknownUser }
        if value & inactiveUserBit != 0 { return .inactiveUser }
        return reason(userValue: value, permissionBits: permissionBits.find(permission), scope: scope)
    }

    /// `reason(user:permission:scope:)` with the permission given by the bytes of its name (as
    /// they sit in a request frame). Allocates nothing; never blocks.
    @inline(__always)
    public func reason(user: ID, permissionBytes: UnsafeRawBufferPointer, scope: Scope) -> Reason {
        if !isActive { return .inactiveTenant }
        guard let value = userValue(user) else { return .unknownUser }
        if value & inactiveUserBit != 0 { return .inactiveUser }
        return reason(userValue: value, permissionBits: permissionBits.find(permissionBytes), scope: scope)
    }

    @inline(__always)
    func reason(userValue value: UInt32, permissionBits found: UInt32?, scope: Scope) -> Reason {
        guard let bitValue = found else { return .unknownPermission }
        if bitValue & inactivePermissionBit != 0 { return .inactivePermission }
        let bit = Int(bitValue)
        let s = Int(scope.rawValue)
        let wordOffset = s &* words &+ (bit >> 6)
        let mask = UInt64(1) << UInt64(bit & 63)
        let p = poolBase + Int(value)
        let n = Int(p[0])
        let bits = roleBits
        var i = 1
        while i <= n {
            let entry = p[i]
            if Int(entry & 3) >= s {
                let role = Int(entry >> 2)
                if bits[role &* 3 &* words &+ wordOffset] & mask != 0 { return .granted }
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
        let p = poolBase + Int(value)
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
        guard isActive, let bitValue = permissionBits.find(permission), bitValue & inactivePermissionBit == 0 else { return [] }
        var out: [ID] = []
        for shard in shards {
            shard.forEach { user, _ in
                if reason(user: user, permission: permission, scope: scope) == .granted { out.append(user) }
            }
        }
        out.sort()
        return out
    }

    /// Approximate bytes held by this snapshot's structures (hash tables at their capacity).
    public var approximateBytes: Int {
        var bytes = roleBitsStorage.count * 8 + poolCount * 4 + permissionBits.approximateBytes
        for s in shards { bytes += s.approximateBytes }
        return bytes
    }

    /// Every user id with its active flag, in no particular order (for tests and listings).
    public func allUsers() -> [(ID, Bool)] {
        var out: [(ID, Bool)] = []
        for s in shards { s.forEach { out.append(($0, $1 & inactiveUserBit == 0)) } }
        return out
    }
}
