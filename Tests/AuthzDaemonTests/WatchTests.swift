import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// Watch against a real `authzd serve`: history then live changes, resume after a disconnect
/// and after a restart without missing anything, who sees what, the retention bound, the end
/// frame at shutdown, and `authzctl watch`.
final class WatchTests: XCTestCase {
    var daemon: DaemonProcess?
    override func tearDown() {
        daemon?.stop()
        daemon?.remove()
    }

    let t1 = ID.random(), t2 = ID.random()

    /// Collects changes from `stream` until `until` holds for what was collected (or `seconds`).
    static func collect(_ stream: AsyncThrowingStream<WatchBatch, Error>, seconds: Double = 10,
                        until: @escaping @Sendable ([Change], WatchBatch) -> Bool) async throws -> (changes: [Change], last: WatchBatch?) {
        try await withThrowingTaskGroup(of: ([Change], WatchBatch?).self) { group in
            group.addTask {
                var got: [Change] = []
                for try await b in stream {
                    got += b.changes
                    if until(got, b) { return (got, b) }
                }
                return (got, nil)
            }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
                throw AuthzError(.deadlineExceeded, "watch did not deliver in \(seconds) s")
            }
            let r = try await group.next()!
            group.cancelAll()
            return r
        }
    }

    func users(_ n: Int, _ t: ID) -> [WriteOp] { (0..<n).map { _ in .upsert(.user(User(id: .random(), tenantId: t))) } }

    func testHistoryThenLiveChangesThenResumeMissesNothing() async throws {
        let d = try DaemonProcess(tcp: false)
        daemon = d
        let c = d.client()
        defer { c.close() }
        let r0 = try await c.write([.upsert(.tenant(Tenant(id: t1, name: "one"))), .upsert(.tenant(Tenant(id: t2, name: "two")))])
        let r1 = try await c.write(users(100, t1))

        // History from 0: both writes, in order, then caught up.
        let (history, last) = try await Self.collect(c.watch(WatchCall(fromRevision: 0))) { _, b in b.caughtUp }
        XCTAssertEqual(history.count, 102)
        XCTAssertEqual(history.prefix(2).map(\.revision), [r0, r0])
        XCTAssertTrue(history.dropFirst(2).allSatisfy { $0.revision == r1 && $0.entity.kind == .user })
        XCTAssertEqual(last?.revision, r1)

        // Live: a watcher from now sees writes made after it started, and only those.
        let live = c.watch(WatchCall(fromRevision: nil, tenantId: nil, kinds: [.user]))
        let watching = Task { try await WatchTests.collect(live) { got, _ in got.count >= 30 } }
        try await Task.sleep(nanoseconds: 300_000_000)
        var written: [ID] = []
        for _ in 0..<3 {
            let ops = users(10, t2)
            written += ops.map { if case .upsert(let e) = $0 { return e.id } else { return .zero } }
            _ = try await c.write(ops + [.upsert(.role(Role(id: .random(), tenantId: t2, name: "r\(written.count)")))])
        }
        let seen = try await watching.value.changes
        XCTAssertEqual(seen.map(\.entity.id), written, "only users, in commit order")

        // Resume: a watcher cut after some frames resumes from the last revision it got and
        // misses nothing (a revision may come twice, never a gap).
        let (part, partLast) = try await Self.collect(c.watch(WatchCall(fromRevision: 0))) { got, _ in got.count >= 64 }
        let resumedFrom = partLast!.revision
        for _ in 0..<5 { _ = try await c.write(users(7, t1)) }
        let head = try await c.write(users(1, t1))
        let (rest, _) = try await Self.collect(c.watch(WatchCall(fromRevision: resumedFrom))) { _, b in b.caughtUp && b.revision >= head }
        let everything = try await Self.collect(c.watch(WatchCall(fromRevision: 0))) { _, b in b.caughtUp && b.revision >= head }.changes
        let joined = part.filter { $0.revision <= resumedFrom } + rest
        XCTAssertEqual(joined.map(\.entity.id), everything.map(\.entity.id))
        XCTAssertEqual(joined.map(\.revision), everything.map(\.revision))
    }

    func testKeysSeeOnlyWhatTheyMay() async throws {
        let d = try DaemonProcess(tcp: false)
        daemon = d
        let root = d.client()
        defer { root.close() }
        _ = try await root.write([.upsert(.tenant(Tenant(id: t1, name: "one"))), .upsert(.tenant(Tenant(id: t2, name: "two")))] + users(3, t1) + users(4, t2))
        let (_, adminKey) = try await createKey(root, t1, .admin)
        let (_, checkerKey) = try await createKey(root, t1, .checker)
        let (_, operatorKey) = try await createKey(root, nil, .operator)
        let (_, gatewayKey) = try await createKey(root, nil, .gateway)
        func client(_ key: String) -> AuthzClient {
            let c = d.client(apiKey: key)
            return c
        }
        let admin = client(adminKey), checker = client(checkerKey), op = client(operatorKey), gateway = client(gatewayKey)
        defer { admin.close(); checker.close(); op.close(); gateway.close() }

        let mine = try await Self.collect(admin.watch(WatchCall(fromRevision: 0))) { _, b in b.caughtUp }.changes
        XCTAssertEqual(mine.count, 4, "its tenant record and its 3 users")
        XCTAssertTrue(mine.allSatisfy { $0.entity.tenantId == t1 })
        do {
            _ = try await Self.collect(admin.watch(WatchCall(fromRevision: 0, tenantId: t2))) { _, b in b.caughtUp }
            XCTFail("an admin watched another tenant")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .permissionDenied)
            XCTAssertEqual(e.field, "watch.tenant_id")
        }
        do {
            _ = try await Self.collect(checker.watch(WatchCall(fromRevision: 0))) { _, b in b.caughtUp }
            XCTFail("a checker watched records")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .permissionDenied)
        }
        let tenants = try await Self.collect(op.watch(WatchCall(fromRevision: 0))) { _, b in b.caughtUp }.changes
        XCTAssertEqual(Set(tenants.map(\.entity.id)), [t1, t2])
        XCTAssertTrue(tenants.allSatisfy { $0.entity.kind == .tenant })
        do {
            _ = try await Self.collect(op.watch(WatchCall(fromRevision: 0, kinds: [.user]))) { _, b in b.caughtUp }
            XCTFail("an operator watched users")
        } catch let e as AuthzError {
            XCTAssertEqual(e.field, "watch.kinds")
        }
        // A credential: the admin sees it (redacted), the gateway never.
        let owner = mine.first { $0.entity.kind == .user }!.entity.id
        _ = try await root.write([.upsert(.platformCredential(PlatformCredential(id: .random(), tenantId: t1, ownerUserId: owner, platform: "gmail",
                                                                             externalAccountId: "x@gmail.test", accessToken: "at-secret", refreshToken: "rt-secret",
                                                                             tokenExpiresAt: 0, oauthScopes: [])))])
        let mineNow = try await Self.collect(admin.watch(WatchCall(fromRevision: 0))) { _, b in b.caughtUp }.changes
        guard case .platformCredential(let cred)? = mineNow.last?.entity else { return XCTFail("the admin does not see the credential") }
        XCTAssertEqual(cred.accessToken, "")
        XCTAssertTrue(cred.secretsRedacted)
        let every = try await Self.collect(gateway.watch(WatchCall(fromRevision: 0))) { _, b in b.caughtUp }.changes
        XCTAssertEqual(every.count, 9, "every record but the credential")
        XCTAssertFalse(every.contains { $0.entity.kind == .platformCredential })
        do {
            _ = try await Self.collect(gateway.watch(WatchCall(fromRevision: 0, kinds: [.platformCredential]))) { _, b in b.caughtUp }
            XCTFail("a gateway watched credentials")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .permissionDenied)
        }

        // A key revoked while it watches ends its stream at the next change.
        let (adminKey2Record, adminKey2) = try await createKey(root, t1, .admin)
        let admin2 = client(adminKey2)
        defer { admin2.close() }
        let open = Task { () -> AuthzError? in
            do {
                for try await _ in admin2.watch(WatchCall(fromRevision: nil)) {}
                return nil
            } catch let e as AuthzError {
                return e
            }
        }
        try await Task.sleep(nanoseconds: 300_000_000)
        _ = try await root.revokeKey(adminKey2Record.id)
        _ = try await root.write(users(1, t1))
        let ended = try await open.value
        XCTAssertEqual(ended?.code, .unauthenticated, "\(String(describing: ended))")
    }

    func testTrimmedHistoryIsOutOfRangeAndStopEndsTheStreamWithWhereToResume() async throws {
        let d = try DaemonProcess(tcp: false, extra: ["--set", "watch-retention=1000"])
        daemon = d
        let c = d.client()
        defer { c.close() }
        _ = try await c.write([.upsert(.tenant(Tenant(id: t1, name: "one")))])
        for _ in 0..<3 { _ = try await c.write(users(400, t1)) }
        do {
            _ = try await Self.collect(c.watch(WatchCall(fromRevision: 0))) { _, b in b.caughtUp }
            XCTFail("trimmed history was served")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .outOfRange)
            XCTAssertTrue(e.message.contains("no longer kept"), e.message)
        }
        // A watcher at the head gets UNAVAILABLE naming its revision when the daemon stops.
        let head = try await c.write(users(1, t1))
        let stream = c.watch(WatchCall(fromRevision: head))
        let ending = Task { () -> AuthzError? in
            do {
                for try await _ in stream {}
                return nil
            } catch let e as AuthzError {
                return e
            }
        }
        try await Task.sleep(nanoseconds: 500_000_000)
        XCTAssertEqual(d.stop(), 0)
        let e = try await ending.value
        XCTAssertEqual(e?.code, .unavailable)
        XCTAssertTrue(e?.message.contains("resume from revision \(head)") ?? false, e?.message ?? "no error")
    }

    func testAWatcherThatDoesNotReadIsCutAndTheDaemonServesOn() async throws {
        let d = try DaemonProcess(tcp: false, extra: ["--set", "watch-stall-timeout=1"])
        daemon = d
        let c = d.client()
        defer { c.close() }
        _ = try await c.write([.upsert(.tenant(Tenant(id: t1, name: "one")))])
        let pad = "{\"pad\":\"" + String(repeating: "x", count: 8000) + "\"}"
        for _ in 0..<4 {
            _ = try await c.write((0..<100).map { _ in .upsert(.user(User(id: .random(), tenantId: t1, metadata: pad))) })
        }
        // 3.2 MB of history to a client that never reads: the socket fills, then the cut.
        let raw = try RawConnection(unixPath: d.socketPath)
        raw.sendFrame(WireCodec.encodeRequest(WireRequest(requestId: 9, call: .success(.watch(WatchCall(fromRevision: 0))))))
        let deadline = Date().addingTimeInterval(15)
        while !d.log.contains("watch cut"), Date() < deadline { try await Task.sleep(nanoseconds: 100_000_000) }
        XCTAssertTrue(d.log.contains("watch cut"), d.log)
        // What the socket held drains, then the connection is closed (EOF, not a timeout), well
        // before the whole history.
        var received = 0
        var eof = false
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(raw.fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { eof = true }
            if n <= 0 { break }
            received += n
        }
        XCTAssertTrue(eof, "the daemon closed the connection")
        XCTAssertLessThan(received, 3_200_000, "not the whole history: it was cut")
        // Everyone else is served as before.
        let serving = try await c.health()
        XCTAssertTrue(serving)
    }

    func testServerSentEventsOnTheGatewayListener() async throws {
        let port = try freeLoopbackPort()
        let d = try DaemonProcess(tcp: false, extra: ["--http-address", "127.0.0.1:\(port)", "--insecure-plaintext"])
        daemon = d
        let c = d.client()
        defer { c.close() }
        let r1 = try await c.write([.upsert(.tenant(Tenant(id: t1, name: "one")))])
        let u = ID.random()
        let r2 = try await c.write([.upsert(.user(User(id: u, tenantId: t1, email: "sse@one.test")))])
        let (_, gatewayKey) = try await createKey(c, nil, .gateway)
        let (_, checkerKey) = try await createKey(c, t1, .checker)
        func curl(_ key: String?, _ query: String, _ headers: [String] = []) throws -> String {
            var args = ["-sN", "--max-time", "2", "-w", "\nstatus=%{http_code}\n"]
            if let key { args += ["-H", "x-authz-api-key: \(key)"] }
            for h in headers { args += ["-H", h] }
            return try runProcess("/usr/bin/curl", args + ["http://127.0.0.1:\(port)/v1/watch\(query)"], mergeStderr: false).1
        }
        let all = try curl(gatewayKey, "?from=0")
        XCTAssertTrue(all.contains("status=200"), all)
        XCTAssertTrue(all.contains("event: changes\nid: \(r2)\ndata: {\"revision\":\(r2),\"caught_up\":true"), all)
        XCTAssertTrue(all.contains("\"kind\":\"tenant\"") && all.contains("sse@one.test"), all)
        // Resumed after the tenant's revision by Last-Event-ID: only the user.
        let resumed = try curl(gatewayKey, "?kinds=user,tenant", ["Last-Event-ID: \(r1)"])
        XCTAssertTrue(resumed.contains("\"id\":\"\(u)\""), resumed)
        XCTAssertFalse(resumed.contains("\"kind\":\"tenant\""), resumed)
        XCTAssertTrue(try curl(nil, "?from=0").contains("status=401"))
        XCTAssertTrue(try curl(checkerKey, "?from=0").contains("status=403"))
        XCTAssertTrue(try curl(gatewayKey, "?from=x").contains("status=400"))

        // At shutdown a live stream ends with an error event naming where to resume.
        let live = Process()
        live.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        live.arguments = ["-sN", "--max-time", "10", "-H", "x-authz-api-key: \(gatewayKey)", "http://127.0.0.1:\(port)/v1/watch"]
        let pipe = Pipe()
        live.standardOutput = pipe
        try live.run()
        try await Task.sleep(nanoseconds: 500_000_000)
        XCTAssertEqual(d.stop(), 0)
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        live.waitUntilExit()
        XCTAssertTrue(text.contains("event: error") && text.contains("UNAVAILABLE") && text.contains("resume from revision \(r2)"), text)
    }

    func testAuthzctlWatchPrintsJSONLinesAndResumesAcrossARestart() async throws {
        let base = temporaryDirectory()
        var d = try DaemonProcess(dir: base, tcp: false)
        daemon = d
        var c = d.client()
        let r1 = try await c.write([.upsert(.tenant(Tenant(id: t1, name: "one"))), .upsert(.user(User(id: .random(), tenantId: t1, email: "a@one.test")))])
        let authzctl = productsDirectory().appendingPathComponent("authzctl").path
        let (status, out) = try runProcess(authzctl, ["watch", "--socket", d.socketPath, "--from", "0", "--until-caught-up"], mergeStderr: false)
        XCTAssertEqual(status, 0, out)
        let lines = out.split(separator: "\n")
        XCTAssertEqual(lines.count, 2, out)
        XCTAssertTrue(lines[1].hasPrefix("{\"revision\":\(r1),\"kind\":\"user\",\"tenant_id\":\"\(t1)\""), String(lines[1]))
        XCTAssertTrue(lines[1].contains("\"record\":{") && lines[1].contains("a@one.test"), String(lines[1]))

        // A follower keeps going across a daemon restart and misses nothing.
        let follower = Process()
        follower.executableURL = URL(fileURLWithPath: authzctl)
        follower.arguments = ["watch", "--socket", d.socketPath, "--from", "\(r1)", "--kind", "user"]
        let pipe = Pipe()
        follower.standardOutput = pipe
        follower.standardError = FileHandle.nullDevice
        try follower.run()
        defer { if follower.isRunning { follower.terminate() } }
        // Never hang on the pipe: the follower is stopped after 20 s whatever happens.
        DispatchQueue.global().asyncAfter(deadline: .now() + 20) { if follower.isRunning { follower.terminate() } }
        _ = try await c.write(users(2, t1))
        try await Task.sleep(nanoseconds: 300_000_000)
        c.close()
        d.stop()
        d = try DaemonProcess(dir: base, tcp: false)
        daemon = d
        c = d.client()
        defer { c.close() }
        _ = try await c.write(users(3, t1))
        var text = ""
        let deadline = Date().addingTimeInterval(15)
        let handle = pipe.fileHandleForReading
        while text.split(separator: "\n").count < 5, Date() < deadline {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        follower.terminate()
        XCTAssertEqual(text.split(separator: "\n").count, 5, text)
    }
}
