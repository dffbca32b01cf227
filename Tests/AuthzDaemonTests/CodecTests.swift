import AuthzFraming
import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import NIOCore
import NIOEmbedded
import XCTest

/// Framing and every message type, on EmbeddedChannel and in memory: no sockets.
final class CodecTests: XCTestCase {
    func frame(_ payload: [UInt8]) -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: payload.count + 4)
        b.writeFrame(payload)
        return b
    }

    func testFrameDecoderSplitsAndJoins() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrameSize: 1024)))
        var two = frame([1, 2, 3])
        var second = frame([4])
        two.writeBuffer(&second)
        // Byte by byte: nothing until a frame is complete.
        let bytes = two.readBytes(length: two.readableBytes)!
        for b in bytes.prefix(6) {
            try channel.writeInbound(ByteBuffer(bytes: [b]))
        }
        XCTAssertNil(try channel.readInbound(as: ByteBuffer.self))
        try channel.writeInbound(ByteBuffer(bytes: Array(bytes[6...])))
        XCTAssertEqual(try channel.readInbound(as: ByteBuffer.self).map { Array($0.readableBytesView) }, [1, 2, 3])
        XCTAssertEqual(try channel.readInbound(as: ByteBuffer.self).map { Array($0.readableBytesView) }, [4])
        // An empty frame is a frame.
        try channel.writeInbound(frame([]))
        XCTAssertEqual(try channel.readInbound(as: ByteBuffer.self)?.readableBytes, 0)
        XCTAssertNoThrow(try channel.finish())
    }

    func testOversizedLengthRefusedFromTheHeaderAlone() throws {
        for length: UInt32 in [1025, UInt32(Int32.max), UInt32.max] {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrameSize: 1024)))
            var header = ByteBufferAllocator().buffer(capacity: 4)
            header.writeInteger(length)
            XCTAssertThrowsError(try channel.writeInbound(header)) { e in
                XCTAssertEqual((e as? FrameDecoder.FrameTooLarge)?.length, length)
            }
            _ = try? channel.finish()
        }
        // Exactly the maximum is accepted.
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrameSize: 4)))
        try channel.writeInbound(frame([1, 2, 3, 4]))
        XCTAssertEqual(try channel.readInbound(as: ByteBuffer.self)?.readableBytes, 4)
    }

    func roundTrip(_ call: Call) -> Call? {
        let bytes = WireCodec.encodeRequest(WireRequest(requestId: 42, deadlineMs: 7, call: .success(call)))
        let back = bytes.withUnsafeBytes { WireCodec.decodeRequest($0) }
        XCTAssertEqual(back.requestId, 42)
        XCTAssertEqual(back.deadlineMs, 7)
        if case .failure(let e) = back.call { XCTFail("\(call.name): \(e)") }
        return try? back.call.get()
    }

    func roundTrip(_ reply: Reply) -> Reply? {
        let bytes = WireCodec.encodeResponse(WireResponse(requestId: 9, result: .success(reply)))
        let back = try? bytes.withUnsafeBytes { try WireCodec.decodeResponse($0) }
        XCTAssertEqual(back?.requestId, 9)
        return try? back?.result.get()
    }

    func testEveryRequestRoundTrips() throws {
        let t = ID.random(), u = ID.random(), r = ID.random(), p = ID.random()
        let c = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: 5)
        guard case .check(let c2)? = roundTrip(.check(c)) else { return XCTFail() }
        XCTAssertEqual(c2, c)
        guard case .batchCheck(let items, let min)? = roundTrip(.batchCheck([.success(c), .success(c)], minRevision: 3)) else { return XCTFail() }
        XCTAssertEqual(items.compactMap { try? $0.get() }, [c, c])
        XCTAssertEqual(min, 3)
        guard case .explain(let c3)? = roundTrip(.explain(c)) else { return XCTFail() }
        XCTAssertEqual(c3, c)
        guard case .listUserPermissions(t, u, 2)? = roundTrip(.listUserPermissions(tenantId: t, userId: u, minRevision: 2)) else { return XCTFail() }
        guard case .listPermissionUsers(t, "a.b", .global, 10, u, 1)? = roundTrip(.listPermissionUsers(tenantId: t, permission: "a.b", scope: .global, pageSize: 10, after: u, minRevision: 1)) else { return XCTFail() }
        let entities: [Entity] = [
            .tenant(Tenant(id: t, name: "acme", metadata: "{\"a\":1}")),
            .user(User(id: u, tenantId: t, email: "a@b.c", displayName: "Ana", externalId: "x1", isActive: false)),
            .role(Role(id: r, tenantId: t, name: "admin", description: "all", scopes: [.tenant, .global], inherits: [ID.random(), ID.random()])),
            .permission(Permission(id: p, tenantId: t, name: "gmail.messages.read", service: "gmail", scopes: [.self])),
            .roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .global)),
            .permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .self)),
            .platformCredential(PlatformCredential(id: .random(), tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "ana@gmail.com",
                                                   accessToken: "at-secret", refreshToken: "rt-secret", tokenExpiresAt: 1_800_000_000_000_000, oauthScopes: ["mail.read"])),
        ]
        let ops: [WriteOp] = entities.map { .upsert($0) } + [.deactivate(RecordRef(kind: .user, tenantId: t, id: u)), .activate(RecordRef(kind: .tenant, tenantId: t, id: t))]
        guard case .write(let ops2)? = roundTrip(.write(ops)) else { return XCTFail() }
        XCTAssertEqual(ops2, ops)
        guard case .get(RecordRef(kind: .role, tenantId: t, id: r), true)? = roundTrip(.get(RecordRef(kind: .role, tenantId: t, id: r), includeSecrets: true)) else { return XCTFail() }
        guard case .list(.user, t, 50, u, false)? = roundTrip(.list(.user, tenantId: t, pageSize: 50, after: u, includeSecrets: false)) else { return XCTFail() }
        guard case .importJSONL([1, 2, 3])? = roundTrip(.importJSONL([1, 2, 3])) else { return XCTFail() }
        guard case .export(t, true)? = roundTrip(.export(tenantId: t, includeSecrets: true)) else { return XCTFail() }
        guard case .serverInfo? = roundTrip(.serverInfo) else { return XCTFail() }
        guard case .health? = roundTrip(.health) else { return XCTFail() }
    }

    func testEveryResponseRoundTrips() throws {
        let d = Decision(reason: .inactivePermission, revision: 77)
        guard case .check(d)? = roundTrip(.check(d)) else { return XCTFail() }
        let err = AuthzError.invalid("batch_check.checks[1].scope", "is required")
        guard case .batchCheck(let items, 78)? = roundTrip(.batchCheck([.success(d), .failure(err)], revision: 78)) else { return XCTFail() }
        XCTAssertEqual(try items[0].get(), d)
        if case .failure(let e) = items[1] { XCTAssertEqual(e, err) } else { XCTFail() }
        var ex = Explanation(decision: Decision(reason: .granted, revision: 3))
        ex.roleBindingId = .random(); ex.roleBindingScope = .tenant; ex.roleChain = [.random(), .random()]
        ex.roleChainNames = ["admin", "viewer"]; ex.permissionBindingId = .random(); ex.permissionBindingScope = .global
        guard case .explain(ex)? = roundTrip(.explain(ex)) else { return XCTFail() }
        guard case .userPermissions(.granted, let list, 4)? = roundTrip(.userPermissions(reason: .granted, permissions: [("a.b", .self), ("c.d", .global)], revision: 4)) else { return XCTFail() }
        XCTAssertEqual(list.map { "\($0.0)@\($0.1)" }, ["a.b@self", "c.d@global"])
        let ids = [ID.random(), ID.random()]
        guard case .permissionUsers(ids, "tok", 5)? = roundTrip(.permissionUsers(ids, nextPageToken: "tok", revision: 5)) else { return XCTFail() }
        guard case .write(6)? = roundTrip(.write(revision: 6)) else { return XCTFail() }
        var role = Role(id: .random(), tenantId: .random(), name: "r", inherits: [.random()])
        role.fields.createdAt = 123; role.fields.updatedAt = 456
        guard case .get(.role(role))? = roundTrip(.get(.role(role))) else { return XCTFail() }
        guard case .list([.role(role)], "next")? = roundTrip(.list([.role(role)], nextPageToken: "next")) else { return XCTFail() }
        guard case .importResult(7, 8)? = roundTrip(.importResult(revision: 7, records: 8)) else { return XCTFail() }
        guard case .export([9], 10)? = roundTrip(.export([9], revision: 10)) else { return XCTFail() }
        let info = ServerInfo(version: "v", revision: 11, protocolVersion: 1, counts: [.tenant: 1, .user: 2, .role: 3, .permission: 4, .roleBinding: 5, .permissionBinding: 6])
        guard case .serverInfo(info)? = roundTrip(.serverInfo(info)) else { return XCTFail() }
        guard case .health(true)? = roundTrip(.health(serving: true)) else { return XCTFail() }
        // Errors carry code, message and field.
        let bytes = WireCodec.encodeResponse(WireResponse(requestId: 1, result: .failure(AuthzError(.notFound, "role x does not exist", field: "ref.id"))))
        let back = try bytes.withUnsafeBytes { try WireCodec.decodeResponse($0) }
        guard case .failure(let e) = back.result else { return XCTFail() }
        XCTAssertEqual(e, AuthzError(.notFound, "role x does not exist", field: "ref.id"))
    }

    func testMalformedRequestsNameTheField() throws {
        let t = ID.random(), u = ID.random()
        func decode(_ c: CheckCall, patch: (inout [UInt8]) -> Void = { _ in }) -> AuthzError? {
            var bytes = WireCodec.encodeRequest(WireRequest(requestId: 1, call: .success(.check(c))))
            patch(&bytes)
            guard case .failure(let e) = bytes.withUnsafeBytes({ WireCodec.decodeRequest($0) }).call else { return nil }
            return e
        }
        // Empty permission.
        XCTAssertEqual(decode(CheckCall(tenantId: t, userId: u, permission: "", scope: .self))?.field, "check.permission")
        // Hand-built protobuf: Request{request_id=1, check={tenant_id="nope", user_id=u, permission="a.b", scope=2}}.
        func checkMessage(tenant: [UInt8], user: [UInt8], permission: [UInt8], scope: UInt8) -> [UInt8] {
            var inner: [UInt8] = []
            inner += [0x0A, UInt8(tenant.count)] + tenant
            inner += [0x12, UInt8(user.count)] + user
            inner += [0x1A, UInt8(permission.count)] + permission
            inner += [0x20, scope]
            return [0x08, 0x01, 0x52, UInt8(inner.count)] + inner
        }
        func decodeRaw(_ m: [UInt8]) -> AuthzError? {
            guard case .failure(let e) = m.withUnsafeBytes({ WireCodec.decodeRequest($0) }).call else { return nil }
            return e
        }
        let good = Array(t.description.utf8), goodU = Array(u.description.utf8), perm = Array("a.b".utf8)
        XCTAssertNil(decodeRaw(checkMessage(tenant: good, user: goodU, permission: perm, scope: 2)))
        let bad = decodeRaw(checkMessage(tenant: Array("nope".utf8), user: goodU, permission: perm, scope: 2))
        XCTAssertEqual(bad?.code, .invalidArgument)
        XCTAssertEqual(bad?.field, "check.tenant_id")
        XCTAssertEqual(bad?.message, "check.tenant_id must be a UUID in 8-4-4-4-12 form (got \"nope\")")
        XCTAssertEqual(decodeRaw(checkMessage(tenant: good, user: goodU, permission: perm, scope: 0))?.field, "check.scope")
        XCTAssertEqual(decodeRaw(checkMessage(tenant: good, user: goodU, permission: perm, scope: 99))?.message, "check.scope has unknown value 99; must be SCOPE_SELF, SCOPE_TENANT or SCOPE_GLOBAL")
        XCTAssertEqual(decodeRaw(checkMessage(tenant: good, user: goodU, permission: [0x61, 0xFF, 0xFE], scope: 1))?.message, "check.permission must be valid UTF-8")
        // Not protobuf at all.
        let garbage = decodeRaw([0xFF, 0xFF, 0xFF, 0xFF])
        XCTAssertEqual(garbage?.code, .invalidArgument)
        XCTAssertEqual(garbage?.field, "request")
        // A valid envelope with no call.
        XCTAssertEqual(decodeRaw([0x08, 0x05])?.field, "request.call")
    }
}

