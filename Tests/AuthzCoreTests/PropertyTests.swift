import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzStore
import XCTest

/// The compiled index against the naive reference evaluator, on many random tenants with
/// random writes interleaved. A divergence is shrunk to a minimal list of write batches and
/// printed with its seed.
final class PropertyTests: XCTestCase {
    struct World {
        var tenant: ID
        var users: [ID] = []
        var roles: [ID] = []
        var perms: [ID] = []
        var permNames: [String] = []
        var roleBindings: [ID] = []
        var permBindings: [ID] = []
        var reference = ReferenceEvaluator()
    }

    static func fastEngine(_ dir: String) throws -> Engine {
        var o = EngineOptions()
        o.store.sync = .nosync
        return try Engine(directory: dir, options: o)
    }

    /// Random batch generator over a world's current ids.
    static func randomBatch(_ w: World, _ rng: inout SplitMix) -> [WriteOp] {
        func pick<T>(_ a: [T]) -> T? { a.isEmpty ? nil : a[Int(rng.next() % UInt64(a.count))] }
        func scope() -> Scope { Scope(rawValue: UInt8(rng.next() % 3))! }
        func scopes() -> ScopeSet { rng.next() % 3 == 0 ? ScopeSet(mask: UInt8(1 + rng.next() % 7)) : .all }
        var ops: [WriteOp] = []
        for _ in 0..<(1 + Int(rng.next() % 3)) {
            switch rng.next() % 10 {
            case 0, 1, 2:
                if let u = pick(w.users), let r = pick(w.roles) {
                    let id = rng.next() % 3 == 0 ? (pick(w.roleBindings) ?? .random(using: &rng)) : .random(using: &rng)
                    ops.append(.upsert(.roleBinding(RoleBinding(id: id, tenantId: w.tenant, userId: u, roleId: r, scope: scope()))))
                }
            case 3, 4:
                if let r = pick(w.roles), let p = pick(w.perms) {
                    let id = rng.next() % 3 == 0 ? (pick(w.permBindings) ?? .random(using: &rng)) : .random(using: &rng)
                    ops.append(.upsert(.permissionBinding(PermissionBinding(id: id, tenantId: w.tenant, roleId: r, permissionId: p, scope: scope()))))
                }
            case 5:
                // Re-shape a role: new inherits (cycles get rejected) and maybe narrower scopes.
                if let r = pick(w.roles) {
                    var inherits: [ID] = []
                    for other in w.roles where other != r && rng.next() % 3 == 0 { inherits.append(other) }
                    let i = w.roles.firstIndex(of: r)!
                    ops.append(.upsert(.role(Role(id: r, tenantId: w.tenant, name: "role\(i)", scopes: scopes(), inherits: inherits))))
                }
            case 6, 7, 8:
                let all: [(EntityKind, [ID])] = [(.user, w.users), (.role, w.roles), (.permission, w.perms),
                                                  (.roleBinding, w.roleBindings), (.permissionBinding, w.permBindings), (.tenant, [w.tenant])]
                let (kind, ids) = all[Int(rng.next() % UInt64(rng.next() % 20 == 0 ? 6 : 5))]
                if let id = pick(ids) {
                    let ref = RecordRef(kind: kind, tenantId: w.tenant, id: id)
                    ops.append(rng.next() % 2 == 0 ? .deactivate(ref) : .activate(ref))
                }
            default:
                if let p = pick(w.perms) {
                    let i = w.perms.firstIndex(of: p)!
                    ops.append(.upsert(.permission(Permission(id: p, tenantId: w.tenant, name: w.permNames[i], service: "svc", scopes: scopes()))))
                }
            }
        }
        return ops
    }

    static func initialBatch(_ rng: inout SplitMix, index: Int) -> (World, [WriteOp]) {
        let t = ID.random(using: &rng)
        var w = World(tenant: t)
        var ops: [WriteOp] = [.upsert(.tenant(Tenant(id: t, name: "tenant\(index)")))]
        for _ in 0..<(1 + Int(rng.next() % 6)) {
            let u = ID.random(using: &rng)
            w.users.append(u)
            ops.append(.upsert(.user(User(id: u, tenantId: t))))
        }
        for i in 0..<(1 + Int(rng.next() % 6)) {
            let r = ID.random(using: &rng)
            // Inherit only from earlier roles: acyclic to start with.
            let inherits = w.roles.filter { _ in rng.next() % 3 == 0 }
            w.roles.append(r)
            ops.append(.upsert(.role(Role(id: r, tenantId: t, name: "role\(i)", inherits: inherits))))
        }
        for i in 0..<(1 + Int(rng.next() % 5)) {
            let p = ID.random(using: &rng)
            w.perms.append(p)
            w.permNames.append("svc.perm\(i)")
            ops.append(.upsert(.permission(Permission(id: p, tenantId: t, name: "svc.perm\(i)", service: "svc"))))
        }
        return (w, ops)
    }

