import AuthzEngine
import AuthzLog
import AuthzModel
import AuthzWire
import Foundation
import Logging

/// Log mode (`authzd serve --log`, docs/scale-out.md): every change goes through a NATS
/// JetStream stream and every daemon applies the stream, in order, as a deterministic state
/// machine. Revision = stream sequence, recorded in the same LMDB transaction as the change,
/// so each message is applied exactly once across restarts and redeliveries.
///
/// Writers (`write`, `putKey`) check a change locally, publish it (one message, a unique id,
/// subject `<stream>.<tenant>` or `<stream>._system`), wait for JetStream's acknowledgement
/// and then for this daemon's applier to reach its sequence. The applier is one thread.
final class Replicator: @unchecked Sendable {  // its mutable state is touched only under `cond` (an NSCondition)
    let log: JetStreamLog
    let engine: Engine
    let keys: KeyTable
    let shard: TenantShard
    let logger: Logger
    /// How long a write may take to be acknowledged by the stream and applied here.
    let writeTimeout: Double
    /// The ring the log seals with at start, in case the store's is ever gone.
    private let initialSealer: LogSealer
    /// The key ring in use now: the store's, which `authzd keys rotate-data` (RotateSecrets)
    /// reloads while serving, so that messages are sealed with the new active key and opened
    /// with any key of the new ring without a restart.
    private var sealer: LogSealer { engine.logSealer ?? initialSealer }

    private let cond = NSCondition()
    /// Deterministic failures of applied messages, by sequence (bounded; writers read theirs
    /// right after the applier passes it).
    private var failures: [UInt64: AuthzError] = [:]
    private var failureOrder: [UInt64] = []
    private var stopped = false
    private var thread: Thread?
    private let exited = Latch()
    /// The last sequence whose outcome (failure recorded, keys applied) writers may read.
    private var appliedThrough: UInt64 = 0

    // Status, under `cond`.
    private var streamLast: UInt64 = 0
    private var startTarget: UInt64?
    private var caughtUp = false
    private var refusal: String?
    private var applyError: String?
    private var streamReplicas = 0

    /// Called by the applier with its status after messages and on idle ticks (metrics).
    var onStatus: ((Status) -> Void)?

    /// Message headers.
    static let kindHeader = "Authz-Kind", timeHeader = "Authz-Time", keyHeader = "Authz-Key-Id", idHeader = "Nats-Msg-Id"

    init(log: JetStreamLog, engine: Engine, keys: KeyTable, shard: TenantShard, writeTimeout: Double, logger: Logger) throws {
        guard let sealer = engine.logSealer else {
            throw AuthzError(.failedPrecondition, "log mode needs the data key ring (log messages are sealed with it)", field: "log")
        }
        self.log = log
        self.engine = engine
        self.keys = keys
        self.shard = shard
        self.writeTimeout = writeTimeout
        self.logger = logger
        self.initialSealer = sealer
    }

    /// Checks that this data directory was built from this stream and shard (recording them
    /// in an empty one). FAILED_PRECONDITION otherwise: its revisions would not be the
    /// stream's sequences.
    static func adopt(engine: Engine, stream: String, shard: TenantShard) throws {
        let recordedStream = try engine.setting("log.stream")
        let recordedShard = try engine.setting("log.shard")
        let revision = try engine.storedRevision()
        if recordedStream == nil {
            guard revision == 0 else {
                throw AuthzError(.failedPrecondition, "the data directory holds revision \(revision), written without a log: a log-mode daemon starts from an empty data directory (or a backup of a log-mode daemon) and takes everything from the stream; load existing data through it with authzctl import", field: "log")
            }
            try engine.setSetting("log.stream", stream)
            try engine.setSetting("log.shard", shard.description)
            return
        }
        guard recordedStream == stream else {
            throw AuthzError(.failedPrecondition, "the data directory was built from log stream \"\(recordedStream!)\", not \"\(stream)\": use an empty data directory for another stream", field: "log-stream")
        }
        guard recordedShard == shard.description else {
            throw AuthzError(.failedPrecondition, "the data directory was built for \(recordedShard ?? "all") tenants, not \(shard): a daemon changing shards starts from an empty data directory (it then catches up from the stream)", field: "log-shard")
        }
    }

    /// Starts the applier thread.
    func start() {
        appliedThrough = engine.revision
        let t = Thread { [self] in
            run()
            exited.signal()
        }
        t.name = "authzd-log-applier"
        thread = t
        t.start()
    }

