import AuthzEngine
import AuthzModel
import Logging
import NIOCore
import XCTest
@testable import AuthzServer

/// Idle chunked imports and paged exports are discarded by the periodic sweep
/// (`Dispatcher.sweepSessions`), not only when another import or export arrives to notice
/// them: a caller that went away frees its staged records and its LMDB snapshot on time.
final class SessionSweepTests: XCTestCase {
    func testIdleSessionsAreSweptAndBusyOnesKept() throws {
        let dir = temporaryDirectory("authzd-sweep")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = EngineOptions()
        options.store.sync = .nosync
        let engine = try Engine(directory: dir + "/data", options: options)
        let t = ID.random()
        try engine.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: .random(), tenantId: t)))])
        let d = try Dispatcher(engine: engine, config: ServerConfig(), logger: Logger(label: "test"))
        defer { d.shutdown() }

        // A chunked import with its first chunk staged.
        let line = BulkFormat.encode(.user(User(id: .random(), tenantId: t))) + "\n"
        _ = try d.imports.chunk(session: .random(), bytes: Array(line.utf8), firstLine: 1, more: true, principal: .superuser, peer: .unknown, on: d)
        XCTAssertEqual(d.imports.count, 1)
        // A paged export after its first page.
        guard case .exportPage(_, _, let token) = try d.exports.page(tenant: t, includeSecrets: false, pageSize: 1, token: "", principal: .superuser, on: d) else {
            return XCTFail("no export page")
        }
        XCTAssertFalse(token.isEmpty)

        // Not idle yet: both stay.
        d.imports.sweep(idle: .seconds(60))
        d.exports.sweep(idle: .seconds(60))
        XCTAssertEqual(d.imports.count, 1)
        XCTAssertNoThrow(try d.exports.page(tenant: t, includeSecrets: false, pageSize: 1, token: token, principal: .superuser, on: d))

        // Idle past the timeout: the import is discarded, the export closed.
        Thread.sleep(forTimeInterval: 0.01)
        d.imports.sweep(idle: .zero)
        d.exports.sweep(idle: .zero)
        XCTAssertEqual(d.imports.count, 0)
        let next = token.split(separator: ".")[0] + ".2"
        XCTAssertThrowsError(try d.exports.page(tenant: t, includeSecrets: false, pageSize: 1, token: String(next), principal: .superuser, on: d)) { e in
            XCTAssertEqual((e as? AuthzError)?.code, .failedPrecondition)
        }
    }
}
