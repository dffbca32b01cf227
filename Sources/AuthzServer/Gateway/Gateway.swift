import AuthzEngine
import AuthzIndex
import AuthzModel
import Logging
import NIOConcurrencyHelpers

/// The header names and options shared by the gateway listeners (HTTP and Envoy gRPC).
/// Header names are matched case-insensitively; store them lower-case.
public struct GatewayOptions: Sendable, Equatable {
    /// Tenant id (UUID), set by the authentication layer in front of the proxy.
    public var tenantHeader = "x-authz-tenant"
    /// User id (UUID), set by the authentication layer.
    public var userHeader = "x-authz-user"
    /// Permission name, set per location by the proxy (overrides the route map).
    public var permissionHeader = "x-authz-permission"
    /// Scope (`self`, `tenant`, `global`) for `permissionHeader`; `tenant` when absent.
    public var scopeHeader = "x-authz-scope"
    /// The gateway's own API key (required on TCP).
    public var apiKeyHeader = "x-authz-api-key"
    /// The original method and URI, for proxies whose auth subrequest has its own (nginx).
    public var methodHeader = "x-original-method"
    public var uriHeader = "x-original-uri"
    /// Path prefix of decision requests on the HTTP listener; stripped to get the original path
    /// when `uriHeader` is absent (Envoy's `path_prefix`).
    public var pathPrefix = "/check"
    /// Route map file; nil = permissions come from headers only.
    public var routeMapPath: String? = nil

    public init() {}
}

/// What a gateway listener answers for one decision.
public struct GatewayAnswer: Error, Sendable, Equatable {
    /// 200 allow, 403 deny, 401 missing or malformed identity, 503 cannot decide.
    public var status: Int
    /// A `Reason` name (`granted`, `no_grant`, …) or one of the gateway's own:
    /// `missing_identity`, `malformed_identity`, `no_route`, `ambiguous_path`,
    /// `malformed_permission`, `key_tenant_mismatch`, `gateway_unauthenticated`,
    /// `gateway_not_permitted`, `not_serving` (log mode: this replica refuses reads).
    public var reason: String
    /// Revision the decision was made at (0 when none was made).
    public var revision: UInt64
    /// Line of the route map that supplied the permission (0: headers or none).
    public var routeLine: Int = 0

    public var allowed: Bool { status == 200 }
}

/// Decides gateway requests (nginx `auth_request`, Envoy HTTP and gRPC ext_authz) from the
/// compiled index, on the calling event loop: one snapshot lookup and bit test, no LMDB.
/// Thread-safe; shared by every gateway connection.
///
/// Fails closed: anything it cannot decide is 503 (proxies then refuse the request) and never
/// 200. Identity (tenant and user) must come from the authentication layer's headers; the
/// proxy configurations in docs/gateways.md strip any the client sent.
public final class Gateway: Sendable {
    let dispatcher: Dispatcher
    public let options: GatewayOptions
    private let routes: NIOLockedValueBox<RouteMap>
    let logger: Logger

    init(dispatcher: Dispatcher, options: GatewayOptions, logger: Logger) throws {
        self.dispatcher = dispatcher
        self.options = options
        self.logger = logger
        routes = NIOLockedValueBox(try options.routeMapPath.map { try RouteMap(file: $0) } ?? RouteMap())
    }

    /// The route map in use.
    public var routeMap: RouteMap { routes.withLockedValue { $0 } }

    /// Re-reads the route map file (SIGHUP). The new map replaces the old one only when the
    /// whole file is valid; otherwise the old one stays and the error is thrown.
    public func reloadRoutes() throws {
        guard let path = options.routeMapPath else { return }
        let fresh = try RouteMap(file: path)
        routes.withLockedValue { $0 = fresh }
        logger.info("route map reloaded", metadata: ["route_map.path": "\(path)", "route_map.routes": "\(fresh.routes.count)"])
    }

    /// The caller of one gateway request: the key presented in `apiKeyHeader` when there is
    /// one, else the connection's own principal (a trusted Unix peer, or everyone under
    /// `--insecure-no-auth`). A failure is the 503 to answer; a refused key is recorded in the
    /// audit trail (when it is on) as coming from `peer`.
    func principal(presentedKey: String?, transport: Principal, peer: PeerInfo = .unknown, listener: String = "gateway") -> Result<Principal, GatewayAnswer> {
        if dispatcher.config.insecureNoAuth { return .success(.superuser) }
        if let presented = presentedKey {
            switch dispatcher.keys.authenticate(presented) {
            case .success(let k): return .success(.key(id: k.id, role: k.role, tenant: k.tenantId))
            case .failure(let r):
                let e = r.error
                dispatcher.metrics.error(.unauthenticated)
                dispatcher.audit?.authRefused(r, who: dispatcher.actor(transport, peer), peer: peer, listener: listener)
                logger.warning("gateway key refused", metadata: ["error": "\(e.message)"])
                return .failure(GatewayAnswer(status: 503, reason: "gateway_unauthenticated", revision: 0))
            }
        }
        if transport == .unauthenticated {
            return .failure(GatewayAnswer(status: 503, reason: "gateway_unauthenticated", revision: 0))
        }
        return .success(transport)
    }

