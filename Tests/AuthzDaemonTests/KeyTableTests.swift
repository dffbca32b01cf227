import AuthzEngine
import AuthzModel
import AuthzWire
import Foundation
import XCTest
@testable import AuthzServer

/// The key table as log mode feeds it (`KeyTable.applied`): a revocation is final in memory as
/// it is in the store, whatever record the log delivers after it.
final class KeyTableTests: XCTestCase {
    func testARevocationSurvivesARecordThatDoesNotCarryIt() throws {
        let dir = temporaryDirectory("authzd-keytable")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let table = try KeyTable(storage: KeyStorage(directory: dir + "/data", keyRingPath: nil))
        let (key, secret) = try table.create(tenant: nil, role: .gateway, name: "g", expiresAt: 0, creator: .superuser)
        guard case .success = table.authenticate(secret) else { return XCTFail("a fresh key did not authenticate") }
        // Daemon A revokes the key; daemon B, which had not applied that yet, re-dates it: the
        // log delivers the revocation, then B's record without it.
        var revoked = key
        revoked.revokedAt = Timestamp.now()
        table.applied(revoked)
        var redated = key
        redated.expiresAt = Timestamp.now() + 3_600_000_000
        table.applied(redated)
        guard case .failure(let refusal) = table.authenticate(secret) else { return XCTFail("a revoked key authenticated again") }
        XCTAssertEqual(refusal.error.code, .unauthenticated)
        XCTAssertTrue(refusal.error.message.contains("revoked"), refusal.error.message)
        let listed = table.list(tenant: nil).first { $0.id == key.id }
        XCTAssertEqual(listed?.revokedAt, revoked.revokedAt)
        XCTAssertEqual(listed?.expiresAt, redated.expiresAt, "the re-dating itself still applies")
    }

    func testARevocationDoesNotWaitForTheReadersClock() throws {
        // Revoked by a daemon whose clock is ahead (or before this clock stepped back): the
        // revocation time lies in this reader's future, and the key is revoked all the same.
        let dir = temporaryDirectory("authzd-keytable")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let table = try KeyTable(storage: KeyStorage(directory: dir + "/data", keyRingPath: nil))
        var (key, secret) = try table.create(tenant: nil, role: .gateway, name: "g", expiresAt: 0, creator: .superuser)
        key.revokedAt = Timestamp.now() + 120_000_000
        table.applied(key)
        guard case .failure(let refusal) = table.authenticate(secret) else { return XCTFail("a key revoked by a clock ahead of this one authenticated") }
        XCTAssertTrue(refusal.error.message.contains("revoked"), refusal.error.message)
        XCTAssertNotNil(table.stillValid(key.id), "open connections must drop it too")
    }

    func testACertificateNeverReadsCredentialSecrets() throws {
        let dir = temporaryDirectory("authzd-keytable")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let table = try KeyTable(storage: KeyStorage(directory: dir + "/data", keyRingPath: nil))
        let t = ID.random()
        let admin = Principal.certificate("spiffe://td/tenant/\(t)/role/admin", role: .admin, tenant: t)
        let e = table.secretsDenied(admin, .export(tenantId: t, includeSecrets: true))
        XCTAssertEqual(e?.code, .permissionDenied)
        XCTAssertNil(table.secretsDenied(admin, .export(tenantId: t, includeSecrets: false)), "an export without secrets is the admin's")
        XCTAssertNil(table.secretsDenied(.superuser, .export(tenantId: t, includeSecrets: true)))
    }
}

/// A replica that refuses reads (log mode: behind its stream's retention) holds user events
/// back for a retry instead of dead-lettering them: the dead letters are for events that can
/// never apply.
final class EventIngestorRefusalTests: XCTestCase {
    func testARefusingReplicaRetriesEventsAndAServingOneAppliesThem() throws {
        let dir = temporaryDirectory("authzd-ingest")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let engine = try Engine(directory: dir + "/data")
        let t = ID.random()
        try engine.write([.upsert(.tenant(Tenant(id: t, name: "acme")))])
        let event = UserEvent(eventId: .random(), kind: .created, tenantId: t, userId: .random(), occurredAt: Timestamp.now(),
                              user: UserEvent.Fields(email: "ana@acme.test"))
        let payload = EventCodec.encodeProtobuf(event)
        let refusing = EventIngestor(engine: engine, refusing: { AuthzError(.failedPrecondition, "behind the stream's retention") })
        guard case .retry(let why) = refusing.handle(payload) else { return XCTFail("a refusing replica did not hold the event back") }
        XCTAssertTrue(why.contains("retention"), why)
        let revision = engine.revision
        XCTAssertEqual(engine.revision, revision, "nothing was written")
        guard case .applied = EventIngestor(engine: engine).handle(payload) else { return XCTFail("a serving replica did not apply the event") }
    }
}

/// Settings the reviews found unchecked: values that overflowed a conversion, or that the docs
/// do not allow.
final class ServerConfigBoundsTests: XCTestCase {
    func testOutOfRangeSettingsAreRefusedNamingThem() throws {
        var config = ServerConfig()
        let t = ID.random()
        for (key, value) in [("allow-uid", "1000:gateway:\(t)"), ("allow-uid", "1000:operator:\(t)"),
                             ("log-max-age", "9300000000"), ("log-duplicate-window", "0"), ("log-duplicate-window", "9300000000"),
                             ("log-write-timeout", "0"), ("log-write-timeout", "99999")] {
            XCTAssertThrowsError(try config.set(key, value, origin: "test"), "\(key) = \(value)") { e in
                XCTAssertTrue("\(e)".contains(key), "\(e)")
            }
        }
        try config.set("allow-uid", "1000:checker:\(t),1001:admin:\(t)", origin: "test")
        try config.set("log-max-age", "86400", origin: "test")
        try config.set("log-duplicate-window", "120", origin: "test")
        try config.set("log-write-timeout", "10", origin: "test")
        XCTAssertEqual(config.allowUIDs.count, 2)
    }

    func testTimestampsFormatForEveryInt64() {
        for v in [Int64.min, Int64.min + 1, -1_000_001, -1_000_000, -1, 0, 1, 999_999, Int64.max] {
            let text = Timestamp.format(v)
            XCTAssertTrue(text.hasSuffix("Z"), "\(v): \(text)")
        }
        XCTAssertEqual(Timestamp.format(-1), "1969-12-31T23:59:59.999999Z")
        XCTAssertEqual(Timestamp.format(-1_000_000), "1969-12-31T23:59:59.000000Z")
        XCTAssertEqual(Timestamp.format(0), "1970-01-01T00:00:00.000000Z")
    }
}

