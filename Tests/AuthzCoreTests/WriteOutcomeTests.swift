import AuthzModel
import AuthzStore
import Foundation
import XCTest

/// `WriteOutcome.roleBindings`: what a write hands the engine so that it never re-reads LMDB.
/// For every user whose role bindings the write touched, the complete list of active bindings
/// as the write leaves them (a binding moved between users counts for both).
final class WriteOutcomeTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = temporaryDirectory("authzd-outcome") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testRoleBindingsOfEveryTouchedUserAsTheWriteLeavesThem() throws {
        let store = try Store(directory: dir)
        let t = ID.random(), alice = ID.random(), bob = ID.random(), carol = ID.random()
        let reader = ID.random(), writer = ID.random()
        let b1 = ID.random(), b2 = ID.random(), b3 = ID.random()
        func binding(_ id: ID, _ user: ID, _ role: ID, _ scope: Scope, active: Bool = true) -> WriteOp {
            var b = RoleBinding(id: id, tenantId: t, userId: user, roleId: role, scope: scope)
            b.fields.isActive = active
            return .upsert(.roleBinding(b))
        }
        // Created users: their bindings come from the batch itself.
        let first = try store.write([
            .upsert(.tenant(Tenant(id: t, name: "acme"))),
            .upsert(.user(User(id: alice, tenantId: t))), .upsert(.user(User(id: bob, tenantId: t))),
            .upsert(.user(User(id: carol, tenantId: t))),
            .upsert(.role(Role(id: reader, tenantId: t, name: "reader"))), .upsert(.role(Role(id: writer, tenantId: t, name: "writer"))),
            binding(b1, alice, reader, .tenant), binding(b2, alice, writer, .global), binding(b3, bob, reader, .tenant),
        ])
        XCTAssertEqual(Set(first.roleBindings.keys), [t])
        XCTAssertEqual(Set(first.roleBindings[t]!.keys), [alice, bob], "carol has no binding: not touched")
        XCTAssertEqual(Set(first.roleBindings[t]![alice]!.map { "\($0.role)@\($0.scope)" }),
                       ["\(reader)@\(Scope.tenant)", "\(writer)@\(Scope.global)"])

        // Existing users: read in the write's transaction. b1 moves from alice to carol, b3 is
        // deactivated: alice keeps b2 only, bob has none left, carol has b1.
        let second = try store.write([binding(b1, carol, reader, .tenant), binding(b3, bob, reader, .tenant, active: false)])
        let lists = try XCTUnwrap(second.roleBindings[t])
        XCTAssertEqual(Set(lists.keys), [alice, bob, carol])
        XCTAssertEqual(lists[alice]!.map(\.role), [writer])
        XCTAssertEqual(lists[bob]!.count, 0)
        XCTAssertEqual(lists[carol]!.map(\.role), [reader])

        // A write touching no role binding hands over none.
        let third = try store.write([.upsert(.user(User(id: ID.random(), tenantId: t)))])
        XCTAssertTrue(third.roleBindings.isEmpty)
    }
}
