@testable import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzStore
import XCTest

final class PersistenceTests: XCTestCase {
    func testReopenRebuildsTheSameIndex() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix(seed: 7)
        var before: [String: String] = [:]
        var worlds: [PropertyTests.World] = []
        do {
            let engine = try PropertyTests.fastEngine(dir)
            for i in 0..<50 {
                var (w, ops) = PropertyTests.initialBatch(&rng, index: i)
                _ = PropertyTests.apply(ops, engine: engine, world: &w)
                for _ in 0..<10 { _ = PropertyTests.apply(PropertyTests.randomBatch(w, &rng), engine: engine, world: &w) }
                worlds.append(w)
            }
            for w in worlds {
                for u in w.users {
                    let p = try engine.permissions(tenant: w.tenant, user: u)
                    before["\(w.tenant)/\(u)"] = "\(p.reason) \(p.permissions.map { "\($0.0)@\($0.1)" })"
                }
            }
            XCTAssertEqual(try engine.verifyIndex(), [])
        }
        let reopened = try Engine(directory: dir)
        for w in worlds {
            for u in w.users {
                let p = try reopened.permissions(tenant: w.tenant, user: u)
                XCTAssertEqual(before["\(w.tenant)/\(u)"], "\(p.reason) \(p.permissions.map { "\($0.0)@\($0.1)" })")
            }
            XCTAssertNil(PropertyTests.divergence(reopened, w))
        }
    }

    func testSecondOpenOfTheSameDirectoryIsRefused() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try Engine(directory: dir)
        XCTAssertThrowsError(try Engine(directory: dir)) { e in
            XCTAssertEqual((e as! AuthzError).code, .failedPrecondition)
            XCTAssertTrue((e as! AuthzError).message.contains("in use"))
        }
        _ = first
    }

    func testForeignDataFileIsRefused() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(repeating: 0x41, count: 64 * 1024).write(to: URL(fileURLWithPath: dir + "/data.mdb"))
        XCTAssertThrowsError(try Engine(directory: dir)) { e in
            XCTAssertEqual((e as! AuthzError).code, .dataLoss, "\(e)")
        }
        // Nothing was reset.
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/data.mdb")).count, 64 * 1024)
    }

    func testMapGrowsWhenFull() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = EngineOptions()
        o.store.mapSize = 256 * 1024
        o.store.sync = .nosync
        let engine = try Engine(directory: dir, options: o)
        let b = TenantBuilder()
        try b.commit(engine)
        for chunk in 0..<20 {
            for i in 0..<500 { b.user("u\(chunk)-\(i)") }
            try b.commit(engine)
        }
        XCTAssertEqual(engine.snapshot.tenant(b.tenant)?.userCount, 10_000)
        XCTAssertGreaterThan(engine.store.mapUsage().size, 256 * 1024)
    }

    func testMapCeilingGivesResourceExhaustedAndChecksKeepAnswering() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = EngineOptions()
        o.store.mapSize = 256 * 1024
        o.store.maxMapSize = 512 * 1024
        o.store.sync = .nosync
        let engine = try Engine(directory: dir, options: o)
        let b = TenantBuilder()
        b.user("ana"); b.role("r"); b.permission("a.b"); b.grant("r", "a.b", .tenant); b.bind("ana", "r", .tenant)
        try b.commit(engine)
        var failure: AuthzError?
        for chunk in 0..<100 {
            for i in 0..<500 { b.user("u\(chunk)-\(i)") }
            do { try b.commit(engine) } catch let e as AuthzError { failure = e; break }
        }
        XCTAssertEqual(failure?.code, .resourceExhausted)
        XCTAssertEqual(try engine.check(tenant: b.tenant, user: b.id("ana"), permission: "a.b", scope: .tenant).reason, .granted)
    }

    func testImportExportRoundTripAndBadLines() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let engine = try Engine(directory: dir)
        let t = ID.random(), u = ID.random(), r = ID.random(), p = ID.random()
        // Lines out of dependency order on purpose.
        let file = """
        {"kind":"role_binding","id":"\(ID.random())","tenant_id":"\(t)","user_id":"\(u)","role_id":"\(r)","scope":"tenant"}
        {"kind":"permission_binding","id":"\(ID.random())","tenant_id":"\(t)","role_id":"\(r)","permission_id":"\(p)","scope":"global"}
        {"kind":"user","id":"\(u)","tenant_id":"\(t)","email":"ana@acme.test","metadata":{"gmail":{"label":"x"}}}
        {"kind":"role","id":"\(r)","tenant_id":"\(t)","name":"editor","inherits":[]}
        {"kind":"permission","id":"\(p)","tenant_id":"\(t)","name":"gmail.messages.read","service":"gmail"}
        {"kind":"tenant","id":"\(t)","name":"acme"}

        """
        let (rev1, n) = try engine.importJSONL(Array(file.utf8))
        XCTAssertEqual(n, 6)
        XCTAssertTrue(try engine.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant).allowed)
        // Importing the same file again leaves the same state.
        _ = try engine.importJSONL(Array(file.utf8))
        let (exported, _) = try engine.exportJSONL()
        let lines = String(decoding: exported, as: UTF8.self).split(separator: "\n")
        XCTAssertEqual(lines.count, 6)
        XCTAssertTrue(lines[0].contains("\"kind\":\"tenant\""))
        // Export → import into a fresh store round-trips.
        let dir2 = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir2) }
        let engine2 = try Engine(directory: dir2)
        _ = try engine2.importJSONL(exported)
        let (again, _) = try engine2.exportJSONL()
        func strip(_ b: [UInt8]) -> [String] {
            String(decoding: b, as: UTF8.self).split(separator: "\n").map {
                $0.replacingOccurrences(of: #""(created|updated)_at":"[^"]*","#, with: "", options: .regularExpression)
            }
        }
        XCTAssertEqual(strip(again), strip(exported))
        // A bad line changes nothing and is reported by number.
        let bad = file + "{\"kind\":\"user\",\"id\":\"not-a-uuid\",\"tenant_id\":\"\(t)\"}\n"
        XCTAssertThrowsError(try engine.importJSONL(Array(bad.utf8))) { e in
            let err = e as! AuthzError
            XCTAssertEqual(err.code, .invalidArgument)
            XCTAssertTrue(err.message.hasPrefix("line 7: user.id must be a UUID"), err.message)
        }
        let dangling = "{\"kind\":\"role_binding\",\"id\":\"\(ID.random())\",\"tenant_id\":\"\(t)\",\"user_id\":\"\(ID.random())\",\"role_id\":\"\(r)\",\"scope\":\"self\"}\n" + file
        XCTAssertThrowsError(try engine.importJSONL(Array(dangling.utf8))) { e in
            let err = e as! AuthzError
            XCTAssertEqual(err.code, .notFound)
            XCTAssertTrue(err.message.hasPrefix("line 1: "), err.message)
        }
        XCTAssertEqual(engine.revision, rev1 + 1)
    }
}
