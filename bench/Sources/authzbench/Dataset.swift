import AuthzModel
import Foundation

/// SplitMix64: small, fast, deterministic.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// Dataset sizes. `reference` is the core issue's reference tenant; `ten` is ten of them.
struct DatasetSize {
    var name: String
    var tenants: Int
    var users: Int
    var roles: Int
    var permissions: Int
    var bindingsPerUser: Int
    var grantsPerRole: Int
    /// Distinct role sets users draw from ("many users share the same set of roles").
    var profiles: Int

    static func named(_ n: String) -> DatasetSize? {
        switch n {
        case "small": return DatasetSize(name: n, tenants: 1, users: 1000, roles: 20, permissions: 100, bindingsPerUser: 3, grantsPerRole: 10, profiles: 50)
        case "reference": return DatasetSize(name: n, tenants: 1, users: 100_000, roles: 200, permissions: 2000, bindingsPerUser: 3, grantsPerRole: 30, profiles: 1000)
        case "ten": return DatasetSize(name: n, tenants: 10, users: 100_000, roles: 200, permissions: 2000, bindingsPerUser: 3, grantsPerRole: 30, profiles: 1000)
        default: return nil
        }
    }
}

/// One generated tenant, with the effective grants computed straight from its records, so
/// that every answer of either server can be checked.
struct TenantData {
    var id: ID
    var users: [ID]
    var userProfile: [Int32]
    var roles: [ID]
    var roleInherits: [[Int]]
    var permissionIDs: [ID]
    var permissionNames: [String]
    /// (role, permission, scope)
    var grants: [(Int, Int, Scope)]
    /// profile → [(role, scope)]
    var profiles: [[(Int, Scope)]]
    /// profile → scope → permission bitset (words)
    var profileBits: [[[UInt64]]]
    var words: Int

    func allowed(user: Int, permission: Int, scope: Scope) -> Bool {
        profileBits[Int(userProfile[user])][Int(scope.rawValue)][permission >> 6] & (1 << UInt64(permission & 63)) != 0
    }
}

enum Dataset {
    static let actions = ["read", "write", "send", "admin"]
    static let services = ["gmail", "outlook", "whatsapp", "core"]

    static func generate(size: DatasetSize, seed: UInt64) -> [TenantData] {
        var rng = SplitMix(seed: seed)
        return (0..<size.tenants).map { _ in tenant(size: size, rng: &rng) }
    }

    static func tenant(size: DatasetSize, rng: inout SplitMix) -> TenantData {
        let t = ID.random(using: &rng)
        let perms = (0..<size.permissions).map { _ in ID.random(using: &rng) }
        let names = (0..<size.permissions).map { i in "\(services[i % 4]).res\(i / 16).\(actions[(i / 4) % 4])" }
        let roles = (0..<size.roles).map { _ in ID.random(using: &rng) }
        // Levels 0...3 (depth at most 3): a role of level L inherits one or two of level L-1.
        var inherits = [[Int]](repeating: [], count: size.roles)
        for r in 0..<size.roles {
            let level = r % 4
            guard level > 0 else { continue }
            let candidates = stride(from: level - 1, to: r, by: 4).map { $0 }
            let n = 1 + rng.below(2)
            var chosen: [Int] = []
            for _ in 0..<n {
                let c = candidates[rng.below(candidates.count)]
                if !chosen.contains(c) { chosen.append(c) }
            }
            inherits[r] = chosen
        }
        var grants: [(Int, Int, Scope)] = []
        for r in 0..<size.roles {
            var used = Set<Int>()
            while used.count < min(size.grantsPerRole, size.permissions) {
                let p = rng.below(size.permissions)
                if used.insert(p).inserted { grants.append((r, p, Scope(rawValue: UInt8(rng.below(3)))!)) }
            }
        }
        var profiles: [[(Int, Scope)]] = []
        for _ in 0..<size.profiles {
            var set: [(Int, Scope)] = []
            while set.count < size.bindingsPerUser {
                let r = rng.below(size.roles)
                if !set.contains(where: { $0.0 == r }) { set.append((r, Scope(rawValue: UInt8(rng.below(3)))!)) }
            }
            profiles.append(set)
        }
        let users = (0..<size.users).map { _ in ID.random(using: &rng) }
        let userProfile = (0..<size.users).map { _ in Int32(rng.below(size.profiles)) }
        // Effective grants, from the spec: closure over inherits, min(s_rb, s_pb) ≥ s.
        let words = (size.permissions + 63) / 64
        var own = [[[UInt64]]](repeating: [[UInt64]](repeating: [UInt64](repeating: 0, count: words), count: 3), count: size.roles)
        for (r, p, s) in grants {
            for level in 0...Int(s.rawValue) { own[r][level][p >> 6] |= 1 << UInt64(p & 63) }
        }
        var eff = own
        var changed = true
        while changed {
            changed = false
            for r in 0..<size.roles {
                for parent in inherits[r] {
                    for s in 0..<3 {
                        for w in 0..<words where eff[r][s][w] | eff[parent][s][w] != eff[r][s][w] {
                            eff[r][s][w] |= eff[parent][s][w]
                            changed = true
                        }
                    }
                }
            }
        }
        let profileBits: [[[UInt64]]] = profiles.map { set in
            (0..<3).map { s in
                var bits = [UInt64](repeating: 0, count: words)
                for (r, srb) in set where Int(srb.rawValue) >= s {
                    for w in 0..<words { bits[w] |= eff[r][s][w] }
                }
                return bits
            }
        }
        return TenantData(id: t, users: users, userProfile: userProfile, roles: roles, roleInherits: inherits, permissionIDs: perms,
                          permissionNames: names, grants: grants, profiles: profiles, profileBits: profileBits, words: words)
    }

