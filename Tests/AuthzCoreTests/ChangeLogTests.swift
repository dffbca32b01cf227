import AuthzModel
@testable import AuthzStore
import Foundation
import XCTest

/// The store's change log, which Watch reads: what a write records, paging, filters, the
/// retention bound and its floor, no secrets, and the migration that starts it.
final class ChangeLogTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = temporaryDirectory("authzd-changes") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    let t1 = ID.random(), t2 = ID.random()
    let all: (ID, EntityKind) -> Bool = { _, _ in true }

    func readAll(_ store: Store, after: UInt64, where matches: (ID, EntityKind) -> Bool = { _, _ in true }, limit: Int = 7) throws -> (changes: [Change], complete: UInt64) {
        var out: [Change] = []
        var position = ChangePosition.after(revision: after)
        var complete = after
        while true {
            let page = try store.read { try $0.changes(after: position, limit: limit, where: matches) }
            XCTAssertLessThanOrEqual(page.changes.count, limit)
            XCTAssertGreaterThanOrEqual(page.complete, complete, "complete never goes back")
            out += page.changes
            position = page.position
            complete = page.complete
            if page.atEnd { return (out, complete) }
        }
    }

    func testEveryWriteRecordsItsRecordsAfterTheChangeInOrder() throws {
        let store = try Store(directory: dir)
        let u = ID.random()
        let r1 = try store.write([.upsert(.tenant(Tenant(id: t1, name: "a"))), .upsert(.tenant(Tenant(id: t2, name: "b")))]).revision
        let r2 = try store.write([.upsert(.user(User(id: u, tenantId: t1, email: "a@x.test")))]).revision
        let r3 = try store.write([.deactivate(RecordRef(kind: .user, tenantId: t1, id: u))]).revision
        var users: [User] = []
        for i in 0..<20 { users.append(User(id: .random(), tenantId: i % 2 == 0 ? t1 : t2)) }
        let r4 = try store.write(users.map { .upsert(.user($0)) }).revision

        let (changes, complete) = try readAll(store, after: 0)
        XCTAssertEqual(complete, r4)
        XCTAssertEqual(changes.map(\.revision), [r1, r1, r2, r3] + Array(repeating: r4, count: 20))
        XCTAssertEqual(changes.map(\.entity.id), [t1, t2, u, u] + users.map(\.fields.id))
        guard case .user(let before) = changes[2].entity, case .user(let after) = changes[3].entity else { return XCTFail() }
        XCTAssertTrue(before.fields.isActive)
        XCTAssertEqual(before.email, "a@x.test")
        XCTAssertFalse(after.fields.isActive, "a soft delete is the record after it")

        // From the middle, and filtered by tenant and kind.
        XCTAssertEqual(try readAll(store, after: r2).changes.map(\.revision), [r3] + Array(repeating: r4, count: 20))
        let t2Users = try readAll(store, after: 0, where: { t, k in t == self.t2 && k == .user }).changes
        XCTAssertEqual(t2Users.map(\.entity.id), users.filter { $0.fields.tenantId == t2 }.map(\.fields.id))
        let tenants = try readAll(store, after: 0, where: { _, k in k == .tenant }).changes
        XCTAssertEqual(tenants.map(\.entity.id), [t1, t2], "a tenant record belongs to its own tenant")
        // Nothing after the head.
        let page = try store.read { try $0.changes(after: .after(revision: r4), limit: 10, where: all) }
        XCTAssertTrue(page.changes.isEmpty && page.atEnd)
        XCTAssertEqual(page.complete, r4)
        // A position ahead of the store (a watcher resuming on a daemon restored from an older
        // backup) is complete only through the store's own revision: a resume repeats, never skips.
        let ahead = try store.read { try $0.changes(after: .after(revision: r4 + 50), limit: 10, where: all) }
        XCTAssertTrue(ahead.changes.isEmpty)
        XCTAssertEqual(ahead.complete, r4)
    }

    func testAFailedWriteRecordsNothing() throws {
        let store = try Store(directory: dir)
        let r1 = try store.write([.upsert(.tenant(Tenant(id: t1, name: "a")))]).revision
        XCTAssertThrowsError(try store.write([.upsert(.user(User(id: .random(), tenantId: t1))), .upsert(.user(User(id: .random(), tenantId: ID.random())))]))
        let (changes, complete) = try readAll(store, after: 0)
        XCTAssertEqual(changes.count, 1)
        XCTAssertEqual(complete, r1)
    }

    func testCredentialSecretsNeverEnterTheLog() throws {
        let store = try Store(directory: dir)
        let u = ID.random(), c = ID.random()
        _ = try store.write([.upsert(.tenant(Tenant(id: t1, name: "a"))), .upsert(.user(User(id: u, tenantId: t1))),
                             .upsert(.platformCredential(PlatformCredential(id: c, tenantId: t1, ownerUserId: u, platform: "gmail", externalAccountId: "a@gmail.test",
                                                                            accessToken: "ya29.secret-access", refreshToken: "1//secret-refresh",
                                                                            tokenExpiresAt: 1, oauthScopes: ["mail"])))])
        let logged = try readAll(store, after: 0).changes
        guard case .platformCredential(let k) = logged.last?.entity else { return XCTFail() }
        XCTAssertEqual(k.accessToken, "")
        XCTAssertEqual(k.refreshToken, "")
        XCTAssertTrue(k.secretsRedacted)
        XCTAssertEqual(k.oauthScopes, ["mail"])
        // Not even sealed: the change log's bytes hold no ciphertext of the tokens.
        let raw = try store.read { r -> [UInt8] in
            var bytes: [UInt8] = []
            try r.txn.scan(store.changesDB, prefix: []) { _, v in bytes += Array(v); return true }
            return bytes
        }
        let stored = try store.read { try $0.txn.get(store.records, Store.recordKey(t1, .platformCredential, c)) { Array($0) } }!
        XCTAssertGreaterThan(stored.count, raw.count / 3, "the record itself holds the sealed tokens")
        XCTAssertFalse(String(decoding: raw, as: UTF8.self).contains("secret"))
    }

    func testRetentionDropsTheOldestAndRaisesTheFloor() throws {
        var o = StoreOptions()
        o.changeRetention = 10
        let store = try Store(directory: dir, options: o)
        _ = try store.write([.upsert(.tenant(Tenant(id: t1, name: "a")))])
        var revisions: [UInt64] = []
        for _ in 0..<6 {
            revisions.append(try store.write([.upsert(.user(User(id: .random(), tenantId: t1))), .upsert(.user(User(id: .random(), tenantId: t1)))]).revision)
        }
        // 13 changes recorded, 10 kept: revision 1 and the first of revisions[0] are gone.
        let floor = try store.read { try $0.changeFloor() }
        XCTAssertEqual(floor, revisions[0])
        XCTAssertThrowsError(try store.read { try $0.changes(after: .after(revision: floor - 1), limit: 10, where: all) }) { e in
            XCTAssertEqual((e as? AuthzError)?.code, .outOfRange)
            XCTAssertEqual((e as? AuthzError)?.field, "watch.from_revision")
        }
        let (changes, _) = try readAll(store, after: floor)
        XCTAssertEqual(changes.map(\.revision), Array(revisions.dropFirst().flatMap { [$0, $0] }))
    }

    func testRetentionZeroRecordsNothingAndRefusesReaders() throws {
        var o = StoreOptions()
        o.changeRetention = 0
        let store = try Store(directory: dir, options: o)
        _ = try store.write([.upsert(.tenant(Tenant(id: t1, name: "a")))])
        XCTAssertEqual(try store.read { try $0.txn.count(store.changesDB) }, 0)
        XCTAssertThrowsError(try store.read { try $0.changes(after: .after(revision: 0), limit: 10, where: all) }) { e in
            XCTAssertEqual((e as? AuthzError)?.code, .failedPrecondition)
        }
    }

    func testFormat2DirectoryStartsItsLogAtItsRevision() throws {
        let revision: UInt64
        do {
            let store = try Store(directory: dir)
            _ = try store.write([.upsert(.tenant(Tenant(id: t1, name: "a")))])
            revision = try store.write([.upsert(.user(User(id: .random(), tenantId: t1)))]).revision
            // As a format-2 build left it: no change log, no floor.
            let txn = try LMDBTransaction(env: store.env, readOnly: false)
            var keys: [[UInt8]] = []
            try txn.scan(store.changesDB, prefix: []) { key, _ in
                keys.append(Array(key))
                return true
            }
            for k in keys { try txn.delete(store.changesDB, k) }
            try txn.delete(store.meta, Array("changes.floor".utf8))
            var two = UInt32(2).littleEndian
            try txn.put(store.meta, Array("format".utf8), withUnsafeBytes(of: &two) { Array($0) })
            try txn.commit()
        }
        let store = try Store(directory: dir)
        XCTAssertEqual(try store.format(), Store.formatVersion)
        XCTAssertEqual(try store.read { try $0.changeFloor() }, revision)
        XCTAssertThrowsError(try store.read { try $0.changes(after: .after(revision: 0), limit: 10, where: all) })
        let next = try store.write([.upsert(.user(User(id: .random(), tenantId: t1)))]).revision
        XCTAssertEqual(try readAll(store, after: revision).changes.map(\.revision), [next])
    }

    func testAReaderInsideARevisionThatPruningReachedIsOutOfRange() throws {
        var o = StoreOptions()
        o.changeRetention = 10
        let store = try Store(directory: dir, options: o)
        _ = try store.write([.upsert(.tenant(Tenant(id: t1, name: "a")))])
        let big = try store.write((0..<8).map { _ in .upsert(.user(User(id: .random(), tenantId: t1))) }).revision
        // A reader part-way through the big revision.
        let page = try store.read { try $0.changes(after: .after(revision: big - 1), limit: 3, where: all) }
        XCTAssertFalse(page.atEnd)
        // Later writes prune the big revision's first entries: the floor is now `big`.
        _ = try store.write((0..<4).map { _ in .upsert(.user(User(id: .random(), tenantId: t1))) })
        XCTAssertEqual(try store.read { try $0.changeFloor() }, big)
        XCTAssertThrowsError(try store.read { try $0.changes(after: page.position, limit: 3, where: all) }) { e in
            XCTAssertEqual((e as? AuthzError)?.code, .outOfRange, "a reader inside a pruned revision could miss entries")
        }
    }

    func testARepointedBindingLeavesABeforeImageThatWatchersDoNotSee() throws {
        let store = try Store(directory: dir)
        let u1 = ID.random(), u2 = ID.random(), r1 = ID.random(), r2 = ID.random(), p = ID.random(), rb = ID.random(), pb = ID.random()
        _ = try store.write([.upsert(.tenant(Tenant(id: t1, name: "a"))), .upsert(.user(User(id: u1, tenantId: t1))), .upsert(.user(User(id: u2, tenantId: t1))),
                             .upsert(.role(Role(id: r1, tenantId: t1, name: "r1"))), .upsert(.role(Role(id: r2, tenantId: t1, name: "r2"))),
                             .upsert(.permission(Permission(id: p, tenantId: t1, name: "a.b", service: "a"))),
                             .upsert(.roleBinding(RoleBinding(id: rb, tenantId: t1, userId: u1, roleId: r1, scope: .tenant))),
                             .upsert(.permissionBinding(PermissionBinding(id: pb, tenantId: t1, roleId: r1, permissionId: p, scope: .tenant)))])
        let moved = try store.write([.upsert(.roleBinding(RoleBinding(id: rb, tenantId: t1, userId: u2, roleId: r1, scope: .tenant))),
                                     .upsert(.permissionBinding(PermissionBinding(id: pb, tenantId: t1, roleId: r2, permissionId: p, scope: .tenant))),
                                     .upsert(.user(User(id: u1, tenantId: t1, email: "not@a.binding")))]).revision
        let plain = try store.read { try $0.changes(after: .after(revision: moved - 1), limit: 100, where: all) }
        XCTAssertEqual(plain.changes.count, 3)
        XCTAssertTrue(plain.beforeImages.isEmpty)
        let withImages = try store.read { try $0.changes(after: .after(revision: moved - 1), limit: 100, includeBeforeImages: true, where: all) }
        XCTAssertEqual(withImages.changes, plain.changes)
        XCTAssertEqual(withImages.beforeImages.count, 2, "the two re-pointed bindings, not the user")
        guard case .roleBinding(let oldRB) = withImages.beforeImages[0].entity, case .permissionBinding(let oldPB) = withImages.beforeImages[1].entity else { return XCTFail() }
        XCTAssertEqual(oldRB.userId, u1)
        XCTAssertEqual(oldPB.roleId, r1)
        XCTAssertTrue(withImages.beforeImages.allSatisfy { $0.revision == moved })
    }
}
