internal import CAuthzProto
import AuthzModel

/// Watch (`WatchRequest`, `WatchResponse`): a stream of committed changes; many responses to
/// one request (docs/watch.md). `from_now` and a non-zero `from_revision` together are
/// INVALID_ARGUMENT; kinds are sent sorted.
enum WatchWire: WireCall {
    static let kind = CallKind.watch
    static let name = "Watch"
    static let field = "watch"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let x = m.watch.pointee
        var kinds = Set<EntityKind>()
        for i in 0..<x.n_kinds { kinds.insert(try EntityCodec.kind(x.kinds[i].rawValue, field: "watch.kinds[\(i)]")) }
        if x.from_now != 0 && x.from_revision != 0 {
            throw AuthzError.invalid("watch.from_revision", "must be 0 when watch.from_now is set")
        }
        return .watch(WatchCall(fromRevision: x.from_now != 0 ? nil : x.from_revision,
                                tenantId: try FieldReader(prefix: "watch.").optionalID(x.tenant_id, "tenant_id"), kinds: kinds))
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .watch(let w) = call else { preconditionFailure("\(call.name) given to the Watch codec") }
        msg.pointee.watch = a.make(Authz__V1__WatchRequest.self) {
            authz__v1__watch_request__init($0)
            $0.pointee.from_revision = w.fromRevision ?? 0
            $0.pointee.from_now = w.fromRevision == nil ? 1 : 0
            if let t = w.tenantId { $0.pointee.tenant_id = a.cString(t.description) }
            let kinds = w.kinds.sorted { $0.rawValue < $1.rawValue }
            let arr = a.array(Authz__V1__Kind.self, count: kinds.count)
            for (i, k) in kinds.enumerated() { arr[i] = Authz__V1__Kind(rawValue: UInt32(k.rawValue)) }
            $0.pointee.n_kinds = kinds.count
            $0.pointee.kinds = arr
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .watch(let b) = reply else { preconditionFailure("\(reply.kind.name) reply given to the Watch codec") }
        msg.pointee.watch = a.make(Authz__V1__WatchResponse.self) { m in
            authz__v1__watch_response__init(m)
            let arr = a.array(UnsafeMutablePointer<Authz__V1__Change>?.self, count: b.changes.count)
            for (i, c) in b.changes.enumerated() {
                arr[i] = a.make(Authz__V1__Change.self) {
                    authz__v1__change__init($0)
                    $0.pointee.revision = c.revision
                    $0.pointee.kind = Authz__V1__Kind(rawValue: UInt32(c.entity.kind.rawValue))
                    $0.pointee.tenant_id = a.cString(c.entity.tenantId.description)
                    $0.pointee.id = a.cString(c.entity.id.description)
                    $0.pointee.entity = EntityCodec.encode(c.entity, a)
                }
            }
            m.pointee.n_changes = b.changes.count
            m.pointee.changes = arr
            m.pointee.revision = b.revision
            m.pointee.caught_up = b.caughtUp ? 1 : 0
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let x = m.watch.pointee
        let changes = try (0..<x.n_changes).map { i -> Change in
            let c = x.changes[i]!.pointee
            return Change(revision: c.revision, entity: try EntityCodec.decodeStored(c.entity))
        }
        return .watch(WatchBatch(changes: changes, revision: x.revision, caughtUp: x.caught_up != 0))
    }
}
