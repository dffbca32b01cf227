import AuthzClient
import AuthzLog
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// User events in from a NATS JetStream subject (docs/events.md), against a real nats-server
/// and a real `authzd serve --events`.
final class EventsTests: XCTestCase {
    let subject = "users.events"

    /// A producer's connection to `cluster` (streams it creates have one replica).
    func producer(_ cluster: NatsCluster) throws -> JetStreamLog {
        var settings = LogSettings(servers: cluster.urls.split(separator: ",").map(String.init))
        settings.replicas = 1
        return try JetStreamLog(settings: settings, name: "producer")
    }

    func publish(_ log: JetStreamLog, _ payload: [UInt8]) throws {
        _ = try log.publishCreatingStream(subject: subject, id: ID.random().description, headers: [], payload: payload,
                                          timeoutMillis: 5000, createStream: "users")
    }

    func user(_ c: AuthzClient, _ t: ID, _ u: ID) async -> User? {
        guard case .user(let x)? = try? await c.get(RecordRef(kind: .user, tenantId: t, id: u)) else { return nil }
        return x
    }

    func testEventsBecomeUserWritesInTimeOrderWithDeadLetters() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let log = try producer(cluster)
        defer { log.close() }
        // The producer's stream exists before the daemon (as in production).
        try publish(log, Array("{}".utf8))  // a first, poison message: dead-lettered, never blocks
        let metricsPort = try freeLoopbackPort()
        let dir = temporaryDirectory()
        let d = try DaemonProcess(dir: dir, tcp: false, extra: ["--events", "\(cluster.urls)/\(subject)", "--metrics-address", "127.0.0.1:\(metricsPort)",
                                                                "--audit-log", dir + "/audit.jsonl"])
        defer { d.stop(); d.remove() }
        let c = d.client()
        defer { c.close() }
        let t = ID.random(), role = ID.random(), perm = ID.random()
        _ = try await c.write([.upsert(.tenant(Tenant(id: t, name: "events"))),
                               .upsert(.permission(Permission(id: perm, tenantId: t, name: "mail.read", service: "mail"))),
                               .upsert(.role(Role(id: role, tenantId: t, name: "reader"))),
                               .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: role, permissionId: perm, scope: .global)))])
        let u = ID.random()
        let base: Int64 = 1_700_000_000_000_000
        func event(_ kind: UserEvent.Kind, _ at: Int64, email: String? = "ana@x.test") -> UserEvent {
            UserEvent(eventId: .random(), kind: kind, tenantId: t, userId: u, occurredAt: base + at,
                      user: email.map { UserEvent.Fields(email: $0, displayName: "Ana") })
        }
        // created (JSON) → the user exists with created_at = occurred_at.
        let created = event(.created, 100)
        try publish(log, Array(created.json.utf8))
        let ok1 = await asyncWaitUntil(15) { await self.user(c, t, u) != nil }

        XCTAssertTrue(ok1, "the created event was not applied")
        var stored = await user(c, t, u)
        XCTAssertEqual(stored?.fields.createdAt, base + 100)
        XCTAssertEqual(stored?.email, "ana@x.test")
        _ = try await c.write([.upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: role, scope: .tenant)))])
        let allowed = try await c.check(tenant: t, user: u, permission: "mail.read", scope: .tenant)
        XCTAssertTrue(allowed.allowed)

        // deactivated (protobuf, no fields: kept) → checks deny.
        try publish(log, EventCodec.encodeProtobuf(event(.deactivated, 200, email: nil)))
        let ok2 = await asyncWaitUntil(15) { await self.user(c, t, u)?.fields.isActive == false }

        XCTAssertTrue(ok2, "the deactivation was not applied")
        let denied = try await c.check(tenant: t, user: u, permission: "mail.read", scope: .tenant)
        XCTAssertFalse(denied.allowed)
        let kept = await user(c, t, u)
        XCTAssertEqual(kept?.email, "ana@x.test", "a deactivation without fields kept the stored ones")

        // Out of order and duplicates: an older reactivation and the created event again change
        // nothing; poison and an unknown tenant are dead-lettered; a later event still applies.
        try publish(log, Array(event(.reactivated, 150).json.utf8))
        try publish(log, Array(created.json.utf8))
        try publish(log, [0xFF, 0x00, 0x13, 0x37])
        var strange = event(.created, 500)
        strange.tenantId = .random()
        try publish(log, Array(strange.json.utf8))
        try publish(log, Array(event(.updated, 600, email: "ana@new.test").json.utf8))
        let ok3 = await asyncWaitUntil(15) { await self.user(c, t, u)?.email == "ana@new.test" }

        XCTAssertTrue(ok3, "a later event behind bad ones was not applied")
        stored = await user(c, t, u)
        XCTAssertEqual(stored?.fields.isActive, false, "an older reactivation or a duplicate overwrote a newer state")
        XCTAssertEqual(stored?.fields.updatedAt, base + 600)
        try publish(log, Array(event(.reactivated, 700, email: nil).json.utf8))
        let ok4 = await asyncWaitUntil(15) { await self.user(c, t, u)?.fields.isActive == true }

        XCTAssertTrue(ok4)
        let again = try await c.check(tenant: t, user: u, permission: "mail.read", scope: .tenant)
        XCTAssertTrue(again.allowed)

        // The dead letters: the three bad messages, each with its reason.
        let dead = try log.pullConsumer(subject: "dead-letter.\(subject)", durable: "test", createStream: "authzd-dead-letter")
        var letters: [PulledMessage] = []
        _ = waitUntil(10) {
            letters += (try? dead.fetch(max: 10, timeoutMillis: 200)) ?? []
            return letters.count >= 3
        }
        XCTAssertEqual(letters.count, 3, "dead letters: \(letters.map { $0.header("Authz-Dead-Letter-Reason") ?? "" })")
        let reasons = letters.compactMap { $0.header("Authz-Dead-Letter-Reason") }
        XCTAssertTrue(reasons.contains { $0.contains("event.event_id") }, "\(reasons)")  // "{}"
        XCTAssertTrue(reasons.contains { $0.contains("neither a JSON object nor") }, "\(reasons)")
        XCTAssertTrue(reasons.contains { $0.contains("does not exist") }, "\(reasons)")
        let metrics = httpGet(port: metricsPort, path: "/metrics")?.body ?? ""
        XCTAssertTrue(metrics.contains("authzd_events_total{outcome=\"dead_lettered\"} 3"), metrics)
        XCTAssertTrue(metrics.contains("authzd_events_total{outcome=\"duplicate\"} 2"), metrics)
        // The audit trail names the event consumer as the writer of each applied event.
        let audited = waitUntil(5) {
            let text = (try? String(contentsOfFile: dir + "/audit.jsonl", encoding: .utf8)) ?? ""
            return text.components(separatedBy: "\"who\":{\"kind\":\"events\",\"subject\":\"\(self.subject)\"}").count - 1 == 4
        }
        XCTAssertTrue(audited, (try? String(contentsOfFile: dir + "/audit.jsonl", encoding: .utf8)) ?? "no audit file")
    }

    /// The daemon SIGKILLed mid-stream: restarted, it applies every event once (no event lost;
    /// a redelivered one is a duplicate by its time, never applied twice).
    func testAKilledDaemonResumesWithoutLosingEvents() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let log = try producer(cluster)
        defer { log.close() }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["--events", "\(cluster.urls)/\(subject)", "--set", "events-ack-wait=2"]
        var d = try DaemonProcess(dir: dir, tcp: false, extra: args)
        let t = ID.random()
        var c = d.client()
        _ = try await c.write([.upsert(.tenant(Tenant(id: t, name: "events")))])
        c.close()
        let users = (0..<300).map { _ in ID.random() }
        let base: Int64 = 1_700_000_000_000_000
        for (i, u) in users.enumerated() {
            let e = UserEvent(eventId: .random(), kind: .created, tenantId: t, userId: u, occurredAt: base + Int64(i),
                              user: UserEvent.Fields(email: "u\(i)@x.test"))
            try publish(log, EventCodec.encodeProtobuf(e))
            if i == 150 { d.kill9() }
        }
        d = try DaemonProcess(dir: dir, tcp: false, extra: args)
        defer { d.stop() }
        c = d.client()
        defer { c.close() }
        var count = 0
        let all = await asyncWaitUntil(30) {
            guard let page = try? await c.list(.user, tenant: t, pageSize: 1000).items else { return false }
            count = page.count
            return page.count == users.count
        }
        XCTAssertTrue(all, "\(count) of \(users.count) users after the restart")
        for (i, u) in users.enumerated().filter({ $0.offset % 37 == 0 }) {
            let x = await user(c, t, u)
            XCTAssertEqual(x?.fields.createdAt, base + Int64(i))
            XCTAssertEqual(x?.fields.updatedAt, base + Int64(i), "event \(i) was applied twice or late")
        }
    }

    /// Log mode: two replicas sharing one consumer group apply each event once, through the
    /// log, and both hold every user.
    func testEventsInLogModeReachEveryReplica() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let log = try producer(cluster)
        defer { log.close() }
        let events = ["--events", "\(cluster.urls)/\(subject)", "--log", cluster.urls]
        let a = try DaemonProcess(tcp: false, extra: events)
        let b = try DaemonProcess(tcp: false, extra: events + ["--keyring", a.dir + "/data/keyring"])
        defer { for d in [a, b] { d.stop(); d.remove() } }
        let ca = a.client(), cb = b.client()
        defer { ca.close(); cb.close() }
        let t = ID.random()
        _ = try await ca.write([.upsert(.tenant(Tenant(id: t, name: "events")))])
        let users = (0..<40).map { _ in ID.random() }
        for (i, u) in users.enumerated() {
            try publish(log, Array(UserEvent(eventId: .random(), kind: .created, tenantId: t, userId: u, occurredAt: 1_700_000_000_000_000 + Int64(i),
                                             user: UserEvent.Fields(email: "u\(i)@x.test")).json.utf8))
        }
        for c in [ca, cb] {
            let all = await asyncWaitUntil(20) {
                guard let page = try? await c.list(.user, tenant: t, pageSize: 1000).items else { return false }
                return page.count == users.count
            }
            XCTAssertTrue(all, "a replica is missing users: \(a.log.suffix(3000))")
        }
        // Each event made one revision: the tenant's write plus 40 (none applied twice).
        let info = try await cb.serverInfo()
        XCTAssertEqual(info.revision, 41)
    }
}
