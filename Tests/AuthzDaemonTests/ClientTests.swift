import AuthzClient
import AuthzFraming
import AuthzModel
import AuthzServer
import AuthzWire
import Foundation
import Logging
import NIOCore
import NIOPosix
import XCTest

/// `AuthzClient`'s typed API against a real `AuthzServer` running in this process on a
/// temporary Unix socket (this process's uid: a superuser, as a local operator is), and its
/// typed errors against a fake daemon that answers with the wrong result.
final class ClientTests: XCTestCase {
    var dir: String!
    var server: AuthzServer!

    override func setUp() async throws {
        dir = temporaryDirectory("authzd-client")
        var config = ServerConfig()
        config.dataDir = dir + "/data"
        config.socketPath = dir + "/authzd.sock"
        config.threads = 1
        server = AuthzServer(config: config, logger: Logger(label: "client-tests"))
        try await server.start()
    }

    override func tearDown() async throws {
        await server?.shutdown(drainTimeout: .zero)
        try? FileManager.default.removeItem(atPath: dir)
    }

    var socket: Endpoint { .unix(dir + "/authzd.sock") }

    func testConfigurationIsWhatTheClientWasMadeWith() throws {
        let configuration = AuthzClient.Configuration(endpoint: socket, apiKey: "azk_x", connections: 3, defaultTimeout: .seconds(7), maxFrameSize: 1 << 20)
        let client = try AuthzClient(configuration: configuration)
        defer { client.close() }
        XCTAssertEqual(client.configuration, configuration)
        XCTAssertEqual(client.endpoint, socket)
        let convenient = AuthzClient(endpoint: socket, apiKey: "azk_y", connections: 2)
        defer { convenient.close() }
        XCTAssertEqual(convenient.configuration, AuthzClient.Configuration(endpoint: socket, apiKey: "azk_y", connections: 2))
        XCTAssertEqual(convenient.configuration.defaultTimeout, .seconds(30))
        // TLS files are read at init: a missing one is INVALID_ARGUMENT naming it.
        let tls = AuthzClient.Configuration(endpoint: .tcp(host: "127.0.0.1", port: 1), tls: ClientTLS(caPath: dir + "/missing-ca.pem"))
        XCTAssertThrowsError(try AuthzClient(configuration: tls)) { error in
            XCTAssertEqual((error as? AuthzError)?.code, .invalidArgument)
            XCTAssertTrue((error as? AuthzError)?.message.contains("missing-ca.pem") ?? false, "\(error)")
        }
    }

