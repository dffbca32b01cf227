import AuthzClient
import AuthzModel
import Foundation
import XCTest

/// authzctl's human output as golden text (tables, the check sentence needs a terminal and is
/// not tested here), and its JSON Lines when piped.
final class CLIOutputTests: XCTestCase {
    func testTablesAndJSONLines() async throws {
        let daemon = try DaemonProcess(tcp: false)
        defer { daemon.stop(); daemon.remove() }
        let t = ID("7d0c2c1e-0b1a-4c3e-9a61-6f0f0e3b2a10")!, u = ID("a1b2c3d4-0b1a-4c3e-9a61-6f0f0e3b2a11")!
        let r = ID.random(), p1 = ID.random(), p2 = ID.random()
        let c = daemon.client()
        defer { c.close() }
        try await c.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t, email: "ana@acme.test"))),
                           .upsert(.role(Role(id: r, tenantId: t, name: "reader"))),
                           .upsert(.permission(Permission(id: p1, tenantId: t, name: "gmail.messages.read", service: "gmail"))),
                           .upsert(.permission(Permission(id: p2, tenantId: t, name: "core.users.list", service: "core"))),
                           .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p1, scope: .global))),
                           .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p2, scope: .self))),
                           .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .tenant)))])
        let authzctl = productsDirectory().appendingPathComponent("authzctl").path
        let base = ["--socket", daemon.socketPath]
        let (s1, table) = try runProcess(authzctl, ["permissions"] + base + ["--output", "table", t.description, u.description], mergeStderr: false)
        XCTAssertEqual(s1, 0)
        XCTAssertEqual(table, """
        PERMISSION           SCOPE
        core.users.list      self
        gmail.messages.read  tenant

        """)
        let (s2, lines) = try runProcess(authzctl, ["permissions"] + base + [t.description, u.description], mergeStderr: false)
        XCTAssertEqual(s2, 0)
        XCTAssertEqual(lines, """
        {"permission":"core.users.list","scope":"self"}
        {"permission":"gmail.messages.read","scope":"tenant"}

        """)
        let (s3, users) = try runProcess(authzctl, ["users"] + base + ["--output", "table", t.description, "gmail.messages.read", "tenant"], mergeStderr: false)
        XCTAssertEqual(s3, 0)
        XCTAssertEqual(users, "USER_ID\n\(u)\n")
        let (s4, version) = try runProcess(authzctl, ["--version"])
        XCTAssertEqual(s4, 0)
        XCTAssertEqual(version, "0.1.0\n")
    }

    /// Found by a review of authzctl: a table over several pages, a reader that stops early,
    /// a watch with no daemon, and line numbers of `put`.
    func testPagesPipesAndErrorsEndCleanly() async throws {
        let daemon = try DaemonProcess(tcp: false)
        defer { daemon.stop(); daemon.remove() }
        let t = ID.random()
        let c = daemon.client()
        defer { c.close() }
        try await c.write([.upsert(.tenant(Tenant(id: t, name: "acme")))] + (0..<1_203).map { i in .upsert(.user(User(id: .random(), tenantId: t, email: "u\(i)@acme.test"))) })
        let authzctl = productsDirectory().appendingPathComponent("authzctl").path
        let base = ["--socket", daemon.socketPath]
        // Two pages (1,000 a page), one table: a header, then a line per user.
        let (s1, table) = try runProcess(authzctl, ["list", "user"] + base + ["--output", "table", t.description], mergeStderr: false)
        XCTAssertEqual(s1, 0, table)
        let lines = table.split(separator: "\n")
        XCTAssertEqual(lines.count, 1_204)
        XCTAssertTrue(lines.first?.hasPrefix("ID") == true)
        XCTAssertTrue(lines.dropFirst().allSatisfy { $0.contains("  yes  ") }, "every user a row of the one table")
        // A reader that reads one line and goes away: export stops quietly.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: authzctl)
        p.arguments = ["export"] + base + ["--page-size", "10"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        _ = out.fileHandleForReading.availableData
        try out.fileHandleForReading.close()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, stderr)
        XCTAssertFalse(stderr.contains("Fatal error"), stderr)
        // A watch that never connects is an error at once, not "resuming" forever.
        let started = Date()
        let (s2, watchErr) = try runProcess(authzctl, ["watch", "--socket", daemon.dir + "/nowhere.sock", "--until-caught-up"])
        XCTAssertEqual(s2, 2, watchErr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        XCTAssertTrue(watchErr.contains("error: UNAVAILABLE"), watchErr)
        // put names the line of its input, blank lines counted.
        let bad = "\n\n" + BulkFormat.encode(.user(User(id: .random(), tenantId: t))) + "\n{\"kind\":\"user\"}\n"
        let put = Process()
        put.executableURL = URL(fileURLWithPath: authzctl)
        put.arguments = ["put"] + base
        let input = Pipe(), putErr = Pipe()
        put.standardInput = input
        put.standardOutput = FileHandle.nullDevice
        put.standardError = putErr
        try put.run()
        input.fileHandleForWriting.write(Data(bad.utf8))
        try input.fileHandleForWriting.close()
        let putText = String(decoding: putErr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        put.waitUntilExit()
        XCTAssertEqual(put.terminationStatus, 2, putText)
        XCTAssertTrue(putText.contains("line 4:"), putText)
    }
}
