/// Where a listener binds or a client connects: a Unix socket path or a TCP host and port.
/// One type, parsed in one place, for the daemon's listeners, the client, authzctl and authzd.
///
/// Text forms (`init?(_:)`): `unix:PATH`; a path (contains `/` or ends in `.sock`);
/// `HOST:PORT`, `[IPV6]:PORT` (brackets required around an IPv6 address, removed in `host`),
/// `:PORT` (no host: `host` is empty and each user says what that means: every interface for a
/// listener, loopback for a client). Ports are 0...65535 (0: any free port, for listeners).
public enum BindAddress: Sendable, Hashable, CustomStringConvertible {
    case unix(String)
    case tcp(host: String, port: Int)

    /// Parses the text forms above; nil for anything else (a bad port, an IPv6 address without
    /// brackets, an empty string).
    public init?(_ text: String) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { return nil }
            self = .unix(path)
            return
        }
        if text.contains("/") || text.hasSuffix(".sock") {
            self = .unix(text)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") {
            guard host.hasSuffix("]"), host.count > 2 else { return nil }
            host = String(host.dropFirst().dropLast())
        } else if host.contains(":") {
            return nil  // an IPv6 address needs brackets: "[::1]:7000"
        }
        self = .tcp(host: host, port: port)
    }

    /// The TCP host, with `defaultHost` for an empty one; nil for a Unix socket.
    public func tcpHost(default defaultHost: String) -> String? {
        guard case .tcp(let host, _) = self else { return nil }
        return host.isEmpty ? defaultHost : host
    }

    /// `unix:PATH` or `HOST:PORT` (`[IPV6]:PORT`): parses back to the same address.
    public var description: String {
        switch self {
        case .unix(let p): return "unix:\(p)"
        case .tcp(let h, let p): return h.contains(":") ? "[\(h)]:\(p)" : "\(h):\(p)"
        }
    }
}
