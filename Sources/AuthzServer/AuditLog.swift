import AuthzModel
import Foundation
import Logging
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Why an authentication was refused, as the audit trail's `auth_refused.reason` names it.
enum AuthRefusalReason: String, Sendable {
    /// The presented text is not `azk_<32 lowercase hex>_<64 lowercase hex>` (no key id known).
    case malformedKey = "malformed_key"
    /// An unknown key id, or a known one with a wrong secret: one reason for both, as on the
    /// wire, so the trail never tells the two apart either.
    case invalidKey = "invalid_key"
    /// The key's secret matched but its expiry has passed.
    case expiredKey = "expired_key"
    /// The key's secret matched but it was revoked.
    case revokedKey = "revoked_key"
    /// A call that needs a principal came from a connection that presented no key.
    case noKey = "no_key"
    /// An unauthenticated connection sent a frame that is not a Request envelope.
    case malformedRequest = "malformed_request"
}

/// What the daemon knows of a connection's other end, for the audit trail's `peer` and `who`.
struct PeerInfo: Sendable, Equatable {
    /// `"unix"` for a Unix-socket peer, `"HOST:PORT"` (`"[V6]:PORT"`) for TCP, `"unknown"` when
    /// the socket reports no address.
    var address: String
    /// The Unix peer's uid (`SO_PEERCRED`) once it has been read; nil on TCP.
    var uid: UInt32?

    /// A peer of which nothing is known (tests, and calls made before a connection's address is read).
    static let unknown = PeerInfo(address: "unknown", uid: nil)

    /// A peer at `address` (`"unix"`, `"HOST:PORT"`), with its uid when known.
    init(address: String, uid: UInt32?) {
        self.address = address
        self.uid = uid
    }

    /// The peer at `remote`: `"unix"` when `isUnix`, else the TCP address without its
    /// SocketAddress decoration.
    init(remote: SocketAddress?, isUnix: Bool) {
        uid = nil
        if isUnix {
            address = "unix"
            return
        }
        switch remote {
        case .v4?: address = "\(remote?.ipAddress ?? ""):\(remote?.port ?? 0)"
        case .v6?: address = "[\(remote?.ipAddress ?? "")]:\(remote?.port ?? 0)"
        case .unixDomainSocket?: address = "unix"
        default: address = "unknown"
        }
    }
}

/// Who did something the audit trail records: the `who` object of every line.
///
/// A TLS client certificate is written `{"kind":"certificate","identity":"spiffe://…",
/// "role":…,"tenant_id":…}` (the URI SAN the identity map matched). Readers of the trail must
/// accept unknown kinds.
enum AuditActor: Equatable, Sendable {
    /// A verified API key: `{"kind":"key","key_id":…,"role":…,"tenant_id":…}` (no `tenant_id`
    /// for operator and gateway keys, which have none).
    case key(id: ID, role: KeyRole, tenant: ID)
    /// A Unix peer by uid: `{"kind":"uid","uid":…,"role":…,"tenant_id":…}` when it is on the
    /// allowlist; `{"kind":"uid","uid":…}` when it is not (then only in `auth_refused`).
    case uid(UInt32, role: KeyRole?, tenant: ID?)
    /// The daemon's own uid or root on the Unix socket: `{"kind":"superuser","uid":…}`, the uid
    /// omitted when it could not be read.
    case superuser(uid: UInt32?)
    /// Anyone, under `--insecure-no-auth`: `{"kind":"insecure"}`.
    case insecure
    /// Nobody known (a TCP caller before a key verified): `{"kind":"unauthenticated"}`.
    case unauthenticated
    /// A TLS client certificate mapped to a role.
    case certificate(String, role: KeyRole, tenant: ID)
    /// The user-event consumer (`--events`): `{"kind":"events","subject":…}`.
    case events(subject: String)

