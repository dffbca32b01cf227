import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// The Hardening issue's file items, through the real `authzd` binary: commands that seal
/// nothing never create a key ring, restore refuses to run without the key ring its backup needs,
/// backups are 0600 (item 10); an open data directory and a foreign key ring are refused (item 12).
final class KeyRingFileTests: XCTestCase {
    var dirs: [String] = []

    override func tearDown() {
        for d in dirs { try? FileManager.default.removeItem(atPath: d) }
    }

    func newDirectory() -> String {
        let d = temporaryDirectory("authzd-ring")
        dirs.append(d)
        return d
    }

    func authzd(_ args: [String]) throws -> (Int32, String) {
        try runProcess(productsDirectory().appendingPathComponent("authzd").path, args)
    }

    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// Starts `authzd serve` on `dir` expecting it to refuse: returns the refusal (its log), or
    /// nil when it started (then it is stopped at once, so no daemon outlives a failed test).
    func refusal(_ dir: String, _ extra: [String] = []) -> String? {
        unlink(dir + "/authzd.sock")  // DaemonProcess takes a leftover socket file for a started daemon
        do {
            let d = try DaemonProcess(dir: dir, tcp: false, extra: extra)
            d.stop()
            return nil
        } catch {
            return (error as? AuthzError)?.message ?? "\(error)"
        }
    }

