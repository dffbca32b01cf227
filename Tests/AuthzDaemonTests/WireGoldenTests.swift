import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import Crypto
import Foundation
import XCTest

/// The wire's behaviour pinned as golden data: the exact bytes of examples of every request and
/// response; what the codec makes of every one-byte change and every truncation of them
/// (decoded and encoded again, or the error's code, field and message); and who may call what,
/// on which lane. Made before the codec and the dispatcher were split into one file per call
/// (issue 12), so that moving code that changes a byte, an error text or a refusal fails here.
///
/// The mutation outcomes are kept as a SHA-256 (the text is megabytes); on a mismatch the whole
/// text is written to a temporary file named in the failure, to diff against a run of the
/// previous code. `AUTHZ_UPDATE_GOLDEN=1` rewrites the golden files instead of comparing.
final class WireGoldenTests: XCTestCase {
    static func id(_ n: UInt64) -> ID { ID(hi: 0x7d0c_0000_0000_4000, lo: 0x8000_0000_0000_0000 | n) }
    static let t = id(1), t2 = id(2), u = id(3), r = id(4), p = id(5), rb = id(6), pb = id(7), pc = id(8), k = id(9)

    static var entities: [Entity] {
        var list: [Entity] = [
            .tenant(Tenant(id: t, name: "acme", metadata: "{\"a\":1}")),
            .user(User(id: u, tenantId: t, email: "a@b.c", displayName: "Ana", externalId: "x1", isActive: false)),
            .role(Role(id: r, tenantId: t, name: "admin", description: "all", scopes: [.tenant, .global], inherits: [id(10), id(11)])),
            .permission(Permission(id: p, tenantId: t, name: "gmail.messages.read", service: "gmail", scopes: [.self])),
            .roleBinding(RoleBinding(id: rb, tenantId: t, userId: u, roleId: r, scope: .global)),
            .permissionBinding(PermissionBinding(id: pb, tenantId: t, roleId: r, permissionId: p, scope: .self, metadata: "{\"b\":[1,2]}")),
        ]
        var c = PlatformCredential(id: pc, tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana@gmail.com",
                                   accessToken: "at-secret", refreshToken: "rt-secret", tokenExpiresAt: 1_800_000_000_000_000, oauthScopes: ["mail.read", "mail.send"])
        c.secretsRedacted = true
        c.secretUnreadable = true
        list.append(.platformCredential(c))
        for i in list.indices {
            list[i].fields.createdAt = 1_700_000_000_000_000 + Int64(i)
            list[i].fields.updatedAt = 1_700_000_000_500_000 + Int64(i)
            list[i].fields.schemaVersion = 1
        }
        return list
    }

