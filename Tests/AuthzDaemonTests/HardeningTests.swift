import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// Protobuf bytes by hand, for frames no well-behaved client would send.
enum PB {
    static func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }
    static func field(_ n: UInt64, _ bytes: [UInt8]) -> [UInt8] { varint(n << 3 | 2) + varint(UInt64(bytes.count)) + bytes }
    static func field(_ n: UInt64, _ s: String) -> [UInt8] { field(n, Array(s.utf8)) }
    static func int(_ n: UInt64, _ v: UInt64) -> [UInt8] { varint(n << 3) + varint(v) }
    static func check(tenant: [UInt8], user: [UInt8], permission: [UInt8], scope: UInt64 = 1) -> [UInt8] {
        field(1, tenant) + field(2, user) + field(3, permission) + int(4, scope)
    }
    static func request(id: UInt64, call: UInt64, _ body: [UInt8], key: String? = nil) -> [UInt8] {
        int(1, id) + (key.map { field(3, $0) } ?? []) + field(call, body)
    }
}

extension RawConnection {
    /// A TCP connection to 127.0.0.1:`port`.
    convenience init(tcpPort port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw AuthzError(.unavailable, "connect failed") }
        try self.init(fd: fd)
    }

    /// Sends `payload` as a frame and decodes the answer.
    func roundTrip(_ payload: [UInt8]) throws -> WireResponse {
        sendFrame(payload)
        guard let f = receiveFrame() else { throw AuthzError(.unavailable, "no answer") }
        return try f.withUnsafeBytes { try WireCodec.decodeResponse($0) }
    }
}

func failure(_ r: WireResponse) -> AuthzError? {
    if case .failure(let e) = r.result { return e }
    return nil
}

/// Regression tests for the hardening issue's wire defects, against a real `authzd serve`.
final class HardeningTests: XCTestCase {
    var daemon: DaemonProcess!

    override func tearDown() {
        daemon?.stop()
        daemon?.remove()
    }

    func start(_ extra: [String] = []) throws { daemon = try DaemonProcess(extra: extra) }

