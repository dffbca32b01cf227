import AuthzEngine
import AuthzLog
import AuthzModel
import AuthzWire
import Foundation
import Logging
import Metrics

/// Where `--push` publishes (docs/watch.md, "Push").
public struct PushSettings: Sendable, Equatable {
    /// `nats://H:P,...` servers.
    public var servers: [String]
    /// Messages go to `SUBJECT.<tenant_id>`, in a stream over `SUBJECT.>`.
    public var subject: String

    /// Parses `nats://H1:P1[,H2:P2...]/SUBJECT`. INVALID_ARGUMENT naming `push`.
    public static func parse(_ text: String) throws -> PushSettings {
        guard text.hasPrefix("nats://") else { throw AuthzError.invalid("push", "must be nats://HOST:PORT[,HOST:PORT...]/SUBJECT (got \"\(text)\")") }
        let rest = text.dropFirst("nats://".count)
        guard let slash = rest.firstIndex(of: "/") else { throw AuthzError.invalid("push", "names no subject: nats://HOST:PORT/SUBJECT") }
        let subject = String(rest[rest.index(after: slash)...])
        guard !subject.isEmpty, !subject.contains(" "), !subject.contains(">"), !subject.contains("*"),
              !subject.hasPrefix("."), !subject.hasSuffix("."), !subject.contains("..") else {
            throw AuthzError.invalid("push", "\"\(subject)\" is not a NATS subject without wildcards")
        }
        return PushSettings(servers: try LogSettings.parseServers(String(rest[..<slash]), field: "push"), subject: subject)
    }
}

/// Publishes, for each committed revision and tenant, which users' effective permissions may
/// have changed (`authz.events.v1.PermissionsChanged`), so that token-minting gateways refresh
/// exactly those users.
///
/// Follows the store's change log on one thread, from the position it recorded in the store
/// (`text.push.position`): a revision is recorded only after all its messages were
/// acknowledged by JetStream, so a daemon killed halfway publishes that revision again at
/// start (at least once; the message ids `push-<tenant>-<revision>-<part>` let JetStream drop
/// the repeat, and let every replica of a fleet publish without doubling the messages).
final class ChangePublisher: @unchecked Sendable {  // its mutable state is touched only under `lock` (an NSCondition)
    /// Users a message names at most.
    static let maxUsersPerMessage = 10_000

    let settings: PushSettings
    let engine: Engine
    let logger: Logger
    private let log: JetStreamLog
    private let lock = NSCondition()
    private var stopped = false
    private var finished = false
    private let published = Counter(label: "authzd_push_messages_total")
    private let lagGauge = Gauge(label: "authzd_push_lag")

    init(settings: PushSettings, engine: Engine, replicas: Int, logger: Logger) throws {
        self.settings = settings
        self.engine = engine
        self.logger = logger
        var l = LogSettings(servers: settings.servers)
        l.replicas = replicas
        log = try JetStreamLog(settings: l, name: "authzd-push")
    }

    func start() {
        let t = Thread { [self] in
            run()
            lock.lock()
            finished = true
            lock.broadcast()
            lock.unlock()
        }
        t.name = "authzd-push"
        t.start()
    }

