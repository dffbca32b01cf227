internal import CAuthzProto
import AuthzModel

/// ServerInfo (`ServerInfoRequest`, `ServerInfoResponse`): version, revision, protocol
/// version, record counts and, in log mode, the daemon's place in the log (`LogStatus`).
enum ServerInfoWire: WireCall {
    static let kind = CallKind.serverInfo
    static let name = "ServerInfo"
    static let field = "server_info"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call { .serverInfo }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        guard case .serverInfo = call else { preconditionFailure("\(call.name) given to the ServerInfo codec") }
        msg.pointee.server_info = a.make(Authz__V1__ServerInfoRequest.self) { authz__v1__server_info_request__init($0) }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .serverInfo(let info) = reply else { preconditionFailure("\(reply.kind.name) reply given to the ServerInfo codec") }
        msg.pointee.server_info = a.make(Authz__V1__ServerInfoResponse.self) {
            authz__v1__server_info_response__init($0)
            $0.pointee.version = a.cString(info.version)
            $0.pointee.revision = info.revision
            $0.pointee.protocol_version = info.protocolVersion
            $0.pointee.tenants = info.counts[.tenant] ?? 0
            $0.pointee.users = info.counts[.user] ?? 0
            $0.pointee.roles = info.counts[.role] ?? 0
            $0.pointee.permissions = info.counts[.permission] ?? 0
            $0.pointee.role_bindings = info.counts[.roleBinding] ?? 0
            $0.pointee.permission_bindings = info.counts[.permissionBinding] ?? 0
            if let l = info.log {
                $0.pointee.log = a.make(Authz__V1__LogStatus.self) {
                    authz__v1__log_status__init($0)
                    $0.pointee.stream = a.cString(l.stream)
                    $0.pointee.applied = l.applied
                    $0.pointee.stream_last = l.streamLast
                    $0.pointee.lag = l.lag
                    $0.pointee.connected = l.connected ? 1 : 0
                    $0.pointee.shard = a.cString(l.shard)
                    $0.pointee.refusal = a.cString(l.refusal)
                }
            }
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let x = m.server_info.pointee
        return .serverInfo(ServerInfo(version: swiftString(x.version) ?? "", revision: x.revision, protocolVersion: x.protocol_version,
                                      counts: [.tenant: x.tenants, .user: x.users, .role: x.roles, .permission: x.permissions,
                                               .roleBinding: x.role_bindings, .permissionBinding: x.permission_bindings],
                                      log: x.log.map { l in
                                          LogStatus(stream: swiftString(l.pointee.stream) ?? "", applied: l.pointee.applied, streamLast: l.pointee.stream_last,
                                                    lag: l.pointee.lag, connected: l.pointee.connected != 0, shard: swiftString(l.pointee.shard) ?? "",
                                                    refusal: swiftString(l.pointee.refusal) ?? "")
                                      }))
    }
}
