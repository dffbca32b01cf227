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
}
