@testable import AuthzStore
import Foundation
import XCTest

final class DataDirectoryTests: XCTestCase {
    /// `--data-dir a/b/c` works when `a` does not exist: every missing level is made 0700.
    func testMissingParentsAreCreatedPrivate() throws {
        let root = temporaryDirectory("datadir")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let dir = root + "/a/b/c"
        var o = StoreOptions()
        o.sync = .nosync
        _ = try Store(directory: dir, options: o)
        for p in [root + "/a", root + "/a/b", dir] {
            let mode = try FileManager.default.attributesOfItem(atPath: p)[.posixPermissions] as? Int
            XCTAssertEqual(mode, 0o700, p)
        }
    }
}

import AuthzEngine
import AuthzModel

/// Errors never disclose what another tenant holds (hardening item 13).
final class CrossTenantLeakTests: XCTestCase {
    func testAnotherTenantsIdsAnswerLikeMissingOnes() throws {
        let dir = temporaryDirectory("leak")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = EngineOptions()
        o.store.sync = .nosync
        let e = try Engine(directory: dir, options: o)
        let a = ID.random(), b = ID.random(), secretRole = ID.random()
        try e.write([.upsert(.tenant(Tenant(id: a, name: "a"))), .upsert(.tenant(Tenant(id: b, name: "b"))),
                      .upsert(.role(Role(id: secretRole, tenantId: a, name: "hidden")))])
        func failure(_ ops: [WriteOp]) -> AuthzError? {
            do { try e.write(ops) } catch let x as AuthzError { return x } catch { return nil }
            return nil
        }
        // Deactivating another tenant's record: the same NOT_FOUND as for an id nobody holds.
        let other = failure([.deactivate(RecordRef(kind: .role, tenantId: b, id: secretRole))])
        let nobody = ID.random()
        let missing = failure([.deactivate(RecordRef(kind: .role, tenantId: b, id: nobody))])
        XCTAssertEqual(other?.code, .notFound)
        XCTAssertEqual(other?.code, missing?.code)
        XCTAssertEqual(other?.message.replacingOccurrences(of: secretRole.description, with: "X"),
                       missing?.message.replacingOccurrences(of: nobody.description, with: "X"))
        // Reusing the id for another kind in tenant b: unavailable, without kind or tenant.
        let reuse = failure([.upsert(.user(User(id: secretRole, tenantId: b)))])
        XCTAssertEqual(reuse?.code, .alreadyExists)
        XCTAssertFalse(reuse?.message.contains("role") ?? true, reuse?.message ?? "")
        XCTAssertFalse(reuse?.message.contains(a.description) ?? true)
    }
}
