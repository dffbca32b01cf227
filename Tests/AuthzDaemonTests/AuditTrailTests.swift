import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import Logging
import XCTest
@testable import AuthzServer

/// The audit trail (issue 16): against a real `authzd serve --audit-log`, the lines that writes,
/// imports, key changes and refused authentications leave, that no secret reaches the file,
/// rotation, and `authzctl audit`; the writer's queue and rotation on their own.
final class AuditTrailTests: XCTestCase {
    /// Parses every line of `path` as a JSON object (failing the test on any other line).
    func lines(_ path: String, file: StaticString = #filePath, line: UInt = #line) -> [JSONValue] {
        guard let data = FileManager.default.contents(atPath: path) else {
            XCTFail("cannot read \(path)", file: file, line: line)
            return []
        }
        return data.split(separator: 0x0A).compactMap { raw in
            guard let v = try? JSONParser.parse(Array(raw)), case .object = v else {
                XCTFail("not a JSON object: \(String(decoding: raw, as: UTF8.self))", file: file, line: line)
                return nil
            }
            return v
        }
    }

    /// The permission bits of `path` (0 when it is missing).
    func mode(_ path: String) -> mode_t {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o777 : 0
    }

    /// A TCP client of `daemon` presenting `key` (in its Hello).
    func tcpClient(_ daemon: DaemonProcess, _ key: String) -> AuthzClient {
        let c = daemon.client(tcp: true, apiKey: key)
        return c
    }

    /// Calls `call` and returns its error (nil on success).
    func error(_ client: AuthzClient, _ call: Call) async -> AuthzError? {
        do {
            _ = try await client.call(call)
            return nil
        } catch let e as AuthzError {
            return e
        } catch {
            return AuthzError(.unknown, "\(error)")
        }
    }