    /// A tenant with a user bound to a role that grants `gmail.messages.read` only.
    func seed() async throws -> (tenant: ID, user: ID) {
        let t = ID.random(), u = ID.random(), r = ID.random(), p = ID.random(), admin = ID.random()
        let c = daemon.client()
        defer { c.close() }
        try await c.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t))),
                           .upsert(.role(Role(id: r, tenantId: t, name: "reader"))),
                           .upsert(.permission(Permission(id: p, tenantId: t, name: "gmail.messages.read", service: "gmail"))),
                           .upsert(.permission(Permission(id: admin, tenantId: t, name: "core.admin", service: "core"))),
                           .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .global))),
                           .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .global)))])
        return (t, u)
    }

    // MARK: item 4 — a NUL byte never changes the question

    func testNULInAnyStringIsInvalidArgumentNamingTheField() async throws {
        try start()
        let (t, u) = try await seed()
        let raw = try RawConnection(unixPath: daemon.socketPath)  // the daemon's own uid: a superuser
        let tb = Array(t.description.utf8), ub = Array(u.description.utf8)
        // Check: `gmail.messages.read\0core.admin` must not be decided as gmail.messages.read.
        var r = try raw.roundTrip(PB.request(id: 1, call: 10, PB.check(tenant: tb, user: ub, permission: Array("gmail.messages.read\0core.admin".utf8))))
        XCTAssertEqual(failure(r)?.code, .invalidArgument)
        XCTAssertEqual(failure(r)?.field, "check.permission")
        XCTAssertEqual(r.requestId, 1)
        r = try raw.roundTrip(PB.request(id: 2, call: 10, PB.check(tenant: tb + [0] + Array("junk".utf8), user: ub, permission: Array("gmail.messages.read".utf8))))
        XCTAssertEqual(failure(r)?.field, "check.tenant_id")
        // BatchCheck, Explain, ListPermissionUsers.
        r = try raw.roundTrip(PB.request(id: 3, call: 11, PB.field(1, PB.check(tenant: tb, user: ub, permission: Array("gmail.messages.read\0x".utf8)))))
        XCTAssertEqual(failure(r)?.field, "batch_check.checks[0].permission")
        r = try raw.roundTrip(PB.request(id: 4, call: 12, PB.field(1, PB.check(tenant: tb, user: ub, permission: Array("gmail.messages.read\0x".utf8)))))
        XCTAssertEqual(failure(r)?.field, "explain.check.permission")
        r = try raw.roundTrip(PB.request(id: 5, call: 14, PB.field(1, tb) + PB.field(2, Array("gmail.messages.read\0x".utf8)) + PB.int(3, 1)))
        XCTAssertEqual(failure(r)?.field, "list_permission_users.permission")
        // A write of a role named `editor\0x` stores nothing.
        let role = PB.field(1, ID.random().description) + PB.field(2, t.description) + PB.field(8, Array("editor\0x".utf8))
        let upsertRole = PB.field(1, PB.field(3, role))  // WriteOp.upsert = Entity{role = 3}
        r = try raw.roundTrip(PB.request(id: 6, call: 15, PB.field(1, upsertRole)))
        XCTAssertEqual(failure(r)?.code, .invalidArgument, "\(r)")
        XCTAssertTrue(failure(r)?.field.hasSuffix(".name") ?? false, failure(r)?.field ?? "")
        // The client refuses to send such a question at all.
        let c = daemon.client()
        defer { c.close() }
        do {
            _ = try await c.check(tenant: t, user: u, permission: "gmail.messages.read\0core.admin", scope: .self)
            XCTFail("the client sent a question with a NUL in it")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .invalidArgument)
        }
        // The honest question still works on the same connection.
        r = try raw.roundTrip(PB.request(id: 7, call: 10, PB.check(tenant: tb, user: ub, permission: Array("core.admin".utf8))))
        guard case .success(.check(let d)) = r.result else { return XCTFail("\(r)") }
        XCTAssertEqual(d.reason, .noGrant)
    }

    func testControlCharactersInTokensAreRefusedOnImport() async throws {
        try start()
        let (t, u) = try await seed()
        let c = daemon.client()
        defer { c.close() }
        let cred = PlatformCredential(id: .random(), tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana",
                                      accessToken: "tok\u{0}en", refreshToken: "")
        let line = BulkFormat.encode(.platformCredential(cred), includeSecrets: true) + "\n"
        do {
            _ = try await c.importJSONL(Array(line.utf8))
            XCTFail("a token with a NUL was imported")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .invalidArgument)
            XCTAssertEqual(e.field, "platform_credential.access_token")
            XCTAssertFalse(e.message.contains("tok\u{0}en"), "the secret was echoed")
        }
    }

    // MARK: item 2 — nothing an unauthenticated caller sends is decoded or allocated for

    func testUnauthenticatedCallerCannotMakeTheDaemonDecodeOrAllocate() async throws {
        try start()
        let tcp = try RawConnection(tcpPort: daemon.tcpPort!)
        // A frame above the pre-authentication limit is refused from its header.
        tcp.send([0, 0x10, 0, 0])  // 1 MiB announced
        guard let f = tcp.receiveFrame(), let r = try? f.withUnsafeBytes({ try WireCodec.decodeResponse($0) }) else { return XCTFail("no answer") }
        XCTAssertEqual(failure(r)?.code, .resourceExhausted)
        XCTAssertTrue(failure(r)?.message.contains("before the connection authenticates") ?? false, failure(r)?.message ?? "")
        XCTAssertTrue(tcp.isClosedByPeer())
        // A small keyless BatchCheck is refused without being decoded.
        let tcp2 = try RawConnection(tcpPort: daemon.tcpPort!)
        let r2 = try tcp2.roundTrip(PB.request(id: 9, call: 11, [UInt8](repeating: 0, count: 2)))
        XCTAssertEqual(failure(r2)?.code, .unauthenticated)
        XCTAssertEqual(r2.requestId, 9)
        // Health still answers.
        let r3 = try tcp2.roundTrip(PB.request(id: 10, call: 21, []))
        XCTAssertNil(failure(r3))
    }

    func testRepeatedFieldsAreCountedBeforeAnythingIsUnpacked() async throws {
        try start()
        let raw = try RawConnection(unixPath: daemon.socketPath)
        // 4 MiB of empty batch items (2 million): refused by count, cheaply, naming the field.
        let items = [UInt8](repeating: 0, count: 4 << 20)  // pairs of (tag 0x0A, length 0)
        var body: [UInt8] = []
        body.reserveCapacity(items.count)
        for _ in 0..<(items.count / 2) { body.append(0x0A); body.append(0) }
        let started = Date()
        let r = try raw.roundTrip(PB.request(id: 11, call: 11, body))
        XCTAssertEqual(failure(r)?.code, .invalidArgument)
        XCTAssertEqual(failure(r)?.field, "batch_check.checks")
        XCTAssertEqual(failure(r)?.message, "batch_check.checks must have at most 10000 items")
        // Another client's Health meanwhile, and afterwards, is answered.
        let other = try RawConnection(unixPath: daemon.socketPath)
        XCTAssertNil(failure(try other.roundTrip(PB.request(id: 1, call: 21, []))))
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        // The same through protobuf-c's path (an unknown field defeats the fast path).
        let r2 = try raw.roundTrip(PB.request(id: 12, call: 11, body + PB.int(99, 1)))
        XCTAssertEqual(failure(r2)?.field, "batch_check.checks")
    }

    // MARK: item 3 — a caller that never reads cannot grow the daemon

    func testCallerThatNeverReadsIsBoundedAndClosed() throws {
        try start()
        let pid = daemon.process.processIdentifier
        let before = residentBytes(pid)
        let tcp = try RawConnection(tcpPort: daemon.tcpPort!)
        // Health requests (allowed before authentication) without ever reading an answer.
        let health = PB.field(21, [])
        let one: [UInt8] = [0, 0, 0, UInt8(health.count)] + health
        let burst = [UInt8]((0..<16_384).flatMap { _ in one })  // 96 KiB a burst
        var sent = 0
        let deadline = Date().addingTimeInterval(8)
        tcp.setSendTimeout(seconds: 1)
        while Date() < deadline && sent < (64 << 20) {
            let n = tcp.sendSome(burst)
            if n <= 0 { break }  // the daemon stopped reading us: backpressure works
            sent += n
        }
        let grown = residentBytes(pid) - before
        print("never-reads: sent \(sent) bytes, resident grew \(grown) bytes")
        XCTAssertGreaterThan(sent, 1 << 20, "the test did not exercise the daemon")
        XCTAssertLessThan(sent, 64 << 20, "the daemon kept reading from a peer that never reads")
        XCTAssertLessThan(grown, 64 << 20, "resident memory grew by \(grown) bytes for \(sent) bytes sent")
        // Others are still served.
        let other = try RawConnection(unixPath: daemon.socketPath)
        XCTAssertNil(failure(try other.roundTrip(PB.request(id: 1, call: 21, []))))
    }

    func testKeylessRequestsCountAsFailedAuthentication() throws {
        try start()
        let tcp = try RawConnection(tcpPort: daemon.tcpPort!)
        var codes: [AuthzError.Code?] = []
        for i in 0..<6 { codes.append(failure(try tcp.roundTrip(PB.request(id: UInt64(i + 1), call: 20, [])))?.code) }
        XCTAssertEqual(Array(codes.prefix(5)), [AuthzError.Code?](repeating: .unauthenticated, count: 5))
        XCTAssertEqual(codes.last, .resourceExhausted)
        XCTAssertTrue(tcp.isClosedByPeer())
    }

    func testACallBehindAnOpenOneIsRefusedAndCounted() throws {
        // protobuf-c keeps the last call of a request: Health then RotateSecrets (or Watch) is a
        // RotateSecrets. The envelope must see it so, for every call number, and count it.
        try start()
        for call: UInt64 in [26, 27, 25] {
            let tcp = try RawConnection(tcpPort: daemon.tcpPort!)
            var codes: [AuthzError.Code?] = []
            for i in 0..<6 {
                let frame = PB.int(1, UInt64(i + 1)) + PB.field(21, []) + PB.field(call, [])
                codes.append(failure(try tcp.roundTrip(frame))?.code)
            }
            XCTAssertEqual(Array(codes.prefix(5)), [AuthzError.Code?](repeating: .unauthenticated, count: 5), "call \(call)")
            XCTAssertEqual(codes.last, .resourceExhausted, "call \(call)")
            XCTAssertTrue(tcp.isClosedByPeer(), "call \(call)")
        }
    }

    func testAPerRequestKeyAnswersForItsRequestOnly() async throws {
        try start()
        let (t, u) = try await seed()
        let admin = daemon.client()
        defer { admin.close() }
        let (_, secret) = try await admin.createKey(tenant: t, role: .checker, name: "per-request", expiresAt: 0)
        let tcp = try RawConnection(tcpPort: daemon.tcpPort!)
        let check = PB.check(tenant: Array(t.description.utf8), user: Array(u.description.utf8), permission: Array("gmail.messages.read".utf8))
        let keyed = try tcp.roundTrip(PB.request(id: 1, call: 10, check, key: secret))
        XCTAssertNil(failure(keyed), "\(String(describing: failure(keyed)))")
        // Keyless frames afterwards are still refused from their envelope and counted.
        var codes: [AuthzError.Code?] = []
        for i in 0..<6 { codes.append(failure(try tcp.roundTrip(PB.request(id: UInt64(i + 2), call: 10, check)))?.code) }
        XCTAssertEqual(Array(codes.prefix(5)), [AuthzError.Code?](repeating: .unauthenticated, count: 5))
        XCTAssertEqual(codes.last, .resourceExhausted)
        XCTAssertTrue(tcp.isClosedByPeer())
    }

    func testLargeErrorAnswersToAPeerThatDoesNotReadAreBounded() throws {
        // An empty frame (4 bytes) is answered INVALID_ARGUMENT naming every call (~250 bytes):
        // such answers must stop being produced once the peer stops reading them.
        try start()
        let pid = daemon.process.processIdentifier
        let before = residentBytes(pid)
        let raw = try RawConnection(unixPath: daemon.socketPath)  // trusted by uid: authenticated
        let burst = [UInt8](repeating: 0, count: 256 << 10)  // 65,536 empty frames
        raw.setSendTimeout(seconds: 1)
        var sent = 0
        let deadline = Date().addingTimeInterval(8)
        while Date() < deadline && sent < (32 << 20) {
            let n = raw.sendSome(burst)
            if n <= 0 { break }
            sent += n
        }
        let grown = residentBytes(pid) - before
        print("empty frames, never read: sent \(sent) bytes, resident grew \(grown) bytes")
        // How much the daemon takes before it stops reading depends on timing; what must hold
        // is the ratio. Unbounded, answers grew the daemon ~50 bytes per byte sent (49 MB for
        // 1 MiB); bounded, a few MB of fixed cost and a few bytes per byte.
        XCTAssertGreaterThan(sent, 128 << 10, "the test did not exercise the daemon")
        XCTAssertLessThan(grown, (8 << 20) + 4 * sent, "resident memory grew by \(grown) bytes for \(sent) bytes sent")
        // The answers are all there once read, in order, and the daemon serves others meanwhile.
        let other = try RawConnection(unixPath: daemon.socketPath)
        XCTAssertNil(failure(try other.roundTrip(PB.request(id: 1, call: 21, []))))
        guard let first = raw.receiveFrame(), let r = try? first.withUnsafeBytes({ try WireCodec.decodeResponse($0) }) else { return XCTFail("no answer") }
        XCTAssertEqual(failure(r)?.code, .invalidArgument)
    }

    func testAClosedConnectionsRevisionWaitsAreWithdrawn() async throws {
        try start(["--set", "revision-wait-ms=60000", "--metrics-address", "127.0.0.1:0"])
        let (t, u) = try await seed()
        guard let port = metricsPort() else { return XCTFail("no metrics port in log") }
        func waiters() -> Int? {
            let text = httpGet(port: port, path: "/metrics")?.body ?? ""
            for line in text.split(separator: "\n") where line.hasPrefix("authzd_revision_waiters ") {
                return Int(Double(line.split(separator: " ").last ?? "") ?? -1)
            }
            return nil
        }
        XCTAssertEqual(waiters(), 0)
        let raw = try RawConnection(unixPath: daemon.socketPath)
        let check = PB.check(tenant: Array(t.description.utf8), user: Array(u.description.utf8), permission: Array("gmail.messages.read".utf8))
        for i in 0..<20 { raw.sendFrame(PB.request(id: UInt64(i + 1), call: 10, check + PB.int(5, 1 << 40))) }
        var seen = 0
        for _ in 0..<50 where seen < 20 {
            seen = waiters() ?? 0
            if seen < 20 { try await Task.sleep(nanoseconds: 50_000_000) }
        }
        XCTAssertEqual(seen, 20, "the checks did not wait")
        shutdown(raw.fd, Int32(SHUT_RDWR))
        var left = seen
        for _ in 0..<50 where left > 0 {
            try await Task.sleep(nanoseconds: 50_000_000)
            left = waiters() ?? -1
        }
        XCTAssertEqual(left, 0, "a closed connection's waits stayed registered")
    }

    // MARK: item 5 — TCP cannot lock out the Unix socket; unauthenticated and metrics connections time out

    func testIdleTCPConnectionsDoNotLockOutTheUnixSocket() async throws {
        try start(["--max-connections", "20", "--set", "auth-timeout=2", "--metrics-address", "127.0.0.1:0", "--set", "metrics-timeout=2"])
        var idle: [RawConnection] = []
        for _ in 0..<40 { if let c = try? RawConnection(tcpPort: daemon.tcpPort!) { idle.append(c) } }
        // The local socket still answers while TCP is full.
        let local = try RawConnection(unixPath: daemon.socketPath)
        XCTAssertNil(failure(try local.roundTrip(PB.request(id: 1, call: 20, []))))
        // Unauthenticated TCP connections are closed after auth-timeout.
        try await Task.sleep(nanoseconds: 3000000000)
        XCTAssertTrue(idle[0].isClosedByPeer())
        // The daemon's own (authenticated) Unix connection is not.
        XCTAssertNil(failure(try local.roundTrip(PB.request(id: 2, call: 20, []))))
        // A half-sent metrics request is cut off too.
        guard let port = metricsPort() else { return XCTFail("no metrics port in log") }
        let m = try RawConnection(tcpPort: port)
        m.send(Array("GET /metr".utf8))
        try await Task.sleep(nanoseconds: 3000000000)
        XCTAssertTrue(m.isClosedByPeer())
    }

    // MARK: item 7 — a queued write past its deadline is answered when the deadline passes

    func testQueuedWriteIsAnsweredAtItsDeadlineAndNeverApplied() async throws {
        try start()
        let (t, _) = try await seed()
        // A slow write holds the writer: an import of 40,000 users.
        var big = ""
        for _ in 0..<40_000 { big += BulkFormat.encode(.user(User(id: .random(), tenantId: t))) + "\n" }
        let raw = try RawConnection(unixPath: daemon.socketPath)
        raw.sendFrame(PB.request(id: 1, call: 18, PB.field(1, Array(big.utf8))))
        try await Task.sleep(nanoseconds: 500000000)  // decoded off the event loop, then on the writer
        // Queued behind it, with a 50 ms deadline.
        let late = ID.random()
        let user = PB.field(1, late.description) + PB.field(2, t.description)
        let write = PB.int(1, 2) + PB.int(2, 50) + PB.field(15, PB.field(1, PB.field(1, PB.field(2, user))))
        let sentAt = Date()
        raw.sendFrame(write)
        var answers: [UInt64: (WireResponse, TimeInterval)] = [:]
        while answers.count < 2, let f = raw.receiveFrame() {
            let r = try f.withUnsafeBytes { try WireCodec.decodeResponse($0) }
            answers[r.requestId] = (r, Date().timeIntervalSince(sentAt))
        }
        guard let (lateAnswer, at) = answers[2] else { return XCTFail("no answer to the queued write") }
        XCTAssertEqual(failure(lateAnswer)?.code, .deadlineExceeded)
        if let (importAnswer, importAt) = answers[1], failure(importAnswer) == nil {
            // Answered at the deadline, not when the writer got to it.
            XCTAssertLessThan(at, importAt, "deadline answer came after the import finished")
        }
        let c = daemon.client()
        defer { c.close() }
        do {
            _ = try await c.get(RecordRef(kind: .user, tenantId: t, id: late))
            XCTFail("a write answered DEADLINE_EXCEEDED was applied")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .notFound)
        }
    }

    // MARK: min_revision waits are woken by the publish, and keep the caller's principal

    func testMinRevisionWaitIsWokenByTheWrite() async throws {
        try start(["--set", "revision-wait-ms=5000"])
        let (t, u) = try await seed()
        let c = daemon.client()
        defer { c.close() }
        let want = try await c.serverInfo().revision + 1
        async let waited = c.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .self, minRevision: want)
        try await Task.sleep(nanoseconds: 200_000_000)
        try await c.write([.upsert(.user(User(id: .random(), tenantId: t)))])
        let d = try await waited
        XCTAssertGreaterThanOrEqual(d.revision, want)
        XCTAssertEqual(d.reason, .granted)
    }

    func metricsPort() -> Int? {
        for line in daemon.log.components(separatedBy: "\n") where line.contains("metrics listening") {
            if let r = line.range(of: #"listen\.metrics=[^ ]*:(\d+)"#, options: .regularExpression) {
                return Int(line[r].split(separator: ":").last!)
            }
        }
        return nil
    }

    func residentBytes(_ pid: Int32) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        return 0
    }
}

extension RawConnection {
    func setSendTimeout(seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// One send; the bytes taken, or -1 on timeout or error.
    func sendSome(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
}
