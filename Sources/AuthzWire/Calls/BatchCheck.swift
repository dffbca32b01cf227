internal import CAuthzProto
import AuthzModel

/// BatchCheck (`BatchCheckRequest`, `BatchCheckResponse`): many checks at one revision. A
/// malformed item is decoded as its own error and answered with its own `error` status; the
/// other items are still answered. The item count is bounded before unpacking
/// (`RequestInspector`, `WireLimits.maxBatchChecks`).
enum BatchCheckWire: WireCall {
    static let kind = CallKind.batchCheck
    static let name = "BatchCheck"
    static let field = "batch_check"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let b = m.batch_check.pointee
        var items: [Result<CheckCall, AuthzError>] = []
        items.reserveCapacity(b.n_checks)
        for i in 0..<b.n_checks {
            do { items.append(.success(try CheckWire.decodeCheck(b.checks[i], field: "batch_check.checks[\(i)]"))) } catch let e as AuthzError { items.append(.failure(e)) }
        }
        return .batchCheck(items, minRevision: b.min_revision)
    }

    /// Items that are failures are sent as empty checks (the server reports them malformed).
    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .batchCheck(let items, let minRevision) = call else { preconditionFailure("\(call.name) given to the BatchCheck codec") }
        msg.pointee.batch_check = a.make(Authz__V1__BatchCheckRequest.self) { m in
            authz__v1__batch_check_request__init(m)
            m.pointee.min_revision = minRevision
            let arr = a.array(UnsafeMutablePointer<Authz__V1__CheckRequest>?.self, count: items.count)
            for (i, item) in items.enumerated() {
                switch item {
                case .success(let c): arr[i] = CheckWire.encodeCheck(c, a)
                case .failure: arr[i] = a.make(Authz__V1__CheckRequest.self) { authz__v1__check_request__init($0) }
                }
            }
            m.pointee.n_checks = items.count
            m.pointee.checks = arr
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .batchCheck(let items, let revision) = reply else { preconditionFailure("\(reply.kind.name) reply given to the BatchCheck codec") }
        msg.pointee.batch_check = a.make(Authz__V1__BatchCheckResponse.self) { m in
            authz__v1__batch_check_response__init(m)
            m.pointee.revision = revision
            let arr = a.array(UnsafeMutablePointer<Authz__V1__CheckResponse>?.self, count: items.count)
            for (i, item) in items.enumerated() {
                switch item {
                case .success(let d): arr[i] = CheckWire.encodeDecision(d, a)
                case .failure(let e):
                    arr[i] = a.make(Authz__V1__CheckResponse.self) {
                        authz__v1__check_response__init($0)
                        $0.pointee.revision = revision
                        $0.pointee.error = WireCodec.encodeStatus(e, a)
                    }
                }
            }
            m.pointee.n_results = items.count
            m.pointee.results = arr
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let b = m.batch_check.pointee
        var items: [Result<Decision, AuthzError>] = []
        items.reserveCapacity(b.n_results)
        for i in 0..<b.n_results {
            if let s = b.results[i]!.pointee.error, s.pointee.code.rawValue != 0 {
                items.append(.failure(WireCodec.decodeStatus(s)))
            } else {
                items.append(.success(try CheckWire.decodeDecision(b.results[i])))
            }
        }
        return .batchCheck(items, revision: b.revision)
    }
}
