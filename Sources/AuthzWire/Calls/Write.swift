internal import CAuthzProto
import AuthzModel

/// Write (`WriteRequest`, `WriteResponse`): operations applied atomically. The op count is
/// bounded before unpacking (`WireLimits.maxWriteOps`); an op's error is prefixed `ops[i]: `.
enum WriteWire: WireCall {
    static let kind = CallKind.write
    static let name = "Write"
    static let field = "write"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let w = m.write.pointee
        var ops: [WriteOp] = []
        ops.reserveCapacity(w.n_ops)
        for i in 0..<w.n_ops {
            guard let op = w.ops[i] else { throw AuthzError.invalid("write.ops[\(i)]", "is required") }
            switch op.pointee.op_case {
            case AUTHZ__V1__WRITE_OP__OP_UPSERT:
                // Timestamps are decoded too: the store ignores them on a Write, keeps them for an
                // import or a conditional upsert (which go through the log in log mode).
                do { ops.append(.upsert(try EntityCodec.decodeWithTimestamps(op.pointee.upsert, field: "write.ops[\(i)].upsert"))) } catch var e as AuthzError {
                    e.message = "write.ops[\(i)]: " + e.message
                    throw e
                }
            case AUTHZ__V1__WRITE_OP__OP_UPSERT_IF_NEWER:
                do { ops.append(.upsertIfNewer(try EntityCodec.decodeWithTimestamps(op.pointee.upsert_if_newer, field: "write.ops[\(i)].upsert_if_newer"))) } catch var e as AuthzError {
                    e.message = "write.ops[\(i)]: " + e.message
                    throw e
                }
            case AUTHZ__V1__WRITE_OP__OP_DEACTIVATE:
                ops.append(.deactivate(try EntityCodec.decodeRef(op.pointee.deactivate, field: "write.ops[\(i)].deactivate")))
            case AUTHZ__V1__WRITE_OP__OP_ACTIVATE:
                ops.append(.activate(try EntityCodec.decodeRef(op.pointee.activate, field: "write.ops[\(i)].activate")))
            default:
                throw AuthzError.invalid("write.ops[\(i)]", "must set one of upsert, deactivate, activate, upsert_if_newer")
            }
        }
        return .write(ops)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .write(let ops) = call else { preconditionFailure("\(call.name) given to the Write codec") }
        msg.pointee.write = a.make(Authz__V1__WriteRequest.self) { m in
            authz__v1__write_request__init(m)
            let arr = a.array(UnsafeMutablePointer<Authz__V1__WriteOp>?.self, count: ops.count)
            for (i, op) in ops.enumerated() {
                arr[i] = a.make(Authz__V1__WriteOp.self) { o in
                    authz__v1__write_op__init(o)
                    switch op {
                    case .upsert(let e):
                        o.pointee.op_case = AUTHZ__V1__WRITE_OP__OP_UPSERT
                        o.pointee.upsert = EntityCodec.encode(e, a)
                    case .upsertIfNewer(let e):
                        o.pointee.op_case = AUTHZ__V1__WRITE_OP__OP_UPSERT_IF_NEWER
                        o.pointee.upsert_if_newer = EntityCodec.encode(e, a)
                    case .deactivate(let ref):
                        o.pointee.op_case = AUTHZ__V1__WRITE_OP__OP_DEACTIVATE
                        o.pointee.deactivate = EntityCodec.encodeRef(ref, a)
                    case .activate(let ref):
                        o.pointee.op_case = AUTHZ__V1__WRITE_OP__OP_ACTIVATE
                        o.pointee.activate = EntityCodec.encodeRef(ref, a)
                    }
                }
            }
            m.pointee.n_ops = ops.count
            m.pointee.ops = arr
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .write(let revision) = reply else { preconditionFailure("\(reply.kind.name) reply given to the Write codec") }
        msg.pointee.write = a.make(Authz__V1__WriteResponse.self) {
            authz__v1__write_response__init($0)
            $0.pointee.revision = revision
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        .write(revision: m.write.pointee.revision)
    }
}