    /// Stops the applier (it finishes the messages in hand; waits up to 5 s for it), then
    /// closes the connection.
    func stop() {
        cond.lock()
        stopped = true
        cond.broadcast()
        cond.unlock()
        if thread != nil { _ = exited.wait(timeout: .seconds(5)) }
        log.close()
    }

    private var isStopped: Bool {
        cond.lock(); defer { cond.unlock() }
        return stopped
    }

    // MARK: status

    /// What `/readyz`, ServerInfo and `/metrics` report.
    struct Status {
        var applied: UInt64
        var streamLast: UInt64
        var connected: Bool
        var caughtUp: Bool
        /// Why reads are refused (behind the stream's retention, ahead of the stream), or nil.
        var refusal: String?
        /// The last local failure that stalled the applier, or nil.
        var applyError: String?
        var lag: UInt64 { streamLast > applied ? streamLast - applied : 0 }
    }

    func status() -> Status {
        cond.lock(); defer { cond.unlock() }
        let applied = engine.revision
        return Status(applied: applied, streamLast: max(streamLast, applied), connected: log.isConnected,
                      caughtUp: caughtUp, refusal: refusal, applyError: applyError)
    }

    /// Non-nil when this replica must not answer reads: the reason, as an error.
    func readRefusal() -> AuthzError? {
        cond.lock(); defer { cond.unlock() }
        guard let r = refusal else { return nil }
        return AuthzError(.failedPrecondition, r, field: "log")
    }

    // MARK: writing

    /// The tenant a write operation concerns.
    static func tenant(of op: WriteOp) -> ID { op.tenantId }

    /// A Write (`keepTimestamps == false`: one tenant) or an import (split per tenant, each
    /// part atomic, in the order tenants first appear), through the log. Returns the revision
    /// of the last part. Errors: what the local check finds (before anything is published);
    /// FAILED_PRECONDITION for a tenant this daemon does not hold or a write that failed when
    /// applied (a racing writer got there first); UNAVAILABLE when the stream did not
    /// acknowledge within the write timeout; RESOURCE_EXHAUSTED for a message above the
    /// stream's size limit.
    func write(_ ops: [WriteOp], keepTimestamps: Bool, label: (Int) -> String) throws -> UInt64 {
        var groups: [(tenant: ID, indices: [Int])] = []
        var position: [ID: Int] = [:]
        for (i, op) in ops.enumerated() {
            let t = Replicator.tenant(of: op)
            if let p = position[t] { groups[p].indices.append(i) } else { position[t] = groups.count; groups.append((t, [i])) }
        }
        if groups.count > 1 && !keepTimestamps {
            throw AuthzError.invalid("write.ops", "in log mode one Write changes one tenant (these ops touch \(groups.count) tenants): send one Write per tenant")
        }
        for g in groups where !shard.holds(g.tenant) {
            throw notHeld(g.tenant)
        }
        if let refused = readRefusal() { throw refused }
        var revision: UInt64 = 0
        for g in groups {
            let part = g.indices.map { ops[$0] }
            let partLabel: (Int) -> String = { label(g.indices[$0]) }
            try engine.precheck(part, label: partLabel, keepTimestamps: keepTimestamps)
            let body = WireCodec.encodeRequest(WireRequest(requestId: 0, call: .success(.write(part))))
            revision = try publishAndWait(subject: "\(log.settings.stream).\(g.tenant)", kind: keepTimestamps ? "import" : "write",
                                          extraHeaders: [], body: body, label: partLabel)
        }
        return revision
    }

    /// Stores an API key record through the log (subject `<stream>._system`); returns once it
    /// is applied here.
    func putKey(_ k: ApiKey) throws {
        _ = try publishAndWait(subject: "\(log.settings.stream)._system", kind: "key",
                               extraHeaders: [(Replicator.keyHeader, k.id.description)], body: KeyStorage.encode(k), label: { _ in "key" })
    }

    /// FAILED_PRECONDITION naming the tenant and this daemon's shard.
    func notHeld(_ tenant: ID) -> AuthzError {
        AuthzError(.failedPrecondition, "tenant \(tenant) is not held by this daemon (it holds \(shard)): ask a daemon of that tenant's shard", field: "tenant_id")
    }

