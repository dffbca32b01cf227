import AuthzClient
import AuthzModel
import AuthzWire
import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import X509
import XCTest

/// A throwaway PKI for tests: a CA and leaf certificates signed by it, written as PEM files.
struct TestPKI {
    let dir: String
    let name: String
    let caKey = P256.Signing.PrivateKey()
    let caCert: Certificate

    init(dir: String, name: String) throws {
        self.dir = dir
        self.name = name
        let subject = try DistinguishedName { CommonName("authzd test CA \(name)") }
        caCert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey),
            notValidBefore: Date().addingTimeInterval(-3600), notValidAfter: Date().addingTimeInterval(86400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: .init(caKey))
        try write(caCert.serializeAsPEM().pemString, to: caPath)
    }

    var caPath: String { "\(dir)/\(name)-ca.pem" }

    @discardableResult
    private func write(_ text: String, to path: String) throws -> String {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Issues a leaf; returns (certificate path, key path). `dns` names go in the SAN (server
    /// certificates), `uris` too (client identities); `expired` makes it end an hour ago.
    func issue(_ file: String, dns: [String] = [], uris: [String] = [], expired: Bool = false) throws -> (cert: String, key: String) {
        let key = P256.Signing.PrivateKey()
        var names: [GeneralName] = dns.map { .dnsName($0) }
        names += uris.map { .uniformResourceIdentifier($0) }
        let now = Date()
        let cert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(expired ? -7200 : -3600), notValidAfter: now.addingTimeInterval(expired ? -3600 : 86400),
            issuer: caCert.subject, subject: try DistinguishedName { CommonName(file) }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: .init(caKey))
        return (try write(cert.serializeAsPEM().pemString, to: "\(dir)/\(file).pem"),
                try write(key.pemRepresentation, to: "\(dir)/\(file)-key.pem"))
    }
}

/// Transport security (issue 16): TLS on the TCP listener, plain text refused on it and only
/// allowed by an explicit flag, client certificates as identities, certificate reload on SIGHUP
/// without dropping connections. Against a real `authzd serve`.
final class TLSTests: XCTestCase {
    var dir: String!
    var daemon: DaemonProcess?
    var pki: TestPKI!
    let t = ID.random(), other = ID.random(), u = ID.random()

    override func setUpWithError() throws {
        dir = temporaryDirectory("tls")
        pki = try TestPKI(dir: dir, name: "one")
    }

