internal import CAuthzProto
import AuthzModel

/// Explain (`ExplainRequest`, `ExplainResponse`): a check's decision with the role binding,
/// role chain and permission binding that grant it.
enum ExplainWire: WireCall {
    static let kind = CallKind.explain
    static let name = "Explain"
    static let field = "explain"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        .explain(try CheckWire.decodeCheck(m.explain.pointee.check, field: "explain.check"))
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .explain(let c) = call else { preconditionFailure("\(call.name) given to the Explain codec") }
        msg.pointee.explain = a.make(Authz__V1__ExplainRequest.self) {
            authz__v1__explain_request__init($0)
            $0.pointee.check = CheckWire.encodeCheck(c, a)
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .explain(let x) = reply else { preconditionFailure("\(reply.kind.name) reply given to the Explain codec") }
        msg.pointee.explain = a.make(Authz__V1__ExplainResponse.self) { m in
            authz__v1__explain_response__init(m)
            m.pointee.result = CheckWire.encodeDecision(x.decision, a)
            m.pointee.role_binding_id = a.cString(x.roleBindingId?.description ?? "")
            m.pointee.n_role_chain = x.roleChain.count
            m.pointee.role_chain = a.cStrings(x.roleChain.map(\.description))
            m.pointee.n_role_chain_names = x.roleChainNames.count
            m.pointee.role_chain_names = a.cStrings(x.roleChainNames)
            m.pointee.permission_binding_id = a.cString(x.permissionBindingId?.description ?? "")
            if let s = x.roleBindingScope { m.pointee.role_binding_scope = EntityCodec.scopeValue(s) }
            if let s = x.permissionBindingScope { m.pointee.permission_binding_scope = EntityCodec.scopeValue(s) }
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let x = m.explain.pointee
        var e = Explanation(decision: try CheckWire.decodeDecision(x.result))
        e.roleBindingId = ID(swiftString(x.role_binding_id) ?? "")
        e.roleChain = WireCodec.ids(x.n_role_chain, x.role_chain)
        e.roleChainNames = (0..<x.n_role_chain_names).map { swiftString(x.role_chain_names[$0]) ?? "" }
        e.permissionBindingId = ID(swiftString(x.permission_binding_id) ?? "")
        e.roleBindingScope = WireCodec.scopeFrom(x.role_binding_scope)
        e.permissionBindingScope = WireCodec.scopeFrom(x.permission_binding_scope)
        return .explain(e)
    }
}