    /// Applies a batch to the engine and, if it was accepted, to the world's reference.
    static func apply(_ ops: [WriteOp], engine: Engine, world w: inout World) -> Bool {
        guard (try? engine.write(ops)) != nil else { return false }
        for op in ops {
            switch op {
            case .upsertIfNewer(let e) where (w.reference.records[e.id]?.fields.updatedAt ?? Int64.min) >= e.fields.updatedAt:
                break  // the stored record is as new: nothing changes
            case .upsert(let e), .upsertIfNewer(let e):
                if let old = w.reference.records[e.id] {
                    var e2 = e
                    e2.fields.createdAt = old.fields.createdAt
                    w.reference.apply(e2)
                } else {
                    w.reference.apply(e)
                }
                if case .roleBinding = e, !w.roleBindings.contains(e.id) { w.roleBindings.append(e.id) }
                if case .permissionBinding = e, !w.permBindings.contains(e.id) { w.permBindings.append(e.id) }
            case .deactivate(let ref), .activate(let ref):
                if var e = w.reference.records[ref.id] {
                    if case .activate = op { e.fields.isActive = true } else { e.fields.isActive = false }
                    w.reference.apply(e)
                }
            }
        }
        return true
    }

    /// The first (user, permission, scope) where index and reference disagree.
    static func divergence(_ engine: Engine, _ w: World) -> String? {
        let names = w.permNames + ["svc.unknown"]
        for u in w.users + [ID(hi: 1, lo: 1)] {
            for p in names {
                for s in Scope.allCases {
                    let got = (try? engine.check(tenant: w.tenant, user: u, permission: p, scope: s))?.reason
                    let want = w.reference.check(tenant: w.tenant, user: u, permission: p, scope: s)
                    if got != want {
                        return "check(user \(w.users.firstIndex(of: u).map { "u\($0)" } ?? "unknown"), \(p), \(s)): index \(got.map(\.name) ?? "error"), reference \(want.name)"
                    }
                }
            }
        }
        return nil
    }

    func testIndexMatchesReferenceOnRandomTenants() throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["AUTHZ_PROPERTY_SEED"] ?? "") ?? 20261129
        let tenants = Int(ProcessInfo.processInfo.environment["AUTHZ_PROPERTY_TENANTS"] ?? "") ?? 1000
        let steps = 12
        var rng = SplitMix(seed: seed)
        let dir = temporaryDirectory("authzd-prop")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let engine = try Self.fastEngine(dir)
        var worlds: [World] = []
        var history: [[[WriteOp]]] = []
        for i in 0..<tenants {
            var (w, ops) = Self.initialBatch(&rng, index: i)
            XCTAssertTrue(Self.apply(ops, engine: engine, world: &w))
            worlds.append(w)
            history.append([ops])
        }
        // Interleave: each round writes one random batch to each tenant in turn.
        for step in 0..<steps {
            for i in 0..<tenants {
                let ops = Self.randomBatch(worlds[i], &rng)
                if ops.isEmpty { continue }
                if Self.apply(ops, engine: engine, world: &worlds[i]) { history[i].append(ops) }
                if let d = Self.divergence(engine, worlds[i]) {
                    let minimal = try shrink(history[i])
                    XCTFail("seed \(seed), tenant \(i), step \(step): \(d)\nminimal reproduction (\(minimal.count) batches):\n" +
                            minimal.enumerated().map { "  batch \($0):\n" + $1.map(Self.describe).joined(separator: "\n") }.joined(separator: "\n"))
                    return
                }
            }
        }
        // The index rebuilt from LMDB decides like the live one.
        XCTAssertEqual(try engine.verifyIndex(), [])
    }

    static func describe(_ op: WriteOp) -> String {
        switch op {
        case .upsert(let e): return "    upsert " + BulkFormat.encode(e)
        case .upsertIfNewer(let e): return "    upsert_if_newer " + BulkFormat.encode(e)
        case .deactivate(let r): return "    deactivate \(r)"
        case .activate(let r): return "    activate \(r)"
        }
    }

    /// Greedy delta debugging: drops batches while the divergence persists.
    func shrink(_ batches: [[WriteOp]]) throws -> [[WriteOp]] {
        func fails(_ candidate: [[WriteOp]]) throws -> Bool {
            let dir = temporaryDirectory("authzd-shrink")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let engine = try Self.fastEngine(dir)
            guard case .upsert(.tenant(let t)) = candidate.first?.first else { return false }
            var w = World(tenant: t.fields.id)
            for b in candidate {
                for op in b {
                    if case .upsert(let e) = op {
                        switch e {
                        case .user: if !w.users.contains(e.id) { w.users.append(e.id) }
                        case .permission(let p): if !w.perms.contains(e.id) { w.perms.append(e.id); w.permNames.append(p.name) }
                        default: break
                        }
                    }
                }
                _ = Self.apply(b, engine: engine, world: &w)
            }
            return Self.divergence(engine, w) != nil
        }
        var current = batches
        var i = 1
        while i < current.count {
            var candidate = current
            candidate.remove(at: i)
            if try fails(candidate) { current = candidate } else { i += 1 }
        }
        return current
    }
}
