import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire

/// ServerInfo: version, revision, counts and, in log mode, the log's status; on the event loop.
/// Operator keys (and the superuser) only.
enum ServerInfoCommand: Command {
    static let kind = CallKind.serverInfo

    static func lane(_ call: Call) -> Lane { .inline }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? { caller.operatorOnly(call) }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        guard case .serverInfo = call else { throw mismatch(call) }
        let info = try d.engine.info()
        var log: LogStatus?
        if let r = d.replicator {
            let s = r.status()
            log = LogStatus(stream: r.log.settings.stream, applied: s.applied, streamLast: s.streamLast, lag: s.lag,
                            connected: s.connected, shard: r.shard.description, refusal: s.refusal ?? "")
        }
        return .serverInfo(ServerInfo(version: Dispatcher.version, revision: info.revision, protocolVersion: protocolVersion,
                                      counts: info.counts.mapValues { UInt64($0) }, log: log))
    }
}