    private func publishAndWait(subject: String, kind: String, extraHeaders: [(String, String)], body: [UInt8],
                                label: (Int) -> String) throws -> UInt64 {
        let id = ID.random().description
        let time = String(Timestamp.now())
        let keyId = extraHeaders.first { $0.0 == Replicator.keyHeader }?.1 ?? ""
        let sealed = try sealer.seal(body, context: Replicator.sealContext(subject: subject, id: id, kind: kind, time: time, keyId: keyId))
        if log.settings.maxMessageBytes > 0, sealed.count > Int(log.settings.maxMessageBytes) {
            throw AuthzError(.resourceExhausted, "this change is \(sealed.count) bytes in the log, above its limit of \(log.settings.maxMessageBytes) (log-max-message-bytes): split it (authzctl import --chunk-commit --chunk-bytes N)", field: "log")
        }
        let headers = [(Replicator.kindHeader, kind), (Replicator.timeHeader, time)] + extraHeaders
        let deadline = Date().addingTimeInterval(writeTimeout)
        var sequence: UInt64 = 0
        var lastError: AuthzError?
        // Re-sent with the same id until acknowledged: a leader change stalls publishes for
        // seconds, and the stream's duplicate window makes a re-send that was stored count once.
        while sequence == 0 {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 {
                throw AuthzError(.unavailable, "the log did not acknowledge the change within \(Int(writeTimeout)) s (\(lastError?.message ?? "no answer")); its outcome is unknown: it may still be stored (message id \(id)) and then applied everywhere; read the records before writing them again", field: "log")
            }
            do {
                sequence = try log.publish(subject: subject, id: id, headers: headers, payload: sealed, timeoutMillis: Int64(min(left, 2) * 1000)).sequence
            } catch let e as AuthzError where e.code == .unavailable {
                // No responders (a stream leader being elected) comes back at once: pace re-sends.
                lastError = e
                Thread.sleep(forTimeInterval: min(log.isConnected ? 0.05 : 0.1, max(0, deadline.timeIntervalSinceNow)))
            }
        }
        cond.lock()
        defer { cond.unlock() }
        streamLast = max(streamLast, sequence)
        while appliedThrough < sequence {
            if !cond.wait(until: max(deadline, Date().addingTimeInterval(1))) && appliedThrough < sequence {
                throw AuthzError(.unavailable, "the change was stored in the log at revision \(sequence) but is not applied here yet (\(applyError ?? "the applier is behind")); it will be: read with min_revision \(sequence)", field: "log")
            }
        }
        if var failed = failures[sequence] {
            failed.message = "rejected when applied at revision \(sequence) (another write changed the state first): " + failed.message
            failed.code = .failedPrecondition
            throw failed
        }
        return sequence
    }

    // MARK: applying

    private func setStatus(_ body: (Replicator) -> Void) {
        cond.lock()
        body(self)
        cond.broadcast()
        cond.unlock()
    }

    private func run() {
        var announced: String?
        while !isStopped {
            do {
                let replicas = try log.ensureStream()
                if replicas != streamReplicas, replicas != log.settings.replicas {
                    logger.warning("log: the stream exists with other settings than this daemon's; it is kept as it is",
                                   metadata: ["log.stream": "\(log.settings.stream)", "stream.replicas": "\(replicas)", "log.replicas": "\(log.settings.replicas)"])
                }
                setStatus { $0.streamReplicas = replicas }
                let state = try log.state()
                let applied = engine.revision
                setStatus { r in
                    r.streamLast = state.last
                    if r.startTarget == nil { r.startTarget = state.last }
                }
                if applied > state.last {
                    let why = "this replica is at revision \(applied) but stream \(log.settings.stream) ends at \(state.last) (the stream was recreated or purged): rebuild this replica from an empty data directory"
                    setStatus { $0.refusal = why }
                    if announced != why { logger.critical("log: refusing reads", metadata: ["reason": "\(why)"]); announced = why }
                    sleep(for: 5)
                    continue
                }
                if applied < state.last && state.first > applied + 1 {
                    let why = "this replica is at revision \(applied) but stream \(log.settings.stream) now starts at \(state.first) (retention removed what it has not applied): restore a backup taken at revision \(state.first - 1) or later, or start from an empty data directory if the stream still holds sequence 1"
                    setStatus { $0.refusal = why }
                    if announced != why { logger.critical("log: refusing reads", metadata: ["reason": "\(why)"]); announced = why }
                    sleep(for: 5)
                    continue
                }
                setStatus { $0.refusal = nil }
                announced = nil
                try follow(from: applied + 1)
            } catch let e as AuthzError {
                if e.code == .unavailable {
                    logger.warning("log: waiting for the stream", metadata: ["error": "\(e.message)"])
                } else {
                    logger.error("log: applying stalled; retrying", metadata: ["error": "\(e.message)"])
                    setStatus { $0.applyError = e.message }
                }
                sleep(for: 1)
            } catch {
                logger.error("log: applying stalled; retrying", metadata: ["error": "\(error)"])
                setStatus { $0.applyError = "\(error)" }
                sleep(for: 1)
            }
        }
    }