    /// Decides one request. `header` looks a header up by its lower-case name. `permission`
    /// and `scope`, when given (Envoy gRPC `context_extensions`), take precedence over headers
    /// and the route map.
    func decide(method: String, path: String, principal: Principal,
                       permission explicitPermission: String? = nil, scope explicitScope: String? = nil,
                       header: (String) -> String?) -> GatewayAnswer {
        guard let tenantText = header(options.tenantHeader), let userText = header(options.userHeader) else {
            return GatewayAnswer(status: 401, reason: "missing_identity", revision: 0)
        }
        guard let tenant = ID(tenantText), let user = ID(userText) else {
            return GatewayAnswer(status: 401, reason: "malformed_identity", revision: 0)
        }
        if let refused = Gateway.mayCheck(principal, tenant: tenant) { return refused }
        if let refused = readRefusal(tenant) { return refused }
        var routeLine = 0
        let permission: String, scope: Scope
        if let p = explicitPermission ?? header(options.permissionHeader) {
            guard let s = Scope(name: explicitScope ?? header(options.scopeHeader) ?? "tenant"), !p.isEmpty else {
                return GatewayAnswer(status: 503, reason: "malformed_permission", revision: 0)
            }
            (permission, scope) = (p, s)
        } else if RouteMap.isAmbiguous(path) {
            // The application may resolve `..`, `%2e` or `;` differently from a segment match:
            // such a path is denied rather than matched as written.
            return GatewayAnswer(status: 403, reason: "ambiguous_path", revision: dispatcher.engine.revision)
        } else if let r = routes.withLockedValue({ $0.match(method: method, path: path) }) {
            (permission, scope, routeLine) = (r.permission, r.scope, r.line)
        } else {
            return GatewayAnswer(status: 403, reason: "no_route", revision: dispatcher.engine.revision)
        }
        let d = dispatcher.engine.withSnapshot { $0.decide(tenant: tenant, user: user, permission: permission, scope: scope) }
        dispatcher.metrics.gatewayDecisions(allowed: d.allowed)
        return GatewayAnswer(status: d.allowed ? 200 : 403, reason: d.reason.name, revision: d.revision, routeLine: routeLine)
    }

    /// In log mode, a 503 when this replica may not answer reads for `tenant` (behind or ahead
    /// of its stream, or the tenant is another shard's), as binary checks are refused; nil
    /// otherwise. Never answers from data the replica knows to be stale.
    func readRefusal(_ tenant: ID) -> GatewayAnswer? {
        guard let r = dispatcher.replicator else { return nil }
        if r.readRefusal() != nil || !r.shard.holds(tenant) {
            return GatewayAnswer(status: 503, reason: "not_serving", revision: 0)
        }
        return nil
    }

    /// nil when `principal` may check in `tenant`; else the answer to give. Checker and admin
    /// keys (and allowlisted uids) are bound to their tenant; gateway keys and superusers may
    /// check in every tenant; operator keys never check.
    static func mayCheck(_ principal: Principal, tenant: ID) -> GatewayAnswer? {
        switch principal {
        case .superuser: return nil
        case .unauthenticated: return GatewayAnswer(status: 503, reason: "gateway_unauthenticated", revision: 0)
        case .key(_, let role, let t), .uid(_, let role, let t), .certificate(_, let role, let t):
            switch role {
            case .gateway: return nil
            case .operator: return GatewayAnswer(status: 503, reason: "gateway_not_permitted", revision: 0)
            case .checker, .admin: return t == tenant ? nil : GatewayAnswer(status: 403, reason: "key_tenant_mismatch", revision: 0)
            }
        }
    }

    /// `GET /v1/tenants/{t}/users/{u}/permissions`: the user's effective permissions as JSON
    /// (`{"tenant_id","user_id","revision","reason","permissions":[{"name","scope"}]}`), from
    /// the compiled index. Returns the HTTP status and body.
    func permissionsJSON(tenant tenantText: Substring, user userText: Substring, principal: Principal) -> (Int, String) {
        guard let tenant = ID(tenantText) else { return (400, Gateway.errorJSON("INVALID_ARGUMENT", "tenant_id must be a UUID")) }
        guard let user = ID(userText) else { return (400, Gateway.errorJSON("INVALID_ARGUMENT", "user_id must be a UUID")) }
        if let refused = Gateway.mayCheck(principal, tenant: tenant) {
            return refused.status == 503 && refused.reason == "gateway_unauthenticated"
                ? (401, Gateway.errorJSON("UNAUTHENTICATED", "send a valid API key in \(options.apiKeyHeader)"))
                : (403, Gateway.errorJSON("PERMISSION_DENIED", "this key may not read tenant \(tenant)"))
        }
        if readRefusal(tenant) != nil {
            return (503, Gateway.errorJSON("UNAVAILABLE", "this replica does not serve tenant \(tenant) now (log mode: behind its stream, or another shard)"))
        }
        guard let r = try? dispatcher.engine.permissions(tenant: tenant, user: user) else {
            return (503, Gateway.errorJSON("UNAVAILABLE", "the index cannot answer"))
        }
        let list = r.permissions.map { JSONValue.object([("name", .string($0.0)), ("scope", .string($0.1.name))]) }
        let body = JSONValue.object([
            ("tenant_id", .string(tenant.description)), ("user_id", .string(user.description)),
            ("revision", .number(String(r.revision))), ("reason", .string(r.reason.name)), ("permissions", .array(list)),
        ])
        return (200, JSONWriter.serialize(body))
    }

    static func errorJSON(_ code: String, _ message: String) -> String {
        JSONWriter.serialize(.object([("code", .string(code)), ("message", .string(message))]))
    }
}
