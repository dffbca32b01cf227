import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Where a call runs.
enum Lane {
    /// On the connection's event loop: checks and other index reads that never block.
    case inline
    /// On the reader pool: LMDB reads (explain, get, list, export) and O(users) listings.
    case reader
    /// On the single writer thread: LMDB write transactions, which block and fsync.
    case writer
    /// A stream of many replies (Watch), driven by the connection (`WatchStream`).
    case stream
}

/// Executes calls against the engine. Thread-safe; shared by every connection.
public final class Dispatcher: @unchecked Sendable {
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
    /// Set when a write failed for lack of space; cleared by the next successful write.
    private let storageFailure = NIOLockedValueBox<String?>(nil)
    public static let version = "0.1.0"

    init(engine: Engine, config: ServerConfig, logger: Logger) throws {
        self.engine = engine
        self.config = config
        self.logger = logger
        keys = try KeyTable(store: engine.store)
        watchers = Slots(limit: config.maxWatchers)
        rotator = SecretRotator(store: engine.store, logger: logger, batchSize: config.secretRotationBatch,
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
    /// behind the stream's retention, and reads of a tenant outside its shard.
    func refuseRead(_ call: Call) -> AuthzError? {
        guard let r = replicator else { return nil }
        let tenants: [ID]
        switch call {
        case .check(let c), .explain(let c): tenants = [c.tenantId]
        case .batchCheck(let items, _): tenants = items.compactMap { try? $0.get().tenantId }
        case .listUserPermissions(let t, _, _), .listPermissionUsers(let t, _, _, _, _, _), .list(_, let t, _, _, _): tenants = [t]
        case .get(let ref, _): tenants = [ref.tenantId]
        case .export(let t?, _), .exportPage(let t?, _, _, _): tenants = [t]
        case .export, .exportPage: tenants = []
        case .watch(let w): tenants = w.tenantId.map { [$0] } ?? []
        default: return nil
        }
        if let e = r.readRefusal() { return e }
        for t in tenants where !r.shard.holds(t) { return r.notHeld(t) }
        return nil
    }

    static func lane(_ call: Call) -> Lane {
        switch call {
        case .check, .batchCheck, .listUserPermissions, .serverInfo, .health, .hello, .listKeys: return .inline
        case .explain, .get, .list, .export, .exportPage, .listPermissionUsers: return .reader
        case .write, .importJSONL, .createKey, .revokeKey, .rotateSecrets: return .writer
        case .importChunk(_, _, _, let more): return more ? .reader : .writer
        case .watch: return .stream
        }
    }

    // MARK: paged exports

    /// A paged export in progress: its snapshot cursor, who started it, the page expected next.
    final class OpenExport {
        let owner: Principal
        let cursor: ExportCursor
        var page = 0
        var lastUsed = NIODeadline.now()
        var busy = false
        init(owner: Principal, cursor: ExportCursor) {
            self.owner = owner
            self.cursor = cursor
        }
    }

    private let exports = NIOLockedValueBox<[ID: OpenExport]>([:])
    /// Open paged exports (each holds an LMDB snapshot and a reader slot), one per caller.
    static let maxExports = 8

    /// Closes every open export (daemon shutdown).
    func closeExports() {
        let open = exports.withLockedValue { table -> [OpenExport] in
            defer { table.removeAll() }
            return Array(table.values)
        }
        for e in open { e.cursor.close() }
    }

    /// One page of a paged export. The first page (empty token) opens a snapshot; each answer
    /// names the next page (`<session>.<n>`), empty after the last. An idle export is closed
    /// after `importIdleTimeoutSeconds`. FAILED_PRECONDITION for an unknown or out-of-order token.
    private func exportPage(tenant: ID?, includeSecrets: Bool, pageSize: Int, token: String, principal: Principal) throws -> Reply {
        let idle = TimeAmount.seconds(Int64(config.importIdleTimeoutSeconds))
        var expired: [OpenExport] = []
        defer { for e in expired { e.cursor.close() } }
        let (session, entry): (ID, OpenExport)
        if token.isEmpty {
            let cursor = try engine.openExport(tenant: tenant, includeSecrets: includeSecrets)
            let id = ID.random()
            let e = OpenExport(owner: principal, cursor: cursor)
            e.busy = true
            do {
                try exports.withLockedValue { table in
                    let now = NIODeadline.now()
                    for (k, v) in table where !v.busy && now - v.lastUsed > idle { expired.append(v); table.removeValue(forKey: k) }
                    for (k, v) in table where v.owner == principal && !v.busy { expired.append(v); table.removeValue(forKey: k) }  // a caller's new export replaces its old one
                    guard table.count < Dispatcher.maxExports else {
                        throw AuthzError(.resourceExhausted, "\(Dispatcher.maxExports) paged exports are open; retry when one finishes", field: "export.page_token")
                    }
                    table[id] = e
                }
            } catch {
                cursor.close()
                throw error
            }
            (session, entry) = (id, e)
        } else {
            let parts = token.split(separator: ".")
            guard parts.count == 2, let id = ID(String(parts[0])), let n = Int(parts[1]) else {
                throw AuthzError.invalid("export.page_token", "is not a token this daemon issued")
            }
            let e = try exports.withLockedValue { table -> OpenExport in
                guard let e = table[id], e.owner == principal else {
                    throw AuthzError(.failedPrecondition, "export.page_token names no open export (finished, idle past its timeout, or the daemon restarted): start the export again", field: "export.page_token")
                }
                guard !e.busy, e.page == n else {
                    throw AuthzError(.failedPrecondition, "export.page_token is not the next page of its export (ask for pages one at a time, in order)", field: "export.page_token")
                }
                e.busy = true
                return e
            }
            (session, entry) = (id, e)
        }
        do {
            let bytes = try engine.nextPage(entry.cursor, records: pageSize)
            let done = entry.cursor.done
            exports.withLockedValue { table in
                entry.busy = false
                entry.page += 1
                entry.lastUsed = .now()
                if done { table.removeValue(forKey: session) }
            }
            return .exportPage(bytes, revision: entry.cursor.revision, nextPageToken: done ? "" : "\(session).\(entry.page)")
        } catch {
            exports.withLockedValue { _ = $0.removeValue(forKey: session) }
            entry.cursor.close()
            throw error
        }
    }

    // MARK: chunked imports

    /// One import being assembled: who started it, what is staged, when it was last fed.
    final class StagedImport {
        let owner: Principal
        var staging: ImportStaging
        var bytes = 0
        var lastChunk = NIODeadline.now()
        var busy = false
        init(owner: Principal, staging: ImportStaging) {
            self.owner = owner
            self.staging = staging
        }
    }

    private let imports = NIOLockedValueBox<[ID: StagedImport]>([:])
    /// At most this many chunked imports at once, each of at most `maxImportBytes`.
    static let maxImports = 4

    /// Forgets a chunked import (its connection closed, or a chunk failed) if `owner` started it.
    func dropImport(_ session: ID, owner: Principal) {
        imports.withLockedValue { table in
            if table[session]?.owner == owner { table.removeValue(forKey: session) }
        }
    }

    /// Stages one chunk (parsed and checked, nothing written) or, for the last, applies the whole
    /// import atomically. The session belongs to the principal that started it; a session idle
    /// past `importIdleTimeoutSeconds` is discarded. RESOURCE_EXHAUSTED past `maxImportBytes` or
    /// `maxImports`; FAILED_PRECONDITION for an unknown (discarded) session in the middle.
    private func importChunk(session: ID, bytes: [UInt8], firstLine: UInt64, more: Bool, principal: Principal, peer: PeerInfo) throws -> Reply {
        let idle = TimeAmount.seconds(Int64(config.importIdleTimeoutSeconds))
        let entry = try imports.withLockedValue { table -> StagedImport in
            let now = NIODeadline.now()
            for (k, v) in table where !v.busy && now - v.lastChunk > idle { table.removeValue(forKey: k) }
            if let e = table[session] {
                guard e.owner == principal else { throw AuthzError(.permissionDenied, "import.session \(session) was started by another caller", field: "import.session") }
                guard !e.busy else { throw AuthzError(.failedPrecondition, "import.session \(session) is still applying its previous chunk; send chunks one at a time", field: "import.session") }
                guard firstLine == 0 || firstLine == UInt64(e.staging.lastLine) + 1 else {
                    throw AuthzError(.failedPrecondition, "import.first_line \(firstLine) does not follow line \(e.staging.lastLine) of import.session \(session)", field: "import.first_line")
                }
                e.busy = true
                return e
            }
            guard firstLine <= 1 else {
                throw AuthzError(.failedPrecondition, "import.session \(session) is not in progress (discarded after a failed chunk, a disconnect or import-idle-timeout); nothing of it was applied: start the import again", field: "import.session")
            }
            // One chunked import per caller, and a few in all: one tenant cannot hold them all.
            if table.values.contains(where: { $0.owner == principal }) {
                throw AuthzError(.resourceExhausted, "this caller already has a chunked import in progress; finish it or let it time out (import-idle-timeout) first", field: "import.session")
            }
            guard table.count < Dispatcher.maxImports else {
                throw AuthzError(.resourceExhausted, "\(Dispatcher.maxImports) chunked imports are already in progress; retry when one finishes", field: "import.session")
            }
            let e = StagedImport(owner: principal, staging: ImportStaging(onlyTenant: principal.tenant))
            e.busy = true
            table[session] = e
            return e
        }
        defer { imports.withLockedValue { _ in entry.busy = false; entry.lastChunk = .now() } }
        // The budget is for all staged imports together: staging holds parsed records in memory.
        let staged = imports.withLockedValue { table -> Int in
            entry.bytes += bytes.count
            return table.values.reduce(0) { $0 + $1.bytes }
        }
        do {
            if staged > config.maxImportBytes {
                throw AuthzError(.resourceExhausted, "chunked imports in progress would stage more than max-import-bytes (\(config.maxImportBytes)); this one is discarded, nothing of it was applied (retry later, or use authzctl import --chunk-commit)", field: "import.jsonl")
            }
            try engine.stage(bytes, into: &entry.staging)
            if more { return .importResult(revision: 0, records: UInt64(entry.staging.records)) }
            dropImport(session, owner: principal)
            let r = try engine.commit(entry.staging)
            audit?.imported(records: r.records, revision: r.revision, tenants: entry.staging.tenants, who: actor(principal, peer), peer: peer)
            return .importResult(revision: r.revision, records: UInt64(r.records))
        } catch {
            // The owner's chunk failed: the whole import is void.
            dropImport(session, owner: principal)
            throw error
        }
    }

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
            return .success(try run(call, principal: principal, peer: peer))
        } catch let e as AuthzError {
            // Only the store's lack of space makes the daemon unready (not a change too large for the log).
            if e.code == .resourceExhausted, e.field != "log", case .write = call { storageFailure.withLockedValue { $0 = e.message } }
            if e.code == .resourceExhausted, e.field != "log", case .importJSONL = call { storageFailure.withLockedValue { $0 = e.message } }
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

    private func run(_ call: Call, principal: Principal, peer: PeerInfo) throws -> Reply {
        switch call {
        case .check(let c):
            return .check(try engine.check(tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope, minRevision: c.minRevision))
        case .batchCheck(let items, let minRevision):
            if items.count > config.maxBatchChecks {
                throw AuthzError.invalid("batch_check.checks", "must have at most \(config.maxBatchChecks) items (got \(items.count))")
            }
            var needed = minRevision
            for case .success(let c) in items { needed = max(needed, c.minRevision) }
            return try engine.withSnapshot { snapshot -> Result<Reply, AuthzError> in
                if needed > snapshot.revision { return .failure(Engine.notYetAt(needed, snapshot.revision)) }
                var out: [Result<Decision, AuthzError>] = []
                out.reserveCapacity(items.count)
                for item in items {
                    switch item {
                    case .success(let c): out.append(.success(snapshot.decide(tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope)))
                    case .failure(let e): out.append(.failure(e))
                    }
                }
                return .success(.batchCheck(out, revision: snapshot.revision))
            }.get()
        case .explain(let c):
            return .explain(try engine.explain(tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope, minRevision: c.minRevision))
        case .listUserPermissions(let t, let u, let minRevision):
            let r = try engine.permissions(tenant: t, user: u, minRevision: minRevision)
            return .userPermissions(reason: r.reason, permissions: r.permissions, revision: r.revision)
        case .listPermissionUsers(let t, let p, let s, let size, let after, let minRevision):
            let r = try engine.users(tenant: t, permission: p, scope: s, after: after, limit: size, minRevision: minRevision)
            return .permissionUsers(r.users, nextPageToken: r.more ? (r.users.last?.description ?? "") : "", revision: r.revision)
        case .write(let ops):
            if ops.count > config.maxWriteOps {
                throw AuthzError.invalid("write.ops", "must have at most \(config.maxWriteOps) operations (got \(ops.count))")
            }
            let started = NIODeadline.now()
            let revision = try engine.write(ops)
            audit?.write(ops, revision: revision, who: actor(principal, peer), peer: peer)
            metrics.writes.increment()
            metrics.writeLatency.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
            storageFailure.withLockedValue { $0 = nil }
            return .write(revision: revision)
        case .get(let ref, let secrets):
            return .get(try engine.get(ref, includeSecrets: secrets))
        case .list(let kind, let t, let size, let after, let secrets):
            let page = try engine.list(kind, tenant: t, after: after, limit: size + 1, includeSecrets: secrets)
            let more = page.count > size
            let items = Array(page.prefix(size))
            return .list(items, nextPageToken: more ? (items.last?.id.description ?? "") : "")
        case .importJSONL(let bytes):
            var staging = ImportStaging(onlyTenant: principal.tenant)
            try engine.stage(bytes, into: &staging)
            let r = try engine.commit(staging)
            audit?.imported(records: r.records, revision: r.revision, tenants: staging.tenants, who: actor(principal, peer), peer: peer)
            return .importResult(revision: r.revision, records: UInt64(r.records))
        case .importChunk(let session, let bytes, let firstLine, let more):
            return try importChunk(session: session, bytes: bytes, firstLine: firstLine, more: more, principal: principal, peer: peer)
        case .exportPage(let t, let secrets, let size, let token):
            return try exportPage(tenant: t ?? principal.tenant, includeSecrets: secrets, pageSize: size, token: token, principal: principal)
        case .export(let t, let secrets):
            let r = try engine.exportJSONL(tenant: t ?? principal.tenant, includeSecrets: secrets)
            return .export(r.bytes, revision: r.revision)
        case .serverInfo:
            let info = try engine.info()
            var log: LogStatus?
            if let r = replicator {
                let s = r.status()
                log = LogStatus(stream: r.log.settings.stream, applied: s.applied, streamLast: s.streamLast, lag: s.lag,
                                connected: s.connected, shard: r.shard.description, refusal: s.refusal ?? "")
            }
            return .serverInfo(ServerInfo(version: Dispatcher.version, revision: info.revision, protocolVersion: protocolVersion,
                                          counts: info.counts.mapValues { UInt64($0) }, log: log))
        case .health:
            return .health(serving: true)
        case .hello:
            return .hello(role: principal.role, tenantId: principal.tenant, keyId: nil)
        case .createKey(let t, let role, let name, let expires):
            let (k, secret) = try keys.create(tenant: t, role: role, name: name, expiresAt: expires, creator: principal)
            audit?.keyCreated(k, who: actor(principal, peer), peer: peer)
            logger.notice("api key created", metadata: ["key.id": "\(k.id)", "key.role": "\(k.role)", "key.tenant": "\(k.tenantId)",
                                                        "key.created_by": "\(k.createdBy == .zero ? "local" : k.createdBy.description)",
                                                        "key.may_see_secrets": "\(k.maySeeSecrets)"])
            return .createKey(k, secret: secret)
        case .listKeys(let t):
            return .listKeys(keys.list(tenant: t))
        case .revokeKey(let id, let expires):
            let k = try keys.revoke(id, expiresAt: expires)
            if expires == 0 {
                audit?.keyRevoked(k, who: actor(principal, peer), peer: peer)
            } else {
                audit?.keyExpirySet(k, who: actor(principal, peer), peer: peer)
            }
            logger.notice(expires == 0 ? "api key revoked" : "api key expiry set", metadata: ["key.id": "\(id)"])
            return .revokeKey(k)
        case .rotateSecrets:
            return .rotateSecrets(try rotator.rotate())
        case .watch:
            throw AuthzError.internalError("Watch is a stream: the connection runs it (WatchStream)")
        }
    }
}