    private func sleep(for seconds: Double) {
        cond.lock()
        defer { cond.unlock() }
        if !stopped { _ = cond.wait(until: Date().addingTimeInterval(seconds)) }
    }

    /// Applies messages from `start` until stopped or the subscription fails. Messages already
    /// delivered and waiting (the server's pending count says more follow) are applied together,
    /// up to 256 or 8 MiB, in one commit.
    private func follow(from start: UInt64) throws {
        let sub = try log.subscribe(from: start)
        defer { sub.close() }
        var idleSince = Date()
        let headers = [Replicator.kindHeader, Replicator.timeHeader, Replicator.keyHeader, Replicator.idHeader]
        while !isStopped {
            guard let first = try sub.next(timeoutMillis: 250, headers: headers) else {
                // Idle: refresh the stream's extent (lag, readiness) every second.
                if Date().timeIntervalSince(idleSince) >= 1 {
                    idleSince = Date()
                    onStatus?(status())
                    if let state = try? log.state() {
                        let applied = engine.revision
                        setStatus { r in
                            r.streamLast = state.last
                            if applied >= (r.startTarget ?? 0) { r.caughtUp = true }
                        }
                        if applied < state.last && state.first > applied + 1 { return }  // retention overtook us: the outer loop says so
                        if applied > state.last { return }
                    }
                }
                continue
            }
            var batch = [first]
            var bytes = first.payload.count
            var last = first
            while last.pending > 0, batch.count < 256, bytes < 8 << 20, let next = try sub.next(timeoutMillis: 5, headers: headers) {
                batch.append(next)
                bytes += next.payload.count
                last = next
            }
            guard try apply(batch) else { return }
            setStatus { r in
                r.streamLast = max(r.streamLast, last.sequence + last.pending)
                r.applyError = nil
                if last.pending == 0 && last.sequence >= (r.startTarget ?? 0) { r.caughtUp = true }
            }
            if last.pending == 0 || batch.count > 1 { onStatus?(status()) }
        }
    }

    /// Applies delivered messages in stream order, in one commit. False when a gap shows that
    /// retention removed messages not applied here (the outer loop then refuses reads).
    private func apply(_ messages: [LogMessage]) throws -> Bool {
        var changes: [(revision: UInt64, change: LoggedChange)] = []
        var failed: [UInt64: AuthzError] = [:]
        var keyChanges: [ApiKey] = []
        var expected = engine.revision + 1
        func flush() throws {
            guard let last = changes.last?.revision else { return }
            let results = try engine.applyLogged(changes)
            for (i, r) in results.enumerated() {
                if case .failure(let e) = r { failed[changes[i].revision] = e }
            }
            for k in keyChanges { keys.applied(k) }
            record(failed, through: last)
            changes = []
            keyChanges = []
            failed = [:]
        }
        for m in messages {
            if m.sequence < expected { continue }
            if m.sequence > expected {
                // Sequences missing: deleted by limits (the outer loop decides) or by hand
                // inside the stream (nothing to apply for them).
                try flush()
                logger.warning("log: sequence gap", metadata: ["applied": "\(expected - 1)", "next": "\(m.sequence)"])
                let state = try log.state()
                if state.first > expected { return false }
                try engine.advance(to: m.sequence - 1)
                record([:], through: m.sequence - 1)
            }
            let change: LoggedChange
            do {
                change = try decode(m)
            } catch let e as AuthzError where e.code == .invalidArgument {
                failed[m.sequence] = e
                change = .skip
            }
            if case .key(let k) = change { keyChanges.append(k) }
            changes.append((m.sequence, change))
            expected = m.sequence + 1
        }
        try flush()
        return true
    }

