import AuthzClient
import AuthzEngine
import AuthzModel
import AuthzWire
import Foundation
import NIOConcurrencyHelpers
import XCTest

final class BackupTests: XCTestCase {
    func run(_ args: [String]) throws -> (Int32, String) {
        try runProcess(productsDirectory().appendingPathComponent("authzd").path, args, mergeStderr: false)
    }

    /// A backup taken under write load restores to a consistent state at an acknowledged
    /// revision: exactly the writes acknowledged at or below it.
    func testBackupUnderWriteLoadRestoresConsistently() throws {
        let daemon = try DaemonProcess(tcp: false)
        defer { daemon.stop(); daemon.remove() }
        let client = daemon.client(connections: 2)
        defer { client.close() }
        let t = ID.random()
        _ = try client.send(.write([.upsert(.tenant(Tenant(id: t, name: "b")))])).wait()
        let acked = NIOLockedValueBox<[(UInt64, ID)]>([])
        let stop = Date().addingTimeInterval(1.5)
        let group = DispatchGroup()
        for _ in 0..<2 {
            DispatchQueue.global().async(group: group) {
                while Date() < stop {
                    let u = ID.random()
                    guard case .write(let rev)? = try? client.send(.write([.upsert(.user(User(id: u, tenantId: t)))])).wait() else { continue }
                    acked.withLockedValue { $0.append((rev, u)) }
                }
            }
        }
        Thread.sleep(forTimeInterval: 0.5)
        let dest = daemon.dir + "/backup"
        let (rc, out) = try run(["backup", "--data-dir", daemon.dir + "/data", dest])
        XCTAssertEqual(rc, 0, out)
        group.wait()
        let restored = daemon.dir + "/restored"
        let (rc2, out2) = try run(["restore", "--data-dir", restored, dest])
        XCTAssertEqual(rc2, 0, out2)
        let engine = try Engine(directory: restored)
        let r = engine.revision
        let all = acked.withLockedValue { $0 }
        XCTAssertTrue(all.contains { $0.0 == r } || r == 1, "restored revision \(r) was never acknowledged")
        XCTAssertTrue(all.contains { $0.0 > r }, "the backup should have been taken mid-load")
        for (rev, u) in all {
            let d = try engine.check(tenant: t, user: u, permission: "a.b", scope: .self)
            XCTAssertEqual(d.reason == .unknownUser, rev > r, "write at revision \(rev) vs backup at \(r)")
        }
        XCTAssertEqual(try engine.verifyIndex(), [])
        // Restoring over data is refused.
        let (rc3, _) = try run(["restore", "--data-dir", restored, dest])
        XCTAssertNotEqual(rc3, 0)
    }
}
