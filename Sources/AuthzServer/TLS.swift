import AuthzModel
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS
import X509

/// TLS settings of the TCP listeners (binary protocol, HTTP gateway, Envoy gRPC, and the
/// metrics listener when `metricsTLS` is on). See docs/security.md.
public struct TLSSettings: Sendable, Equatable {
    /// PEM certificate chain (leaf first) and PEM private key of the daemon.
    public var certPath: String? = nil
    public var keyPath: String? = nil
    /// PEM bundle of the CAs whose client certificates are accepted; nil = no client
    /// certificates (API keys only).
    public var clientCAPath: String? = nil
    /// With a client CA: `optional` (a presented certificate must verify; callers without one
    /// may still use API keys) or `require` (every connection must present one).
    public var requireClientCertificate = false
    /// Client-certificate identity mappings (`CertificateIdentityMap`), in order.
    public var identityPatterns: [String] = CertificateIdentityMap.defaultPatterns
    /// Also serve the metrics listener over TLS.
    public var metricsTLS = false

    public init() {}

    /// Whether TLS is configured at all.
    public var enabled: Bool { certPath != nil || keyPath != nil }
}

/// Maps a client certificate to a principal by its URI subject alternative names.
///
/// Each pattern is either a URI template with the placeholders `{tenant}` (a tenant UUID),
/// `{role}` (`checker`, `admin`, `gateway`, `operator`) and `*` (one path segment or host,
/// no `/`), e.g. `spiffe://*/tenant/{tenant}/role/{role}`, or an exact mapping
/// `URI=ROLE[:TENANT_ID]`. The first URI SAN matching the first pattern wins. A tenant-bound
/// role (`checker`, `admin`) needs a tenant; `gateway` and `operator` must have none. A
/// certificate that verifies but matches no pattern is refused (the connection is closed):
/// a trusted CA alone never grants anything.
public struct CertificateIdentityMap: Sendable, Equatable {
    public static let defaultPatterns = ["spiffe://*/tenant/{tenant}/role/{role}", "spiffe://*/role/{role}"]

    enum Entry: Sendable, Equatable {
        case template([String])  // split into literal pieces and placeholders
        case exact(String, KeyRole, ID?)
    }

    let entries: [Entry]

    /// Parses the patterns; throws `ConfigError` naming the bad one.
    public init(_ patterns: [String]) throws {
        var out: [Entry] = []
        for p in patterns {
            if let eq = p.firstIndex(of: "="), !p[..<eq].contains("{") {
                let uri = String(p[..<eq])
                let rhs = p[p.index(after: eq)...].split(separator: ":", maxSplits: 1).map(String.init)
                guard let role = rhs.first.flatMap({ KeyRole(name: $0) }) else {
                    throw ConfigError("tls-identity \(p): expected URI=ROLE[:TENANT_ID] with ROLE checker, admin, gateway or operator")
                }
                var tenant: ID?
                if rhs.count == 2 {
                    guard let t = ID(rhs[1]) else { throw ConfigError("tls-identity \(p): tenant must be a UUID") }
                    tenant = t
                }
                try CertificateIdentityMap.checkTenant(role: role, tenant: tenant, origin: p)
                out.append(.exact(uri, role, tenant))
                continue
            }
            guard p.contains("{role}") else { throw ConfigError("tls-identity \(p): a template needs {role} (or use URI=ROLE[:TENANT_ID])") }
            var pieces: [String] = []
            var rest = Substring(p)
            while let open = rest.firstIndex(where: { $0 == "{" || $0 == "*" }) {
                pieces.append(String(rest[..<open]))
                if rest[open] == "*" {
                    pieces.append("*")
                    rest = rest[rest.index(after: open)...]
                    continue
                }
                guard let close = rest[open...].firstIndex(of: "}") else { throw ConfigError("tls-identity \(p): unclosed {") }
                let name = String(rest[open...close])
                guard name == "{tenant}" || name == "{role}" else { throw ConfigError("tls-identity \(p): unknown placeholder \(name)") }
                pieces.append(name)
                rest = rest[rest.index(after: close)...]
            }
            pieces.append(String(rest))
            out.append(.template(pieces))
        }
        entries = out
    }

