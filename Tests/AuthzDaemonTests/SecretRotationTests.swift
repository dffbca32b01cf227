import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// Key-ring rotation while serving (issue 16): `authzd keys rotate-data` against a live
/// daemon re-encrypts every secret to the new active key in the background, writes go on,
/// and a rotation interrupted by SIGKILL resumes at the next start. Proven end to end: after
/// the rotation the old key is removed from the ring and every secret still opens.
final class SecretRotationTests: XCTestCase {
    var base: String!
    var daemon: DaemonProcess?
    let t = ID.random(), u = ID.random()

    override func setUpWithError() throws { base = temporaryDirectory("rotation") }

    override func tearDown() {
        daemon?.stop()
        try? FileManager.default.removeItem(atPath: base)
    }

    var ringPath: String { base + "/keyring" }

    /// Writes the key ring with `keys` (id → 32 bytes); `active` marked.
    func writeRing(_ keys: [(String, [UInt8])], active: String) throws {
        let text = keys.map { "\($0.0) \(Data($0.1).base64EncodedString())\($0.0 == active ? " active" : "")" }.joined(separator: "\n") + "\n"
        _ = FileManager.default.createFile(atPath: ringPath, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        chmod(ringPath, 0o600)
    }

    func start(_ extra: [String] = []) throws -> DaemonProcess {
        let d = try DaemonProcess(dir: base, tcp: false, extra: ["--keyring", ringPath] + extra)
        daemon = d
        return d
    }

    func credentials(_ n: Int) -> [WriteOp] {
        (0..<n).map { i in
            .upsert(.platformCredential(PlatformCredential(id: ID(hi: 7, lo: UInt64(i)), tenantId: t, ownerUserId: u, platform: "gmail",
                                                           externalAccountId: "acct-\(i)", accessToken: "access-\(i)", refreshToken: "refresh-\(i)")))
        }
    }

    /// Every credential opens and holds its own tokens.
    func assertAllReadable(_ c: AuthzClient, _ n: Int, file: StaticString = #filePath, line: UInt = #line) async throws {
        for i in stride(from: 0, to: n, by: max(1, n / 50)) {
            let ref = RecordRef(kind: .platformCredential, tenantId: t, id: ID(hi: 7, lo: UInt64(i)))
            guard case .platformCredential(let cred) = try await c.get(ref, includeSecrets: true) else { return XCTFail("not a credential", file: file, line: line) }
            XCTAssertEqual(cred.accessToken, "access-\(i)", file: file, line: line)
            XCTAssertEqual(cred.refreshToken, "refresh-\(i)", file: file, line: line)
            XCTAssertFalse(cred.secretUnreadable, file: file, line: line)
        }
    }

    func rotateData(_ d: DaemonProcess, wait: Bool) throws -> String {
        let p = Process()
        p.executableURL = productsDirectory().appendingPathComponent("authzd")
        p.arguments = ["keys", "rotate-data", "--socket", d.socketPath] + (wait ? ["--wait"] : [])
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, text)
        return text
    }

    let k1 = [UInt8](repeating: 1, count: 32), k2 = [UInt8](repeating: 2, count: 32)

    func testRotationWhileServingThenTheOldKeyCanGo() async throws {
        try writeRing([("k1", k1)], active: "k1")
        var d = try start()
        var c = d.client()
        _ = try await c.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t)))] + credentials(600))

        // A ring that drops a key still in use is refused, and the old ring stays.
        try writeRing([("k2", k2)], active: "k2")
        do {
            _ = try await c.rotateSecrets()
            XCTFail("a ring lacking k1 was accepted")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .failedPrecondition)
            XCTAssertTrue(e.message.contains("k1"), e.message)
        }
        try await assertAllReadable(c, 600)

        try writeRing([("k1", k1), ("k2", k2)], active: "k2")
        let out = try rotateData(d, wait: true)
        XCTAssertTrue(out.contains(#""active_key_id":"k2""#) && out.contains(#""running":false"#) && out.contains(#""remaining":0"#), out)
        // New secrets are sealed with k2 too; writes go on.
        _ = try await c.write(credentials(601).suffix(1).map { $0 })
        try await assertAllReadable(c, 601)
        c.close()
        d.stop()

        // Without k1 every secret still opens: nothing is sealed with it any more.
        try writeRing([("k2", k2)], active: "k2")
        d = try start()
        c = d.client()
        defer { c.close() }
        try await assertAllReadable(c, 601)
    }

    func testRotationInterruptedBySIGKILLResumesAtStart() async throws {
        try writeRing([("k1", k1)], active: "k1")
        // 1,500 batches of one, 2 ms apart: at least 3 s, so it is still running when killed.
        var d = try start(["--set", "secret-rotation-batch=1", "--set", "secret-rotation-pause=2"])
        var c = d.client()
        let n = 1500
        _ = try await c.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t)))] + credentials(n))
        try writeRing([("k1", k1), ("k2", k2)], active: "k2")
        let started = try await c.rotateSecrets()
        XCTAssertTrue(started.running)
        XCTAssertEqual(started.activeKeyId, "k2")
        // Writes go on while it runs.
        _ = try await c.write([.upsert(.user(User(id: .random(), tenantId: t)))])
        try await Task.sleep(nanoseconds: 300_000_000)
        let midway = try await c.rotateSecrets()
        XCTAssertTrue(midway.running, "batches of one: still running after 0.3 s (\(midway))")
        XCTAssertGreaterThan(midway.reencrypted, 0)
        c.close()
        d.kill9()

        d = try start()
        c = d.client()
        let deadline = Date().addingTimeInterval(60)
        while !d.log.contains("secret rotation finished"), Date() < deadline { try await Task.sleep(nanoseconds: 100_000_000) }
        XCTAssertTrue(d.log.contains("resuming an unfinished secret rotation"), d.log)
        XCTAssertTrue(d.log.contains("secret rotation finished"), d.log)
        try await assertAllReadable(c, n)
        c.close()
        d.stop()

        try writeRing([("k2", k2)], active: "k2")
        d = try start()
        c = d.client()
        defer { c.close() }
        try await assertAllReadable(c, n)
        XCTAssertFalse(d.log.contains("resuming"), "a finished rotation is not resumed")
    }

    func testOnlyTheLocalSuperuserMayRotate() async throws {
        try writeRing([("k1", k1)], active: "k1")
        let d = try start()
        let local = d.client()
        defer { local.close() }
        _ = try await local.write([.upsert(.tenant(Tenant(id: t, name: "acme")))])
        for role in [KeyRole.operator, .admin] {
            let (_, key) = try await createKey(local, role == .operator ? nil : t, role)
            let c = d.client(apiKey: key)
            defer { c.close() }
            do {
                _ = try await c.rotateSecrets()
                XCTFail("\(role) key rotated secrets")
            } catch let e as AuthzError { XCTAssertEqual(e.code, .permissionDenied, "\(e)") }
        }
    }
}
