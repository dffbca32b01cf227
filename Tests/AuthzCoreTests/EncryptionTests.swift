import AuthzEngine
import AuthzModel
@testable import AuthzStore
import Foundation
import XCTest

/// Platform-credential secrets: AES-256-GCM, bound to tenant, owner, record and field.
final class EncryptionTests: XCTestCase {
    var dir = ""

    override func setUp() { dir = temporaryDirectory("authzd-crypt") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func ring(_ name: String, _ lines: String) throws -> String {
        let path = dir + "/" + name
        try lines.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        return path
    }

    func key() -> String { Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString() }

    func testSealedSecretsAreBoundToRecordAndField() throws {
        let sealer = SecretSealer(ring: try KeyRing.load(path: try ring("r1", "k1 \(key()) active\n")))
        let t = ID.random(), u = ID.random(), c1 = ID.random(), c2 = ID.random()
        let sealed = try sealer.seal("ya29.secret-token", tenant: t, owner: u, credential: c1, field: "access_token")
        XCTAssertEqual(try sealer.open(sealed, tenant: t, owner: u, credential: c1, field: "access_token"), "ya29.secret-token")
        // Fresh nonce each time.
        XCTAssertNotEqual(sealed, try sealer.seal("ya29.secret-token", tenant: t, owner: u, credential: c1, field: "access_token"))
        XCTAssertFalse(String(decoding: sealed, as: UTF8.self).contains("secret-token"))
        // Moved to another credential, another field, another owner or tenant: refused.
        for (tt, uu, cc, ff) in [(t, u, c2, "access_token"), (t, u, c1, "refresh_token"), (t, ID.random(), c1, "access_token"), (ID.random(), u, c1, "access_token")] {
            XCTAssertThrowsError(try sealer.open(sealed, tenant: tt, owner: uu, credential: cc, field: ff)) { e in
                XCTAssertEqual((e as! AuthzError).code, .dataLoss)
                XCTAssertFalse((e as! AuthzError).message.contains("secret-token"))
            }
        }
        // A different key with the same id: refused.
        let other = SecretSealer(ring: try KeyRing.load(path: try ring("r2", "k1 \(key()) active\n")))
        XCTAssertThrowsError(try other.open(sealed, tenant: t, owner: u, credential: c1, field: "access_token"))
        // A ring without the key: refused, naming the key id.
        let missing = SecretSealer(ring: try KeyRing.load(path: try ring("r3", "k9 \(key()) active\n")))
        XCTAssertThrowsError(try missing.open(sealed, tenant: t, owner: u, credential: c1, field: "access_token")) { e in
            XCTAssertTrue((e as! AuthzError).message.contains("\"k1\""))
        }
        // A flipped bit: refused.
        var tampered = sealed
        tampered[tampered.count - 1] ^= 1
        XCTAssertThrowsError(try sealer.open(tampered, tenant: t, owner: u, credential: c1, field: "access_token"))
    }

    func testKeyRingReadableByOthersIsRefused() throws {
        let path = try ring("open", "k1 \(key()) active\n")
        chmod(path, 0o644)
        XCTAssertThrowsError(try KeyRing.load(path: path)) { e in
            XCTAssertEqual((e as! AuthzError).code, .failedPrecondition)
            XCTAssertTrue((e as! AuthzError).message.contains("chmod 600"))
        }
        var o = StoreOptions()
        o.keyRingPath = path
        XCTAssertThrowsError(try Store(directory: dir + "/data", options: o))
        XCTAssertThrowsError(try KeyRing.load(path: try ring("two", "a \(key()) active\nb \(key()) active\n")))
        XCTAssertThrowsError(try KeyRing.load(path: try ring("none", "a \(key())\n")))
        XCTAssertThrowsError(try KeyRing.load(path: try ring("short", "a c2hvcnQ= active\n")))
    }

    func credentialOps(tenant: ID, user: ID, count: Int) -> ([WriteOp], [ID]) {
        var ops: [WriteOp] = [.upsert(.tenant(Tenant(id: tenant, name: "t"))), .upsert(.user(User(id: user, tenantId: tenant)))]
        var ids: [ID] = []
        for i in 0..<count {
            let c = ID.random()
            ids.append(c)
            ops.append(.upsert(.platformCredential(PlatformCredential(id: c, tenantId: tenant, ownerUserId: user, platform: "gmail", externalAccountId: "acct\(i)",
                                                                     accessToken: "access-PLAINTEXT-\(i)", refreshToken: "refresh-PLAINTEXT-\(i)"))))
        }
        return (ops, ids)
    }

    func testStoredSecretsRoundTripAndNeverSitInClear() throws {
        var o = EngineOptions()
        o.store.keyRingPath = try ring("ring", "k1 \(key()) active\n")
        let t = ID.random(), u = ID.random()
        let (ops, ids) = credentialOps(tenant: t, user: u, count: 5)
        do {
            let engine = try Engine(directory: dir + "/data", options: o)
            try engine.write(ops)
            guard case .platformCredential(let c) = try engine.get(RecordRef(kind: .platformCredential, tenantId: t, id: ids[2]), includeSecrets: true) else { return XCTFail() }
            XCTAssertEqual(c.accessToken, "access-PLAINTEXT-2")
            XCTAssertEqual(c.refreshToken, "refresh-PLAINTEXT-2")
            guard case .platformCredential(let r) = try engine.get(RecordRef(kind: .platformCredential, tenantId: t, id: ids[2])) else { return XCTFail() }
            XCTAssertTrue(r.secretsRedacted)
            XCTAssertEqual(r.accessToken, "")
            let export = String(decoding: try engine.exportJSONL().bytes, as: UTF8.self)
            XCTAssertFalse(export.contains("PLAINTEXT"), "export without the flag leaks a secret")
            XCTAssertTrue(String(decoding: try engine.exportJSONL(includeSecrets: true).bytes, as: UTF8.self).contains("access-PLAINTEXT-0"))
            // Writing back a redacted read keeps the stored secrets.
            try engine.write([.upsert(.platformCredential(r))])
            guard case .platformCredential(let again) = try engine.get(RecordRef(kind: .platformCredential, tenantId: t, id: ids[2]), includeSecrets: true) else { return XCTFail() }
            XCTAssertEqual(again.accessToken, "access-PLAINTEXT-2")
        }
        for file in try FileManager.default.contentsOfDirectory(atPath: dir + "/data") {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/data/" + file))
            XCTAssertNil(bytes.range(of: Data("PLAINTEXT".utf8)), "\(file) holds a secret in clear")
        }
    }

    func testRotationKilledHalfwayResumesAndEverythingStaysReadable() throws {
        let k1 = key(), k2 = key()
        var o = StoreOptions()
        o.keyRingPath = try ring("ring1", "k1 \(k1) active\n")
        let t = ID.random(), u = ID.random()
        let (ops, ids) = credentialOps(tenant: t, user: u, count: 50)
        do { _ = try Store(directory: dir + "/data", options: o).write(ops) }
        // New ring: k2 active, k1 retired.
        o.keyRingPath = try ring("ring2", "k1 \(k1)\nk2 \(k2) active\n")
        func keyIds(_ s: Store) throws -> [String] {
            try s.read { r in
                var out: [String] = []
                try r.txn.scan(s.records, prefix: Store.recordKey(t, .platformCredential, .zero).prefix(17).map { $0 }) { _, v in
                    out += try RecordCodec.credentialKeyIds(v) ?? []
                    return true
                }
                return out
            }
        }
        do {
            let s = try Store(directory: dir + "/data", options: o)
            XCTAssertEqual(try s.rotateSecrets(batchSize: 7, stopAfter: 20), 20)  // "killed" after 20
        }
        let s = try Store(directory: dir + "/data", options: o)
        let mixed = try keyIds(s)
        XCTAssertEqual(mixed.filter { $0 == "k2" }.count, 40)
        XCTAssertEqual(mixed.filter { $0 == "k1" }.count, 60)
        for (i, id) in ids.enumerated() {
            guard case .platformCredential(let c)? = try s.read({ try $0.entity(.platformCredential, tenant: t, id: id) }) else { return XCTFail() }
            XCTAssertEqual(c.accessToken, "access-PLAINTEXT-\(i)")
        }
        XCTAssertEqual(try s.rotateSecrets(batchSize: 7), 30)
        XCTAssertEqual(Set(try keyIds(s)), ["k2"])
        XCTAssertEqual(try s.rotateSecrets(), 0)
        for (i, id) in ids.enumerated() {
            guard case .platformCredential(let c)? = try s.read({ try $0.entity(.platformCredential, tenant: t, id: id) }) else { return XCTFail() }
            XCTAssertEqual(c.refreshToken, "refresh-PLAINTEXT-\(i)")
        }
    }
}
