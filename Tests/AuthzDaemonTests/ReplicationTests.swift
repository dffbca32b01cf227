import AuthzClient
import AuthzLog
import AuthzModel
import AuthzStore
import AuthzWire
import Foundation
import XCTest

/// Log mode against real nats-servers and real `authzd serve` processes (docs/scale-out.md).
final class ReplicationTests: XCTestCase {
    /// One tenant's seed: a permission granted by a role (the users come later).
    struct Seed {
        let tenant = ID.random(), role = ID.random(), permission = ID.random()
        var ops: [WriteOp] {
            [.upsert(.tenant(Tenant(id: tenant, name: "t-\(tenant.description.prefix(8))"))),
             .upsert(.permission(Permission(id: permission, tenantId: tenant, name: "mail.read", service: "mail"))),
             .upsert(.role(Role(id: role, tenantId: tenant, name: "reader"))),
             .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: tenant, roleId: role, permissionId: permission, scope: .global)))]
        }
        /// A user granted the permission, in one write.
        func user(_ u: ID) -> [WriteOp] {
            [.upsert(.user(User(id: u, tenantId: tenant))),
             .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: tenant, userId: u, roleId: role, scope: .tenant)))]
        }
    }

    func info(_ c: AuthzClient) async throws -> ServerInfo {
        try await c.serverInfo()
    }

    func export(_ c: AuthzClient) async throws -> [UInt8] {
        try await c.export(tenant: nil, timeout: .seconds(60)).jsonl
    }

    /// Starts a log-mode daemon on `cluster` (TCP off), sharing `keyring` when given.
    func replica(_ cluster: NatsCluster, dir: String? = nil, keyring: String? = nil, extra: [String] = []) throws -> DaemonProcess {
        var args = ["--log", cluster.urls]
        if let keyring { args += ["--keyring", keyring] }
        return try DaemonProcess(dir: dir, tcp: false, extra: args + extra)
    }

    /// Writes through one replica, reads at the returned revision through the others; kills
    /// the stream leader and one authzd under write load; every replica converges to the same
    /// revision and byte-identical exports, holding every acknowledged write.
    func testThreeReplicasConvergeAcrossLeaderAndReplicaKills() async throws {
        let cluster = try NatsCluster(count: 3)
        defer { cluster.stopAll() }
        let a = try replica(cluster)
        let keyring = a.dir + "/data/keyring"
        let b = try replica(cluster, keyring: keyring)
        let c = try replica(cluster, keyring: keyring)
        defer { for d in [a, b, c] { d.stop(); d.remove() } }
        let ca = a.client(), cb = b.client(), cc = c.client()

        let seed = Seed()
        let r1 = try await ca.write(seed.ops)
        let first = ID.random()
        let r2 = try await ca.write(seed.user(first))
        XCTAssertGreaterThan(r2, r1)
        // Read-your-writes on another replica: min_revision waits until it has applied r2.
        for client in [cb, cc] {
            let d = try await client.check(tenant: seed.tenant, user: first, permission: "mail.read", scope: .tenant, minRevision: r2)
            XCTAssertTrue(d.allowed, "\(d)")
            XCTAssertGreaterThanOrEqual(d.revision, r2)
        }
        // A write another replica rejects at its local check never reaches the log.
        do {
            _ = try await cb.write([.upsert(.roleBinding(RoleBinding(id: .random(), tenantId: seed.tenant, userId: .random(), roleId: seed.role, scope: .tenant)))])
            XCTFail("a binding of an unknown user was accepted")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .notFound, e.message)
        }

        // Write load through A and C while the stream leader and replica B are killed.
        let acknowledged = Locked<[ID]>([first])
        let stop = Locked(false)
        let writers = [ca, cc].map { client in
            Task {
                var failures = 0
                while !stop.value {
                    let u = ID.random()
                    do {
                        _ = try await client.write(seed.user(u))
                        acknowledged.mutate { $0.append(u) }
                    } catch {
                        failures += 1
                        try? await Task.sleep(nanoseconds: 50_000_000)
                    }
                }
                return failures
            }
        }
        try await Task.sleep(nanoseconds: 1_500_000_000)
        let leader = try XCTUnwrap(cluster.streamLeader("authzd"), "no stream leader found")
        cluster.kill9(leader)
        try await Task.sleep(nanoseconds: 1_000_000_000)
        b.kill9()
        try await Task.sleep(nanoseconds: 3_000_000_000)
        let b2 = try replica(cluster, dir: b.dir, keyring: keyring)
        defer { b2.stop() }
        try cluster.start(leader)
        try await Task.sleep(nanoseconds: 4_000_000_000)
        stop.mutate { $0 = true }
        var failed = 0
        for w in writers { failed += await w.value }
        let acked = acknowledged.value
        XCTAssertGreaterThan(acked.count, 20, "too few writes were acknowledged (\(failed) failed)")
        print("replication: \(acked.count) writes acknowledged, \(failed) refused while stream leader n\(leader + 1) and replica B were killed")

        // Convergence: every replica reaches the stream's last sequence.
        let cb2 = b2.client()
        var revisions: [UInt64] = []
        let deadline = Date().addingTimeInterval(60)
        repeat {
            revisions = []
            for client in [ca, cb2, cc] { revisions.append(try await info(client).revision) }
            let lasts = try await [ca, cb2, cc].asyncMap { try await self.info($0).log?.streamLast ?? 0 }
            if Set(revisions).count == 1, revisions[0] >= (lasts.max() ?? 0) { break }
            try await Task.sleep(nanoseconds: 200_000_000)
        } while Date() < deadline
        XCTAssertEqual(Set(revisions).count, 1, "replicas did not converge: \(revisions)")
        print("replication: converged at revision \(revisions[0])")
        let exports = try await [ca, cb2, cc].asyncMap { try await self.export($0) }
        XCTAssertEqual(exports[0], exports[1], "A and B differ")
        XCTAssertEqual(exports[0], exports[2], "A and C differ")
        // No acknowledged write lost: every acknowledged user is in the export and allowed.
        let text = String(decoding: exports[0], as: UTF8.self)
        for u in acked { XCTAssertTrue(text.contains(u.description), "acknowledged user \(u) is missing") }
        let last = revisions[0]
        for u in acked.suffix(5) {
            let d = try await cb2.check(tenant: seed.tenant, user: u, permission: "mail.read", scope: .tenant, minRevision: last)
            XCTAssertTrue(d.allowed)
        }
        let cb2Info = try await info(cb2)
        let status = try XCTUnwrap(cb2Info.log)
        XCTAssertEqual(status.lag, 0)
        XCTAssertEqual(status.shard, "all")
        XCTAssertTrue(status.connected)
        for client in [ca, cb2, cc] { client.close() }
        cb.close()
    }

    /// A daemon given `--log-tenants` (or `--log-shard`) holds exactly its tenants and refuses
    /// the others by name; a new, empty replica catches up from the stream.
    func testShardedReplicaHoldsExactlyItsTenants() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let a = try replica(cluster)
        let keyring = a.dir + "/data/keyring"
        let s1 = Seed(), s2 = Seed()
        let ca = a.client()
        _ = try await ca.write(s1.ops)
        _ = try await ca.write(s2.ops)
        let u1 = ID.random(), u2 = ID.random()
        _ = try await ca.write(s1.user(u1))
        let last = try await ca.write(s2.user(u2))

        let gatewaySocket = temporaryDirectory("authzd-gw") + "/http.sock"
        let sharded = try replica(cluster, keyring: keyring, extra: ["--log-tenants", s1.tenant.description, "--http-socket", gatewaySocket])
        let full = try replica(cluster, keyring: keyring)
        defer { for d in [a, sharded, full] { d.stop(); d.remove() } }
        let cs = sharded.client(), cf = full.client()
        let d1 = try await cs.check(tenant: s1.tenant, user: u1, permission: "mail.read", scope: .tenant, minRevision: last)
        XCTAssertTrue(d1.allowed)
        XCTAssertEqual(d1.revision, last, "a sharded replica still steps its revision over other tenants' messages")
        do {
            _ = try await cs.check(tenant: s2.tenant, user: u2, permission: "mail.read", scope: .tenant)
            XCTFail("a check of another shard's tenant was answered")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .failedPrecondition)
            XCTAssertTrue(e.message.contains("not held by this daemon") && e.message.contains("tenants \(s1.tenant)"), e.message)
        }
        // Its gateway refuses the other shard's tenant too (503, never a decision from data it
        // does not hold), and decides its own.
        func gatewayStatus(_ tenant: ID, _ user: ID) throws -> String {
            let c = try RawConnection(unixPath: gatewaySocket)
            c.send(Array("GET /check HTTP/1.1\r\nHost: a\r\nX-Authz-Tenant: \(tenant)\r\nX-Authz-User: \(user)\r\nX-Authz-Permission: mail.read\r\n\r\n".utf8))
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
            return String(decoding: buffer.prefix(max(0, n)), as: UTF8.self)
        }
        let otherShard = try gatewayStatus(s2.tenant, u2)
        XCTAssertTrue(otherShard.hasPrefix("HTTP/1.1 503") && otherShard.contains("x-authz-reason: not_serving"), otherShard)
        let own = try gatewayStatus(s1.tenant, u1)
        XCTAssertTrue(own.hasPrefix("HTTP/1.1 200"), own)
        // Exactly its tenant: the export names s1's records and none of s2's.
        let text = String(decoding: try await export(cs), as: UTF8.self)
        XCTAssertTrue(text.contains(s1.tenant.description) && text.contains(u1.description))
        XCTAssertFalse(text.contains(s2.tenant.description) || text.contains(u2.description), text)
        let counts = try await info(cs).counts
        XCTAssertEqual(counts[.tenant], 1)
        XCTAssertEqual(counts[.user], 1)
        // The unsharded newcomer caught up with both tenants from the stream.
        let d2 = try await cf.check(tenant: s2.tenant, user: u2, permission: "mail.read", scope: .tenant, minRevision: last)
        XCTAssertTrue(d2.allowed)
        // Writes for a tenant it does not hold are refused before anything is published.
        do {
            _ = try await cs.write(s2.user(.random()))
            XCTFail("a sharded replica accepted a write for another shard")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .failedPrecondition)
        }
        // A Write across tenants is refused in log mode.
        do {
            _ = try await ca.write(s1.user(.random()) + s2.user(.random()))
            XCTFail("a Write across tenants was accepted")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .invalidArgument)
            XCTAssertTrue(e.message.contains("one tenant"), e.message)
        }
        // API keys go through the log to every daemon, shards included: one created on A is
        // known to the shard, and a revocation on the shard reaches A.
        let (key, _) = try await createKey(ca, s2.tenant, .checker)
        let keysOnShard = await asyncWaitUntil(10) {
            guard let ks = try? await cs.listKeys() else { return false }
            return ks.contains { $0.id == key.id && $0.revokedAt == 0 }
        }
        XCTAssertTrue(keysOnShard, "a key created on another daemon never reached the shard")
        let revoked = try await cs.revokeKey(key.id)
        XCTAssertNotEqual(revoked.revokedAt, 0)
        let revokedOnA = await asyncWaitUntil(10) {
            guard let ks = try? await ca.listKeys() else { return false }
            return (ks.first { $0.id == key.id }?.revokedAt ?? 0) != 0
        }
        XCTAssertTrue(revokedOnA, "the revocation did not reach A")

        // A sharded data directory refuses to start as another shard.
        sharded.stop()
        XCTAssertThrowsError(try replica(cluster, dir: sharded.dir, keyring: keyring, extra: ["--log-shard", "0/2"]))
        for client in [ca, cs, cf] { client.close() }
    }

    /// The log unreachable: writes answer UNAVAILABLE within the write timeout, checks keep
    /// answering from local state with their revision, /readyz says why; once the server is
    /// back, writes go through again and a SIGKILLed replica catches up.
    func testLogOutageRefusesWritesAndKeepsChecks() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let metricsPort = try freeLoopbackPort()
        let a = try replica(cluster, extra: ["--metrics-address", "127.0.0.1:\(metricsPort)", "--set", "log-write-timeout=2"])
        let b = try replica(cluster, keyring: a.dir + "/data/keyring")
        defer { for d in [a, b] { d.stop(); d.remove() } }
        let ca = a.client()
        let seed = Seed()
        _ = try await ca.write(seed.ops)
        let u = ID.random()
        let r = try await ca.write(seed.user(u))
        XCTAssertTrue(waitUntil(10) { httpGet(port: metricsPort, path: "/readyz")?.status == 200 })

        cluster.kill9(0)
        let started = Date()
        do {
            _ = try await ca.write(seed.user(.random()))
            XCTFail("a write was acknowledged with the log down")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .unavailable, e.message)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 8, "the write was not refused within its timeout")
        let d = try await ca.check(tenant: seed.tenant, user: u, permission: "mail.read", scope: .tenant)
        XCTAssertTrue(d.allowed)
        XCTAssertEqual(d.revision, r)
        XCTAssertTrue(waitUntil(10) { httpGet(port: metricsPort, path: "/readyz")?.body.contains("unreachable") == true })
        let metrics = httpGet(port: metricsPort, path: "/metrics")?.body ?? ""
        XCTAssertTrue(metrics.contains("authzd_log_applied_sequence"), metrics)

        // B is SIGKILLed while the log is down, A writes once it is back, B restarts and catches up.
        b.kill9()
        try cluster.start(0)
        var r2: UInt64 = 0
        let wroteAgain = await asyncWaitUntil(30) {
            guard let r = try? await ca.write(seed.user(.random())) else { return false }
            r2 = r
            return true
        }
        XCTAssertTrue(wroteAgain, "no write went through after the log came back")
        let b2 = try replica(cluster, dir: b.dir, keyring: a.dir + "/data/keyring")
        defer { b2.stop() }
        let cb = b2.client()
        let d2 = try await cb.check(tenant: seed.tenant, user: u, permission: "mail.read", scope: .tenant, minRevision: r2)
        XCTAssertGreaterThanOrEqual(d2.revision, r2)
        // min_revision beyond the stream: DEADLINE_EXCEEDED at the request's deadline.
        do {
            _ = try await cb.check(tenant: seed.tenant, user: u, permission: "mail.read", scope: .tenant, minRevision: r2 + 1000, timeout: .seconds(1))
            XCTFail("a revision never written was answered")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .deadlineExceeded, e.message)
        }
        ca.close()
        cb.close()
    }

    /// Stream limits delete messages a stopped replica has not applied: it says so and refuses
    /// reads instead of serving stale data; a backup of another replica, restored into an
    /// empty directory, resumes from its revision and applies the stream's tail.
    func testReplicaBehindRetentionRefusesReadsAndABackupResumes() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let metricsPort = try freeLoopbackPort()
        let a = try replica(cluster, extra: ["--set", "log-max-msgs=5"])
        let keyring = a.dir + "/data/keyring"
        let ca = a.client()
        let seed = Seed()
        _ = try await ca.write(seed.ops)
        let early = ID.random()
        let r = try await ca.write(seed.user(early))
        let b = try replica(cluster, keyring: keyring, extra: ["--metrics-address", "127.0.0.1:\(metricsPort)"])
        let cb = b.client()
        _ = try await cb.check(tenant: seed.tenant, user: early, permission: "mail.read", scope: .tenant, minRevision: r)
        cb.close()
        b.stop()
        var users: [ID] = []
        for _ in 0..<8 {
            let u = ID.random()
            users.append(u)
            _ = try await ca.write(seed.user(u))
        }
        let last = try await ca.write(seed.user(.random()))

        // B restarts at revision 2; the stream now starts well after 3.
        let b2 = try replica(cluster, dir: b.dir, keyring: keyring, extra: ["--metrics-address", "127.0.0.1:\(metricsPort)"])
        defer { b2.stop() }
        let cb2 = b2.client()
        var refused: AuthzError?
        _ = await asyncWaitUntil(10) {
            do {
                _ = try await cb2.check(tenant: seed.tenant, user: early, permission: "mail.read", scope: .tenant)
                return false
            } catch let e as AuthzError {
                refused = e
                return true
            } catch { return false }
        }
        XCTAssertEqual(refused?.code, .failedPrecondition)
        XCTAssertTrue(refused?.message.contains("retention") == true, refused?.message ?? "answered")
        let ready = httpGet(port: metricsPort, path: "/readyz")
        XCTAssertEqual(ready?.status, 503)
        XCTAssertTrue(ready?.body.contains("restore a backup") == true, ready?.body ?? "")
        cb2.close()

        // A backup of A (at `last` or later), restored into an empty directory, serves at once.
        let authzd = productsDirectory().appendingPathComponent("authzd").path
        let backupDir = temporaryDirectory("authzd-backup")
        let restored = temporaryDirectory("authzd-restored")
        defer { try? FileManager.default.removeItem(atPath: backupDir); try? FileManager.default.removeItem(atPath: restored) }
        let (brc, bout) = try runProcess(authzd, ["backup", "--data-dir", a.dir + "/data", backupDir + "/b"])
        XCTAssertEqual(brc, 0, bout)
        let (rrc, rout) = try runProcess(authzd, ["restore", "--data-dir", restored + "/data", "--keyring", keyring, backupDir + "/b"])
        XCTAssertEqual(rrc, 0, rout)
        let c = try replica(cluster, dir: restored, keyring: keyring)
        defer { c.stop() }
        let after = ID.random()
        let r3 = try await ca.write(seed.user(after))
        let cc = c.client()
        for u in users + [after] {
            let d = try await cc.check(tenant: seed.tenant, user: u, permission: "mail.read", scope: .tenant, minRevision: max(last, r3))
            XCTAssertTrue(d.allowed)
        }
        cc.close()
        ca.close()
        a.stop()
        a.remove()
    }

    /// A change that breaks a rule only when applied (it passed its writer's check against an
    /// older state) is a no-op on every replica, which still takes its revision; racing writers
    /// on two replicas: one wins, the other gets ALREADY_EXISTS (its check saw the winner) or
    /// FAILED_PRECONDITION "rejected when applied", and the replicas stay identical.
    func testAChangeRejectedWhenAppliedIsANoOpEverywhere() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let a = try replica(cluster)
        let keyring = a.dir + "/data/keyring"
        let b = try replica(cluster, keyring: keyring)
        defer { for d in [a, b] { d.stop(); d.remove() } }
        let ca = a.client(), cb = b.client()
        let seed = Seed()
        _ = try await ca.write(seed.ops)

        // A message published straight to the stream: a second role named "reader".
        let log = try JetStreamLog(settings: LogSettings(servers: cluster.urls.split(separator: ",").map(String.init)), name: "test")
        defer { log.close() }
        let sealer = SecretSealer(ring: try KeyRing.load(path: keyring))
        let duplicate = ID.random()
        let body = WireCodec.encodeRequest(WireRequest(requestId: 0, call: .success(.write([.upsert(.role(Role(id: duplicate, tenantId: seed.tenant, name: "reader")))]))))
        let subject = "authzd.\(seed.tenant)"
        /// Publishes `body` as a write sealed at `time` (the seal covers subject, id, kind and time).
        func publishWrite(_ body: [UInt8], time: Int64, headers: [(String, String)]? = nil, sealedBody: [UInt8]? = nil) throws -> UInt64 {
            let id = ID.random().description
            let payload = try sealedBody ?? sealer.sealMessage(body, context: "\(subject)/\(id)/write/\(time)/")
            return try log.publish(subject: subject, id: id, headers: headers ?? [("Authz-Kind", "write"), ("Authz-Time", String(time))],
                                   payload: payload, timeoutMillis: 5000).sequence
        }
        let published = try publishWrite(body, time: Timestamp.now())
        // A replay: a validly sealed message whose sealed time is far from when the stream
        // stored it (a new role this time, so that only the time refuses it).
        let replayed = ID.random()
        let replayBody = WireCodec.encodeRequest(WireRequest(requestId: 0, call: .success(.write([.upsert(.role(Role(id: replayed, tenantId: seed.tenant, name: "replayed")))]))))
        _ = try publishWrite(replayBody, time: Timestamp.now() - 600_000_000)
        // Garbage on the stream's subjects (no headers, not sealed) and a header changed after
        // sealing: skipped by every replica, never a stall.
        _ = try log.publish(subject: subject, id: ID.random().description, headers: [], payload: Array("hi".utf8), timeoutMillis: 5000)
        let tampered = ID.random()
        let tamperedBody = WireCodec.encodeRequest(WireRequest(requestId: 0, call: .success(.write([.upsert(.role(Role(id: tampered, tenantId: seed.tenant, name: "tampered")))]))))
        let t0 = Timestamp.now()
        _ = try publishWrite(tamperedBody, time: t0, headers: [("Authz-Kind", "import"), ("Authz-Time", String(t0))],
                             sealedBody: try sealer.sealMessage(tamperedBody, context: "\(subject)/x/write/\(t0)/"))
        // An Authz-Time at the edge of Int64 (its distance to the stored time overflows): skipped
        // like any other replay, never a crash of the applier.
        _ = try publishWrite(replayBody, time: Int64.min, headers: [("Authz-Kind", "write"), ("Authz-Time", String(Int64.min))])
        let after = try await ca.write(seed.user(.random()))
        XCTAssertEqual(after, published + 5, "the rejected and skipped messages still took their revisions")
        _ = try await cb.check(tenant: seed.tenant, user: .random(), permission: "mail.read", scope: .tenant, minRevision: after)
        let ea = try await export(ca), eb = try await export(cb)
        XCTAssertEqual(ea, eb)
        for (rejected, why) in [(duplicate, "duplicate name"), (replayed, "replayed"), (tampered, "tampered")] {
            XCTAssertFalse(String(decoding: ea, as: UTF8.self).contains(rejected.description), "the \(why) role was stored")
        }

        // Racing writers: the same role name from both replicas at once, twenty times.
        var wins = 0, rejectedWhenApplied = 0
        for round in 0..<20 {
            let name = "race-\(round)"
            async let x: Result<UInt64, Error> = { do { return .success(try await ca.write([.upsert(.role(Role(id: .random(), tenantId: seed.tenant, name: name)))])) } catch { return .failure(error) } }()
            async let y: Result<UInt64, Error> = { do { return .success(try await cb.write([.upsert(.role(Role(id: .random(), tenantId: seed.tenant, name: name)))])) } catch { return .failure(error) } }()
            let results = await [x, y]
            let ok = results.filter { if case .success = $0 { return true } else { return false } }.count
            XCTAssertEqual(ok, 1, "round \(round): \(results)")
            wins += ok
            for case .failure(let e as AuthzError) in results {
                XCTAssertTrue(e.code == .alreadyExists || (e.code == .failedPrecondition && e.message.contains("rejected when applied")), e.message)
                if e.code == .failedPrecondition { rejectedWhenApplied += 1 }
            }
        }
        print("replication: 20 races, \(rejectedWhenApplied) decided when applied, the rest by the losing writer's own check")
        let last = try await ca.write(seed.user(.random()))
        _ = try await cb.check(tenant: seed.tenant, user: .random(), permission: "mail.read", scope: .tenant, minRevision: last)
        let fa = try await export(ca), fb = try await export(cb)
        XCTAssertEqual(fa, fb, "replicas differ after the races")
        XCTAssertEqual(wins, 20)
        ca.close()
        cb.close()
    }

    /// An import through the log keeps the file's created_at and updated_at on every replica
    /// (export → import → export stays exact in log mode too).
    func testImportThroughTheLogKeepsTimestamps() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let a = try replica(cluster)
        let b = try replica(cluster, keyring: a.dir + "/data/keyring")
        defer { for d in [a, b] { d.stop(); d.remove() } }
        let ca = a.client(), cb = b.client()
        defer { ca.close(); cb.close() }
        let t = ID.random(), u = ID.random()
        let jsonl = """
        {"kind":"tenant","id":"\(t)","name":"old","created_at":"2020-01-02T03:04:05.000006Z","updated_at":"2021-01-02T03:04:05.000006Z"}
        {"kind":"user","id":"\(u)","tenant_id":"\(t)","created_at":"2020-02-02T03:04:05Z","updated_at":"2022-02-02T03:04:05Z"}

        """
        let r = try await ca.importJSONL(Array(jsonl.utf8)).revision
        _ = try await cb.check(tenant: t, user: u, permission: "x", scope: .self, minRevision: r)
        let text = String(decoding: try await export(cb), as: UTF8.self)
        for stamp in ["2020-01-02T03:04:05.000006Z", "2021-01-02T03:04:05.000006Z", "2020-02-02T03:04:05", "2022-02-02T03:04:05"] {
            XCTAssertTrue(text.contains(stamp), "\(stamp) missing from \(text)")
        }
    }

    /// Every replica keeps the same change log (same changes, same revisions): a watcher may
    /// follow any of them and switch to another with its resume revision.
    func testWatchOnAnyReplicaSeesTheSameChanges() async throws {
        let cluster = try NatsCluster(count: 1)
        defer { cluster.stopAll() }
        let a = try replica(cluster)
        let b = try replica(cluster, keyring: a.dir + "/data/keyring")
        defer { for d in [a, b] { d.stop(); d.remove() } }
        let ca = a.client(), cb = b.client()
        defer { ca.close(); cb.close() }
        let t = ID.random()
        var last = try await ca.write([.upsert(.tenant(Tenant(id: t, name: "watched")))])
        for i in 0..<3 {
            last = try await (i % 2 == 0 ? ca : cb).write((0..<5).map { _ in .upsert(.user(User(id: .random(), tenantId: t))) })
        }
        func history(_ c: AuthzClient, from: UInt64) async throws -> [Change] {
            var out: [Change] = []
            for try await batch in c.watch(WatchCall(fromRevision: from)) {
                out += batch.changes
                if batch.caughtUp && batch.revision >= last { break }
            }
            return out
        }
        let fromA = try await history(ca, from: 0), fromB = try await history(cb, from: 0)
        XCTAssertEqual(fromA.count, 16)
        XCTAssertEqual(fromA, fromB)
        // Resumed on the other replica from a revision seen on the first: the rest, no gap.
        let cut = fromA[5].revision
        let rest = try await history(cb, from: cut)
        XCTAssertEqual(fromA.filter { $0.revision <= cut } + rest, fromA)
    }

    /// A data directory written without a log refuses log mode (its revisions are not stream
    /// sequences); bad log flags are refused with the flag named.
    func testLogModeRefusesForeignDataAndBadFlags() throws {
        let plain = try DaemonProcess(tcp: false)
        let client = plain.client()
        let done = expectation(description: "write")
        Task {
            _ = try? await client.write(Seed().ops)
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
        client.close()
        plain.stop()
        defer { plain.remove() }
        let authzd = productsDirectory().appendingPathComponent("authzd").path
        let (rc, out) = try runProcess(authzd, ["serve", "--data-dir", plain.dir + "/data", "--socket", plain.dir + "/x.sock", "--log", "nats://127.0.0.1:1"])
        XCTAssertNotEqual(rc, 0)
        XCTAssertTrue(out.contains("written without a log"), out)
        for (flags, needle) in [(["--log", "http://x"], "not a NATS server URL"), (["--log", "nats://127.0.0.1:4222", "--log-shard", "3/2"], "log-shard"),
                                (["--log", "nats://127.0.0.1:4222", "--log-tenants", "nope"], "log-tenants")] {
            let (rc, out) = try runProcess(authzd, ["serve", "--data-dir", plain.dir + "/d2", "--socket", plain.dir + "/y.sock"] + flags)
            XCTAssertNotEqual(rc, 0)
            XCTAssertTrue(out.contains(needle), "\(flags): \(out)")
        }
    }
}

/// A value shared between tasks under a lock.
final class Locked<T>: @unchecked Sendable {
    private var v: T
    private let lock = NSLock()
    init(_ v: T) { self.v = v }
    var value: T { lock.lock(); defer { lock.unlock() }; return v }
    func mutate(_ body: (inout T) -> Void) { lock.lock(); body(&v); lock.unlock() }
}

extension Array {
    func asyncMap<U>(_ body: (Element) async throws -> U) async rethrows -> [U] {
        var out: [U] = []
        for e in self { out.append(try await body(e)) }
        return out
    }
}

/// Polls an async `condition` every 100 ms until it holds or `seconds` pass.
func asyncWaitUntil(_ seconds: Double, _ condition: () async -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    repeat {
        if await condition() { return true }
        try? await Task.sleep(nanoseconds: 100_000_000)
    } while Date() < deadline
    return false
}
