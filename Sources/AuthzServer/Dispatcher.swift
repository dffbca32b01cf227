import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Executes calls against the engine. Thread-safe; shared by every connection.
public final class Dispatcher: @unchecked Sendable {  // the `var`s are set while the server starts, before the first request, and only read afterwards
    public let engine: Engine
    let config: ServerConfig
    let logger: Logger
    let readers: NIOThreadPool
    let writer: NIOThreadPool
    let keys: KeyTable
    /// Background re-encryption of credential secrets (RotateSecrets).
    let rotator: SecretRotator
    let metrics = ServerMetrics()
    /// Whether metrics are exported (then checks read the clock for their latency).
    var metricsEnabled = false
    /// The decision log (`--decision-log`), written by its own service, or nil.
    var decisionLog: DecisionLog?
    /// The audit trail, when `audit-log` is set: committed writes, imports and key changes are
    /// recorded here after their commit; refused authentications by the connection handlers.
    var audit: AuditLog?
    /// The publisher of changed users (`--push`), or nil.
    var push: ChangePublisher?
    /// The user-event consumer (`--events`), or nil.
    var events: (any EventSource)?
    /// Log mode: the replicated log's writer and applier (set before serving), or nil.
    var replicator: Replicator?
    /// Open Watch streams, daemon-wide (bounded by `max-watchers`).
    let watchers: Slots
    /// Paged exports in progress (Export with `page_size`; `Commands/Export.swift`).
    let exports = ExportSessions()
    /// Chunked imports in progress (Import with `session`; `Commands/Import.swift`).
    let imports = ImportSessions()
    /// Set when a write failed for lack of space; cleared by the next successful write.
    private let storageFailure = NIOLockedValueBox<String?>(nil)
    public static let version = "0.1.0"

    init(engine: Engine, config: ServerConfig, logger: Logger) throws {
        self.engine = engine
        self.config = config
        self.logger = logger
        keys = try KeyTable(storage: engine.keyStorage)
        watchers = Slots(limit: config.maxWatchers)
        rotator = SecretRotator(secrets: engine.secrets, logger: logger, batchSize: config.secretRotationBatch,
                                pause: Double(config.secretRotationPauseMillis) / 1000)
        readers = NIOThreadPool(numberOfThreads: 2)
        // Log mode: the stream orders writes and one applier thread applies them, so writers
        // only check, publish and wait; several let publishes overlap the applier's commits.
        writer = NIOThreadPool(numberOfThreads: config.log == nil ? 1 : 8)
        readers.start()
        writer.start()
    }

    func shutdown() {
        try? readers.syncShutdownGracefully()
        try? writer.syncShutdownGracefully()
        closeExports()
        audit?.close()  // after the writer: every committed write's line is queued
    }

    /// Readiness: the index is built (it is, once a dispatcher exists) and the last write did
    /// not fail for lack of space.
    ///
    /// In log mode also: not ready while reads are refused (behind the stream's retention) or
    /// while catching up at start; ready but saying so when the log is unreachable (checks
    /// are answered from local state; writes are refused) or the applier is stalled.
    func ready() -> (Bool, String) {
        if let why = storageFailure.withLockedValue({ $0 }) { return (false, "not ready: \(why)") }
        if let r = replicator {
            let s = r.status()
            if let why = s.refusal { return (false, "not ready: \(why)") }
            if !s.caughtUp {
                // Unreachable since start: a replica with data serves it (a log outage must not
                // take every restarted sidecar down); an empty one has nothing to serve.
                if !s.connected && s.applied > 0 {
                    return (true, "ready at revision \(s.applied); degraded: the log has been unreachable since start: writes are refused, checks answer from local state, which may be behind")
                }
                return (false, s.connected ? "not ready: catching up from the log (applied \(s.applied) of \(s.streamLast))" : "not ready: the log is unreachable and this replica holds no data yet")
            }
            if let e = s.applyError { return (false, "not ready: applying the log is stalled at revision \(s.applied) (stream at \(s.streamLast)): \(e)") }
            var notes: [String] = []
            if !s.connected { notes.append("the log is unreachable: writes are refused, checks answer from local state") }
            let head = "ready at revision \(engine.revision) (log: applied \(s.applied), stream at \(s.streamLast), lag \(s.lag))"
            return (true, notes.isEmpty ? head : head + "; degraded: " + notes.joined(separator: "; "))
        }
        return (true, "ready at revision \(engine.revision)")
    }