    func mode(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? NSNumber)?.intValue ?? -1
    }

    /// Writes a key ring file (mode 0600) with one active key named `id`.
    func writeRing(_ path: String, id: String) {
        let key = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        _ = FileManager.default.createFile(atPath: path, contents: Data("\(id) \(key) active\n".utf8), attributes: [.posixPermissions: 0o600])
    }

    /// A tenant, a user and a credential with sealed tokens.
    func seed(_ daemon: DaemonProcess) throws -> (tenant: ID, credential: ID) {
        let t = ID.random(), u = ID.random(), c = ID.random()
        let client = daemon.client()
        defer { client.close() }
        _ = try client.send(.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t))),
                                    .upsert(.platformCredential(PlatformCredential(id: c, tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana",
                                                                                   accessToken: "tok-ACCESS-ring", refreshToken: "tok-REFRESH-ring")))])).wait()
        return (t, c)
    }

    /// Item 10: verify, migrate and offline key management on a data directory whose key ring
    /// lives elsewhere leave no key ring behind in it.
    func testCommandsThatDoNotSealNeverCreateAKeyRing() throws {
        let dir = newDirectory()
        let ring = dir + "/ring"
        writeRing(ring, id: "prod-1")
        let daemon = try DaemonProcess(dir: dir, tcp: false, extra: ["--keyring", ring])
        _ = try seed(daemon)
        daemon.stop()
        let data = dir + "/data"
        XCTAssertFalse(exists(data + "/keyring"))
        let commands: [[String]] = [
            ["verify", "--data-dir", data],
            ["migrate", "--data-dir", data],
            ["keys", "create", "--offline", "--data-dir", data, "--operator"],
            ["keys", "list", "--offline", "--data-dir", data],
        ]
        for args in commands {
            let (rc, out) = try authzd(args)
            XCTAssertEqual(rc, 0, "\(args): \(out)")
            XCTAssertFalse(exists(data + "/keyring"), "`authzd \(args.joined(separator: " "))` created a key ring")
        }
        // With the real key ring the data is still served and opens.
        let again = try DaemonProcess(dir: dir, tcp: false, extra: ["--keyring", ring])
        defer { again.stop() }
        XCTAssertFalse(exists(data + "/keyring"))
    }

    /// Item 10: a backup is 0600; restore without the key ring that sealed the backup's secrets
    /// is refused naming the key id (and creates nothing); with it, the restored daemon opens
    /// the secrets.
    func testRestoreNeedsTheKeyRingThatSealedTheBackup() async throws {
        let dir = newDirectory()
        let daemon = try DaemonProcess(dir: dir, tcp: false)
        defer { daemon.stop() }
        let (t, cred) = try seed(daemon)
        let backup = dir + "/backup"
        let (rc, out) = try authzd(["backup", "--data-dir", dir + "/data", backup])
        XCTAssertEqual(rc, 0, out)
        XCTAssertEqual(mode(backup + "/data.mdb"), 0o600, "the backup's data file must be 0600")

        let target = newDirectory()
        let restored = target + "/data"
        let (refused, refusedOut) = try authzd(["restore", "--data-dir", restored, backup])
        XCTAssertNotEqual(refused, 0, refusedOut)
        XCTAssertTrue(refusedOut.contains("\"k1\""), "the message names the key id the backup needs: \(refusedOut)")
        XCTAssertTrue(refusedOut.contains(restored + "/keyring"), refusedOut)
        XCTAssertFalse(exists(restored + "/keyring"), "restore must not create a key ring")
        XCTAssertFalse(exists(restored + "/data.mdb"), "a refused restore writes nothing")

        let wrongRing = target + "/wrong-ring"
        writeRing(wrongRing, id: "other")
        let (wrong, wrongOut) = try authzd(["restore", "--data-dir", restored, "--keyring", wrongRing, backup])
        XCTAssertNotEqual(wrong, 0, wrongOut)
        XCTAssertTrue(wrongOut.contains("\"k1\""), wrongOut)
        XCTAssertFalse(exists(restored + "/data.mdb"))

        try FileManager.default.copyItem(atPath: dir + "/data/keyring", toPath: restored + "/keyring")
        chmod(restored + "/keyring", 0o600)
        let (ok, okOut) = try authzd(["restore", "--data-dir", restored, backup])
        XCTAssertEqual(ok, 0, okOut)
        XCTAssertEqual(mode(restored + "/data.mdb"), 0o600)

        daemon.stop()
        let second = try DaemonProcess(dir: target, tcp: false)
        defer { second.stop() }
        let client = second.client()
        defer { client.close() }
        guard case .platformCredential(let c) = try await client.get(RecordRef(kind: .platformCredential, tenantId: t, id: cred), includeSecrets: true) else {
            return XCTFail("not a credential")
        }
        XCTAssertEqual(c.accessToken, "tok-ACCESS-ring")
    }

    /// Item 12: a data directory writable by group or others is refused, naming it and the fix.
    func testOpenDataDirectoryIsRefused() throws {
        let dir = newDirectory()
        let data = dir + "/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: false)
        for m in [0o777, 0o770, 0o702] {
            chmod(data, mode_t(m))
            guard let message = refusal(dir) else {
                XCTFail("the daemon started on a data directory of mode \(String(m, radix: 8))")
                continue
            }
            XCTAssertTrue(message.contains(data), message)
            XCTAssertTrue(message.contains("chmod 700 \(data)"), message)
            XCTAssertFalse(exists(data + "/data.mdb"), "nothing is created in a refused directory")
        }
        // Offline commands refuse it too.
        let (rc, out) = try authzd(["keys", "list", "--offline", "--data-dir", data])
        XCTAssertNotEqual(rc, 0, out)
        XCTAssertTrue(out.contains("chmod 700"), out)
        chmod(data, 0o700)
        let d = try DaemonProcess(dir: dir, tcp: false)
        d.stop()
    }

    /// Item 12: a key ring owned by another uid than the daemon's is refused, naming the owner
    /// and the fix, whether it is the default one or given with --keyring.
    func testKeyRingOwnedByAnotherUserIsRefused() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to give a file to another uid") }
        let dir = newDirectory()
        let ring = dir + "/ring"
        writeRing(ring, id: "k1")
        chown(ring, 65534, 65534)
        let given = refusal(dir, ["--keyring", ring])
        XCTAssertTrue(given?.contains("owned by uid 65534") ?? false, given ?? "the daemon started")
        XCTAssertTrue(given?.contains("chown 0 \(ring)") ?? false, given ?? "the daemon started")
        // The default key ring in the data directory, given away after the first start.
        let first = try DaemonProcess(dir: dir, tcp: false)
        first.stop()
        chown(dir + "/data/keyring", 65534, 65534)
        let byDefault = refusal(dir)
        XCTAssertTrue(byDefault?.contains("owned by uid 65534") ?? false, byDefault ?? "the daemon started")
        chown(dir + "/data/keyring", 0, 0)
        let again = try DaemonProcess(dir: dir, tcp: false)
        again.stop()
    }
}
