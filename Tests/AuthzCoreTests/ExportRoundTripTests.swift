@testable import AuthzEngine
import AuthzModel
@testable import AuthzStore
import Foundation
import XCTest

/// Export → import round-trips (Hardening 8, 11 and duplicate ids) and credentials whose
/// secrets cannot be decrypted (Hardening 9), against the engine and store (no daemon).
final class ExportRoundTripTests: XCTestCase {
    var dir = ""

    override func setUp() { dir = temporaryDirectory("authzd-export") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func engine(_ name: String, ring: String? = nil) throws -> Engine {
        var o = EngineOptions()
        o.store.keyRingPath = ring
        return try Engine(directory: dir + "/" + name, options: o)
    }

    func lines(_ bytes: [UInt8]) -> [String] {
        String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
    }

    /// Every record of every tenant, with the server's timestamps cleared (they differ between
    /// stores by design), secrets included.
    func state(_ e: Engine) throws -> Set<Entity> {
        var out = Set<Entity>()
        try e.store.read { r in
            for t in try r.tenantIDs() {
                try r.forEachRecord(tenant: t) { x in
                    var x = x
                    x.fields.createdAt = 0
                    x.fields.updatedAt = 0
                    out.insert(x)
                }
            }
        }
        return out
    }

    // MARK: 8. metadata cannot forge export lines

    func testMetadataWithLineBreaksCannotForgeExportLines() throws {
        let a = try engine("a")
        let ta = ID.random(), tb = ID.random(), ua = ID.random(), ub = ID.random(), forgedId = ID.random()
        try a.write([.upsert(.tenant(Tenant(id: ta, name: "alpha"))), .upsert(.tenant(Tenant(id: tb, name: "beta"))),
                     .upsert(.user(User(id: ub, tenantId: tb, email: "bob@beta.test")))])
        // Valid JSON (line breaks are whitespace between tokens) whose middle line is a record of
        // tenant B, as an admin of tenant A could send it.
        let forged = #"{"kind":"role","id":"\#(forgedId)","tenant_id":"\#(tb)","name":"owned","scopes":["global"]}"#
        let metadata = "{\"note\":\n" + forged + "\n,\"sep\":\"\u{2028}x\u{2029}\u{85}\",\"esc\":\"a\\nb\\\"c\"}"
        try a.write([.upsert(.user(User(id: ua, tenantId: ta, email: "ana@alpha.test", metadata: metadata)))])

        guard case .user(let stored) = try a.get(RecordRef(kind: .user, tenantId: ta, id: ua)) else { return XCTFail() }
        XCTAssertFalse(stored.fields.metadata.contains("\n"), "metadata stored with a raw line break")
        XCTAssertEqual(stored.fields.metadata, try Validate.canonicalMetadata(metadata, field: "m"))

        for export in [try a.exportJSONL().bytes, try a.exportJSONL(tenant: ta).bytes] {
            let text = String(decoding: export, as: UTF8.self)
            for sep in ["\u{2028}", "\u{2029}", "\u{85}", "\r"] { XCTAssertFalse(text.contains(sep), "raw line separator in export") }
            for line in lines(export) {
                let e = try BulkFormat.decode(line: Array(line.utf8))
                XCTAssertNotEqual(e.id, forgedId, "a line of the export is the forged record of tenant B")
            }
        }
        XCTAssertEqual(lines(try a.exportJSONL().bytes).count, 4)
        XCTAssertEqual(lines(try a.exportJSONL(tenant: ta).bytes).count, 2)

        // The full export re-imports, into the same store and into a fresh one, exactly.
        _ = try a.importJSONL(try a.exportJSONL().bytes)
        let b = try engine("b")
        _ = try b.importJSONL(try a.exportJSONL().bytes)
        XCTAssertEqual(try state(a), try state(b))
        XCTAssertNil(try b.store.read { try $0.locate(forgedId) })
    }

    func testMetadataRepeatingAMemberNameIsRefused() throws {
        let a = try engine("a")
        let t = ID.random()
        for bad in [#"{"a":1,"a":2}"#, #"{"x":{"b":[{"c":1,"c":1}]}}"#] {
            XCTAssertThrowsError(try a.write([.upsert(.tenant(Tenant(id: t, name: "alpha", metadata: bad)))])) { e in
                XCTAssertEqual((e as! AuthzError).code, .invalidArgument)
                XCTAssertEqual((e as! AuthzError).field, "tenant.metadata", "\(e)")
            }
        }
        try a.write([.upsert(.tenant(Tenant(id: t, name: "alpha", metadata: " { \"a\" : [ 1 ,\n 2 ] } ")))])
        guard case .tenant(let stored) = try a.get(RecordRef(kind: .tenant, tenantId: t, id: t)) else { return XCTFail() }
        XCTAssertEqual(stored.fields.metadata, #"{"a":[1,2]}"#)
    }

    // MARK: property: export → import of any state round-trips exactly

    /// Random records over a few tenants: odd names, metadata with line breaks, quotes, escapes
    /// and non-ASCII text, inactive records, inheritance, credentials with odd tokens.
    struct RandomState {
        var rng: SplitMix
        var ops: [WriteOp] = []

        init(seed: UInt64) { rng = SplitMix(seed: seed) }

        mutating func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        mutating func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }

        static let pieces = ["a", "Z", "é", "ß", "日本", "🦊", "\"", "\\", "/", " ", "'", "{", "}", "[", "]", ",", ":", "\u{2028}", "\u{2029}", "\u{85}", "0", "-"]

        mutating func text(_ n: Int) -> String {
            (0..<max(1, n)).map { _ in pick(RandomState.pieces) }.joined()
        }

        /// A JSON value's source text, with random insignificant whitespace (line breaks too).
        mutating func json(depth: Int) -> String {
            let ws = pick(["", " ", "\n", "\r\n", "\t", "\n  "])
            switch rng.next() % (depth > 2 ? 4 : 6) {
            case 0: return pick(["0", "-1.5e3", "42", "1E+2", "3.25"])
            case 1: return pick(["true", "false", "null"])
            case 2, 3:
                var s = ""
                JSONWriter.writeString(text(Int(rng.next() % 8)) + pick(["", "\n", "\t", "\u{1}", "\r", "\u{7F}"]), into: &s)
                return s
            case 4:
                return "[" + ws + (0..<Int(rng.next() % 3)).map { _ in json(depth: depth + 1) }.joined(separator: "," + ws) + ws + "]"
            default:
                return object(depth: depth + 1)
            }
        }

        mutating func object(depth: Int) -> String {
            let ws = pick(["", " ", "\n", "\r\n", "\n\t"])
            var keys = Set<String>()
            var members: [String] = []
            for _ in 0..<Int(rng.next() % 4) {
                let k = text(Int(rng.next() % 4) + 1) + pick(["", "\n"])
                guard keys.insert(k).inserted else { continue }
                var ks = ""
                JSONWriter.writeString(k, into: &ks)
                members.append(ks + ws + ":" + ws + json(depth: depth))
            }
            return "{" + ws + members.joined(separator: "," + ws) + ws + "}"
        }

        mutating func metadata() -> String { chance(30) ? "" : object(depth: 0) }

        mutating func name(_ i: Int) -> String {
            // Unique by construction (the index), odd characters around it.
            text(Int(rng.next() % 5)) + "#\(i)" + text(Int(rng.next() % 3))
        }

        mutating func build(tenants: Int) {
            var n = 0
            for _ in 0..<tenants {
                let t = ID.random(using: &rng)
                n += 1
                ops.append(.upsert(.tenant(Tenant(id: t, name: name(n), isActive: !chance(10), metadata: metadata()))))
                var users: [ID] = [], roles: [(ID, ScopeSet)] = [], perms: [ID] = []
                for _ in 0..<Int(rng.next() % 5 + 1) {
                    let u = ID.random(using: &rng)
                    users.append(u)
                    ops.append(.upsert(.user(User(id: u, tenantId: t, email: chance(70) ? text(3) + "@" + text(3) : nil,
                                                  displayName: chance(50) ? text(6) : nil, externalId: chance(30) ? text(4) : nil,
                                                  isActive: !chance(15), metadata: metadata()))))
                }
                for _ in 0..<Int(rng.next() % 4 + 1) {
                    let r = ID.random(using: &rng)
                    n += 1
                    let inherits = roles.filter { _ in chance(40) }.map(\.0)
                    let scopes = ScopeSet(mask: UInt8(rng.next() % 7 + 1))
                    roles.append((r, scopes))
                    ops.append(.upsert(.role(Role(id: r, tenantId: t, name: name(n), description: chance(50) ? text(10) : "",
                                                  scopes: scopes, inherits: inherits,
                                                  isActive: !chance(15), metadata: metadata()))))
                }
                for _ in 0..<Int(rng.next() % 4 + 1) {
                    let p = ID.random(using: &rng)
                    n += 1
                    perms.append(p)
                    ops.append(.upsert(.permission(Permission(id: p, tenantId: t, name: "svc.p\(n).\(pick(["read", "write", "x_y", "a-b"]))",
                                                              service: pick(["gmail", "core", "whatsapp"]), scopes: .all,
                                                              isActive: !chance(15), metadata: metadata()))))
                }
                for u in users where chance(70) {
                    let (r, scopes) = pick(roles)
                    ops.append(.upsert(.roleBinding(RoleBinding(id: ID.random(using: &rng), tenantId: t, userId: u, roleId: r,
                                                                scope: pick(Scope.allCases.filter { scopes.mask & (1 << $0.rawValue) != 0 }),
                                                                isActive: !chance(15), metadata: metadata()))))
                }
                for (r, _) in roles where chance(70) {
                    ops.append(.upsert(.permissionBinding(PermissionBinding(id: ID.random(using: &rng), tenantId: t, roleId: r,
                                                                            permissionId: pick(perms), scope: pick(Scope.allCases),
                                                                            isActive: !chance(15), metadata: metadata()))))
                }
                for (i, u) in users.enumerated() where chance(50) {
                    ops.append(.upsert(.platformCredential(PlatformCredential(
                        id: ID.random(using: &rng), tenantId: t, ownerUserId: u, platform: pick(["gmail", "outlook"]),
                        externalAccountId: text(5) + "\(i)", accessToken: chance(80) ? text(12) + "\\\"tok\\" : "",
                        refreshToken: chance(60) ? text(8) : "", tokenExpiresAt: chance(50) ? 1_700_000_000_123_456 : 0,
                        oauthScopes: (0..<Int(rng.next() % 3)).map { _ in text(4) }, isActive: !chance(15), metadata: metadata()))))
                }
            }
        }
    }

    func testExportImportRoundTripsRandomStateExactly() throws {
        for seed in UInt64(1)...12 {
            try? FileManager.default.removeItem(atPath: dir)
            dir = temporaryDirectory("authzd-export")
            var g = RandomState(seed: seed)
            g.build(tenants: Int(seed % 3) + 1)
            let a = try engine("a")
            try a.write(g.ops)
            // What was written, in the stored form: canonical metadata, nothing else changed.
            var expected = Set<Entity>()
            for case .upsert(var e) in g.ops {
                e.fields.metadata = try Validate.canonicalMetadata(e.fields.metadata, field: "m")
                expected.insert(e)
            }
            XCTAssertEqual(try state(a), expected, "seed \(seed): the store did not keep what was written")

            let full = try a.exportJSONL(includeSecrets: true).bytes
            XCTAssertEqual(lines(full).count, g.ops.count, "seed \(seed): export is not one record per line")
            let b = try engine("b")
            _ = try b.importJSONL(full)
            XCTAssertEqual(try state(b), expected, "seed \(seed): export → import changed the state")
            // Importing the export again (same store) changes nothing; re-exporting gives the same lines.
            _ = try a.importJSONL(full)
            XCTAssertEqual(try state(a), expected, "seed \(seed)")
            func strip(_ bytes: [UInt8]) -> [String] {
                lines(bytes).map { $0.replacingOccurrences(of: #""(created|updated)_at":"[^"]*","#, with: "", options: .regularExpression) }
            }
            XCTAssertEqual(strip(try b.exportJSONL(includeSecrets: true).bytes), strip(full), "seed \(seed)")
            // Each tenant's export round-trips too (as an admin of that tenant imports it).
            for t in try a.store.read({ try $0.tenantIDs() }) {
                _ = try b.importJSONL(try a.exportJSONL(tenant: t, includeSecrets: true).bytes, onlyTenant: t)
            }
            XCTAssertEqual(try state(b), expected, "seed \(seed)")
        }
    }

    // MARK: duplicate ids in one import

    func testSameIdTwiceInOneImport() throws {
        let a = try engine("a")
        let t = ID.random(), u = ID.random()
        let tenant = #"{"kind":"tenant","id":"\#(t)","name":"acme"}"#
        let user1 = #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","email":"ana@acme.test"}"#
        let user2 = #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","email":"eve@acme.test"}"#
        let role = #"{"kind":"role","id":"\#(u)","tenant_id":"\#(t)","name":"viewer"}"#
        for (file, second) in [([tenant, user1, "", user2], 4), ([tenant, user1, role], 3)] {
            XCTAssertThrowsError(try a.importJSONL(Array(file.joined(separator: "\n").utf8))) { e in
                let err = e as! AuthzError
                XCTAssertEqual(err.code, .invalidArgument)
                XCTAssertTrue(err.message.hasPrefix("line \(second): "), err.message)
                XCTAssertTrue(err.message.contains("line 2 "), err.message)
            }
        }
        XCTAssertEqual(a.revision, 0)
        // The same record twice (insignificant differences only) is accepted once.
        let again = #"{"email":"ana@acme.test","tenant_id":"\#(t)","id":"\#(u)","kind":"user","metadata":{}}"#
        let (_, n) = try a.importJSONL(Array([tenant, user1, again, tenant].joined(separator: "\n").utf8))
        XCTAssertEqual(n, 2)
        guard case .user(let stored) = try a.get(RecordRef(kind: .user, tenantId: t, id: u)) else { return XCTFail() }
        XCTAssertEqual(stored.email, "ana@acme.test")
    }

    // MARK: 11. an admin re-imports its own export

    func testAdminImportsItsOwnTenantsExport() throws {
        let a = try engine("a")
        let alpha = TenantBuilder(name: "alpha")
        alpha.user("ana"); alpha.role("viewer"); alpha.permission("gmail.messages.read"); alpha.bind("ana", "viewer", .tenant)
        alpha.grant("viewer", "gmail.messages.read", .tenant)
        alpha.ops[0] = .upsert(.tenant(Tenant(id: alpha.tenant, name: "alpha", metadata: #"{"plan":"gold","n":[1,2]}"#)))
        try alpha.commit(a)
        let beta = TenantBuilder(name: "beta")
        beta.user("bob")
        try beta.commit(a)
        let ta = alpha.tenant

        let export = try a.exportJSONL(tenant: ta).bytes
        XCTAssertTrue(lines(export)[0].contains(#""kind":"tenant""#))
        let (_, n) = try a.importJSONL(export, onlyTenant: ta)
        XCTAssertEqual(n, lines(export).count)
        // The tenant line alone, unchanged: accepted, nothing written.
        let revision = a.revision
        let tenantLine = lines(export)[0]
        XCTAssertEqual(try a.importJSONL(Array(tenantLine.utf8), onlyTenant: ta).revision, revision)
        XCTAssertEqual(a.revision, revision)

        // A tenant line that would change anything is refused, naming the line.
        let rest = lines(export).dropFirst().joined(separator: "\n")
        let changed = [
            tenantLine.replacingOccurrences(of: #""name":"alpha""#, with: #""name":"alpha2""#),
            tenantLine.replacingOccurrences(of: #""is_active":true"#, with: #""is_active":false"#),
            tenantLine.replacingOccurrences(of: #""plan":"gold""#, with: #""plan":"platinum""#),
        ]
        for line in changed {
            XCTAssertNotEqual(line, tenantLine)
            XCTAssertThrowsError(try a.importJSONL(Array((rest + "\n" + line).utf8), onlyTenant: ta)) { e in
                let err = e as! AuthzError
                XCTAssertEqual(err.code, .permissionDenied, "\(err)")
                XCTAssertTrue(err.message.hasPrefix("line \(lines(export).count): "), err.message)
            }
        }
        // Another tenant's tenant line stays refused.
        let betaLine = lines(try a.exportJSONL(tenant: beta.tenant).bytes)[0]
        XCTAssertThrowsError(try a.importJSONL(Array(betaLine.utf8), onlyTenant: ta)) { e in
            XCTAssertEqual((e as! AuthzError).code, .permissionDenied)
            XCTAssertTrue((e as! AuthzError).message.hasPrefix("line 1: "), "\(e)")
        }
        XCTAssertEqual(a.revision, revision)
    }

    // MARK: 9. one unreadable ciphertext

    func ring(_ name: String, _ lines: String) throws -> String {
        let path = dir + "/" + name
        try lines.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        return path
    }

    func key() -> String { Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString() }

    func testUnreadableSecretFailsOnlyTheReadsThatNeedIt() throws {
        let k1 = key(), k2 = key()
        let ring1 = try ring("ring1", "k1 \(k1) active\n")
        let t = ID.random(), u = ID.random(), bad = ID.random(), good = ID.random()
        let badRef = RecordRef(kind: .platformCredential, tenantId: t, id: bad)
        do {
            let a = try engine("data", ring: ring1)
            try a.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t))),
                         .upsert(.platformCredential(PlatformCredential(id: bad, tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana",
                                                                        accessToken: "OLD-ACCESS", refreshToken: "OLD-REFRESH")))])
        }
        // Two ways a ciphertext becomes unreadable: its key left the ring, or a key of the same id
        // that is not the one that sealed it.
        for (broken, keyMissing) in [(try ring("ring2", "k2 \(k2) active\n"), true), (try ring("ring3", "k1 \(k2) active\n"), false)] {
            let a = try engine("data", ring: broken)
            try a.write([.upsert(.platformCredential(PlatformCredential(id: good, tenantId: t, ownerUserId: u, platform: "gmail",
                                                                        externalAccountId: "good", accessToken: "GOOD")))])
            // Redacted reads, listings and exports work and carry the marker.
            guard case .platformCredential(let c) = try a.get(badRef) else { return XCTFail() }
            XCTAssertTrue(c.secretUnreadable)
            XCTAssertTrue(c.secretsRedacted)
            XCTAssertEqual(c.accessToken, "")
            XCTAssertEqual(try a.list(.platformCredential, tenant: t).count, 2)
            for export in [try a.exportJSONL(), try a.exportJSONL(tenant: t)] {
                let text = String(decoding: export.bytes, as: UTF8.self)
                XCTAssertEqual(text.components(separatedBy: #""secret_unreadable":true"#).count, 2, text)
                XCTAssertFalse(text.contains("OLD-"))
            }
            // Reads that need the secret fail closed, naming the credential; the others still work.
            let needSecrets: [() throws -> Void] = [
                { _ = try a.get(badRef, includeSecrets: true) },
                { _ = try a.list(.platformCredential, tenant: t, includeSecrets: true) },
                { _ = try a.exportJSONL(includeSecrets: true) },
                { _ = try a.exportJSONL(tenant: t, includeSecrets: true) },
            ]
            for read in needSecrets {
                XCTAssertThrowsError(try read()) { e in
                    XCTAssertEqual((e as! AuthzError).code, .dataLoss)
                    XCTAssertTrue((e as! AuthzError).message.contains(bad.description), "\(e)")
                }
            }
            guard case .platformCredential(let g) = try a.get(RecordRef(kind: .platformCredential, tenantId: t, id: good), includeSecrets: true) else { return XCTFail() }
            XCTAssertEqual(g.accessToken, "GOOD")
            if keyMissing {
                // Rotation refuses rather than loops or destroys it.
                XCTAssertThrowsError(try a.store.rotateSecrets()) { e in XCTAssertEqual((e as! AuthzError).code, .dataLoss) }
            }
            // Deactivate, activate and a redacted write-back keep the ciphertext byte for byte;
            // a client cannot forge the marker on a readable record.
            try a.write([.deactivate(badRef)])
            try a.write([.upsert(.platformCredential(c))])
            var forged = g.redacted()
            forged.secretUnreadable = true
            try a.write([.upsert(.platformCredential(forged))])
            guard case .platformCredential(let g2) = try a.get(RecordRef(kind: .platformCredential, tenantId: t, id: good), includeSecrets: true) else { return XCTFail() }
            XCTAssertFalse(g2.secretUnreadable)
            XCTAssertEqual(g2.accessToken, "GOOD")
            // The redacted export of this store imports back into it.
            _ = try a.importJSONL(try a.exportJSONL().bytes)
            try a.write([.deactivate(badRef)])
            try a.write([.activate(badRef)])
            try a.write([.deactivate(badRef)])
            guard case .platformCredential(let after) = try a.get(badRef) else { return XCTFail() }
            XCTAssertTrue(after.secretUnreadable)
            XCTAssertFalse(after.fields.isActive)
        }
        // With the original key back, the secret is intact (and the record inactive).
        do {
            let a = try engine("data", ring: try ring("ring4", "k1 \(k1)\nk2 \(k2) active\n"))
            guard case .platformCredential(let c) = try a.get(badRef, includeSecrets: true) else { return XCTFail() }
            XCTAssertEqual(c.accessToken, "OLD-ACCESS")
            XCTAssertEqual(c.refreshToken, "OLD-REFRESH")
            XCTAssertFalse(c.fields.isActive)
        }
        // Without it, an admin overwrites the credential with new tokens.
        let a = try engine("data", ring: try ring("ring5", "k2 \(k2) active\n"))
        try a.write([.upsert(.platformCredential(PlatformCredential(id: bad, tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana",
                                                                    accessToken: "NEW-ACCESS")))])
        guard case .platformCredential(let c) = try a.get(badRef, includeSecrets: true) else { return XCTFail() }
        XCTAssertFalse(c.secretUnreadable)
        XCTAssertEqual(c.accessToken, "NEW-ACCESS")
        XCTAssertTrue(c.fields.isActive)
        try a.write([.upsert(.platformCredential(PlatformCredential(id: good, tenantId: t, ownerUserId: u, platform: "gmail",
                                                                    externalAccountId: "good", accessToken: "GOOD")))])
        XCTAssertNoThrow(try a.exportJSONL(includeSecrets: true))
    }
}
