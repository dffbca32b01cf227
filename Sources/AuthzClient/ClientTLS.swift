import AuthzModel
import NIOSSL

/// TLS for a TCP endpoint (the daemon's `--tls-cert`), optionally with a client certificate
/// (mTLS, mapped to an identity by the daemon's `tls-identity`). TLS 1.2 or later; the daemon's
/// certificate is verified against `caPath` (or the system's roots) and against the host name,
/// or the IP address when the endpoint names one.
public struct ClientTLS: Sendable, Equatable {
    /// PEM bundle of the CAs to trust for the daemon's certificate; nil = the system's roots.
    public var caPath: String?
    /// PEM client certificate chain, for mTLS; given with `keyPath` or not at all.
    public var certPath: String?
    /// PEM private key of `certPath`; given with it or not at all.
    public var keyPath: String?
    /// Name to verify the certificate against (and send as SNI); nil = the endpoint's host.
    public var serverName: String?

    /// The settings as given; nothing is read until a client is made with them
    /// (`AuthzClient.init(configuration:group:)`), which throws INVALID_ARGUMENT naming a file
    /// that cannot be read, or a certificate without its key.
    public init(caPath: String? = nil, certPath: String? = nil, keyPath: String? = nil, serverName: String? = nil) {
        self.caPath = caPath
        self.certPath = certPath
        self.keyPath = keyPath
        self.serverName = serverName
    }

    /// Builds the TLS context; INVALID_ARGUMENT naming the file that cannot be read.
    func makeContext() throws -> NIOSSLContext {
        var c = TLSConfiguration.makeClientConfiguration()
        c.minimumTLSVersion = .tlsv12
        if let ca = caPath {
            do { c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca)) } catch {
                throw AuthzError.invalid("tls_ca", "\(ca) holds no readable PEM certificate (\(error))")
            }
        }
        switch (certPath, keyPath) {
        case (nil, nil): break
        case (let cert?, let key?):
            do {
                c.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                c.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw AuthzError.invalid("tls_cert", "cannot read the client certificate \(cert) or key \(key) (\(error))")
            }
        default: throw AuthzError.invalid("tls_cert", "a client certificate needs both the certificate and the key")
        }
        do { return try NIOSSLContext(configuration: c) } catch {
            throw AuthzError.invalid("tls_cert", "cannot make a TLS context (\(error))")
        }
    }
}