    override func tearDown() {
        daemon?.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func start(_ extra: [String] = []) async throws -> DaemonProcess {
        let server = try pki.issue("server", dns: ["localhost"])
        let d = try DaemonProcess(dir: dir + "/d", extra: ["--tls-cert", server.cert, "--tls-key", server.key] + extra)
        daemon = d
        let local = d.client()
        defer { local.close() }
        let r = ID.random(), p = ID.random()
        _ = try await local.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.tenant(Tenant(id: other, name: "other"))),
                                   .upsert(.user(User(id: u, tenantId: t))), .upsert(.role(Role(id: r, tenantId: t, name: "reader"))),
                                   .upsert(.permission(Permission(id: p, tenantId: t, name: "gmail.messages.read", service: "gmail"))),
                                   .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .tenant))),
                                   .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .tenant)))])
        return d
    }

    func tlsClient(_ d: DaemonProcess, ca: String? = nil, cert: (cert: String, key: String)? = nil, apiKey: String? = nil) throws -> AuthzClient {
        try AuthzClient(configuration: .init(endpoint: .tcp(host: "127.0.0.1", port: d.tcpPort!), apiKey: apiKey,
                                             tls: ClientTLS(caPath: ca ?? pki.caPath, certPath: cert?.cert, keyPath: cert?.key, serverName: "localhost"),
                                             defaultTimeout: .seconds(5)))
    }

    func testTLSServesChecksAndPlainTextIsRefusedOnItsPort() async throws {
        let d = try await start()
        let (_, key) = try await createKey(d.client(), t, .checker)
        let c = try tlsClient(d, apiKey: key)
        defer { c.close() }
        let decision = try await c.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertTrue(decision.allowed)

        // A plain-text client on the TLS port gets no answer: the handshake fails, the
        // connection closes.
        let plain = try AuthzClient(configuration: .init(endpoint: .tcp(host: "127.0.0.1", port: d.tcpPort!), apiKey: key, defaultTimeout: .seconds(5)))
        defer { plain.close() }
        do {
            _ = try await plain.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)
            XCTFail("plain text answered on a TLS port")
        } catch {}

        // A client that does not trust the daemon's CA refuses it.
        let stranger = try TestPKI(dir: dir, name: "stranger")
        let wrong = try tlsClient(d, ca: stranger.caPath, apiKey: key)
        defer { wrong.close() }
        do {
            _ = try await wrong.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)
            XCTFail("an untrusted server certificate was accepted")
        } catch {}
    }

    func testTLSOlderThan12IsRefused() async throws {
        let d = try await start()
        var old = TLSConfiguration.makeClientConfiguration()
        old.maximumTLSVersion = .tlsv11
        old.minimumTLSVersion = .tlsv1
        old.trustRoots = .file(pki.caPath)
        let oldOK = try await handshake(port: d.tcpPort!, old)
        XCTAssertFalse(oldOK, "TLS 1.1 must be refused")
        var ok = TLSConfiguration.makeClientConfiguration()
        ok.trustRoots = .file(pki.caPath)
        let newOK = try await handshake(port: d.tcpPort!, ok)
        XCTAssertTrue(newOK)
    }

    func testPlainTCPNeedsAnExplicitFlag() throws {
        let p = Process()
        p.executableURL = productsDirectory().appendingPathComponent("authzd")
        p.arguments = ["serve", "--data-dir", dir + "/plain", "--socket", dir + "/plain.sock", "--address", "127.0.0.1:0"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertTrue(text.contains("--insecure-plaintext") && text.contains("--tls-cert"), text)
    }

    /// `client`, a checker bound to tenant `t`, is answered there and refused in `other`.
    func assertChecksOnlyInTenant(_ client: AuthzClient, file: StaticString = #filePath, line: UInt = #line) async throws {
        let allowed = try await client.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertTrue(allowed.allowed, file: file, line: line)
        do {
            _ = try await client.check(tenant: other, user: u, permission: "gmail.messages.read", scope: .tenant)
            XCTFail("a tenant-bound checker checked in another tenant", file: file, line: line)
        } catch let e as AuthzError { XCTAssertEqual(e.code, .permissionDenied, "\(e)", file: file, line: line) }
    }

    /// `client`, a gateway, is answered in a tenant it has no binding to (`other`).
    func assertChecksInEveryTenant(_ client: AuthzClient, file: StaticString = #filePath, line: UInt = #line) async throws {
        let denied = try await client.check(tenant: other, user: u, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertEqual(denied.reason, .unknownUser, "a gateway checks in every tenant", file: file, line: line)
    }

    /// Exact `tls-identity` mappings (URI=ROLE[:TENANT]) against a real daemon: a checker bound
    /// to a tenant and a gateway, the mappings a `case .checker, .admin where …` pattern once
    /// refused at startup. They replace the default template.
    func testExactIdentityMappings() async throws {
        let mappings = "spiffe://test.example/svc/mailer=checker:\(t),spiffe://test.example/svc/edge=gateway"
        let d = try await start(["--tls-client-ca", pki.caPath, "--set", "tls-identity=\(mappings)"])
        let mailer = try tlsClient(d, cert: try pki.issue("mailer", uris: ["spiffe://test.example/svc/mailer"]))
        defer { mailer.close() }
        try await assertChecksOnlyInTenant(mailer)

        let edge = try tlsClient(d, cert: try pki.issue("edge", uris: ["spiffe://test.example/svc/edge"]))
        defer { edge.close() }
        try await assertChecksInEveryTenant(edge)

        // The default template no longer maps anything.
        let templated = try tlsClient(d, cert: try pki.issue("templated", uris: ["spiffe://test.example/tenant/\(t)/role/checker"]))
        defer { templated.close() }
        do {
            _ = try await templated.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)
            XCTFail("a certificate only the replaced default template would map was accepted")
        } catch let e as AuthzError { XCTAssertNotEqual(e.code, .permissionDenied, "refused at the handshake: \(e)") }
    }

    func testClientCertificatesAreIdentities() async throws {
        let audit = dir + "/audit.log"
        let d = try await start(["--tls-client-ca", pki.caPath, "--audit-log", audit])
        // Mapped by the default pattern spiffe://*/tenant/{tenant}/role/{role}: no API key.
        let checker = try tlsClient(d, cert: try pki.issue("checker", uris: ["spiffe://test.example/tenant/\(t)/role/checker"]))
        defer { checker.close() }
        try await assertChecksOnlyInTenant(checker)
        do {
            _ = try await checker.write([.upsert(.user(User(id: .random(), tenantId: t)))])
            XCTFail("a checker certificate wrote")
        } catch let e as AuthzError { XCTAssertEqual(e.code, .permissionDenied, "\(e)") }

        let gateway = try tlsClient(d, cert: try pki.issue("gateway", uris: ["spiffe://test.example/role/gateway"]))
        defer { gateway.close() }
        try await assertChecksInEveryTenant(gateway)

        // Refused: a certificate that maps to nothing, one from another CA, an expired one.
        let stranger = try TestPKI(dir: dir, name: "stranger")
        let refused: [(String, (cert: String, key: String))] = [
            ("unmapped", try pki.issue("unmapped", uris: ["spiffe://test.example/workload/mailer"])),
            ("untrusted", try stranger.issue("untrusted", uris: ["spiffe://test.example/tenant/\(t)/role/checker"])),
            ("expired", try pki.issue("expired", uris: ["spiffe://test.example/tenant/\(t)/role/checker"], expired: true)),
        ]
        for (what, cert) in refused {
            let c = try tlsClient(d, cert: cert)
            defer { c.close() }
            do {
                _ = try await c.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)
                XCTFail("\(what) certificate was accepted")
            } catch let e as AuthzError {
                XCTAssertNotEqual(e.code, .permissionDenied, "\(what): refused at the handshake, not by a role")
            }
        }
        XCTAssertTrue(d.log.contains("maps to no identity"), "the unmapped certificate is logged")
        // …and each refusal is in the audit trail (written in batches: wait for them).
        var trail = ""
        let deadline = Date().addingTimeInterval(5)
        repeat {
            trail = (try? String(contentsOfFile: audit, encoding: .utf8)) ?? ""
            if trail.contains("unmapped_certificate") && trail.components(separatedBy: "tls_handshake_failed").count >= 3 { break }
            try await Task.sleep(nanoseconds: 100_000_000)
        } while Date() < deadline
        XCTAssertTrue(trail.contains(#""reason":"unmapped_certificate","certificate_uris":["spiffe://test.example/workload/mailer"]"#), trail)
        XCTAssertGreaterThanOrEqual(trail.components(separatedBy: #""reason":"tls_handshake_failed""#).count - 1, 2, "untrusted and expired: \(trail)")
    }

    func testCertificateReloadOnSIGHUPKeepsOpenConnections() async throws {
        let d = try await start()
        let (_, key) = try await createKey(d.client(), t, .checker)
        let old = try tlsClient(d, apiKey: key)
        defer { old.close() }
        _ = try await old.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)

        // Checks keep flowing on the open connection while the certificate is replaced.
        let reloaded = StopFlag()
        let t = self.t, u = self.u
        let load = Task { () -> (Int, Int) in
            var failures = 0, done = 0, afterReload = 0
            while afterReload < 200 {
                do { _ = try await old.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant) } catch { failures += 1 }
                done += 1
                if await reloaded.isSet { afterReload += 1 }
            }
            return (failures, done)
        }
        let next = try TestPKI(dir: dir, name: "two")
        let fresh = try next.issue("server2", dns: ["localhost"])
        let serverCert = dir + "/server.pem", serverKey = dir + "/server-key.pem"
        try FileManager.default.removeItem(atPath: serverCert)
        try FileManager.default.copyItem(atPath: fresh.cert, toPath: serverCert)
        try FileManager.default.removeItem(atPath: serverKey)
        try FileManager.default.copyItem(atPath: fresh.key, toPath: serverKey)
        kill(d.process.processIdentifier, SIGHUP)
        let deadline = Date().addingTimeInterval(10)
        while !d.log.contains("TLS certificate reloaded"), Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
        XCTAssertTrue(d.log.contains("TLS certificate reloaded"), d.log)
        await reloaded.set()
        let (failures, done) = await load.value
        XCTAssertEqual(failures, 0, "no check failed on the connection opened before the reload (\(done) checks)")

        // New connections get the new certificate: trusted under the new CA, not the old.
        let renewed = try tlsClient(d, ca: next.caPath, apiKey: key)
        defer { renewed.close() }
        let after = try await renewed.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertTrue(after.allowed)
        let stale = try tlsClient(d, apiKey: key)
        defer { stale.close() }
        do {
            _ = try await stale.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)
            XCTFail("a new connection still got the old certificate")
        } catch {}

        // A reload that cannot load keeps the working certificate.
        try "not a certificate".write(toFile: serverCert, atomically: true, encoding: .utf8)
        kill(d.process.processIdentifier, SIGHUP)
        let until = Date().addingTimeInterval(10)
        while !d.log.contains("reload refused"), Date() < until { try await Task.sleep(nanoseconds: 50_000_000) }
        let again = try tlsClient(d, ca: next.caPath, apiKey: key)
        defer { again.close() }
        let still = try await again.check(tenant: t, user: u, permission: "gmail.messages.read", scope: .tenant)
        XCTAssertTrue(still.allowed)
    }

    /// Whether a TLS handshake with `configuration` completes against 127.0.0.1:`port`.
    func handshake(port: Int, _ configuration: TLSConfiguration) async throws -> Bool {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let context = try NIOSSLContext(configuration: configuration)
        let promise = group.next().makePromise(of: Bool.self)
        let channel = try await ClientBootstrap(group: group).channelInitializer { ch in
            ch.eventLoop.makeCompletedFuture {
                try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                try ch.pipeline.syncOperations.addHandler(HandshakeWatcher(promise: promise))
            }
        }.connect(host: "127.0.0.1", port: port).get()
        let ok = try await promise.futureResult.get()
        try? await channel.close().get()
        try? await group.shutdownGracefully()
        return ok
    }
}

/// Set once by the test, read by its load task.
actor StopFlag {
    private(set) var isSet = false
    func set() { isSet = true }
}

/// Completes `promise` with true on a finished handshake, false on an error or close first.
final class HandshakeWatcher: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    let promise: EventLoopPromise<Bool>
    private var done = false
    init(promise: EventLoopPromise<Bool>) { self.promise = promise }
    private func finish(_ ok: Bool) {
        if done { return }
        done = true
        promise.succeed(ok)
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { finish(true) }
        context.fireUserInboundEventTriggered(event)
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) { finish(false) }
    func channelInactive(context: ChannelHandlerContext) { finish(false) }
}