    /// A GET on the gateway's HTTP listener with one header; returns the status line.
    func gatewayGet(port: Int, path: String, header: (String, String)) -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }) == 0 else { return "" }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let req = Array("GET \(path) HTTP/1.1\r\nHost: x\r\n\(header.0): \(header.1)\r\nConnection: close\r\n\r\n".utf8)
        _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self).components(separatedBy: "\r\n").first ?? ""
    }

    /// Writes, an import, key creation, revocation and expiry, refused logins (revoked, wrong
    /// secret, malformed, expired, on the binary protocol and on the gateway): each leaves the
    /// expected line with the right who, what and revision, and no secret, token, email or name
    /// written in the test, nor a key's hash, appears anywhere in the file.
    func testTrailRecordsWhoDidWhatAndNoSecret() async throws {
        let dir = temporaryDirectory("authzd-audit")
        let path = dir + "/audit.log"
        var daemon: DaemonProcess? = try DaemonProcess(dir: dir, extra: ["--audit-log", path, "--http-address", "127.0.0.1:0"])
        defer { daemon?.stop(); daemon?.remove() }
        let d = daemon!
        let local = d.client()
        let t = ID.random(), u = ID.random(), cred = ID.random(), u2 = ID.random()
        let rev1 = try await local.write([.upsert(.tenant(Tenant(id: t, name: "Acme Audit Corp")))])
        let (adminKey, adminSecret) = try await createKey(local, t, .admin)

        // An admin key over TCP writes a user with an email and a name, and a credential.
        let admin = tcpClient(d, adminSecret)
        let email = "ana.audit@example.test", displayName = "Ana Secretname"
        let access = "tok-ACCESS-audit-SECRET", refresh = "tok-REFRESH-audit-SECRET"
        let rev2 = try await admin.write([
            .upsert(.user(User(id: u, tenantId: t, email: email, displayName: displayName))),
            .upsert(.platformCredential(PlatformCredential(id: cred, tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana-account",
                                                           accessToken: access, refreshToken: refresh))),
        ])
        let rev3 = try await admin.write([.deactivate(RecordRef(kind: .user, tenantId: t, id: u))])
        let importEmail = "imported.person@example.test"
        let jsonl = BulkFormat.encode(.user(User(id: u2, tenantId: t, email: importEmail))) + "\n"
        let (rev4, records) = try await admin.importJSONL(Array(jsonl.utf8))
        XCTAssertEqual(records, 1)
        admin.close()

        // A checker key, revoked, then presented.
        let (revokedKey, revokedSecret) = try await createKey(local, t, .checker)
        _ = try await local.revokeKey(revokedKey.id)
        let check = Call.check(CheckCall(tenantId: t, userId: u, permission: "a.b", scope: .self))
        let wrongSecret = String(adminSecret.prefix(37)) + String(repeating: adminSecret.hasSuffix("0") ? "1" : "0", count: 64)
        let malformed = "azk_" + String(adminSecret.dropFirst(4).prefix(32)) + "_NOT-HEX-" + String(adminSecret.suffix(20))
        // A key whose expiry is set to the past, presented twice.
        let (expiredKey, expiredSecret) = try await createKey(local, t, .checker)
        _ = try await local.revokeKey(expiredKey.id, expiresAt: Timestamp.now() - 1_000_000)
        for presented in [revokedSecret, wrongSecret, malformed, expiredSecret, expiredSecret] {
            let c = tcpClient(d, presented)
            let e = await error(c, check)
            c.close()
            XCTAssertEqual(e?.code, .unauthenticated, "a refused key must not authenticate")
        }
        // The gateway listener refuses a wrong key too.
        var httpPort: Int?
        let deadline = Date().addingTimeInterval(5)
        while httpPort == nil, Date() < deadline {
            if let r = d.log.range(of: #"listen\.http=[^ \n]*:(\d+)"#, options: .regularExpression) {
                httpPort = Int(d.log[r].split(separator: ":").last!)
            } else {
                try await Task.sleep(nanoseconds: 50_000_000)
            }
        }
        let gatewayStatus = gatewayGet(port: try XCTUnwrap(httpPort, "gateway listener port"), path: "/check", header: ("x-authz-api-key", wrongSecret))
        XCTAssertTrue(gatewayStatus.contains("503"), gatewayStatus)
        local.close()
        // Stopping the daemon writes and fsyncs what is queued.
        XCTAssertEqual(d.stop(), 0)
        daemon = nil
        defer { d.remove() }

        XCTAssertEqual(mode(path), 0o600)
        let all = lines(path)
        let text = String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
        for v in all {
            guard case .string(let time)? = v["time"] else { XCTFail("no time: \(v)"); continue }
            XCTAssertNotNil(time.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"#, options: .regularExpression), time)
            XCTAssertNotNil(v["who"]?["kind"], "no who.kind: \(v)")
            XCTAssertNotNil(v["peer"], "no peer: \(v)")
        }
        func events(_ name: String) -> [JSONValue] { all.filter { $0["event"] == .string(name) } }
        let superuser = JSONValue.object([("kind", .string("superuser")), ("uid", .number(String(getuid())))])
        let adminWho = JSONValue.object([("kind", .string("key")), ("key_id", .string(adminKey.id.description)), ("role", .string("admin")), ("tenant_id", .string(t.description))])

        // Writes: who, peer, tenants, each operation's kind and id, the committed revision.
        let writes = events("write")
        XCTAssertEqual(writes.count, 3)
        XCTAssertEqual(writes.first?["who"], superuser)
        XCTAssertEqual(writes.first?["peer"], .string("unix"))
        XCTAssertEqual(writes.first?["revision"], .number(String(rev1)))
        XCTAssertEqual(writes.first?["ops"], .array([.object([("op", .string("upsert")), ("kind", .string("tenant")), ("id", .string(t.description)), ("tenant_id", .string(t.description))])]))
        let w2 = writes.dropFirst().first
        XCTAssertEqual(w2?["who"], adminWho)
        if case .string(let peer)? = w2?["peer"] { XCTAssertTrue(peer.hasPrefix("127.0.0.1:"), peer) } else { XCTFail("no peer") }
        XCTAssertEqual(w2?["tenants"], .array([.string(t.description)]))
        XCTAssertEqual(w2?["revision"], .number(String(rev2)))
        XCTAssertEqual(w2?["ops"], .array([
            .object([("op", .string("upsert")), ("kind", .string("user")), ("id", .string(u.description)), ("tenant_id", .string(t.description))]),
            .object([("op", .string("upsert")), ("kind", .string("platform_credential")), ("id", .string(cred.description)), ("tenant_id", .string(t.description))]),
        ]))
        let w3 = writes.last
        XCTAssertEqual(w3?["revision"], .number(String(rev3)))
        XCTAssertEqual(w3?["ops"], .array([.object([("op", .string("deactivate")), ("kind", .string("user")), ("id", .string(u.description)), ("tenant_id", .string(t.description))])]))

        let imports = events("import")
        XCTAssertEqual(imports.count, 1)
        XCTAssertEqual(imports.first?["who"], adminWho)
        XCTAssertEqual(imports.first?["records"], .number("1"))
        XCTAssertEqual(imports.first?["revision"], .number(String(rev4)))
        XCTAssertEqual(imports.first?["tenants"], .array([.string(t.description)]))

        // Key changes: which key, its role and tenant, by whom.
        let created = events("key_created")
        XCTAssertEqual(created.compactMap { $0["key_id"] }, [adminKey, revokedKey, expiredKey].map { .string($0.id.description) })
        XCTAssertTrue(created.allSatisfy { $0["who"] == superuser && $0["tenant_id"] == .string(t.description) })
        XCTAssertEqual(created.first?["role"], .string("admin"))
        XCTAssertEqual(created.first?["may_read_secrets"], .bool(true))
        let revoked = events("key_revoked")
        XCTAssertEqual(revoked.count, 1)
        XCTAssertEqual(revoked.first?["key_id"], .string(revokedKey.id.description))
        XCTAssertEqual(revoked.first?["role"], .string("checker"))
        XCTAssertEqual(revoked.first?["who"], superuser)
        let expirySet = events("key_expiry_set")
        XCTAssertEqual(expirySet.count, 1)
        XCTAssertEqual(expirySet.first?["key_id"], .string(expiredKey.id.description))
        XCTAssertNotNil(expirySet.first?["expires_at"])
        // key_expired once, although the expired key was presented twice.
        let expired = events("key_expired")
        XCTAssertEqual(expired.count, 1)
        XCTAssertEqual(expired.first?["key_id"], .string(expiredKey.id.description))

        // Refused logins: the reason, the key id when the key was well-formed.
        let refused = events("auth_refused")
        func refusals(_ reason: String) -> [JSONValue] { refused.filter { $0["reason"] == .string(reason) } }
        XCTAssertEqual(refusals("revoked_key").first?["key_id"], .string(revokedKey.id.description))
        XCTAssertEqual(refusals("invalid_key").filter { $0["listener"] == .string("binary") }.first?["key_id"], .string(adminKey.id.description))
        XCTAssertEqual(refusals("invalid_key").filter { $0["listener"] == .string("gateway") }.first?["key_id"], .string(adminKey.id.description))
        XCTAssertEqual(refusals("malformed_key").count, 1)
        XCTAssertNil(refusals("malformed_key").first?["key_id"])
        XCTAssertEqual(refusals("expired_key").count, 2)
        XCTAssertTrue(refused.allSatisfy { $0["who"] == .object([("kind", .string("unauthenticated"))]) }, "\(refused)")
        if case .string(let peer)? = refusals("revoked_key").first?["peer"] { XCTAssertTrue(peer.hasPrefix("127.0.0.1:"), peer) } else { XCTFail("no peer") }

        // No secret anywhere: keys, both halves of each, what was presented, their hashes,
        // credential tokens, and the field values written.
        var secrets = [access, refresh, email, displayName, importEmail, "Acme Audit Corp", "ana-account", wrongSecret, malformed]
        for key in [adminSecret, revokedSecret, expiredSecret] {
            secrets += [key, String(key.dropFirst(4).prefix(32)), String(key.suffix(64))]
            let (_, bytes) = try XCTUnwrap(ApiKey.parse(key))
            let hash = KeyTable.hash(secret: bytes)
            secrets += [hash.map { String(format: "%02x", $0) }.joined(), Data(hash).base64EncodedString()]
        }
        for s in secrets { XCTAssertFalse(text.contains(s), "the audit trail holds \(s)") }
    }

    /// Rotation at a small audit-max-bytes keeps PATH.1 … PATH.<keep> (0600, none larger than
    /// the limit), and `authzctl audit` reads them oldest first and filters by event and tenant.
    func testRotationAndAuthzctlAudit() async throws {
        let dir = temporaryDirectory("authzd-audit-rot")
        let path = dir + "/audit.log"
        var daemon: DaemonProcess? = try DaemonProcess(dir: dir, tcp: false, extra: [
            "--audit-log", path, "--set", "audit-max-bytes=1024", "--set", "audit-keep=3", "--set", "audit-sync-ms=20",
        ])
        defer { daemon?.stop(); daemon?.remove() }
        let d = daemon!
        let local = d.client()
        let t = ID.random(), other = ID.random()
        var last: UInt64 = 0
        _ = try await local.write([.upsert(.tenant(Tenant(id: t, name: "t"))), .upsert(.tenant(Tenant(id: other, name: "o")))])
        for i in 0..<40 {
            last = try await local.write([.upsert(.user(User(id: .random(), tenantId: i % 2 == 0 ? t : other)))])
        }
        _ = try await createKey(local, t, .checker)
        local.close()
        XCTAssertEqual(d.stop(), 0)
        daemon = nil
        defer { d.remove() }

        for f in [path, path + ".1", path + ".2", path + ".3"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: f), "\(f) is missing")
            XCTAssertEqual(mode(f), 0o600, f)
            let size = (try FileManager.default.attributesOfItem(atPath: f)[.size] as? Int) ?? 0
            XCTAssertLessThanOrEqual(size, 1024, f)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".4"), "audit-keep=3 keeps three rotated files")

        let authzctl = productsDirectory().appendingPathComponent("authzctl").path
        let (status, out) = try runProcess(authzctl, ["audit", "--file", path, "--event", "write"], mergeStderr: false)
        XCTAssertEqual(status, 0)
        let parsed = out.split(separator: "\n").compactMap { try? JSONParser.parse(Array($0.utf8)) }
        XCTAssertGreaterThan(parsed.count, 3)
        XCTAssertTrue(parsed.allSatisfy { $0["event"] == .string("write") })
        let revisions = parsed.compactMap { v -> UInt64? in if case .number(let n)? = v["revision"] { return UInt64(n) } else { return nil } }
        XCTAssertEqual(revisions, revisions.sorted(), "oldest file first")
        XCTAssertEqual(Set(revisions).count, revisions.count)
        XCTAssertEqual(revisions.last, last)

        let (_, keys) = try runProcess(authzctl, ["audit", "--file", path, "--event", "key_created"], mergeStderr: false)
        XCTAssertEqual(keys.split(separator: "\n").count, 1)
        let (_, ofTenant) = try runProcess(authzctl, ["audit", "--file", path, "--event", "write", "--tenant", other.description], mergeStderr: false)
        let tenantLines = ofTenant.split(separator: "\n")
        XCTAssertFalse(tenantLines.isEmpty)
        XCTAssertLessThan(tenantLines.count, parsed.count)
        XCTAssertTrue(tenantLines.allSatisfy { $0.contains(other.description) })
        let (_, table) = try runProcess(authzctl, ["audit", "--file", path, "--event", "key_created", "--output", "table"], mergeStderr: false)
        XCTAssertTrue(table.hasPrefix("TIME"), table)
        XCTAssertTrue(table.contains("key_created"), table)
        let (badStatus, _) = try runProcess(authzctl, ["audit", "--file", path, "--event", "nope"])
        XCTAssertEqual(badStatus, 2)
    }

    /// The writer on its own: with a queue of two lines, three more are dropped and counted, and
    /// the next line written says `"dropped_before":3`.
    func testFullQueueMarksTheNextWrittenLine() throws {
        let dir = temporaryDirectory("authzd-audit-unit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var settings = AuditLog.Settings(path: dir + "/audit.log")
        settings.capacity = 2
        settings.syncMillis = 60_000  // only sync() and close() write
        var written = 0, dropped = 0
        let log = try AuditLog(settings: settings, logger: Logger(label: "test"), onWritten: { written += $0 }, onDropped: { dropped += $0 })
        for i in 0..<5 {
            log.record("test", who: .insecure, peer: .unknown) { $0 += ",\"n\":\(i)" }
        }
        log.sync()
        log.record("test", who: .insecure, peer: .unknown) { $0 += ",\"n\":5" }
        log.close()
        let all = lines(settings.path)
        XCTAssertEqual(all.map { $0["n"] }, [.number("0"), .number("1"), .number("5")])
        XCTAssertNil(all[0]["dropped_before"])
        XCTAssertNil(all[1]["dropped_before"])
        XCTAssertEqual(all[2]["dropped_before"], .number("3"))
        XCTAssertEqual(written, 3)
        XCTAssertEqual(dropped, 3)
        XCTAssertEqual(mode(settings.path), 0o600)
    }

    /// A line longer than the queue's byte budget is still written when nothing else waits
    /// (a Write of more operations than the default `max-write-ops` allows), not always lost.
    func testLineLargerThanTheByteBudgetIsTakenAlone() throws {
        let dir = temporaryDirectory("authzd-audit-unit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var settings = AuditLog.Settings(path: dir + "/audit.log")
        settings.maxQueuedBytes = 100
        settings.syncMillis = 60_000
        var dropped = 0
        let log = try AuditLog(settings: settings, logger: Logger(label: "test"), onDropped: { dropped += $0 })
        let big = String(repeating: "x", count: 500)
        log.record("test", who: .insecure, peer: .unknown) { $0 += ",\"big\":\"\(big)\"" }
        log.record("test", who: .insecure, peer: .unknown) { $0 += ",\"n\":1" }
        log.close()
        let all = lines(settings.path)
        XCTAssertEqual(all.count, 1)
        XCTAssertEqual(all.first?["big"], .string(big))
        XCTAssertEqual(dropped, 1, "the queue is over budget until the big line is written")
    }

    /// Rotation on its own: no file grows past maxBytes, at most `keep` rotated files stay, and
    /// the lines of the kept files are the newest, in order.
    func testRotationShiftsAndDeletesTheOldest() throws {
        let dir = temporaryDirectory("authzd-audit-unit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var settings = AuditLog.Settings(path: dir + "/audit.log")
        settings.maxBytes = 300
        settings.keep = 2
        let log = try AuditLog(settings: settings, logger: Logger(label: "test"))
        for i in 0..<40 { log.record("test", who: .unauthenticated, peer: .unknown) { $0 += ",\"n\":\(i)" } }
        log.close()
        let files = [settings.path + ".2", settings.path + ".1", settings.path]
        var numbers: [Int] = []
        for f in files {
            let size = (try FileManager.default.attributesOfItem(atPath: f)[.size] as? Int) ?? 0
            XCTAssertLessThanOrEqual(size, 300, f)
            XCTAssertEqual(mode(f), 0o600, f)
            numbers += lines(f).compactMap { if case .number(let n)? = $0["n"] { return Int(n) } else { return nil } }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: settings.path + ".3"))
        XCTAssertEqual(numbers, Array((40 - numbers.count)..<40), "the newest lines, oldest file first")
    }

    /// An audit file others may write is refused: whoever can write it can forge lines.
    func testRefusesAFileOthersMayWrite() throws {
        let dir = temporaryDirectory("authzd-audit-unit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/audit.log"
        _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o666])
        chmod(path, 0o666)
        XCTAssertThrowsError(try AuditLog(settings: AuditLog.Settings(path: path), logger: Logger(label: "test"))) { e in
            XCTAssertTrue("\(e)".contains("chmod 600"), "\(e)")
        }
    }
}
