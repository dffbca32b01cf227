import AuthzEngine
import AuthzIndex
import AuthzModel
import Foundation
import XCTest

/// A fresh temporary directory, removed by `cleanup`.
func temporaryDirectory(_ name: String = "authzd-test") -> String {
    let path = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// A deterministic generator (SplitMix64) so failures reproduce from their seed.
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
}

/// Builds records for one tenant with readable names.
final class TenantBuilder {
    let tenant: ID
    var ids: [String: ID] = [:]
    var ops: [WriteOp] = []

    init(name: String = "acme") {
        tenant = ID.random()
        ids[name] = tenant
        ops.append(.upsert(.tenant(Tenant(id: tenant, name: name))))
    }

    func id(_ name: String) -> ID {
        if let i = ids[name] { return i }
        let i = ID.random()
        ids[name] = i
        return i
    }

    @discardableResult func user(_ name: String, active: Bool = true) -> ID {
        ops.append(.upsert(.user(User(id: id(name), tenantId: tenant, email: "\(name)@acme.test", isActive: active))))
        return id(name)
    }

    @discardableResult func role(_ name: String, inherits: [String] = [], scopes: ScopeSet = .all, active: Bool = true) -> ID {
        ops.append(.upsert(.role(Role(id: id(name), tenantId: tenant, name: name, scopes: scopes, inherits: inherits.map(id), isActive: active))))
        return id(name)
    }

    @discardableResult func permission(_ name: String, scopes: ScopeSet = .all, active: Bool = true) -> ID {
        ops.append(.upsert(.permission(Permission(id: id(name), tenantId: tenant, name: name, service: String(name.split(separator: ".")[0]), scopes: scopes, isActive: active))))
        return id(name)
    }

    @discardableResult func bind(_ user: String, _ role: String, _ scope: Scope, name: String? = nil, active: Bool = true) -> ID {
        let n = name ?? "rb:\(user):\(role):\(scope)"
        ops.append(.upsert(.roleBinding(RoleBinding(id: id(n), tenantId: tenant, userId: id(user), roleId: id(role), scope: scope, isActive: active))))
        return id(n)
    }

    @discardableResult func grant(_ role: String, _ perm: String, _ scope: Scope, name: String? = nil, active: Bool = true) -> ID {
        let n = name ?? "pb:\(role):\(perm):\(scope)"
        ops.append(.upsert(.permissionBinding(PermissionBinding(id: id(n), tenantId: tenant, roleId: id(role), permissionId: id(perm), scope: scope, isActive: active))))
        return id(n)
    }

    /// Writes the collected ops and clears them.
    @discardableResult func commit(_ engine: Engine) throws -> UInt64 {
        defer { ops = [] }
        return try engine.write(ops)
    }
}

/// The decision rule written straight from the spec, over plain records: the reference the
/// compiled index is tested against.
struct ReferenceEvaluator {
    var records: [ID: Entity] = [:]

    mutating func apply(_ e: Entity) { records[e.id] = e }

    func check(tenant: ID, user: ID, permission: String, scope: Scope) -> Reason {
        guard case .tenant(let t)? = records[tenant] else { return .unknownTenant }
        if !t.fields.isActive { return .inactiveTenant }
        guard case .user(let u)? = records[user], u.fields.tenantId == tenant else { return .unknownUser }
        if !u.fields.isActive { return .inactiveUser }
        let perms = records.values.compactMap { e -> Permission? in
            if case .permission(let p) = e, p.fields.tenantId == tenant, p.name == permission { return p }
            return nil
        }
        guard let p = perms.first else { return .unknownPermission }
        if !p.fields.isActive { return .inactivePermission }
        var roles: [ID: Role] = [:]
        var pbs: [PermissionBinding] = []
        var rbs: [RoleBinding] = []
        for e in records.values where e.tenantId == tenant {
            switch e {
            case .role(let r): roles[r.fields.id] = r
            case .permissionBinding(let b): pbs.append(b)
            case .roleBinding(let b): rbs.append(b)
            default: break
            }
        }
        // Rule 3–6: some active binding (user, R0, s_rb), a chain of active roles R0 → … → Rk,
        // an active binding (Rk, P, s_pb) with min(s_rb, s_pb) ≥ scope.
        for rb in rbs where rb.userId == user && rb.fields.isActive {
            guard let r0 = roles[rb.roleId], r0.fields.isActive else { continue }
            var reachable: Set<ID> = [r0.fields.id]
            var frontier = [r0.fields.id]
            while let r = frontier.popLast() {
                for parent in roles[r]?.inherits ?? [] {
                    if let pr = roles[parent], pr.fields.isActive, reachable.insert(parent).inserted { frontier.append(parent) }
                }
            }
            for pb in pbs where pb.fields.isActive && pb.permissionId == p.fields.id && reachable.contains(pb.roleId) {
                if min(rb.scope, pb.scope) >= scope { return .granted }
            }
        }
        return .noGrant
    }
}
