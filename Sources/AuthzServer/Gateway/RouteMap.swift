import AuthzModel
import Foundation

/// The route map of the gateway listeners: which permission, at which scope, a request needs,
/// from its method and path. First match wins.
///
/// File format (docs/gateways.md), one route a line, `#` comments and blank lines ignored:
///
///     METHOD  PATH-PATTERN          PERMISSION             SCOPE
///     GET     /gmail/messages/**    gmail.messages.read    self
///     POST    /gmail/messages       gmail.messages.send    self
///     *       /admin/**             core.admin             tenant
///
/// `METHOD` is an upper-case HTTP method or `*` (any). A pattern starts with `/` and is matched
/// segment by segment against the path with its query string removed: a literal segment matches
/// itself exactly, `*` matches any one non-empty segment, and `**` (last segment only) matches
/// zero or more segments. The whole file is validated before it replaces the map in use; an
/// invalid file names its line and the rule it broke.
public struct RouteMap: Sendable, Equatable {
    /// One line of the map.
    public struct Route: Sendable, Equatable {
        /// Upper-case method, or nil for any.
        public var method: String?
        /// Pattern segments (without the leading `/`); the last may be `**`.
        public var segments: [String]
        public var permission: String
        public var scope: Scope
        /// Line number in the file, for logs and the `X-Authz-Route` header.
        public var line: Int
    }

    public private(set) var routes: [Route] = []

    /// An empty map: every request must then name its permission in headers.
    public init() {}

    /// Parses a map; throws `ConfigError` naming `origin:line` and the rule broken.
    public init(text: String, origin: String) throws {
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            let at = "\(origin):\(n + 1)"
            guard fields.count == 4 else {
                throw ConfigError("\(at): a route is METHOD PATH-PATTERN PERMISSION SCOPE (got \(fields.count) fields)")
            }
            let method = String(fields[0])
            guard method == "*" || (!method.isEmpty && method.utf8.allSatisfy { $0 >= 0x41 && $0 <= 0x5A }) else {
                throw ConfigError("\(at): method must be an upper-case HTTP method or * (got \"\(method)\")")
            }
            let pattern = String(fields[1])
            guard pattern.hasPrefix("/") else { throw ConfigError("\(at): path pattern must start with / (got \"\(pattern)\")") }
            let segments = pattern.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
            if let i = segments.firstIndex(of: "**"), i != segments.count - 1 {
                throw ConfigError("\(at): ** may only be the last segment of a pattern (got \"\(pattern)\")")
            }
            if pattern.contains("?") { throw ConfigError("\(at): a path pattern matches the path without its query string; remove \"?\" (got \"\(pattern)\")") }
            let permission = String(fields[2])
            do { try Validate.permissionName(permission, field: "permission") } catch let e as AuthzError {
                throw ConfigError("\(at): \(e.message)")
            }
            guard let scope = Scope(name: fields[3]) else {
                throw ConfigError("\(at): scope must be self, tenant or global (got \"\(fields[3])\")")
            }
            routes.append(Route(method: method == "*" ? nil : method, segments: segments, permission: permission, scope: scope, line: n + 1))
        }
    }

    /// Reads and parses a map file.
    public init(file path: String) throws {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError("cannot read route map \(path)")
        }
        try self.init(text: text, origin: path)
    }

    /// Whether `path` (its query string ignored) could name another resource once the
    /// application resolves it: a `.` or `..` segment (also as `..;x`, which some servers
    /// strip to `..`), a backslash, or a percent-encoded `.`, `/` or `\`. The route map
    /// matches segments as written, so such a path is never matched (`ambiguous_path`).
    public static func isAmbiguous(_ path: String) -> Bool {
        let bare = path.utf8.split(separator: UInt8(ascii: "?"), maxSplits: 1, omittingEmptySubsequences: false).first ?? []
        var i = bare.startIndex
        while i < bare.endIndex {
            let b = bare[i]
            if b == UInt8(ascii: "\\") { return true }
            if b == UInt8(ascii: "%"), bare.index(i, offsetBy: 2, limitedBy: bare.endIndex).map({ $0 < bare.endIndex }) == true {
                let h = bare[bare.index(after: i)], l = bare[bare.index(i, offsetBy: 2)] | 0x20
                if (h == UInt8(ascii: "2") && (l == UInt8(ascii: "e") || l == UInt8(ascii: "f"))) || (h == UInt8(ascii: "5") && l == UInt8(ascii: "c")) { return true }
            }
            i = bare.index(after: i)
        }
        for segment in bare.split(separator: UInt8(ascii: "/")) {
            let name = segment.split(separator: UInt8(ascii: ";"), maxSplits: 1, omittingEmptySubsequences: false).first ?? []
            if !name.isEmpty && name.allSatisfy({ $0 == UInt8(ascii: ".") }) && name.count <= 2 { return true }
        }
        return false
    }

    /// The first route matching `method` and `path` (query string ignored), or nil.
    public func match(method: String, path: String) -> Route? {
        let bare = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let parts = bare.split(separator: "/", omittingEmptySubsequences: true)
        for r in routes {
            if let m = r.method, m != method { continue }
            if RouteMap.matches(r.segments, parts) { return r }
        }
        return nil
    }

    static func matches(_ pattern: [String], _ parts: [Substring]) -> Bool {
        var i = 0
        for seg in pattern {
            if seg == "**" { return true }
            guard i < parts.count else { return false }
            if seg != "*" && seg != parts[i] { return false }
            i += 1
        }
        return i == parts.count
    }
}
