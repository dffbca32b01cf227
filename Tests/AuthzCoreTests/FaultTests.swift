@testable import AuthzEngine
import AuthzModel
import AuthzStore
import Foundation
import XCTest

/// LMDB faults: a full disk and exhausted reader slots.
final class FaultTests: XCTestCase {
    func testFullDiskFailsWritesCleanlyAndRecovers() throws {
        let mountPoint = temporaryDirectory("authzd-full")
        defer { try? FileManager.default.removeItem(atPath: mountPoint) }
        guard getuid() == 0, shell("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint]) == 0 else {
            throw XCTSkip("needs root to mount a small tmpfs")
        }
        defer { _ = shell("/bin/umount", [mountPoint]) }
        var o = EngineOptions()
        o.store.mapSize = 64 << 20
        let engine = try Engine(directory: mountPoint + "/data", options: o)
        let t = ID.random(), u = ID.random(), r = ID.random(), p = ID.random()
        try engine.write([.upsert(.tenant(Tenant(id: t, name: "full"))), .upsert(.user(User(id: u, tenantId: t))), .upsert(.role(Role(id: r, tenantId: t, name: "r"))),
                          .upsert(.permission(Permission(id: p, tenantId: t, name: "core.disk.full", service: "core"))),
                          .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .global))),
                          .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .tenant)))])
        var failure: AuthzError?
        var acknowledged = 0
        for _ in 0..<400 {
            let ops: [WriteOp] = (0..<100).map { _ in .upsert(.user(User(id: .random(), tenantId: t, displayName: String(repeating: "x", count: 200)))) }
            do {
                try engine.write(ops)
                acknowledged += 100
            } catch let e as AuthzError {
                failure = e
                break
            }
        }
        XCTAssertEqual(failure?.code, .resourceExhausted, "\(String(describing: failure))")
        let revisionAtFailure = engine.revision
        // Checks keep answering.
        XCTAssertTrue(try engine.check(tenant: t, user: u, permission: "core.disk.full", scope: .tenant).allowed)
        // Space returns: writes work again.
        XCTAssertEqual(shell("/bin/mount", ["-o", "remount,size=64m", mountPoint]), 0)
        let rev = try engine.write([.upsert(.user(User(id: .random(), tenantId: t)))])
        XCTAssertEqual(rev, revisionAtFailure + 1)
        XCTAssertEqual(try engine.verifyIndex(), [])
        XCTAssertEqual(try engine.store.read { try $0.counts() }.byKind[.user], acknowledged + 2)
    }

    func testExhaustedReaderSlotsGiveAClearErrorNotAHang() throws {
        let dir = temporaryDirectory("authzd-readers")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = StoreOptions()
        o.maxReaders = 2
        let store = try Store(directory: dir, options: o)
        var inner: AuthzError?
        try store.read { _ in
            try store.read { _ in
                do {
                    try store.read { _ in }
                } catch let e as AuthzError {
                    inner = e
                }
            }
        }
        XCTAssertEqual(inner?.code, .unavailable)
        XCTAssertTrue(inner?.message.contains("reader slots") ?? false, "\(String(describing: inner))")
        // Slots come back.
        XCTAssertNoThrow(try store.read { _ in })
    }

    @discardableResult
    func shell(_ path: String, _ args: [String]) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return -1 }
        p.waitUntilExit()
        return p.terminationStatus
    }
}