    func testDecisionsAndListings() async throws {
        let client = AuthzClient(endpoint: socket)
        defer { client.close() }
        let a = EndToEndTests.Acme()
        let rev = try await client.write(a.ops)
        let d = try await client.check(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .tenant, minRevision: rev)
        XCTAssertTrue(d.allowed)
        XCTAssertGreaterThanOrEqual(d.revision, rev)
        let batch = try await client.batchCheck([
            CheckCall(tenantId: a.t, userId: a.bob, permission: "gmail.messages.read", scope: .self),
            CheckCall(tenantId: a.t, userId: a.bob, permission: "gmail.messages.send", scope: .self),
        ])
        XCTAssertEqual(batch.map { try? $0.get().reason }, [.granted, .noGrant])
        let ex = try await client.explain(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertEqual(ex.roleChainNames, ["editor", "viewer"])

        let held = try await client.userPermissions(tenant: a.t, user: a.ana)
        XCTAssertEqual(held.reason, .granted)
        XCTAssertEqual(held.permissions.map(\.name), ["gmail.messages.read", "gmail.messages.send"])
        XCTAssertEqual(held.permissions.map(\.scope), [.tenant, .self])
        let nobody = try await client.userPermissions(tenant: a.t, user: .random())
        XCTAssertNotEqual(nobody.reason, .granted)
        XCTAssertTrue(nobody.permissions.isEmpty)

        // Pages of one: `next` is the `after` of the following page, nil on the last.
        var users: [ID] = []
        var after: ID? = nil
        repeat {
            let page = try await client.permissionUsers(tenant: a.t, permission: "gmail.messages.read", scope: .self, pageSize: 1, after: after)
            XCTAssertLessThanOrEqual(page.users.count, 1)
            users += page.users
            after = page.next
        } while after != nil
        XCTAssertEqual(users, [a.ana, a.bob].sorted { $0.description < $1.description })
        var roles: [Entity] = []
        after = nil
        repeat {
            let page = try await client.list(.role, tenant: a.t, pageSize: 1, after: after)
            roles += page.items
            after = page.next
        } while after != nil
        XCTAssertEqual(Set(roles.map(\.id)), [a.viewer, a.editor])
        let tenants = try await client.list(.tenant, tenant: .zero)
        XCTAssertEqual(tenants.items.map(\.id), [a.t])
        XCTAssertNil(tenants.next)
    }

    func testRecordsBulkAndTheDaemon() async throws {
        let client = AuthzClient(endpoint: socket)
        defer { client.close() }
        let a = EndToEndTests.Acme()
        try await client.write(a.ops)
        let ref = RecordRef(kind: .roleBinding, tenantId: a.t, id: a.rbAna)
        let off = try await client.deactivate(ref)
        let stored = try await client.get(ref)
        XCTAssertFalse(stored.fields.isActive)
        let on = try await client.activate(ref)
        XCTAssertGreaterThan(on, off)
        let active = try await client.get(ref)
        XCTAssertTrue(active.fields.isActive)

        // Export, then import into the same daemon (a no-op on content), in one piece and in
        // chunks; the paged export reads the same records.
        let (jsonl, revision) = try await client.export(tenant: a.t)
        XCTAssertEqual(String(decoding: jsonl, as: UTF8.self).split(separator: "\n").count, a.ops.count)
        let imported = try await client.importJSONL(jsonl)
        XCTAssertEqual(imported.records, UInt64(a.ops.count))
        XCTAssertGreaterThanOrEqual(imported.revision, revision)
        let chunked = try await client.importChunked(jsonl, chunkBytes: 200)
        XCTAssertEqual(chunked.records, UInt64(a.ops.count))
        let first = try await client.exportPage(tenant: a.t, pageSize: 4, pageToken: "")
        XCTAssertFalse(first.nextPageToken.isEmpty)
        var pages: [[UInt8]] = []
        let pagedRevision = try await client.exportPaged(tenant: a.t, includeSecrets: false, pageSize: 4) { pages.append($0) }
        XCTAssertEqual(pages.count, 3)
        XCTAssertEqual(String(decoding: pages.flatMap { $0 }, as: UTF8.self).split(separator: "\n").count, a.ops.count)
        XCTAssertGreaterThanOrEqual(pagedRevision, chunked.revision)

        let info = try await client.serverInfo()
        XCTAssertEqual(info.protocolVersion, 1)
        XCTAssertEqual(info.counts[.user], 2)
        XCTAssertGreaterThanOrEqual(info.revision, chunked.revision)
        let serving = try await client.health(timeout: .seconds(2))
        XCTAssertTrue(serving)
    }

    /// Keys through the typed methods, and the configured key presented by a client made with it.
    func testKeysAndTheConfiguredKey() async throws {
        let local = AuthzClient(endpoint: socket)
        defer { local.close() }
        let a = EndToEndTests.Acme(), b = EndToEndTests.Acme()
        try await local.write(a.ops + [.upsert(.tenant(Tenant(id: b.t, name: "other")))] + b.ops.dropFirst())
        let (key, secret) = try await local.createKey(tenant: a.t, role: .checker, name: "client-tests")
        XCTAssertEqual(key.role, .checker)
        XCTAssertEqual(key.tenantId, a.t)
        XCTAssertEqual(key.name, "client-tests")
        XCTAssertFalse(secret.isEmpty)
        let keys = try await local.listKeys(tenant: a.t)
        XCTAssertEqual(keys.map(\.id), [key.id])
        XCTAssertTrue(keys.allSatisfy { $0.secretHash.isEmpty })

        let checker = AuthzClient(endpoint: socket, apiKey: secret)
        defer { checker.close() }
        let d = try await checker.check(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertTrue(d.allowed)
        do {
            _ = try await checker.check(tenant: b.t, user: b.ana, permission: "gmail.messages.read", scope: .tenant)
            XCTFail("a checker key of tenant A was served in tenant B")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .permissionDenied)
        }

        let revoked = try await local.revokeKey(key.id)
        XCTAssertNotEqual(revoked.revokedAt, 0)
        do {
            _ = try await checker.check(tenant: a.t, user: a.ana, permission: "gmail.messages.read", scope: .tenant)
            XCTFail("a revoked key was served")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .unauthenticated)
        }
        let refused = AuthzClient(endpoint: socket, apiKey: secret)
        defer { refused.close() }
        do {
            _ = try await refused.health()
            XCTFail("a revoked key authenticated a new connection")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .unauthenticated)
        }
    }

    /// The daemon's errors come through as they are: code, message and field.
    func testServerErrorsAreTheDaemonsAuthzError() async throws {
        let client = AuthzClient(endpoint: socket)
        defer { client.close() }
        let a = EndToEndTests.Acme()
        try await client.write(a.ops)
        do {
            try await client.write([.upsert(.roleBinding(RoleBinding(id: .random(), tenantId: a.t, userId: a.ana, roleId: .random(), scope: .self)))])
            XCTFail("a dangling reference was accepted")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .notFound)
            XCTAssertEqual(e.field, "role_binding.role_id")
        }
        do {
            _ = try await client.get(RecordRef(kind: .user, tenantId: a.t, id: .random()))
            XCTFail("a missing record was found")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .notFound)
        }
        do {
            _ = try await client.deactivate(RecordRef(kind: .user, tenantId: a.t, id: .random()))
            XCTFail("a missing record was deactivated")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .notFound)
        }
        do {
            _ = try await client.exportPage(tenant: nil, pageSize: 10, pageToken: "\(ID.random()).3")
            XCTFail("an unknown page token was accepted")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .failedPrecondition)
        }
    }

    /// A daemon that answers with another call's result makes every typed method throw the one
    /// unexpected-reply error (INTERNAL, `response.result`), naming the call and the result; an
    /// unparsable page token too. The raw `call` hands the reply back unchecked.
    func testAWrongReplyKindIsTheUnexpectedReplyError() async throws {
        let path = dir + "/fake.sock"
        let fake = try FakeDaemon(path: path) { call in
            switch call {
            case .list: return .list([], nextPageToken: "not-an-id")
            case .hello: return .hello(role: nil, tenantId: nil, keyId: nil)
            default: return .health(serving: true)
            }
        }
        defer { fake.stop() }
        let client = AuthzClient(endpoint: .unix(path), apiKey: "azk_anything")
        defer { client.close() }

        func assertUnexpected(_ what: String, naming call: String, _ body: () async throws -> Void) async {
            do {
                try await body()
                XCTFail("\(what): a wrong reply was taken")
            } catch let e as AuthzError {
                XCTAssertEqual(e.code, .internal, what)
                XCTAssertEqual(e.field, AuthzClient.unexpectedReplyField, what)
                XCTAssertTrue(e.message.contains(call), "\(what): \(e.message)")
            } catch {
                XCTFail("\(what): not an AuthzError: \(error)")
            }
        }
        await assertUnexpected("serverInfo", naming: "ServerInfo") { _ = try await client.serverInfo() }
        await assertUnexpected("check", naming: "Check") { _ = try await client.check(tenant: .random(), user: .random(), permission: "a.b", scope: .self) }
        await assertUnexpected("createKey", naming: "CreateKey") { _ = try await client.createKey(tenant: nil, role: .operator) }
        await assertUnexpected("exportPaged", naming: "Export") { _ = try await client.exportPaged(tenant: nil, includeSecrets: false) { _ in } }
        await assertUnexpected("list", naming: "not-an-id") { _ = try await client.list(.user, tenant: .random()) }
        await assertUnexpected("watch", naming: "Watch") {
            for try await _ in client.watch(WatchCall(fromRevision: 0)) {}
        }
        // The one call this daemon does answer right, and the escape hatch.
        let serving = try await client.health()
        XCTAssertTrue(serving)
        guard case .health(true) = try await client.call(.serverInfo) else { return XCTFail("the raw reply was not handed back") }
    }

    func testNoDaemonIsUnavailableAndNoAnswerIsDeadlineExceeded() async throws {
        let nowhere = AuthzClient(endpoint: .unix(dir + "/nothing.sock"))
        defer { nowhere.close() }
        do {
            _ = try await nowhere.health()
            XCTFail("a missing daemon answered")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .unavailable)
        }
        let path = dir + "/silent.sock"
        let silent = try FakeDaemon(path: path) { _ in nil }
        defer { silent.stop() }
        let client = try AuthzClient(configuration: .init(endpoint: .unix(path), defaultTimeout: .milliseconds(200)))
        defer { client.close() }
        for timeout in [nil, TimeAmount.milliseconds(100)] {
            let started = Date()
            do {
                _ = try await client.serverInfo(timeout: timeout)
                XCTFail("a daemon that never answers answered")
            } catch let e as AuthzError {
                XCTAssertEqual(e.code, .deadlineExceeded)
            }
            XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        }
    }
}

/// A stand-in daemon on a Unix socket: decodes each request and answers it with `answer(call)`
/// (nothing when nil), right or wrong.
final class FakeDaemon {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let channel: Channel

    init(path: String, answer: @escaping @Sendable (Call) -> Reply?) throws {
        channel = try ServerBootstrap(group: group)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: 1 << 20)))
                    try ch.pipeline.syncOperations.addHandler(Handler(answer: answer))
                }
            }
            .bind(unixDomainSocketPath: path).wait()
    }

    func stop() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let answer: (Call) -> Reply?

        init(answer: @escaping (Call) -> Reply?) { self.answer = answer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let request = unwrapInboundIn(data).withUnsafeReadableBytes { WireCodec.decodeRequest($0) }
            guard case .success(let call) = request.call, let reply = answer(call) else { return }
            let payload = WireCodec.encodeResponse(WireResponse(requestId: request.requestId, result: .success(reply)))
            var buffer = context.channel.allocator.buffer(capacity: payload.count + 4)
            buffer.writeInteger(UInt32(payload.count))
            buffer.writeBytes(payload)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }
    }
}