    /// What a message changes here. INVALID_ARGUMENT for a message no release could apply
    /// (every replica skips it alike); other errors (a key ring without its key, a kind from a
    /// newer release) are this replica's to fix and stall the applier.
    private func decode(_ m: LogMessage) throws -> LoggedChange {
        let prefix = log.settings.stream + "."
        guard m.subject.hasPrefix(prefix) else { return .skip }
        let suffix = String(m.subject.dropFirst(prefix.count))
        let kind = m.headers[Replicator.kindHeader] ?? ""
        let id = m.headers[Replicator.idHeader] ?? ""
        let timeText = m.headers[Replicator.timeHeader] ?? ""
        let keyText = m.headers[Replicator.keyHeader] ?? ""
        guard !kind.isEmpty else { throw AuthzError.invalid("log", "message \(m.sequence) on \(m.subject) is not an authzd change (no \(Replicator.kindHeader))") }
        guard let time = Int64(timeText) else { throw AuthzError.invalid("log", "message \(m.sequence) has no valid \(Replicator.timeHeader)") }
        // A replay (an old sealed message published again) is stored long after its sealed
        // time; the stream's own timestamp is the same on every replica, so all skip it alike.
        // Any Int64 may arrive in the header: the distance is computed without overflow.
        let window = log.settings.duplicateWindowSeconds.multipliedReportingOverflow(by: 1_000_000)
        let apart = m.storedAt.subtractingReportingOverflow(time)
        let outside = apart.overflow || apart.partialValue.magnitude > (window.overflow ? UInt64.max : window.partialValue.magnitude)
        if m.storedAt > 0 && outside {
            throw AuthzError.invalid("log", "message \(m.sequence) was sealed at \(Timestamp.format(time)) but stored at \(Timestamp.format(m.storedAt)), outside the \(log.settings.duplicateWindowSeconds) s duplicate window (a replay, or clocks too far apart)")
        }
        func open() throws -> [UInt8] {
            guard let sealedWith = LogSealer.keyId(of: m.payload) else {
                throw AuthzError.invalid("log", "message \(m.sequence) is not sealed")
            }
            guard sealer.knows(sealedWith) else {
                // This replica's ring lacks a key the writer had: this replica's to fix (stall).
                throw AuthzError(.dataLoss, "log message \(m.sequence) was sealed with key \"\(sealedWith)\", which is not in this daemon's key ring (every replica needs the same ring)", field: "log")
            }
            do {
                return try sealer.open(m.payload, context: Replicator.sealContext(subject: m.subject, id: id, kind: kind, time: timeText, keyId: keyText))
            } catch {
                throw AuthzError.invalid("log", "message \(m.sequence) fails authentication (altered, forged or moved)")
            }
        }
        switch kind {
        case "write", "import":
            guard let tenant = ID(suffix) else {
                throw AuthzError.invalid("log", "message \(m.sequence) is a write on subject \(m.subject), which names no tenant")
            }
            guard shard.holds(tenant) else { return .skip }
            let body = try open()
            let request = body.withUnsafeBytes {
                WireCodec.decodeRequest($0, limits: WireLimits(maxBatchChecks: 0, maxWriteOps: Int.max, maxListItems: Int.max))
            }
            guard case .success(.write(let ops)) = request.call else {
                throw AuthzError.invalid("log", "message \(m.sequence) is not a write this release can read")
            }
            for op in ops where Replicator.tenant(of: op) != tenant {
                throw AuthzError.invalid("log", "message \(m.sequence) on \(m.subject) changes another tenant")
            }
            return .write(ops, now: time, keepTimestamps: kind == "import")
        case "key":
            guard let keyId = ID(keyText) else {
                throw AuthzError.invalid("log", "key message \(m.sequence) names no key id")
            }
            let body = try open()
            guard let k = try? KeyStorage.decode(id: keyId, body) else { throw AuthzError.invalid("log", "key message \(m.sequence) is malformed") }
            return .key(k)
        default:
            throw AuthzError(.failedPrecondition, "log message \(m.sequence) is of kind \"\(kind)\", which this release does not know (written by a newer authzd?): upgrade this replica", field: "log")
        }
    }

    /// What a message's seal authenticates besides its body: subject, id and every header the
    /// applier reads, so that none can be changed or moved to another message.
    static func sealContext(subject: String, id: String, kind: String, time: String, keyId: String) -> String {
        "\(subject)/\(id)/\(kind)/\(time)/\(keyId)"
    }

    /// Publishes the outcome of applied messages, through sequence `through`, to the writers
    /// waiting for them (before they may read it: a writer never sees its revision applied
    /// without its failure).
    private func record(_ failed: [UInt64: AuthzError], through: UInt64) {
        cond.lock()
        appliedThrough = max(appliedThrough, through)
        for (sequence, e) in failed.sorted(by: { $0.key < $1.key }) {
            failures[sequence] = e
            failureOrder.append(sequence)
        }
        if failureOrder.count > 4096 {
            for s in failureOrder.prefix(1024) { failures.removeValue(forKey: s) }
            failureOrder.removeFirst(1024)
        }
        cond.broadcast()
        cond.unlock()
    }
}