/// The hand-written fast path against the generated protobuf-c code: same decoded calls, same
/// errors, byte-identical responses.
final class FastPathEquivalenceTests: XCTestCase {
    func describe(_ r: WireRequest) -> String {
        switch r.call {
        case .failure(let e): return "\(r.requestId) \(r.deadlineMs) error \(e.code.name) \(e.field) \(e.message)"
        case .success(.check(let c)): return "\(r.requestId) \(r.deadlineMs) check \(c)"
        case .success(.batchCheck(let items, let min)):
            return "\(r.requestId) \(r.deadlineMs) batch \(min) " + items.map { i -> String in
                switch i {
                case .success(let c): return "\(c)"
                case .failure(let e): return "error \(e.code.name) \(e.field) \(e.message)"
                }
            }.joined(separator: ";")
        case .success(let other): return "other \(other.name)"
        }
    }

    func testRandomChecksDecodeIdentically() {
        var rng = SystemRandomNumberGenerator()
        let tenants = ["", "nope", ID.random().description, ID.random().description.uppercased(), String(repeating: "a", count: 36)]
        let perms = ["", "gmail.messages.read", "a.b", "x", String(repeating: "p", count: 200)]
        for _ in 0..<2000 {
            func check() -> [UInt8] {
                var m: [UInt8] = []
                func str(_ f: UInt8, _ s: String) {
                    let b = Array(s.utf8)
                    if b.isEmpty && Bool.random(using: &rng) { return }
                    m.append(f << 3 | 2)
                    FastPath.varint(UInt64(b.count), &m)
                    m += b
                }
                str(1, tenants.randomElement(using: &rng)!)
                str(2, tenants.randomElement(using: &rng)!)
                str(3, perms.randomElement(using: &rng)!)
                if Bool.random(using: &rng) { m += [0x20, UInt8.random(in: 0...4, using: &rng)] }
                if Bool.random(using: &rng) { m += [0x28]; FastPath.varint(UInt64.random(in: 0...1000, using: &rng), &m) }
                if Int.random(in: 0..<10, using: &rng) == 0 { m += [0x38, 0x01] }  // unknown field 7
                return m
            }
            var req: [UInt8] = [0x08]
            FastPath.varint(UInt64.random(in: 0...UInt64(UInt32.max), using: &rng), &req)
            if Bool.random(using: &rng) {
                let c = check()
                req.append(0x52)
                FastPath.varint(UInt64(c.count), &req)
                req += c
            } else {
                var inner: [UInt8] = []
                for _ in 0..<Int.random(in: 0...5, using: &rng) {
                    let c = check()
                    inner.append(0x0A)
                    FastPath.varint(UInt64(c.count), &inner)
                    inner += c
                }
                req.append(0x5A)
                FastPath.varint(UInt64(inner.count), &req)
                req += inner
            }
            let fast = req.withUnsafeBytes { FastPath.decodeRequest($0) }
            let reference = req.withUnsafeBytes { WireCodec.decodeRequestWithProtobufC($0) }
            if let fast { XCTAssertEqual(describe(fast), describe(reference), "request \(req)") }
        }
    }

