import AuthzEngine
import AuthzIndex
import AuthzModel
import Logging
import NIOCore
import NIOEmbedded
import XCTest
@testable import AuthzServer
@testable import AuthzWire

/// The in-place check path: its codec against protobuf-c, and the connection handler's framing,
/// timeouts and answers on an EmbeddedChannel (no sockets).
final class CheckPathTests: XCTestCase {
    func frame(_ payload: [UInt8]) -> [UInt8] {
        let n = UInt32(payload.count)
        return [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] + payload
    }

    func testAnswersAreByteIdenticalToProtobufC() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let id = [0, 1, 127, 128, UInt64.random(in: 0...UInt64.max, using: &rng)].randomElement()!
            let revision = [0, 1, 300, UInt64.random(in: 0...UInt64.max, using: &rng)].randomElement()!
            let decisions = (0..<Int.random(in: 1...40)).map { _ in Decision(reason: Reason.allCases.randomElement()!, revision: revision) }
            let single = decisions[0]
            var out = [UInt8](repeating: 0, count: CheckFrame.checkResponseSize(requestId: id, single))
            let n = out.withUnsafeMutableBytes { CheckFrame.writeCheckResponse(requestId: id, single, to: $0) }
            XCTAssertEqual(n, out.count)
            XCTAssertEqual(out, frame(WireCodec.encodeResponseWithProtobufC(WireResponse(requestId: id, result: .success(.check(single))))))
            let batch = decisions.withUnsafeBufferPointer { ds -> [UInt8] in
                var b = [UInt8](repeating: 0, count: CheckFrame.batchResponseSize(requestId: id, ds, revision: revision))
                let m = b.withUnsafeMutableBytes { CheckFrame.writeBatchResponse(requestId: id, ds, revision: revision, to: $0) }
                XCTAssertEqual(m, b.count)
                return b
            }
            let reference = WireResponse(requestId: id, result: .success(.batchCheck(decisions.map { .success($0) }, revision: revision)))
            XCTAssertEqual(batch, frame(WireCodec.encodeResponseWithProtobufC(reference)))
        }
    }

    func testParsesWhatTheGeneralDecoderDecodesOrDefers() {
        let names = ["gmail.messages.read", "a.b", String(repeating: "x", count: 128), String(repeating: "x", count: 129), "", "caf\u{E9}.read", "has space"]
        var items: [CheckQuery] = []
        for _ in 0..<2000 {
            let c = CheckCall(tenantId: .random(), userId: .random(), permission: names.randomElement()!, scope: [Scope.`self`, .tenant, .global].randomElement()!,
                              minRevision: Bool.random() ? 0 : 5)
            let batch = Bool.random()
            let call: Call = batch ? .batchCheck([.success(c), .success(c)], minRevision: 0) : .check(c)
            let bytes = WireCodec.encodeRequest(WireRequest(requestId: UInt64.random(in: 0...1000), call: .success(call)))
            let parsed = bytes.withUnsafeBytes { CheckFrame.parse($0, maxItems: 10_000, into: &items) }
            let reference = bytes.withUnsafeBytes { WireCodec.decodeRequestWithProtobufC($0) }
            guard let parsed else {
                // Deferred: fine for anything unusual; never for a plain, valid check.
                let plain = c.minRevision == 0 && !c.permission.isEmpty && c.permission.utf8.count <= 128 && c.permission.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
                XCTAssertFalse(plain, "a plain check was deferred: \(c)")
                continue
            }
            XCTAssertEqual(parsed.requestId, reference.requestId)
            XCTAssertEqual(parsed.isBatch, batch)
            guard case .success(let decoded) = reference.call else { return XCTFail("protobuf-c refused what the check path took: \(c)") }
            let expected: [CheckCall]
            switch decoded {
            case .check(let x): expected = [x]
            case .batchCheck(let xs, _): expected = xs.compactMap { try? $0.get() }
            default: return XCTFail()
            }
            XCTAssertEqual(items.count, expected.count)
            for (q, e) in zip(items, expected) {
                XCTAssertEqual(q.tenant, e.tenantId)
                XCTAssertEqual(q.user, e.userId)
                XCTAssertEqual(q.scope, e.scope)
                let name = bytes.withUnsafeBytes { String(decoding: UnsafeRawBufferPointer(rebasing: $0[q.permissionStart..<q.permissionEnd]), as: UTF8.self) }
                XCTAssertEqual(name, e.permission)
            }
        }
    }

    /// The tenant cache kept per connection gives exactly what parsing the text gives: the
    /// same text the same id, another text (another tenant, upper case, not a UUID) its own.
    func testTheConnectionsTenantCacheAnswersAsParsingDoes() {
        let tenants = [ID.random(), ID.random(), ID.random()]
        let texts = tenants.map(\.description) + tenants.map { $0.description.uppercased() }
            + ["not-a-uuid", String(tenants[0].description.dropLast()) + "g", String(tenants[1].description.prefix(35))]
        var cache = CheckFrame.TenantCache()
        for _ in 0..<5000 {
            let text = texts.randomElement()!
            let viaCache = Array(text.utf8).withUnsafeBytes { cache.id($0) }
            XCTAssertEqual(viaCache, ID(text), "\(text)")
        }
        // Whole frames: a cache shared across requests decides as a fresh one does.
        var items: [CheckQuery] = [], fresh: [CheckQuery] = []
        for _ in 0..<2000 {
            let c = CheckCall(tenantId: tenants.randomElement()!, userId: .random(), permission: "gmail.messages.read", scope: .global)
            let bytes = WireCodec.encodeRequest(WireRequest(requestId: 1, call: .success(Bool.random() ? .check(c) : .batchCheck([.success(c), .success(c)], minRevision: 0))))
            XCTAssertNotNil(bytes.withUnsafeBytes { CheckFrame.parse($0, maxItems: 10, into: &items, tenants: &cache) })
            XCTAssertNotNil(bytes.withUnsafeBytes { CheckFrame.parse($0, maxItems: 10, into: &fresh) })
            XCTAssertEqual(items.map(\.tenant), fresh.map(\.tenant))
            XCTAssertEqual(items.first?.tenant, c.tenantId)
        }
    }

    /// The eight-at-a-time permission byte check agrees with a byte loop, at every length and
    /// at the edges of the range (0x20, 0x21, 0x7E, 0x7F, 0x80, 0xFF).
    func testPrintableAgreesWithAByteLoop() {
        let edges: [UInt8] = [0x00, 0x20, 0x21, 0x22, 0x41, 0x7D, 0x7E, 0x7F, 0x80, 0xA1, 0xFF]
        for _ in 0..<20_000 {
            let n = Int.random(in: 0...40)
            var bytes = (0..<n).map { _ in UInt8.random(in: 0x21...0x7E) }
            if n > 0, Bool.random() { bytes[Int.random(in: 0..<n)] = edges.randomElement()! }
            let expected = bytes.allSatisfy { $0 >= 0x21 && $0 <= 0x7E }
            XCTAssertEqual(bytes.withUnsafeBytes { CheckFrame.printable($0) }, expected, "\(bytes)")
        }
    }

    // MARK: the handler on an EmbeddedChannel

    var dir: String!
    var engine: Engine!
    var dispatcher: Dispatcher!
    let t = ID.random(), u = ID.random()

    override func setUpWithError() throws {
        dir = temporaryDirectory("checkpath")
        var o = EngineOptions()
        o.store.sync = .nosync
        engine = try Engine(directory: dir + "/data", options: o)
        let r = ID.random(), p = ID.random()
        try engine.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t))),
                          .upsert(.role(Role(id: r, tenantId: t, name: "reader"))),
                          .upsert(.permission(Permission(id: p, tenantId: t, name: "gmail.messages.read", service: "gmail"))),
                          .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .tenant))),
                          .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .global)))])
        var config = ServerConfig()
        config.insecureNoAuth = true
        config.frameTimeoutSeconds = 3
        dispatcher = try Dispatcher(engine: engine, config: config, logger: Logger(label: "test"))
    }

    override func tearDown() {
        dispatcher?.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func channel() throws -> EmbeddedChannel {
        let ch = EmbeddedChannel(handler: ConnectionHandler(dispatcher: dispatcher, logger: Logger(label: "test"), isUnix: false))
        try ch.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return ch
    }

    func answers(_ ch: EmbeddedChannel) throws -> [WireResponse] {
        var bytes: [UInt8] = []
        while var b = try ch.readOutbound(as: ByteBuffer.self) { bytes += b.readBytes(length: b.readableBytes)! }
        var out: [WireResponse] = []
        var i = 0
        while i + 4 <= bytes.count {
            let n = Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
            out.append(try Array(bytes[(i + 4)..<(i + 4 + n)]).withUnsafeBytes { try WireCodec.decodeResponse($0) })
            i += 4 + n
        }
        return out
    }

    func testFramesSplitAnywhereAreAnsweredOncePerReadInOneWrite() throws {
        let checks: [(String, Scope, Reason)] = [("gmail.messages.read", .tenant, .granted), ("gmail.messages.read", .global, .noGrant),
                                                  ("core.admin", .self, .unknownPermission)]
        var stream: [UInt8] = []
        for (i, (perm, scope, _)) in checks.enumerated() {
            stream += frame(WireCodec.encodeRequest(WireRequest(requestId: UInt64(i + 1), call: .success(.check(CheckCall(tenantId: t, userId: u, permission: perm, scope: scope, minRevision: 0))))))
        }
        // Every split point, including mid-header.
        for cut in 1..<stream.count {
            let ch = try channel()
            try ch.writeInbound(ByteBuffer(bytes: stream[..<cut]))
            try ch.writeInbound(ByteBuffer(bytes: stream[cut...]))
            let got = try answers(ch)
            XCTAssertEqual(got.map(\.requestId).sorted(), [1, 2, 3], "cut at \(cut)")
            for r in got {
                guard case .success(.check(let d)) = r.result else { return XCTFail("\(r)") }
                XCTAssertEqual(d.reason, checks[Int(r.requestId) - 1].2)
            }
            _ = try ch.finish()
        }
        // All three in one read: one write.
        let ch = try channel()
        try ch.writeInbound(ByteBuffer(bytes: stream))
        ch.pipeline.fireChannelReadComplete()
        var writes = 0
        while try ch.readOutbound(as: ByteBuffer.self) != nil { writes += 1 }
        XCTAssertEqual(writes, 1)
    }

    func testAStartedFrameMustCompleteWithinTheFrameTimeout() throws {
        let ch = try channel()
        let request = frame(WireCodec.encodeRequest(WireRequest(requestId: 1, call: .success(.health))))
        try ch.writeInbound(ByteBuffer(bytes: request.prefix(5)))
        ch.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertTrue(ch.isActive)
        ch.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertFalse(ch.isActive, "a frame trickling past frame-timeout must close the connection")
    }

    func testOversizedFrameIsRefusedFromItsHeader() throws {
        let ch = try channel()
        try ch.writeInbound(ByteBuffer(bytes: [0x7F, 0, 0, 0]))
        let got = try answers(ch)
        XCTAssertEqual(got.count, 1)
        guard case .failure(let e) = got.first?.result else { return XCTFail() }
        XCTAssertEqual(e.code, .resourceExhausted)
        XCTAssertFalse(ch.isActive)
    }

    // MARK: review findings

    func request(_ id: UInt64, _ call: Call) -> [UInt8] { frame(WireCodec.encodeRequest(WireRequest(requestId: id, call: .success(call)))) }

    func testAnsweredRevisionWaitsLeaveNoWaiterBehind() throws {
        let ch = try channel()
        let far = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: 1 << 60)
        var bytes: [UInt8] = []
        for i in 1...50 { bytes += request(UInt64(i), .check(far)) }
        try ch.writeInbound(ByteBuffer(bytes: bytes))
        XCTAssertEqual(engine.pendingRevisionWaiters, 50)
        ch.embeddedEventLoop.advanceTime(to: .now() + .seconds(5))
        let got = try answers(ch)
        XCTAssertEqual(got.count, 50)
        for r in got { XCTAssertEqual(failure(r)?.code, .unavailable) }
        XCTAssertEqual(engine.pendingRevisionWaiters, 0, "answered waits must withdraw their waiters")
    }

    func testAClosedConnectionWithdrawsItsRevisionWaits() throws {
        let ch = try channel()
        let far = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: 1 << 60)
        var bytes: [UInt8] = []
        for i in 1...30 { bytes += request(UInt64(i), .check(far)) }
        try ch.writeInbound(ByteBuffer(bytes: bytes))
        XCTAssertEqual(engine.pendingRevisionWaiters, 30)
        try ch.close().wait()
        XCTAssertEqual(engine.pendingRevisionWaiters, 0, "a closed connection's waits must not hold the engine's waiter slots")
        // Their timeouts, had they stayed scheduled, would answer into a closed channel: none runs.
        ch.embeddedEventLoop.advanceTime(to: .now() + .seconds(5))
        XCTAssertEqual(engine.pendingRevisionWaiters, 0)
    }

    /// protobuf-c reads a field key or a length prefix of at most 5 bytes and refuses a longer
    /// encoding; the in-place and fast decoders must not take such a frame either.
    func testOverlongKeysAndLengthsAreLeftToProtobufC() {
        let check = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: 0)
        let plain = WireCodec.encodeRequest(WireRequest(requestId: 7, call: .success(.check(check))))
        // The request's bytes: [08 07] [52 len body]. Re-encode the call's key (0x52) or its
        // length over 5 and 6 bytes.
        XCTAssertEqual(Array(plain.prefix(3)), [0x08, 0x07, 0x52])
        let body = Array(plain[4...])
        XCTAssertEqual(Int(plain[3]), body.count)
        func padded(_ v: UInt8, to n: Int) -> [UInt8] { [v | 0x80] + [UInt8](repeating: 0x80, count: n - 2) + [0] }
        let variants: [(String, [UInt8], Bool)] = [
            ("5-byte key", [0x08, 0x07] + padded(0x52, to: 5) + [UInt8(body.count)] + body, true),
            ("6-byte key", [0x08, 0x07] + padded(0x52, to: 6) + [UInt8(body.count)] + body, false),
            ("5-byte length", [0x08, 0x07, 0x52] + padded(UInt8(body.count), to: 5) + body, true),
            ("6-byte length", [0x08, 0x07, 0x52] + padded(UInt8(body.count), to: 6) + body, false),
        ]
        var items: [CheckQuery] = []
        for (name, bytes, valid) in variants {
            let reference = bytes.withUnsafeBytes { WireCodec.decodeRequestWithProtobufC($0) }
            let parsed = bytes.withUnsafeBytes { CheckFrame.parse($0, maxItems: 10, into: &items) }
            let fast = bytes.withUnsafeBytes { WireCodec.decodeRequestFastPathOnly($0) }
            let envelope = bytes.withUnsafeBytes { WireCodec.peekEnvelope($0) }
            if valid {
                guard case .success(.check(let c)) = reference.call else { return XCTFail("\(name): protobuf-c refused it: \(reference)") }
                XCTAssertEqual(c, check, name)
                // The in-place path may leave an unusual encoding to the general path (it takes
                // one-byte keys only); what it takes, it reads as protobuf-c does.
                if let parsed { XCTAssertEqual(parsed.requestId, 7, name) }
                XCTAssertNotNil(fast, name)
                XCTAssertEqual(envelope?.callKind, .check, name)
            } else {
                guard case .failure = reference.call else { return XCTFail("\(name): protobuf-c took it") }
                XCTAssertNil(parsed, "\(name): the check path took a frame protobuf-c refuses")
                XCTAssertNil(fast, "\(name): the fast path took a frame protobuf-c refuses")
                XCTAssertNil(envelope, "\(name): the envelope took a frame protobuf-c refuses")
            }
        }
    }

    // MARK: flow control on the channel (ConnectionFlow's actions carried out)

    /// A next revision's write, so that checks waiting for it are answered.
    func advanceRevision() throws {
        try engine.write([.upsert(.user(User(id: .random(), tenantId: t)))])
    }

    func testRequestsBeyondMaxInFlightWaitInTheBufferUntilASlotFrees() throws {
        var config = ServerConfig()
        config.insecureNoAuth = true
        config.maxInFlight = 2
        let d = try Dispatcher(engine: engine, config: config, logger: Logger(label: "test"))
        defer { d.shutdown() }
        let ch = EmbeddedChannel(handler: ConnectionHandler(dispatcher: d, logger: Logger(label: "test"), isUnix: false))
        try ch.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let next = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: engine.revision + 1)
        try ch.writeInbound(ByteBuffer(bytes: request(1, .check(next)) + request(2, .check(next)) + request(3, .check(next))))
        XCTAssertEqual(engine.pendingRevisionWaiters, 2, "two slots: the third request stays in the buffer, not started")
        ch.pipeline.read()  // held: nothing to observe but that nothing breaks
        XCTAssertTrue(try answers(ch).isEmpty)
        try advanceRevision()
        ch.embeddedEventLoop.run()
        let got = try answers(ch)
        XCTAssertEqual(got.map(\.requestId).sorted(), [1, 2, 3], "the freed slots start the buffered request")
        for r in got {
            guard case .success(.check(let dec)) = r.result else { return XCTFail("\(r)") }
            XCTAssertEqual(dec.reason, .granted)
        }
        XCTAssertEqual(engine.pendingRevisionWaiters, 0)
        XCTAssertTrue(ch.isActive)
    }

    func testADrainingConnectionAnswersWhatItHasThenCloses() throws {
        let ch = try channel()
        let next = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: engine.revision + 1)
        try ch.writeInbound(ByteBuffer(bytes: request(1, .check(next))))
        ch.pipeline.fireUserInboundEventTriggered(QuiesceEvent())
        XCTAssertTrue(ch.isActive, "a request is pending: the connection stays")
        try advanceRevision()
        ch.embeddedEventLoop.run()
        let got = try answers(ch)
        XCTAssertEqual(got.map(\.requestId), [1])
        XCTAssertFalse(ch.isActive, "its last answer out, a draining connection closes")
        // With nothing pending it closes at once.
        let idle = try channel()
        idle.pipeline.fireUserInboundEventTriggered(QuiesceEvent())
        XCTAssertFalse(idle.isActive)
    }

    func testAConnectionThatReadsNothingForTheIdleTimeoutClosesUnlessARequestIsPending() throws {
        var config = ServerConfig()
        config.insecureNoAuth = true
        config.idleTimeoutSeconds = 10
        config.revisionWaitMillis = 60_000
        let d = try Dispatcher(engine: engine, config: config, logger: Logger(label: "test"))
        defer { d.shutdown() }
        func open() throws -> EmbeddedChannel {
            let ch = EmbeddedChannel(handler: ConnectionHandler(dispatcher: d, logger: Logger(label: "test"), isUnix: false))
            try ch.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            return ch
        }
        // Reads push the deadline out; silence past it closes.
        let ch = try open()
        ch.embeddedEventLoop.advanceTime(by: .seconds(8))
        try ch.writeInbound(ByteBuffer(bytes: request(1, .health)))
        ch.embeddedEventLoop.advanceTime(by: .seconds(8))
        XCTAssertTrue(ch.isActive, "read 8 s ago: not idle")
        ch.embeddedEventLoop.advanceTime(by: .seconds(3))
        XCTAssertFalse(ch.isActive, "nothing read for 11 s: closed")
        // A pending request (a revision wait) keeps a silent connection open until answered.
        let waiting = try open()
        let next = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: engine.revision + 1)
        try waiting.writeInbound(ByteBuffer(bytes: request(2, .check(next))))
        waiting.embeddedEventLoop.advanceTime(by: .seconds(25))
        XCTAssertTrue(waiting.isActive, "silent for 25 s, but a request is pending")
        try advanceRevision()
        waiting.embeddedEventLoop.run()
        XCTAssertEqual(try answers(waiting).map(\.requestId), [2])
        waiting.embeddedEventLoop.advanceTime(by: .seconds(11))
        XCTAssertFalse(waiting.isActive, "answered and silent: closed at the next check")
    }

    func testARevisionWaitIsWokenByTheWriteThatReachesItNotBefore() throws {
        let ch = try channel()
        let twoAhead = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: engine.revision + 2)
        try ch.writeInbound(ByteBuffer(bytes: request(1, .check(twoAhead))))
        try advanceRevision()
        ch.embeddedEventLoop.run()
        XCTAssertTrue(try answers(ch).isEmpty)
        XCTAssertEqual(engine.pendingRevisionWaiters, 1, "one write short: still waiting, still registered")
        try advanceRevision()
        ch.embeddedEventLoop.run()
        XCTAssertEqual(try answers(ch).map(\.requestId), [1])
        XCTAssertEqual(engine.pendingRevisionWaiters, 0)
    }

    func testAHelloInTheMiddleOfAReadChangesWhoTheNextChecksAreFor() throws {
        var config = ServerConfig()
        config.authTimeoutSeconds = 0
        let d = try Dispatcher(engine: engine, config: config, logger: Logger(label: "test"))
        defer { d.shutdown() }
        let other = ID.random()
        try engine.write([.upsert(.tenant(Tenant(id: other, name: "other")))])
        let (_, keyA) = try d.keys.create(tenant: t, role: .checker, name: "a", expiresAt: 0, creator: .superuser)
        let (_, keyB) = try d.keys.create(tenant: other, role: .checker, name: "b", expiresAt: 0, creator: .superuser)
        let ch = EmbeddedChannel(handler: ConnectionHandler(dispatcher: d, logger: Logger(label: "test"), isUnix: false))
        try ch.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let check = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: 0)
        // Hello(A) in one read (the in-place path is then on for tenant t), then in one read:
        // a check, Hello(B) of another tenant, the same check.
        try ch.writeInbound(ByteBuffer(bytes: request(1, .hello(apiKey: keyA, protocolVersion: 1))))
        try ch.writeInbound(ByteBuffer(bytes: request(2, .check(check)) + request(3, .hello(apiKey: keyB, protocolVersion: 1)) + request(4, .check(check))))
        let got = Dictionary(uniqueKeysWithValues: try answers(ch).map { ($0.requestId, $0) })
        guard case .success(.check(let d2))? = got[2]?.result else { return XCTFail("\(String(describing: got[2]))") }
        XCTAssertEqual(d2.reason, .granted)
        XCTAssertEqual(got[4].flatMap(failure)?.code, .permissionDenied, "a check after Hello(B) was answered as key A")
    }

    func testARevokedKeysConnectionFallsBackToThePreAuthenticationLimits() throws {
        var config = ServerConfig()
        config.authTimeoutSeconds = 0
        let d = try Dispatcher(engine: engine, config: config, logger: Logger(label: "test"))
        defer { d.shutdown() }
        let (k, key) = try d.keys.create(tenant: t, role: .checker, name: "a", expiresAt: 0, creator: .superuser)
        let ch = EmbeddedChannel(handler: ConnectionHandler(dispatcher: d, logger: Logger(label: "test"), isUnix: false))
        try ch.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let check = CheckCall(tenantId: t, userId: u, permission: "gmail.messages.read", scope: .tenant, minRevision: 0)
        try ch.writeInbound(ByteBuffer(bytes: request(1, .hello(apiKey: key, protocolVersion: 1)) + request(2, .check(check))))
        XCTAssertEqual(try answers(ch).count, 2)
        _ = try d.keys.revoke(k.id, expiresAt: 0)
        try ch.writeInbound(ByteBuffer(bytes: request(3, .check(check))))
        XCTAssertEqual(try answers(ch).first.flatMap(failure)?.code, .unauthenticated)
        // Back to small frames: a 1 MiB frame header is refused.
        try ch.writeInbound(ByteBuffer(bytes: [0, 0x10, 0, 0]))
        XCTAssertEqual(try answers(ch).first.flatMap(failure)?.code, .resourceExhausted)
        XCTAssertFalse(ch.isActive)
    }
}