    /// In log mode, the refusal for a read this daemon cannot answer: all reads while it is
    /// behind the stream's retention, and reads of a tenant outside its shard. Which calls are
    /// reads, of which tenants, each command says (`Command.readTenants`).
    func refuseRead(_ call: Call) -> AuthzError? {
        guard let r = replicator else { return nil }
        guard let tenants = Commands.command(for: call).readTenants(call) else { return nil }
        if let e = r.readRefusal() { return e }
        for t in tenants where !r.shard.holds(t) { return r.notHeld(t) }
        return nil
    }

    /// The lane `call` runs on (its command's `lane`).
    static func lane(_ call: Call) -> Lane {
        Commands.command(for: call).lane(call)
    }

    /// Closes every open paged export (daemon shutdown).
    func closeExports() { exports.closeAll() }

    /// Discards chunked imports and closes paged exports idle past `import-idle-timeout`
    /// (the server runs it every few seconds): a session whose caller went away frees its
    /// memory and its LMDB snapshot on time, not at the next import or export.
    func sweepSessions() {
        let idle = TimeAmount.seconds(Int64(config.importIdleTimeoutSeconds))
        imports.sweep(idle: idle)
        exports.sweep(idle: idle)
    }

    /// Forgets a chunked import (its connection closed, or a chunk failed) if `owner` started it.
    func dropImport(_ session: ID, owner: Principal) { imports.drop(session, owner: owner) }

    /// Marks the daemon unready when `e` is the store's lack of space (RESOURCE_EXHAUSTED not
    /// about the log, where a change too large is the caller's problem): for Write and a whole
    /// Import. Cleared by `clearStorageFailure`.
    func noteStorageFailure(_ e: AuthzError) {
        if e.code == .resourceExhausted, e.field != "log" { storageFailure.withLockedValue { $0 = e.message } }
    }

    /// A write succeeded: the store has space again.
    func clearStorageFailure() { storageFailure.withLockedValue { $0 = nil } }

    /// Runs `call` synchronously on the calling thread. Errors other than `AuthzError` become
    /// an opaque INTERNAL (logged, never echoed).
    ///
    /// Refuses (PERMISSION_DENIED, before anything runs) a request for credential secrets from
    /// a key that may not read them (`KeyTable.secretsDenied`).
    ///
    /// With the audit trail on, a committed Write, Import (its last chunk) or key change is
    /// queued to it, as `principal` from `peer`, after the commit and before the answer; the
    /// answer never waits for the line to reach the disk.
    func execute(_ call: Call, principal: Principal, peer: PeerInfo) -> Result<Reply, AuthzError> {
        if let denied = keys.secretsDenied(principal, call) { return .failure(denied) }
        if replicator != nil, let refused = refuseRead(call) { return .failure(refused) }
        do {
            return .success(try Commands.command(for: call).run(call, on: self, as: principal, from: peer))
        } catch let e as AuthzError {
            if e.code == .internal {
                logger.error("internal error", metadata: ["call": "\(call.name)", "error": "\(e.message)"])
                return .failure(AuthzError(.internal, "internal error; see the daemon's log"))
            }
            return .failure(e)
        } catch {
            logger.error("internal error", metadata: ["call": "\(call.name)", "error": "\(error)"])
            return .failure(AuthzError(.internal, "internal error; see the daemon's log"))
        }
    }

    /// Who the audit trail names for a call made as `principal` from `peer`.
    func actor(_ principal: Principal, _ peer: PeerInfo) -> AuditActor {
        AuditActor(principal, peer: peer, insecure: config.insecureNoAuth)
    }
}