    static func checkTenant(role: KeyRole, tenant: ID?, origin: String) throws {
        switch role {
        case .checker where tenant == nil, .admin where tenant == nil:
            throw ConfigError("tls-identity \(origin): a \(role) identity needs a tenant")
        case .gateway where tenant != nil, .operator where tenant != nil:
            throw ConfigError("tls-identity \(origin): a \(role) identity has no tenant")
        default: return
        }
    }

    /// The identity, role and tenant for the first URI in `uris` that a pattern maps, or nil.
    public func identify(_ uris: [String]) -> (identity: String, role: KeyRole, tenant: ID)? {
        for entry in entries {
            for uri in uris {
                switch entry {
                case .exact(let u, let role, let tenant):
                    if u == uri { return (uri, role, tenant ?? .zero) }
                case .template(let pieces):
                    guard let (role, tenant) = CertificateIdentityMap.match(pieces, uri) else { continue }
                    return (uri, role, tenant ?? .zero)
                }
            }
        }
        return nil
    }

    /// Matches literal pieces and placeholders left to right; a placeholder or `*` takes
    /// everything up to the next `/` (never empty).
    static func match(_ pieces: [String], _ uri: String) -> (KeyRole, ID?)? {
        var rest = Substring(uri)
        var role: KeyRole?
        var tenant: ID?
        for piece in pieces {
            if piece == "*" || piece == "{tenant}" || piece == "{role}" {
                let end = rest.firstIndex(of: "/") ?? rest.endIndex
                let value = rest[..<end]
                if value.isEmpty { return nil }
                if piece == "{tenant}" {
                    guard let t = ID(value) else { return nil }
                    tenant = t
                } else if piece == "{role}" {
                    guard let r = KeyRole(name: String(value)) else { return nil }
                    role = r
                }
                rest = rest[end...]
            } else {
                guard rest.hasPrefix(piece) else { return nil }
                rest = rest.dropFirst(piece.count)
            }
        }
        guard rest.isEmpty, let role else { return nil }
        switch role {
        case .checker, .admin: return tenant == nil ? nil : (role, tenant)
        case .gateway, .operator: return tenant == nil ? (role, nil) : nil
        }
    }

    /// The URI subject alternative names of a DER certificate.
    static func uris(ofDER der: [UInt8]) -> [String] {
        guard let cert = try? Certificate(derEncoded: der),
              let sans = try? cert.extensions.subjectAlternativeNames else { return [] }
        return sans.compactMap { if case .uniformResourceIdentifier(let u) = $0 { return u } else { return nil } }
    }
}

/// The daemon's TLS context, re-read on SIGHUP: new connections get the newest context,
/// connections already open keep theirs (nothing is dropped). Thread-safe.
final class TLSContextHolder: Sendable {
    let settings: TLSSettings
    let identities: CertificateIdentityMap
    private let context: NIOLockedValueBox<NIOSSLContext>
    /// Where refused TLS clients are recorded (set once the dispatcher exists).
    let audit = NIOLockedValueBox<AuditLog?>(nil)

    /// Loads the certificate, key and client CA; throws `ConfigError` naming the file.
    init(settings: TLSSettings) throws {
        self.settings = settings
        identities = try CertificateIdentityMap(settings.identityPatterns)
        context = NIOLockedValueBox(try TLSContextHolder.make(settings))
    }

    /// The context for a new connection.
    var current: NIOSSLContext { context.withLockedValue { $0 } }

    /// Re-reads the files; on any error the old context stays and the error is thrown.
    func reload() throws {
        let fresh = try TLSContextHolder.make(settings)
        context.withLockedValue { $0 = fresh }
    }

