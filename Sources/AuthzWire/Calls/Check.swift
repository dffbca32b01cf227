internal import CAuthzProto
import AuthzModel

/// Check (`Request.check` = `CheckRequest`, `Response.check` = `CheckResponse`): one decision.
///
/// The daemon answers most checks on the fast path (`FastPath`, `CheckFrame`) without this
/// codec; this is the reference those are compared with. Its request and response messages are
/// also the items of BatchCheck and the core of Explain (`decodeCheck`, `encodeCheck`,
/// `encodeDecision`, `decodeDecision`).
enum CheckWire: WireCall {
    static let kind = CallKind.check
    static let name = "Check"
    static let field = "check"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        .check(try decodeCheck(m.check, field: "check"))
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .check(let c) = call else { preconditionFailure("\(call.name) given to the Check codec") }
        msg.pointee.check = encodeCheck(c, a)
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .check(let d) = reply else { preconditionFailure("\(reply.kind.name) reply given to the Check codec") }
        msg.pointee.check = encodeDecision(d, a)
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        .check(try decodeDecision(m.check))
    }

    // MARK: the messages BatchCheck and Explain share

    /// A `CheckRequest` as a `CheckCall`: ids parsed, scope known, permission non-empty and at
    /// most `FieldLimits.maxNameBytes`. INVALID_ARGUMENT naming `field` + the member (`field`
    /// itself when the message is absent).
    static func decodeCheck(_ c: UnsafeMutablePointer<Authz__V1__CheckRequest>?, field: String) throws -> CheckCall {
        guard let c else { throw AuthzError.invalid(field, "is required") }
        let r = FieldReader(prefix: field + ".")
        let tenant = try r.id(c.pointee.tenant_id, "tenant_id")
        let user = try r.id(c.pointee.user_id, "user_id")
        let permission = try r.string(c.pointee.permission, "permission")
        if permission.isEmpty { throw AuthzError.invalid(field + ".permission", "must not be empty") }
        if permission.utf8.count > FieldLimits.maxNameBytes {
            throw AuthzError.invalid(field + ".permission", "must be at most \(FieldLimits.maxNameBytes) bytes")
        }
        let scope = try r.scope(c.pointee.scope.rawValue, "scope")
        return CheckCall(tenantId: tenant, userId: user, permission: permission, scope: scope, minRevision: c.pointee.min_revision)
    }

    /// A `CheckRequest` holding `c`, allocated from `a`.
    static func encodeCheck(_ c: CheckCall, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__CheckRequest> {
        a.make(Authz__V1__CheckRequest.self) { m in
            authz__v1__check_request__init(m)
            m.pointee.tenant_id = a.cString(c.tenantId.description)
            m.pointee.user_id = a.cString(c.userId.description)
            m.pointee.permission = a.cString(c.permission)
            m.pointee.scope = EntityCodec.scopeValue(c.scope)
            m.pointee.min_revision = c.minRevision
        }
    }

    /// A `CheckResponse` holding `d` (no error), allocated from `a`.
    static func encodeDecision(_ d: Decision, _ a: Arena) -> UnsafeMutablePointer<Authz__V1__CheckResponse> {
        a.make(Authz__V1__CheckResponse.self) {
            authz__v1__check_response__init($0)
            $0.pointee.decision = d.allowed ? AUTHZ__V1__DECISION__DECISION_ALLOW : AUTHZ__V1__DECISION__DECISION_DENY
            $0.pointee.reason = WireCodec.reasonValue(d.reason)
            $0.pointee.revision = d.revision
        }
    }

    /// A `CheckResponse` as a `Decision`. INTERNAL when it is absent or its reason unknown.
    static func decodeDecision(_ c: UnsafeMutablePointer<Authz__V1__CheckResponse>?) throws -> Decision {
        guard let c else { throw AuthzError(.internal, "response lacks its result") }
        return Decision(reason: try WireCodec.decodeReason(c.pointee.reason), revision: c.pointee.revision)
    }
}