    /// The spec's JSON Lines, in dependency order, split into import chunks of at most
    /// `chunk` lines (each chunk only references records of earlier chunks or itself).
    static func jsonlChunks(_ tenants: [TenantData], seed: UInt64, chunk: Int = 20_000) -> [[UInt8]] {
        var rng = SplitMix(seed: seed ^ 0xABCDEF)
        var chunks: [[UInt8]] = []
        var current: [UInt8] = []
        var lines = 0
        func emit(_ e: Entity) {
            current += Array(BulkFormat.encode(e).utf8)
            current.append(0x0A)
            lines += 1
            if lines >= chunk {
                chunks.append(current)
                current = []
                lines = 0
            }
        }
        for (ti, t) in tenants.enumerated() {
            emit(.tenant(Tenant(id: t.id, name: "tenant\(ti)")))
            for (i, p) in t.permissionIDs.enumerated() {
                emit(.permission(Permission(id: p, tenantId: t.id, name: t.permissionNames[i], service: services[i % 4])))
            }
            for (i, r) in t.roles.enumerated() {
                emit(.role(Role(id: r, tenantId: t.id, name: "role\(i)", inherits: t.roleInherits[i].map { t.roles[$0] })))
            }
            for (r, p, s) in t.grants {
                emit(.permissionBinding(PermissionBinding(id: .random(using: &rng), tenantId: t.id, roleId: t.roles[r], permissionId: t.permissionIDs[p], scope: s)))
            }
            if lines > 0 { chunks.append(current); current = []; lines = 0 }
            for u in t.users { emit(.user(User(id: u, tenantId: t.id))) }
            if lines > 0 { chunks.append(current); current = []; lines = 0 }
            for (i, u) in t.users.enumerated() {
                for (r, s) in t.profiles[Int(t.userProfile[i])] {
                    emit(.roleBinding(RoleBinding(id: .random(using: &rng), tenantId: t.id, userId: u, roleId: t.roles[r], scope: s)))
                }
            }
            if lines > 0 { chunks.append(current); current = []; lines = 0 }
        }
        return chunks
    }

    /// The Redis key of a user's bitmap at a scope.
    static func redisKey(tenant: Int, user: ID, scope: Scope) -> String { "t\(tenant):\(user):\(scope.rawValue)" }

    /// RESP `SET key bitmap` commands (Redis bit order: bit k is byte k/8, mask 0x80 >> k%8),
    /// for `redis-cli --pipe` or a raw socket.
    static func redisCommands(_ tenants: [TenantData]) -> [UInt8] {
        var out: [UInt8] = []
        for (ti, t) in tenants.enumerated() {
            let bytesPerMap = (t.permissionNames.count + 7) / 8
            for (ui, u) in t.users.enumerated() {
                for s in Scope.allCases {
                    let bits = t.profileBits[Int(t.userProfile[ui])][Int(s.rawValue)]
                    if bits.allSatisfy({ $0 == 0 }) { continue }
                    var map = [UInt8](repeating: 0, count: bytesPerMap)
                    for p in 0..<t.permissionNames.count where bits[p >> 6] & (1 << UInt64(p & 63)) != 0 {
                        map[p >> 3] |= 0x80 >> UInt8(p & 7)
                    }
                    let key = Array(redisKey(tenant: ti, user: u, scope: s).utf8)
                    out += Array("*3\r\n$3\r\nSET\r\n$\(key.count)\r\n".utf8) + key + Array("\r\n$\(map.count)\r\n".utf8) + map + [13, 10]
                }
            }
        }
        return out
    }
}

/// One check with its expected answer.
struct Query {
    var tenant: Int32
    var user: Int32
    var permission: Int32
    var scope: Scope
    var allowed: Bool
}

enum Queries {
    /// `count` queries: users uniform or skewed (80% of queries on 20% of users), a share
    /// `allowShare` of them allowed.
    static func make(_ tenants: [TenantData], count: Int, skewed: Bool, allowShare: Double, seed: UInt64) -> [Query] {
        var rng = SplitMix(seed: seed ^ 0x5EED)
        var out: [Query] = []
        out.reserveCapacity(count)
        while out.count < count {
            let ti = rng.below(tenants.count)
            let t = tenants[ti]
            var ui: Int
            if skewed {
                let hot = max(1, t.users.count / 5)
                ui = rng.below(100) < 80 ? rng.below(hot) : hot + rng.below(max(1, t.users.count - hot))
                ui = min(ui, t.users.count - 1)
            } else {
                ui = rng.below(t.users.count)
            }
            let s = Scope(rawValue: UInt8(rng.below(3)))!
            let wantAllow = Double(rng.below(10_000)) / 10_000 < allowShare
            // Look for a permission with the wanted answer (a few tries, then take what we get).
            var p = rng.below(t.permissionNames.count)
            for _ in 0..<64 {
                if t.allowed(user: ui, permission: p, scope: s) == wantAllow { break }
                p = rng.below(t.permissionNames.count)
            }
            out.append(Query(tenant: Int32(ti), user: Int32(ui), permission: Int32(p), scope: s, allowed: t.allowed(user: ui, permission: p, scope: s)))
        }
        return out
    }
}