    /// The actor of a request made as `principal` on a connection to `peer`; `insecure` when
    /// the daemon runs with `--insecure-no-auth` (its superusers are then anyone).
    init(_ principal: Principal, peer: PeerInfo, insecure: Bool) {
        switch principal {
        case .key(let id, let role, let tenant): self = .key(id: id, role: role, tenant: tenant)
        case .uid(let uid, let role, let tenant): self = .uid(uid, role: role, tenant: tenant)
        case .superuser: self = insecure ? .insecure : .superuser(uid: peer.uid)
        case .unauthenticated: self = peer.uid.map { .uid($0, role: nil, tenant: nil) } ?? .unauthenticated
        case .certificate(let identity, let role, let tenant): self = .certificate(identity, role: role, tenant: tenant)
        }
    }

    /// Appends the `who` object. Allocates only the output's growth.
    func write(into s: inout String) {
        switch self {
        case .key(let id, let role, let tenant):
            s += "{\"kind\":\"key\",\"key_id\":\"\(id)\",\"role\":\"\(role.name)\""
            if tenant != .zero { s += ",\"tenant_id\":\"\(tenant)\"" }
            s += "}"
        case .uid(let uid, let role, let tenant):
            s += "{\"kind\":\"uid\",\"uid\":\(uid)"
            if let role { s += ",\"role\":\"\(role.name)\"" }
            if let tenant { s += ",\"tenant_id\":\"\(tenant)\"" }
            s += "}"
        case .superuser(let uid):
            s += uid.map { "{\"kind\":\"superuser\",\"uid\":\($0)}" } ?? "{\"kind\":\"superuser\"}"
        case .insecure:
            s += "{\"kind\":\"insecure\"}"
        case .unauthenticated:
            s += "{\"kind\":\"unauthenticated\"}"
        case .certificate(let identity, let role, let tenant):
            s += "{\"kind\":\"certificate\",\"identity\":"
            JSONWriter.writeString(identity, into: &s)
            s += ",\"role\":\"\(role.name)\""
            if tenant != .zero { s += ",\"tenant_id\":\"\(tenant)\"" }
            s += "}"
        case .events(let subject):
            s += "{\"kind\":\"events\",\"subject\":"
            JSONWriter.writeString(subject, into: &s)
            s += "}"
        }
    }
}

/// The audit trail: an append-only JSON Lines file of who changed what and who was refused
/// (docs/security.md, "Audit trail").
///
/// Every line has `time` (RFC 3339, milliseconds, UTC), `event`, `who` (`AuditActor`) and
/// `peer`; the events are `write`, `import`, `key_created`, `key_revoked`, `key_expiry_set`,
/// `key_expired` and `auth_refused`. Lines hold kinds, ids, roles, revisions and reasons, never a
/// field value of a record (names, emails, tokens, metadata), never a key's secret or its hash.
///
/// Never blocks its callers on disk: a line is formatted on the caller's thread and appended to
/// a bounded in-memory queue under a lock; a dedicated thread writes the queue and fsyncs it
/// every `syncMillis`, or sooner once `batchLines` lines wait. When the queue is full (lines or
/// bytes) the line is dropped and counted (`onDropped`), and the next line that is written
/// carries `"dropped_before":N`, so a gap is visible in the file itself. Lines lost to a failed
/// write (a full disk) are counted and reported the same way, and the partial write is cut off.
///
/// Not part of any commit: a write is acknowledged without waiting for its line, so a crash can
/// lose the lines of the last `syncMillis` (the batch not yet fsynced).
///
/// Rotation by size: before a line would take the file past `maxBytes`, the file is fsynced and
/// renamed `PATH.1` (older ones shift up to `PATH.<keep>`; the oldest is deleted), a new file is
/// created mode 0600 and the directory is fsynced. A file exceeds `maxBytes` only when a single
/// line does.
final class AuditLog: @unchecked Sendable {  // the queue and writer state are touched only under `cond`; the hooks are set before start
    /// Where and how the trail is written.
    struct Settings: Sendable {
        /// The file; rotated files are `path.1` (newest) … `path.<keep>` (oldest).
        var path: String
        /// A file is rotated before it would grow past this many bytes.
        var maxBytes = 100 << 20
        /// Rotated files kept (at least 1).
        var keep = 10
        /// The writer thread writes and fsyncs what is queued this often.
        var syncMillis = 200
        /// It does so sooner when this many lines are queued.
        var batchLines = 1000
        /// Most lines queued; beyond, lines are dropped.
        var capacity = 65_536
        /// Most bytes queued (a Write of 100,000 operations makes one line of about 15 MB);
        /// beyond, lines are dropped. A longer line is still taken when nothing else is queued,
        /// so that a Write of more operations (a raised `max-write-ops`) is never always lost.
        var maxQueuedBytes = 64 << 20

