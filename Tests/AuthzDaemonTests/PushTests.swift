import AuthzClient
import AuthzLog
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// `--push`: for each committed revision and tenant, the users whose effective permissions may
/// have changed, published to NATS JetStream (docs/watch.md, "Push"); against a real
/// nats-server and a real `authzd serve`.
final class PushTests: XCTestCase {
    struct Pushed: Equatable {
        var tenant: ID
        var users: Set<ID>
        var revision: UInt64
        var all: Bool
    }

    /// Every message published so far (the consumer acknowledges what it read).
    func drain(_ consumer: PullConsumer, until: ([Pushed]) -> Bool, seconds: Double = 15) throws -> [Pushed] {
        var out: [Pushed] = []
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            for m in (try? consumer.fetch(max: 100, timeoutMillis: 200)) ?? [] {
                let x = try EventCodec.decodePermissionsChanged(m.payload)
                XCTAssertEqual(m.subject, "authz.changes.\(x.tenant)")
                out.append(Pushed(tenant: x.tenant, users: Set(x.users), revision: x.revision, all: x.allUsers))
                try m.ack()
            }
            if until(out) { break }
        }
        return out
    }

    func testChangedUsersArePublishedPerRevisionAndSurviveAKill() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        var settings = LogSettings(servers: cluster.urls.split(separator: ",").map(String.init))
        settings.replicas = 1
        let reader = try JetStreamLog(settings: settings, name: "gateway")
        defer { reader.close() }
        let consumer = try reader.pullConsumer(subject: "authz.changes.>", durable: "gateway", createStream: "authzd-push")
        defer { consumer.close() }

        let dir = temporaryDirectory()
        var d = try DaemonProcess(dir: dir, tcp: false, extra: ["--push", "\(cluster.urls)/authz.changes"])
        daemonToStop = d
        var c = d.client()
        let t = ID.random(), t2 = ID.random(), p = ID.random(), r1 = ID.random(), r2 = ID.random(), r3 = ID.random()
        let u1 = ID.random(), u2 = ID.random(), u3 = ID.random(), u4 = ID.random()
        let w1 = try await c.write([.upsert(.tenant(Tenant(id: t, name: "one"))), .upsert(.tenant(Tenant(id: t2, name: "two")))])
        let w2 = try await c.write([
            .upsert(.user(User(id: u1, tenantId: t))), .upsert(.user(User(id: u2, tenantId: t))), .upsert(.user(User(id: u3, tenantId: t))),
            .upsert(.permission(Permission(id: p, tenantId: t, name: "mail.read", service: "mail"))),
            .upsert(.role(Role(id: r1, tenantId: t, name: "reader"))),
            .upsert(.role(Role(id: r2, tenantId: t, name: "editor", inherits: [r1]))),
            .upsert(.role(Role(id: r3, tenantId: t, name: "unrelated"))),
            .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r1, permissionId: p, scope: .global))),
            .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u1, roleId: r1, scope: .tenant))),
            .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u2, roleId: r2, scope: .tenant))),
            .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u3, roleId: r3, scope: .tenant))),
        ])
        let w3 = try await c.write([.deactivate(RecordRef(kind: .permission, tenantId: t, id: p))])  // u1 (reader) and u2 (inherits it)
        let w4 = try await c.write([.upsert(.user(User(id: u4, tenantId: t2, email: "d@two.test")))])
        _ = try await c.write([.upsert(.platformCredential(PlatformCredential(id: .random(), tenantId: t, ownerUserId: u3, platform: "gmail",
                                                                          externalAccountId: "c@gmail.test", accessToken: "at", refreshToken: "rt",
                                                                          tokenExpiresAt: 0, oauthScopes: [])))])  // changes no permission
        let w6 = try await c.write([.upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u3, roleId: r2, scope: .self)))])

        let got = try drain(consumer, until: { $0.contains { $0.revision == w6 } })
        XCTAssertEqual(got, [
            Pushed(tenant: t, users: [], revision: w1, all: true),
            Pushed(tenant: t2, users: [], revision: w1, all: true),
            Pushed(tenant: t, users: [u1, u2, u3], revision: w2, all: false),
            Pushed(tenant: t, users: [u1, u2], revision: w3, all: false),
            Pushed(tenant: t2, users: [u4], revision: w4, all: false),
            Pushed(tenant: t, users: [u3], revision: w6, all: false),
        ])

        // A permission binding moved from one role to another: the users of both roles.
        let pb = ID.random(), p2 = ID.random(), u5 = ID.random()
        _ = try await c.write([.upsert(.permission(Permission(id: p2, tenantId: t, name: "mail.send", service: "mail"))),
                               .upsert(.user(User(id: u5, tenantId: t))),
                               .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u5, roleId: r3, scope: .tenant))),
                               .upsert(.permissionBinding(PermissionBinding(id: pb, tenantId: t, roleId: r3, permissionId: p2, scope: .global)))])
        let moved = try await c.write([.upsert(.permissionBinding(PermissionBinding(id: pb, tenantId: t, roleId: r1, permissionId: p2, scope: .global)))])
        let movedPush = try drain(consumer, until: { $0.contains { $0.revision == moved } }).filter { $0.revision == moved }
        // r3's users u3 and u5 lost it (u5 holds only r3: named through the before-image); r1's
        // u1 and r2's (inherits r1) u2 and u3 gained it.
        XCTAssertEqual(movedPush, [Pushed(tenant: t, users: [u1, u2, u3, u5], revision: moved, all: false)])

        // Killed right after a write: the restarted daemon publishes what it had not, once.
        let w7 = try await c.write([.upsert(.user(User(id: u1, tenantId: t, email: "a@one.test")))])
        c.close()
        d.kill9()
        d = try DaemonProcess(dir: dir, tcp: false, extra: ["--push", "\(cluster.urls)/authz.changes"])
        daemonToStop = d
        c = d.client()
        defer { c.close() }
        let w8 = try await c.write([.upsert(.user(User(id: u2, tenantId: t, email: "b@one.test")))])
        let after = try drain(consumer, until: { $0.contains { $0.revision == w8 } })
        XCTAssertEqual(after.filter { $0.revision == w7 }, [Pushed(tenant: t, users: [u1], revision: w7, all: false)], "\(after)")
        XCTAssertEqual(after.filter { $0.revision == w8 }, [Pushed(tenant: t, users: [u2], revision: w8, all: false)])
        XCTAssertFalse(after.contains { $0.revision < w7 }, "nothing published twice: \(after)")
    }

    var daemonToStop: DaemonProcess?
    override func tearDown() {
        daemonToStop?.stop()
        daemonToStop?.remove()
    }

    func testBadPushTextIsRefusedNamingTheFlag() throws {
        let (status, out) = try runProcess(productsDirectory().appendingPathComponent("authzd").path,
                                           ["serve", "--data-dir", temporaryDirectory() + "/data", "--socket", temporaryDirectory() + "/s.sock",
                                            "--push", "kafka://h:1/x"])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(out.contains("push"), out)
    }
}