    /// Found by the fuzzer: field number 0 is invalid protobuf; both paths must reject it.
    func testFieldZeroIsRejectedLikeProtobufC() {
        for bytes: [UInt8] in [[0x00, 0x00, 0x00, 0x67, 0x08, 0x07], [0x08, 0x01, 0x00, 0x05], [0x08, 0x01, 0x52, 0x02, 0x00, 0x01]] {
            let fast = bytes.withUnsafeBytes { FastPath.decodeRequest($0) }
            if let fast { XCTAssertEqual(describe(fast), describe(bytes.withUnsafeBytes { WireCodec.decodeRequestWithProtobufC($0) })) }
        }
    }

    func testResponsesAreByteIdentical() {
        for _ in 0..<500 {
            let d = { Decision(reason: Reason.allCases.randomElement()!, revision: UInt64.random(in: 0...1 << 40)) }
            let id = UInt64.random(in: 0...1 << 50)
            let replies: [Reply] = [.check(d()), .batchCheck((0..<Int.random(in: 0...20)).map { _ in .success(d()) }, revision: UInt64.random(in: 0...1000))]
            for r in replies {
                let w = WireResponse(requestId: id, result: .success(r))
                XCTAssertEqual(FastPath.encodeResponse(w), WireCodec.encodeResponseWithProtobufC(w))
            }
        }
    }
}