    /// One or more examples of every call.
    static var calls: [(String, WireRequest)] {
        let c = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: 5)
        let ops: [WriteOp] = entities.map { .upsert($0) } + [.upsertIfNewer(entities[1]), .deactivate(RecordRef(kind: .user, tenantId: t, id: u)),
                                                            .activate(RecordRef(kind: .tenant, tenantId: t, id: t))]
        let list: [(String, Call)] = [
            ("check", .check(c)),
            ("batch_check", .batchCheck([.success(c), .failure(AuthzError.invalid("x", "y")), .success(CheckCall(tenantId: t2, userId: u, permission: "a.b", scope: .self))], minRevision: 3)),
            ("explain", .explain(c)),
            ("list_user_permissions", .listUserPermissions(tenantId: t, userId: u, minRevision: 2)),
            ("list_permission_users", .listPermissionUsers(tenantId: t, permission: "a.b", scope: .global, pageSize: 10, after: u, minRevision: 1)),
            ("list_permission_users.first", .listPermissionUsers(tenantId: t, permission: "a.b", scope: .self, pageSize: 1000, after: nil, minRevision: 0)),
            ("write", .write(ops)),
            ("write.tenant", .write([.upsert(entities[0]), .deactivate(RecordRef(kind: .tenant, tenantId: t, id: t))])),
            ("get", .get(RecordRef(kind: .role, tenantId: t, id: r), includeSecrets: true)),
            ("get.tenant", .get(RecordRef(kind: .tenant, tenantId: t, id: t), includeSecrets: false)),
            ("get.credential", .get(RecordRef(kind: .platformCredential, tenantId: t, id: pc), includeSecrets: true)),
            ("list", .list(.user, tenantId: t, pageSize: 50, after: u, includeSecrets: false)),
            ("list.tenants", .list(.tenant, tenantId: .zero, pageSize: 100, after: nil, includeSecrets: false)),
            ("list.credentials", .list(.platformCredential, tenantId: t, pageSize: 100, after: nil, includeSecrets: true)),
            ("import", .importJSONL(Array("{\"kind\":\"tenant\"}\n".utf8))),
            ("import.chunk", .importChunk(session: k, jsonl: [1, 2, 3], firstLine: 7, more: true)),
            ("import.last", .importChunk(session: k, jsonl: [], firstLine: 0, more: false)),
            ("export", .export(tenantId: nil, includeSecrets: false)),
            ("export.tenant", .export(tenantId: t, includeSecrets: true)),
            ("export.page", .exportPage(tenantId: t, includeSecrets: true, pageSize: 500, pageToken: "")),
            ("export.next", .exportPage(tenantId: nil, includeSecrets: false, pageSize: 10, pageToken: "\(k).1")),
            ("server_info", .serverInfo),
            ("health", .health),
            ("hello", .hello(apiKey: "azk_0123456789abcdef0123456789abcdef_" + String(repeating: "ab", count: 32), protocolVersion: 1)),
            ("create_key", .createKey(tenantId: t, role: .admin, name: "ci", expiresAt: 0)),
            ("create_key.operator", .createKey(tenantId: nil, role: .operator, name: "", expiresAt: 99)),
            ("list_keys", .listKeys(tenantId: nil)),
            ("list_keys.tenant", .listKeys(tenantId: t)),
            ("revoke_key", .revokeKey(id: k, expiresAt: 0)),
            ("revoke_key.expiry", .revokeKey(id: k, expiresAt: 1_900_000_000_000_000)),
            ("rotate_secrets", .rotateSecrets),
            ("watch", .watch(WatchCall(fromRevision: nil))),
            ("watch.tenant", .watch(WatchCall(fromRevision: 5, tenantId: t, kinds: [.user, .role]))),
            ("watch.credentials", .watch(WatchCall(fromRevision: 0, kinds: [.platformCredential]))),
            ("watch.tenants", .watch(WatchCall(fromRevision: 1, kinds: [.tenant]))),
        ]
        var out = list.enumerated().map { i, e in (e.0, WireRequest(requestId: UInt64(i + 1), deadlineMs: UInt32(i * 10), call: .success(e.1))) }
        out.append(("check.api_key", WireRequest(requestId: 99, call: .success(.check(c)), apiKey: "azk_key")))
        out.append(("none", WireRequest(requestId: 100, call: .failure(AuthzError.invalid("request.call", "unset")))))
        return out
    }

    /// One or more examples of every reply, and an error.
    static var replies: [(String, WireResponse)] {
        let d = Decision(reason: .inactivePermission, revision: 77)
        var ex = Explanation(decision: Decision(reason: .granted, revision: 3))
        ex.roleBindingId = rb; ex.roleBindingScope = .tenant; ex.roleChain = [r, id(10)]
        ex.roleChainNames = ["admin", "viewer"]; ex.permissionBindingId = pb; ex.permissionBindingScope = .global
        let key = ApiKey(id: k, tenantId: t, role: .admin, name: "ci", createdAt: 10, expiresAt: 20, revokedAt: 30, maySeeSecrets: true, createdBy: id(12))
        let op = ApiKey(id: id(13), tenantId: .zero, role: .operator, name: "", createdAt: 11)
        let info = ServerInfo(version: "v", revision: 11, protocolVersion: 1, counts: [.tenant: 1, .user: 2, .role: 3, .permission: 4, .roleBinding: 5, .permissionBinding: 6])
        var logged = info
        logged.log = LogStatus(stream: "authz", applied: 9, streamLast: 12, lag: 3, connected: true, shard: "shard 1/2", refusal: "behind")
        let list: [(String, Result<Reply, AuthzError>)] = [
            ("check", .success(.check(d))),
            ("batch_check", .success(.batchCheck([.success(d), .failure(AuthzError.invalid("batch_check.checks[1].scope", "is required")), .success(Decision(reason: .granted, revision: 78))], revision: 78))),
            ("explain", .success(.explain(ex))),
            ("explain.deny", .success(.explain(Explanation(decision: Decision(reason: .noGrant, revision: 4))))),
            ("list_user_permissions", .success(.userPermissions(reason: .granted, permissions: [("a.b", .self), ("c.d", .global)], revision: 4))),
            ("list_user_permissions.unknown", .success(.userPermissions(reason: .unknownUser, permissions: [], revision: 4))),
            ("list_permission_users", .success(.permissionUsers([u, id(14)], nextPageToken: "tok", revision: 5))),
            ("write", .success(.write(revision: 6))),
        ] + entities.map { e in ("get.\(e.kind.name)", .success(.get(e))) } + [
            ("list", .success(.list(entities, nextPageToken: "next"))),
            ("import", .success(.importResult(revision: 7, records: 8))),
            ("export", .success(.export([9, 10], revision: 10))),
            ("export.page", .success(.exportPage([11], revision: 12, nextPageToken: "\(k).2"))),
            ("server_info", .success(.serverInfo(info))),
            ("server_info.log", .success(.serverInfo(logged))),
            ("health", .success(.health(serving: true))),
            ("hello", .success(.hello(role: .admin, tenantId: t, keyId: k))),
            ("hello.superuser", .success(.hello(role: nil, tenantId: nil, keyId: nil))),
            ("create_key", .success(.createKey(key, secret: "azk_secret"))),
            ("list_keys", .success(.listKeys([key, op]))),
            ("revoke_key", .success(.revokeKey(key))),
            ("rotate_secrets", .success(.rotateSecrets(SecretRotationStatus(activeKeyId: "k2", keyIds: ["k1", "k2"], running: true, remaining: 5, reencrypted: 6)))),
            ("watch", .success(.watch(WatchBatch(changes: entities.enumerated().map { Change(revision: UInt64(20 + $0.offset), entity: $0.element) }, revision: 27, caughtUp: true)))),
            ("watch.progress", .success(.watch(WatchBatch(changes: [], revision: 28, caughtUp: false)))),
            ("error", .failure(AuthzError(.notFound, "role x does not exist", field: "ref.id"))),
        ]
        return list.enumerated().map { i, e in (e.0, WireResponse(requestId: UInt64(i + 1), result: e.1)) }
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Bytes as their length and the start of their SHA-256: enough to tell outcomes apart.
    static func short(_ bytes: [UInt8]) -> String { "\(bytes.count):" + hex(SHA256.hash(data: bytes).prefix(8)) }

    static func describe(_ e: AuthzError) -> String { "error \(e.code.name) [\(e.field)] \(e.message)" }

    /// A decoded request as text: encoded again (deterministic), plus what re-encoding loses
    /// (a batch item's own error).
    static func describe(_ r: WireRequest) -> String {
        let head = "\(r.requestId) \(r.deadlineMs) \(r.apiKey ?? "-")"
        switch r.call {
        case .failure(let e): return head + " " + describe(e)
        case .success(let call):
            var s = head + " " + call.name + " " + short(WireCodec.encodeRequest(r))
            if case .batchCheck(let items, _) = call {
                for case .failure(let e) in items { s += " | " + describe(e) }
            }
            return s
        }
    }

    static func describe(_ r: Result<WireResponse, Error>) -> String {
        switch r {
        case .success(let w): return "\(w.requestId) " + short(WireCodec.encodeResponseWithProtobufC(w))
        case .failure(let e as AuthzError): return describe(e)
        case .failure(let e): return "other \(e)"
        }
    }

    /// Every one-byte change (xor 1, 0x00, 0xff) and every truncation of `bytes`, through `decode`.
    static func mutations(_ name: String, _ bytes: [UInt8], _ decode: ([UInt8]) -> String, into out: inout String) {
        for i in bytes.indices {
            for v in [bytes[i] ^ 1, 0x00, 0xFF] where v != bytes[i] {
                var m = bytes
                m[i] = v
                out += "\(name) @\(i)=\(v): \(decode(m))\n"
            }
            out += "\(name) [..<\(i)]: \(decode(Array(bytes[..<i])))\n"
        }
    }

    static var principals: [(String, Principal)] {
        [("unauthenticated", .unauthenticated), ("superuser", .superuser),
         ("gateway", .key(id: k, role: .gateway, tenant: .zero)), ("operator", .key(id: k, role: .operator, tenant: .zero)),
         ("checker", .key(id: k, role: .checker, tenant: t)), ("admin", .key(id: k, role: .admin, tenant: t)),
         ("admin.other", .key(id: k, role: .admin, tenant: t2)), ("uid.checker", .uid(1000, role: .checker, tenant: t2)),
         ("certificate.admin", .certificate("spiffe://x", role: .admin, tenant: t))]
    }

    func golden(_ name: String) -> URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("golden").appendingPathComponent(name)
    }

    func check(_ text: String, against name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let url = golden(name)
        if ProcessInfo.processInfo.environment["AUTHZ_UPDATE_GOLDEN"] == "1" {
            try text.write(to: url, atomically: true, encoding: .utf8)
            return
        }
        let expected = try String(contentsOf: url, encoding: .utf8)
        if text != expected {
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("actual-" + name)
            try text.write(to: out, atomically: true, encoding: .utf8)
            XCTFail("\(name) differs from the golden file; this run's text is in \(out.path)", file: file, line: line)
        }
    }

    func testRequestAndResponseBytesAreGolden() throws {
        var text = ""
        for (name, r) in Self.calls { text += "request \(name) \(Self.hex(WireCodec.encodeRequest(r)))\n" }
        for (name, r) in Self.replies { text += "response \(name) \(Self.hex(WireCodec.encodeResponse(r)))\n" }
        try check(text, against: "wire-bytes.txt")
    }

    func testDecodingOfEveryMutationIsGolden() throws {
        var text = ""
        for (name, r) in Self.calls {
            Self.mutations("request \(name)", WireCodec.encodeRequest(r), { m in
                Self.describe(m.withUnsafeBytes { WireCodec.decodeRequest($0) })
                    + " / " + Self.describe(m.withUnsafeBytes { WireCodec.decodeRequestWithProtobufC($0) })
            }, into: &text)
        }
        for (name, r) in Self.replies {
            Self.mutations("response \(name)", WireCodec.encodeResponse(r), { m in
                Self.describe(Result { try m.withUnsafeBytes { try WireCodec.decodeResponse($0) } })
            }, into: &text)
        }
        let digest = Self.hex(SHA256.hash(data: Data(text.utf8)))
        let lines = text.split(separator: "\n").count
        if let path = ProcessInfo.processInfo.environment["AUTHZ_GOLDEN_DUMP"] {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        let before = testRun?.failureCount ?? 0
        try check("\(digest) \(lines)\n", against: "wire-mutations.sha256")
        if testRun?.failureCount ?? 0 > before {
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("actual-wire-mutations.txt")
            try text.write(to: out, atomically: true, encoding: .utf8)
            XCTFail("the mutation outcomes of this run are in \(out.path) (set AUTHZ_GOLDEN_DUMP=path on a run of the previous code to diff)")
        }
    }

    func testAuthorizationAndLanesAreGolden() throws {
        var text = ""
        for (name, r) in Self.calls {
            guard case .success(let call) = r.call else { continue }
            text += "\(name) lane \(Dispatcher.lane(call))\n"
            for (who, p) in Self.principals {
                text += "\(name) as \(who): \(authorize(p, call).map(Self.describe) ?? "allowed")\n"
            }
        }
        try check(text, against: "wire-authorization.txt")
    }
}