    static func make(_ s: TLSSettings) throws -> NIOSSLContext {
        guard let certPath = s.certPath, let keyPath = s.keyPath else {
            throw ConfigError("TLS needs both tls-cert and tls-key")
        }
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certPath) } catch {
            throw ConfigError("tls-cert \(certPath): cannot read a PEM certificate chain (\(error))")
        }
        guard !chain.isEmpty else { throw ConfigError("tls-cert \(certPath): no certificate in the file") }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: keyPath, format: .pem) } catch {
            throw ConfigError("tls-key \(keyPath): cannot read a PEM private key (\(error))")
        }
        var c = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        c.minimumTLSVersion = .tlsv12
        if let ca = s.clientCAPath {
            let roots: [NIOSSLCertificate]
            do { roots = try NIOSSLCertificate.fromPEMFile(ca) } catch {
                throw ConfigError("tls-client-ca \(ca): cannot read PEM certificates (\(error))")
            }
            c.trustRoots = .certificates(roots)
            c.certificateVerification = s.requireClientCertificate ? .noHostnameVerification : .optionalVerification
        } else {
            // Requiring client certificates with nothing to verify them against would admit
            // any certificate: refused rather than silently running without the check.
            guard !s.requireClientCertificate else {
                throw ConfigError("tls-client-auth = require needs tls-client-ca (the CA bundle client certificates are verified against)")
            }
            c.certificateVerification = .none
        }
        do { return try NIOSSLContext(configuration: c) } catch {
            throw ConfigError("TLS: tls-cert and tls-key do not make a usable context (\(error))")
        }
    }

    /// Adds the TLS server handler and the identity handler in front of `channel`'s pipeline.
    /// `listener` names the listener in the audit trail (`binary`, `gateway`, `grpc`, `metrics`).
    func addHandlers(to channel: Channel, logger: Logger, listener: String = "binary") throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLServerHandler(context: current))
        try sync.addHandler(TLSIdentityHandler(identities: identities, logger: logger, audit: audit.withLockedValue { $0 }, listener: listener))
    }
}

/// Sent up the pipeline once the TLS handshake completed with a client certificate that
/// maps to an identity; connection handlers adopt `principal` as the connection's own.
struct CertificateIdentified {
    let principal: Principal
}

/// After the handshake: reads the verified client certificate (if any), maps it through the
/// identity map and fires `CertificateIdentified`; closes the connection when a certificate
/// was presented but maps to nothing. Without a certificate nothing is fired (API keys apply).
final class TLSIdentityHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let identities: CertificateIdentityMap
    let logger: Logger
    let audit: AuditLog?
    let listener: String

    init(identities: CertificateIdentityMap, logger: Logger, audit: AuditLog? = nil, listener: String = "binary") {
        self.identities = identities
        self.logger = logger
        self.audit = audit
        self.listener = listener
    }

    /// A failed handshake (untrusted or expired client certificate, plain text on the port) is
    /// recorded as a refused authentication, then passed on (the connection closes).
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let e = error as? NIOSSLError, case .handshakeFailed = e {
            audit?.tlsRefused(reason: "tls_handshake_failed", uris: [], detail: "\(e)",
                              peer: PeerInfo(remote: context.channel.remoteAddress, isUnix: false), listener: listener)
        }
        context.fireErrorCaught(error)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case TLSUserEvent.handshakeCompleted = event else {
            return context.fireUserInboundEventTriggered(event)
        }
        context.fireUserInboundEventTriggered(event)
        let ssl = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
        if let cert = ssl?.peerCertificate, let der = try? cert.toDERBytes() {
            let uris = CertificateIdentityMap.uris(ofDER: der)
            guard let (identity, role, tenant) = identities.identify(uris) else {
                logger.warning("refusing TLS client: its certificate maps to no identity", metadata: ["tls.uris": "\(uris)"])
                audit?.tlsRefused(reason: "unmapped_certificate", uris: uris, detail: nil,
                                  peer: PeerInfo(remote: context.channel.remoteAddress, isUnix: false), listener: listener)
                context.close(promise: nil)
                return
            }
            context.fireUserInboundEventTriggered(CertificateIdentified(principal: .certificate(identity, role: role, tenant: tenant)))
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