        /// The defaults above, for the file at `path`.
        init(path: String) { self.path = path }
    }

    /// One queued line: its text without the closing brace, and the lines dropped just before it.
    private struct Pending {
        var body: String
        var droppedBefore: Int
    }

    let settings: Settings
    private let logger: Logger
    private let onWritten: (Int) -> Void
    private let onDropped: (Int) -> Void

    // Shared with the writer thread, under `cond`.
    private let cond = NSCondition()
    private var queue: [Pending] = []
    private var queuedBytes = 0
    private var droppedPending = 0
    private var stopping = false
    private var writerExited = false
    private var syncRequested: UInt64 = 0
    private var syncDone: UInt64 = 0
    /// Keys whose expiry has been recorded (`key_expired`, once per key id and daemon run).
    private var expiredRecorded: Set<ID> = []

    // The writer thread's own (and `init`'s before it starts, `close`'s after it ends).
    private var fd: Int32 = -1
    private var size = 0
    /// Lines lost to failed writes, not yet reported in a written line's `dropped_before`.
    private var lost = 0
    private var lastFailureLogged: Int64 = 0
    private var thread: Thread?

    /// Opens (creating 0600) or appends to `settings.path` and starts the writer thread.
    /// Throws `ConfigError` naming the path when the file cannot be opened, is not a regular
    /// file, or is writable by group or others (anyone who can write it can forge or erase lines).
    /// `onWritten(n)` is called after n lines were written and fsynced; `onDropped(n)` when n
    /// lines were dropped (queue full, or a failed write). Both are called from any thread.
    init(settings: Settings, logger: Logger, onWritten: @escaping (Int) -> Void = { _ in }, onDropped: @escaping (Int) -> Void = { _ in }) throws {
        var s = settings
        s.keep = max(1, s.keep)
        s.maxBytes = max(1, s.maxBytes)
        s.syncMillis = max(1, s.syncMillis)
        s.batchLines = max(1, s.batchLines)
        self.settings = s
        self.logger = logger
        self.onWritten = onWritten
        self.onDropped = onDropped
        let f = open(s.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard f >= 0 else { throw ConfigError("cannot open the audit log \(s.path): \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(f, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(f)
            throw ConfigError("the audit log \(s.path) is not a regular file")
        }
        guard st.st_mode & 0o022 == 0 else {
            Glibc.close(f)
            throw ConfigError("the audit log \(s.path) is writable by group or others (mode \(String(st.st_mode & 0o777, radix: 8))): whoever can write it can forge or erase lines; chmod 600 \(s.path)")
        }
        fd = f
        size = Int(st.st_size)
        let t = Thread { [self] in writerLoop() }
        t.name = "authzd-audit"
        thread = t
        t.start()
    }

    deinit { close() }

    // MARK: events

    /// A committed Write: its tenants, each operation's kind, record kind, id and tenant, and
    /// the revision it committed. Never a field value.
    func write(_ ops: [WriteOp], revision: UInt64, who: AuditActor, peer: PeerInfo) {
        var tenants: [ID] = []
        var seen = Set<ID>()
        var list = ""
        list.reserveCapacity(ops.count * 140)
        for (i, op) in ops.enumerated() {
            let (name, kind, id, tenant): (String, EntityKind, ID, ID)
            switch op {
            case .upsert(let e): (name, kind, id, tenant) = ("upsert", e.kind, e.id, e.tenantId)
            case .upsertIfNewer(let e): (name, kind, id, tenant) = ("upsert_if_newer", e.kind, e.id, e.tenantId)
            case .deactivate(let r): (name, kind, id, tenant) = ("deactivate", r.kind, r.id, r.tenantId)
            case .activate(let r): (name, kind, id, tenant) = ("activate", r.kind, r.id, r.tenantId)
            }
            if seen.insert(tenant).inserted { tenants.append(tenant) }
            list += i == 0 ? "{" : ",{"
            list += "\"op\":\"\(name)\",\"kind\":\"\(kind.name)\",\"id\":\"\(id)\",\"tenant_id\":\"\(tenant)\"}"
        }
        record("write", who: who, peer: peer) { s in
            s += ",\"tenants\":"
            AuditLog.writeIDs(tenants, into: &s)
            s += ",\"ops\":[" + list + "],\"revision\":\(revision)"
        }
    }

    /// A committed Import (whole, or one `--chunk-commit` chunk): records, revision, tenants.
    func imported(records: Int, revision: UInt64, tenants: [ID], who: AuditActor, peer: PeerInfo) {
        record("import", who: who, peer: peer) { s in
            s += ",\"records\":\(records),\"revision\":\(revision),\"tenants\":"
            AuditLog.writeIDs(tenants, into: &s)
        }
    }

    /// A key was created: its id, role, tenant, whether it may read secrets and its expiry.
    /// Never its secret, its hash or its name.
    func keyCreated(_ k: ApiKey, who: AuditActor, peer: PeerInfo) {
        record("key_created", who: who, peer: peer) { s in
            AuditLog.writeKey(k, into: &s)
            s += ",\"may_read_secrets\":\(k.maySeeSecrets)"
            if k.expiresAt != 0 { s += ",\"expires_at\":\"\(AuditLog.format(k.expiresAt))\"" }
        }
    }

    /// A key was revoked now.
    func keyRevoked(_ k: ApiKey, who: AuditActor, peer: PeerInfo) {
        record("key_revoked", who: who, peer: peer) { s in
            AuditLog.writeKey(k, into: &s)
            s += ",\"revoked_at\":\"\(AuditLog.format(k.revokedAt))\""
        }
    }

    /// A key's expiry was set (or moved).
    func keyExpirySet(_ k: ApiKey, who: AuditActor, peer: PeerInfo) {
        record("key_expiry_set", who: who, peer: peer) { s in
            AuditLog.writeKey(k, into: &s)
            s += ",\"expires_at\":\"\(AuditLog.format(k.expiresAt))\""
        }
    }

    /// A refused authentication on `listener` (`"binary"` or `"gateway"`): the reason and, when
    /// the presented key was well-formed, its id — never the presented text. `closing` when the
    /// refusal closes the connection (too many failures). A refusal because a key has expired
    /// also records `key_expired` for that key, the first time in this daemon's run.
    func authRefused(_ reason: AuthRefusalReason, keyId: ID?, key: ApiKey?, who: AuditActor, peer: PeerInfo,
                     listener: String, closing: Bool = false) {
        if reason == .expiredKey, let k = key {
            cond.lock()
            let first = expiredRecorded.insert(k.id).inserted
            cond.unlock()
            if first {
                record("key_expired", who: who, peer: peer) { s in
                    AuditLog.writeKey(k, into: &s)
                    s += ",\"expired_at\":\"\(AuditLog.format(k.expiresAt))\""
                }
            }
        }
        record("auth_refused", who: who, peer: peer) { s in
            s += ",\"listener\":"
            JSONWriter.writeString(listener, into: &s)
            s += ",\"reason\":\"\(reason.rawValue)\""
            if let keyId { s += ",\"key_id\":\"\(keyId)\"" }
            if closing { s += ",\"closing\":true" }
        }
    }

    /// A TLS client refused on `listener`: `reason` is `unmapped_certificate` (it verified but
    /// its URI SANs, listed, map to no identity) or `tls_handshake_failed` (untrusted, expired
    /// or no certificate where one is required; `detail` is the TLS library's reason).
    func tlsRefused(reason: String, uris: [String], detail: String?, peer: PeerInfo, listener: String) {
        record("auth_refused", who: .unauthenticated, peer: peer) { s in
            s += ",\"listener\":"
            JSONWriter.writeString(listener, into: &s)
            s += ",\"reason\":"
            JSONWriter.writeString(reason, into: &s)
            if !uris.isEmpty {
                s += ",\"certificate_uris\":["
                for (i, u) in uris.enumerated() {
                    if i > 0 { s += "," }
                    JSONWriter.writeString(u, into: &s)
                }
                s += "]"
            }
            if let detail {
                s += ",\"detail\":"
                JSONWriter.writeString(detail, into: &s)
            }
        }
    }

    /// The same for an `AuthRefusal`.
    func authRefused(_ r: AuthRefusal, who: AuditActor, peer: PeerInfo, listener: String, closing: Bool = false) {
        authRefused(r.reason, keyId: r.keyId, key: r.key, who: who, peer: peer, listener: listener, closing: closing)
    }

    // MARK: queue

    /// Formats a line (`fields` appends `,"name":value` members) and queues it, or drops and
    /// counts it when the queue is full or the log is closed. Never waits for the disk.
    func record(_ event: String, who: AuditActor, peer: PeerInfo, time: Int64 = Timestamp.now(), _ fields: (inout String) -> Void) {
        var s = "{\"time\":\"\(AuditLog.format(time))\",\"event\":\"\(event)\",\"who\":"
        who.write(into: &s)
        s += ",\"peer\":"
        JSONWriter.writeString(peer.address, into: &s)
        fields(&s)
        let bytes = s.utf8.count
        cond.lock()
        let accepted = !stopping && queue.count < settings.capacity && (queuedBytes == 0 || queuedBytes + bytes <= settings.maxQueuedBytes)
        if accepted {
            queue.append(Pending(body: s, droppedBefore: droppedPending))
            droppedPending = 0
            queuedBytes += bytes
            if queue.count >= settings.batchLines { cond.broadcast() }
        } else {
            droppedPending += 1
        }
        cond.unlock()
        if !accepted { onDropped(1) }
    }

    /// Waits until every line queued before the call is written and fsynced (or lost to a write
    /// error). For tests and shutdown; the request path never calls it.
    func sync() {
        cond.lock()
        syncRequested += 1
        let ticket = syncRequested
        cond.broadcast()
        while syncDone < ticket && !writerExited { cond.wait() }
        cond.unlock()
    }

    /// Writes what is queued, fsyncs, stops the writer thread and closes the file. Lines
    /// recorded afterwards are dropped and counted. Idempotent.
    func close() {
        cond.lock()
        stopping = true
        cond.broadcast()
        while thread != nil && !writerExited { cond.wait() }
        cond.unlock()
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }

    // MARK: writer thread

    private func writerLoop() {
        let interval = TimeInterval(settings.syncMillis) / 1000
        while true {
            cond.lock()
            let deadline = Date(timeIntervalSinceNow: interval)
            while !stopping && queue.count < settings.batchLines && syncRequested <= syncDone {
                if !cond.wait(until: deadline) { break }
            }
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            queuedBytes = 0
            let stop = stopping
            let ticket = syncRequested
            cond.unlock()
            if !batch.isEmpty { write(batch) }
            cond.lock()
            syncDone = max(syncDone, ticket)
            if stop { writerExited = true }
            cond.broadcast()
            cond.unlock()
            if stop { return }
        }
    }

    /// Writes a batch, rotating before a line would take the file past `maxBytes`, and fsyncs.
    private func write(_ batch: [Pending]) {
        var buffer: [UInt8] = []
        var lines = 0
        var reported = 0
        func flush() {
            guard !buffer.isEmpty else { return }
            if fd < 0 { reopen() }
            var ok = fd >= 0
            if ok {
                ok = buffer.withUnsafeBytes { raw -> Bool in
                    var off = 0
                    while off < raw.count {
                        let n = Glibc.write(fd, raw.baseAddress! + off, raw.count - off)
                        if n < 0 && errno == EINTR { continue }
                        if n <= 0 { return false }
                        off += n
                    }
                    return true
                } && fsync(fd) == 0
            }
            if ok {
                size += buffer.count
                onWritten(lines)
            } else {
                let why = String(cString: strerror(errno))
                if fd >= 0 { _ = ftruncate(fd, off_t(size)) }  // no partial line stays behind
                lost += reported + lines
                onDropped(lines)
                failed("audit lines lost: cannot write the audit log", why, lines)
            }
            buffer.removeAll(keepingCapacity: true)
            lines = 0
            reported = 0
        }
        for p in batch {
            var text = p.body
            let dropped = p.droppedBefore + lost
            if dropped > 0 { text += ",\"dropped_before\":\(dropped)" }
            lost = 0
            reported += dropped
            text += "}\n"
            let n = text.utf8.count
            if size + buffer.count > 0 && size + buffer.count + n > settings.maxBytes {
                flush()
                rotate()
            }
            buffer.append(contentsOf: text.utf8)
            lines += 1
            if buffer.count >= 1 << 20 { flush() }
        }
        flush()
    }

    /// Renames the file to `path.1` (shifting older ones, deleting the oldest), opens a new
    /// file 0600 and fsyncs the directory. On failure the old file is kept and written to.
    private func rotate() {
        let path = settings.path
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        unlink("\(path).\(settings.keep)")
        for i in stride(from: settings.keep - 1, through: 1, by: -1) { rename("\(path).\(i)", "\(path).\(i + 1)") }
        if rename(path, "\(path).1") != 0 {
            failed("cannot rotate the audit log; appending to it", String(cString: strerror(errno)), 0)
        }
        reopen()
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if d >= 0 {
            _ = fsync(d)
            Glibc.close(d)
        }
    }

    /// Opens (creating 0600) the file again after a rotation or a failure; `fd` stays -1 when
    /// it cannot, and the next batch tries again.
    private func reopen() {
        let f = open(settings.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard f >= 0 else { return failed("cannot open the audit log", String(cString: strerror(errno)), 0) }
        var st = stat()
        size = fstat(f, &st) == 0 ? Int(st.st_size) : 0
        fd = f
    }

    /// Logs a failure of the writer at most every 10 s (a full disk fails every batch).
    private func failed(_ what: String, _ why: String, _ lines: Int) {
        let now = Timestamp.now()
        guard now - lastFailureLogged > 10_000_000 else { return }
        lastFailureLogged = now
        logger.error("\(what)", metadata: ["audit.path": "\(settings.path)", "error": "\(why)", "audit.lines_lost": "\(lines)"])
    }

    // MARK: formatting

    /// RFC 3339 in UTC with milliseconds: `2026-11-29T21:03:00.123Z`.
    static func format(_ micros: Int64) -> String {
        let full = Timestamp.format(micros)  // …:00.123456Z
        return String(full.dropLast(4)) + "Z"
    }

    /// `["id",…]`.
    private static func writeIDs(_ ids: [ID], into s: inout String) {
        s += "["
        for (i, id) in ids.enumerated() { s += i == 0 ? "\"\(id)\"" : ",\"\(id)\"" }
        s += "]"
    }

    /// `,"key_id":…,"role":…[,"tenant_id":…]`.
    private static func writeKey(_ k: ApiKey, into s: inout String) {
        s += ",\"key_id\":\"\(k.id)\",\"role\":\"\(k.role.name)\""
        if k.tenantId != .zero { s += ",\"tenant_id\":\"\(k.tenantId)\"" }
    }
}