    /// Stops the thread and waits (up to 10 s: a publish in flight times out in 5) for it.
    func stop() {
        lock.lock()
        stopped = true
        lock.broadcast()
        let until = Date().addingTimeInterval(10)
        while !finished && Date() < until { _ = lock.wait(until: until) }
        lock.unlock()
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    /// A registration with the engine's revision waiters, made before a read so that a commit
    /// during the read is not missed.
    final class Wake: @unchecked Sendable {  // under the publisher's `lock`
        let engine: Engine
        var token: UInt64?
        var fired = false
        init(engine: Engine) { self.engine = engine }
        func cancel() { if let t = token { engine.cancelRevisionWait(t) } }
    }

    private func armWake() -> Wake {
        let w = Wake(engine: engine)
        let lock = self.lock
        w.token = engine.whenRevisionAdvances {
            lock.lock()
            w.fired = true
            lock.broadcast()
            lock.unlock()
        }
        return w
    }

    /// Sleeps until `wake` fires (a revision was published since it was armed), `seconds`
    /// pass, or `stop`.
    private func wait(_ wake: Wake, seconds: Double) {
        lock.lock()
        let until = Date().addingTimeInterval(seconds)
        while !wake.fired && !stopped && Date() < until { _ = lock.wait(until: until) }
        lock.unlock()
        wake.cancel()
    }

    private func position() throws -> UInt64 {
        if let text = try engine.setting("push.position"), let r = UInt64(text) { return r }
        // First start with --push: from now on (history is for Watch).
        let now = try engine.storedRevision()
        try engine.setSetting("push.position", String(now))
        return now
    }

    private func run() {
        var delay = 0.5
        // The wake armed by the pass in progress: withdrawn when that pass fails, so that
        // retries while NATS is down leave no waiter behind in the engine's bounded table.
        var armed: Wake?
        while !isStopped {
            do {
                var at = try position()
                var recorded = at
                while !isStopped {
                    let floor = try engine.changeFloor()
                    if at < floor {
                        // Changes were trimmed before they were published (push was off, or
                        // stalled longer than the change log's retention): every tenant may
                        // have changed.
                        logger.error("push: changes up to revision \(floor) were trimmed unpublished; telling every tenant that all its users may have changed",
                                     metadata: ["push.position": "\(at)"])
                        let tenants = try engine.tenantIDs()
                        for t in tenants { try publish(tenant: t, revision: floor, affected: .all) }
                        at = floor
                        try engine.setSetting("push.position", String(at))
                    }
                    // Reads whole revisions (a large one over several pages), gathering each
                    // tenant's impact, then publishes every revision the reading completed.
                    var pending: [(revision: UInt64, impact: [ID: Engine.ChangeImpact], order: [ID])] = []
                    // Registered before the read: a commit while it runs wakes the wait below.
                    let wake = armWake()
                    armed = wake
                    var page = try engine.changes(after: .after(revision: at), limit: 4096, includeBeforeImages: true, where: { _, _ in true })
                    while true {
                        // A page's before-images come apart from its changes: merge them by revision.
                        for c in (page.changes + page.beforeImages).sorted(by: { $0.revision < $1.revision }) {
                            // Pages follow key order, so revisions never go back.
                            if pending.last?.revision != c.revision { pending.append((c.revision, [:], [])) }
                            let k = pending.count - 1
                            let t = c.entity.tenantId
                            if pending[k].impact[t] == nil { pending[k].order.append(t) }
                            pending[k].impact[t, default: Engine.ChangeImpact()].add(c.entity)
                        }
                        if page.atEnd || isStopped { break }
                        // Stop at a revision boundary when one is reached: publish what is whole.
                        if pending.count > 1 && page.complete >= pending[pending.count - 2].revision { break }
                        page = try engine.changes(after: page.position, limit: 4096, includeBeforeImages: true, where: { _, _ in true })
                    }
                    for p in pending where p.revision <= page.complete {
                        for t in p.order {
                            // `p.order` lists the keys of `p.impact` (added together above).
                            guard let impact = p.impact[t] else { continue }
                            try publish(tenant: t, revision: p.revision, affected: try engine.affectedUsers(impact, tenant: t))
                        }
                        at = p.revision
                    }
                    if page.atEnd && page.complete > at { at = page.complete }
                    // One write of the position per page of revisions, not per revision: a
                    // daemon killed before it publishes them again (deduplicated by message id).
                    if at != recorded {
                        try engine.setSetting("push.position", String(at))
                        recorded = at
                    }
                    lagGauge.record(Int64(engine.revision) - Int64(at))
                    delay = 0.5
                    if page.atEnd { wait(wake, seconds: 5) } else { wake.cancel() }
                }
            } catch {
                armed?.cancel()
                armed = nil
                if isStopped { break }
                logger.warning("push: cannot publish; retrying", metadata: ["error": "\(error)"])
                lock.lock()
                _ = lock.wait(until: Date().addingTimeInterval(delay))
                lock.unlock()
                delay = min(delay * 2, 10)
            }
        }
        log.close()
    }

    private func publish(tenant: ID, revision: UInt64, affected: Engine.AffectedUsers) throws {
        let subject = settings.subject + "." + tenant.description
        var parts: [(payload: [UInt8], id: String)] = []
        switch affected {
        case .all:
            parts.append((EventCodec.encodePermissionsChanged(tenant: tenant, users: [], revision: revision, allUsers: true), "push-\(tenant)-\(revision)-all"))
        case .some(let users):
            if users.isEmpty { return }
            let sorted = users.sorted()
            var i = 0
            while i < sorted.count {
                let chunk = Array(sorted[i..<min(i + ChangePublisher.maxUsersPerMessage, sorted.count)])
                parts.append((EventCodec.encodePermissionsChanged(tenant: tenant, users: chunk, revision: revision), "push-\(tenant)-\(revision)-\(parts.count)"))
                i += chunk.count
            }
        }
        for p in parts {
            _ = try log.publishCreatingStream(subject: subject, id: p.id, headers: [], payload: p.payload, timeoutMillis: 5000,
                                              createStream: "authzd-push", streamSubjects: settings.subject + ".>")
            published.increment()
        }
    }
}
