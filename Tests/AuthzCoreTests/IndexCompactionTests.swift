@testable import AuthzIndex
import AuthzModel
import XCTest

/// Role sets nobody holds any more are compacted away; decisions do not change.
final class IndexCompactionTests: XCTestCase {
    func describe(_ t: TenantIndex, _ users: [ID]) -> [String] {
        users.map { u in
            let (r, list) = t.permissions(of: u)
            return "\(r) " + list.map { "\($0.0)@\($0.1)" }.joined(separator: ",")
        }
    }

    func testChurnThenCompactionKeepsDecisionsAndShrinksThePool() {
        let c = TenantCompiler(tenantId: .random())
        let roles = (0..<12).map { _ in ID.random() }
        let perms = (0..<40).map { _ in ID.random() }
        for (i, p) in perms.enumerated() { c.upsertPermission(id: p, name: "svc.p\(i)", active: true) }
        for (i, r) in roles.enumerated() { c.upsertRole(id: r, active: true, inherits: i > 0 && i % 3 == 0 ? [roles[i - 1]] : []) }
        for (i, r) in roles.enumerated() {
            for k in 0..<5 { c.upsertPermissionBinding(id: .random(), role: r, permission: perms[(i * 7 + k) % perms.count], scope: Scope(rawValue: UInt8(k % 3))!, active: true) }
        }
        let users = (0..<300).map { _ in ID.random() }
        for u in users { c.upsertUser(id: u, active: true) }
        var rng = SystemRandomNumberGenerator()
        var held: [ID: [(role: ID, scope: Scope)]] = [:]
        var previous: [TenantIndex] = []
        for round in 0..<40 {
            for u in users where Bool.random(using: &rng) {
                let set = (0..<Int.random(in: 0...3, using: &rng)).map { _ in (role: roles.randomElement(using: &rng)!, scope: Scope.allCases.randomElement(using: &rng)!) }
                held[u] = set
                c.setUserBindings(user: u, bindings: set)
            }
            if round % 10 == 0 { previous.append(c.publish()) }
        }
        let before = c.publish()
        let poolBefore = c.poolCount
        XCTAssertGreaterThan(c.deadWords, 0)
        c.compactPool()
        let after = c.publish()
        XCTAssertLessThan(c.poolCount, poolBefore)
        XCTAssertEqual(c.deadWords, 0)
        XCTAssertEqual(describe(after, users), describe(before, users))
        for name in (0..<40).map({ "svc.p\($0)" }) {
            for s in Scope.allCases { XCTAssertEqual(after.users(with: name, scope: s), before.users(with: name, scope: s)) }
        }
        // Snapshots published before the compaction still answer from the old pool.
        XCTAssertEqual(describe(before, users), describe(before, users))
        XCTAssertFalse(previous.isEmpty)
        // More churn after compaction still works.
        for u in users.prefix(50) { c.setUserBindings(user: u, bindings: []) }
        let later = c.publish()
        for u in users.prefix(50) { XCTAssertEqual(later.permissions(of: u).1.count, 0) }
    }
}
