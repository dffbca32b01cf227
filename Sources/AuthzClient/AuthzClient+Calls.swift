import AuthzModel
import AuthzWire
import NIOConcurrencyHelpers
import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The typed API: one method per call of the protocol (docs/protocol.md), each returning the
/// call's result as Swift values. Each takes an optional `timeout`, the call's deadline (nil:
/// `configuration.defaultTimeout`), and throws only `AuthzError` (see `AuthzClient`): among them
/// INTERNAL with `field == AuthzClient.unexpectedReplyField` when the daemon answers with the
/// result of another call.
extension AuthzClient {
    // MARK: decisions

    /// Whether `user` holds `permission` at `scope` in `tenant`, evaluated at revision
    /// `minRevision` or later. An unknown or inactive tenant, user or permission is a deny with
    /// its reason, not an error; a malformed request (empty permission) is INVALID_ARGUMENT.
    public func check(tenant: ID, user: ID, permission: String, scope: Scope, minRevision: UInt64 = 0,
                      timeout: TimeAmount? = nil) async throws -> Decision {
        try await expect(.check(CheckCall(tenantId: tenant, userId: user, permission: permission, scope: scope, minRevision: minRevision)),
                         timeout: timeout) { if case .check(let d) = $0 { d } else { nil } }
    }

    /// Many checks in one request, at most the daemon's `max-batch-checks` (10,000 by default).
    /// The results are in the order of `checks`; an item the daemon refused carries its own
    /// error while the others are answered. `minRevision` applies to every item.
    public func batchCheck(_ checks: [CheckCall], minRevision: UInt64 = 0, timeout: TimeAmount? = nil) async throws -> [Result<Decision, AuthzError>] {
        try await expect(.batchCheck(checks.map { .success($0) }, minRevision: minRevision), timeout: timeout) {
            if case .batchCheck(let r, _) = $0 { r } else { nil }
        }
    }

    /// The decision of `check` with what grants it: the role binding, the role chain and the
    /// permission binding (docs/protocol.md). Evaluated from the store, slower than `check`.
    public func explain(tenant: ID, user: ID, permission: String, scope: Scope, timeout: TimeAmount? = nil) async throws -> Explanation {
        try await expect(.explain(CheckCall(tenantId: tenant, userId: user, permission: permission, scope: scope)), timeout: timeout) {
            if case .explain(let e) = $0 { e } else { nil }
        }
    }

    /// Every permission `user` holds in `tenant`, each with the highest scope held, at revision
    /// `minRevision` or later. `reason` is `.granted` when the user was found active; otherwise
    /// it says why the list is empty (unknown user, inactive tenant, …). `revision` is the
    /// revision the list was read at.
    public func userPermissions(tenant: ID, user: ID, minRevision: UInt64 = 0, timeout: TimeAmount? = nil) async throws
        -> (reason: Reason, permissions: [(name: String, scope: Scope)], revision: UInt64) {
        try await expect(.listUserPermissions(tenantId: tenant, userId: user, minRevision: minRevision), timeout: timeout) {
            if case .userPermissions(let reason, let list, let revision) = $0 { (reason, list.map { (name: $0.0, scope: $0.1) }, revision) } else { nil }
        }
    }

    /// One page of the users holding `permission` at `scope` (or above) in `tenant`, sorted by
    /// id, starting after `after` (nil: from the first). `pageSize` 0 asks for the daemon's
    /// default (1000, also its maximum). `next` is the `after` of the following page, nil on the
    /// last; `revision` the revision the page was read at.
    public func permissionUsers(tenant: ID, permission: String, scope: Scope, pageSize: Int = 0, after: ID? = nil,
                                minRevision: UInt64 = 0, timeout: TimeAmount? = nil) async throws -> (users: [ID], next: ID?, revision: UInt64) {
        let call = Call.listPermissionUsers(tenantId: tenant, permission: permission, scope: scope, pageSize: pageSize, after: after, minRevision: minRevision)
        let (users, token, revision) = try await expect(call, timeout: timeout) {
            if case .permissionUsers(let users, let token, let revision) = $0 { (users, token, revision) } else { nil }
        }
        return (users, try AuthzClient.nextPage(token, of: call), revision)
    }

    // MARK: records

    /// Applies `ops` atomically, in one transaction, and returns the revision it created. The
    /// whole batch is checked against the state it leaves; on any error nothing is applied
    /// (docs/protocol.md, "Writes", lists the codes).
    @discardableResult
    public func write(_ ops: [WriteOp], timeout: TimeAmount? = nil) async throws -> UInt64 {
        try await expect(.write(ops), timeout: timeout) { if case .write(let rev) = $0 { rev } else { nil } }
    }

    /// Soft-deletes the record `ref` names (`is_active = false`); returns the new revision.
    /// NOT_FOUND when there is no such record. A `write` of one `.deactivate`.
    @discardableResult
    public func deactivate(_ ref: RecordRef, timeout: TimeAmount? = nil) async throws -> UInt64 {
        try await write([.deactivate(ref)], timeout: timeout)
    }

    /// Re-activates the record `ref` names; returns the new revision. NOT_FOUND when there is no
    /// such record. A `write` of one `.activate`.
    @discardableResult
    public func activate(_ ref: RecordRef, timeout: TimeAmount? = nil) async throws -> UInt64 {
        try await write([.activate(ref)], timeout: timeout)
    }

    /// The record `ref` names, active or not; NOT_FOUND when there is none. Credential secrets
    /// are redacted unless `includeSecrets` (and the caller may read them).
    public func get(_ ref: RecordRef, includeSecrets: Bool = false, timeout: TimeAmount? = nil) async throws -> Entity {
        try await expect(.get(ref, includeSecrets: includeSecrets), timeout: timeout) { if case .get(let e) = $0 { e } else { nil } }
    }

    /// One page of the records of `kind` in `tenant` (`.zero` for tenants), by id, starting after
    /// `after` (nil: from the first). `pageSize` 0 asks for the daemon's default (100; at most
    /// 1000). `next` is the `after` of the following page, nil on the last. Secrets are
    /// redacted unless `includeSecrets`.
    public func list(_ kind: EntityKind, tenant: ID, pageSize: Int = 0, after: ID? = nil, includeSecrets: Bool = false,
                     timeout: TimeAmount? = nil) async throws -> (items: [Entity], next: ID?) {
        let call = Call.list(kind, tenantId: tenant, pageSize: pageSize, after: after, includeSecrets: includeSecrets)
        let (items, token) = try await expect(call, timeout: timeout) { if case .list(let items, let token) = $0 { (items, token) } else { nil } }
        return (items, try AuthzClient.nextPage(token, of: call))
    }

    /// A page token as the `after` of the next page: nil for the empty token of the last page;
    /// the unexpected-reply error when it is not an id.
    private static func nextPage(_ token: String, of call: Call) throws -> ID? {
        if token.isEmpty { return nil }
        guard let id = ID(token) else {
            throw AuthzClient.unexpectedReply(to: call.kind, "next_page_token \"\(token)\" is not an id")
        }
        return id
    }

    // MARK: bulk

    /// Imports JSON Lines (the spec's bulk format) in one request, atomically; returns the
    /// revision created and the records imported. Bounded by the daemon's frame size (16 MiB by
    /// default): use `importChunked` for anything larger. A bad line is an error naming it, and
    /// then nothing is applied.
    public func importJSONL(_ jsonl: [UInt8], timeout: TimeAmount = .seconds(600)) async throws -> (revision: UInt64, records: UInt64) {
        try await expect(.importJSONL(jsonl), timeout: timeout) { if case .importResult(let rev, let n) = $0 { (rev, n) } else { nil } }
    }

    /// Sends one chunk of a chunked import under `session` (a UUID the caller picks),
    /// `firstLine` being the 1-based number of its first line in the whole input. With `more`
    /// the daemon stages it and answers revision 0 and the records staged so far; the chunk
    /// without `more` applies everything staged as one write. The building block of
    /// `importChunked`; the session rules (one at a time per caller, discarded on a bad line,
    /// a disconnect or the idle timeout) are in docs/protocol.md.
    public func importChunk(session: ID, jsonl: [UInt8], firstLine: UInt64, more: Bool,
                            timeout: TimeAmount = .seconds(600)) async throws -> (revision: UInt64, records: UInt64) {
        try await expect(.importChunk(session: session, jsonl: jsonl, firstLine: firstLine, more: more), timeout: timeout) {
            if case .importResult(let rev, let n) = $0 { (rev, n) } else { nil }
        }
    }

    /// Splits JSON Lines into chunks of at most `chunkBytes` that end at a line boundary (a
    /// single longer line is a chunk of its own). Returns each chunk's byte range and the number
    /// of its first line. Pure: sends nothing.
    public static func chunks(of jsonl: [UInt8], chunkBytes: Int) -> [(range: Range<Int>, firstLine: Int)] {
        var out: [(Range<Int>, Int)] = []
        jsonl.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return }
            // The position just after the next newline at or after `from` (the end if none).
            func afterNewline(from: Int) -> Int {
                guard from < b.count, let p = memchr(base + from, 0x0A, b.count - from) else { return b.count }
                return UnsafePointer(p.assumingMemoryBound(to: UInt8.self)) - base + 1
            }
            var start = 0, line = 1
            while start < b.count {
                var end = min(b.count, start + chunkBytes)
                if end < b.count {
                    // Back up to just after the last newline in the window, or run to the next one.
                    var cut = end
                    while cut > start, b[cut - 1] != 0x0A { cut -= 1 }
                    end = cut > start ? cut : afterNewline(from: end)
                }
                out.append((start..<end, line))
                var at = start
                while at < end {
                    at = afterNewline(from: at)
                    if at <= end && b[at - 1] == 0x0A { line += 1 }
                }
                start = end
            }
        }
        return out
    }

    /// Imports JSON Lines of any size atomically: sent in chunks of at most `chunkBytes` under
    /// one import session, staged by the daemon and applied as one write with the last chunk
    /// (nothing is applied if any line is bad, the connection drops or the daemon restarts).
    /// Line numbers in errors count from the start of `jsonl`. `progress` gets the bytes sent.
    public func importChunked(_ jsonl: [UInt8], chunkBytes: Int = 4 << 20, timeout: TimeAmount = .seconds(600),
                              progress: ((Int) -> Void)? = nil) async throws -> (revision: UInt64, records: UInt64) {
        let parts = AuthzClient.chunks(of: jsonl, chunkBytes: chunkBytes)
        if parts.count <= 1 {
            let result = try await importJSONL(jsonl, timeout: timeout)
            progress?(jsonl.count)
            return result
        }
        let session = ID.random()
        var result: (revision: UInt64, records: UInt64) = (0, 0)
        for (i, part) in parts.enumerated() {
            result = try await importChunk(session: session, jsonl: Array(jsonl[part.range]), firstLine: UInt64(part.firstLine),
                                           more: i < parts.count - 1, timeout: timeout)
            progress?(part.range.upperBound)
        }
        return result
    }

    /// `importChunked` from a chunk reader: constant memory however large the file. One chunk
    /// is one import call; more are one session applied atomically with the last. `progress`
    /// gets the reader's bytes consumed. Also throws the reader's file errors.
    public func importChunked(_ reader: JSONLChunkReader, timeout: TimeAmount = .seconds(600),
                              progress: ((Int) -> Void)? = nil) async throws -> (revision: UInt64, records: UInt64) {
        guard var current = try reader.next() else { return try await importJSONL([], timeout: timeout) }
        var following = try reader.next()
        if following == nil {
            let result = try await importJSONL(current.bytes, timeout: timeout)
            progress?(reader.consumed)
            return result
        }
        let session = ID.random()
        while true {
            let result = try await importChunk(session: session, jsonl: current.bytes, firstLine: UInt64(current.firstLine),
                                               more: following != nil, timeout: timeout)
            progress?(reader.consumed - (following?.bytes.count ?? 0))
            guard let f = following else { return result }
            current = f
            following = try reader.next()
        }
    }

    /// Exports the records of `tenant` (nil: every tenant the caller may see) as JSON Lines in
    /// one response, with the revision they were read at. Bounded by the frame size: use
    /// `exportPaged` for large exports. Secrets are redacted unless `includeSecrets`.
    public func export(tenant: ID?, includeSecrets: Bool = false, timeout: TimeAmount = .seconds(600)) async throws -> (jsonl: [UInt8], revision: UInt64) {
        try await expect(.export(tenantId: tenant, includeSecrets: includeSecrets), timeout: timeout) {
            if case .export(let bytes, let revision) = $0 { (bytes, revision) } else { nil }
        }
    }

    /// One page of a paged export: `pageSize` records (at most 100,000) after the page
    /// `pageToken` names ("" to start one). `nextPageToken` is empty after the last page. Every
    /// page of one export is read from one snapshot (one `revision`); pages are asked one at a
    /// time, in order (docs/protocol.md: an unknown or replayed token is FAILED_PRECONDITION, a
    /// snapshot lost to a map resize ABORTED).
    public func exportPage(tenant: ID?, includeSecrets: Bool = false, pageSize: Int, pageToken: String,
                           timeout: TimeAmount = .seconds(600)) async throws -> (jsonl: [UInt8], revision: UInt64, nextPageToken: String) {
        try await expect(.exportPage(tenantId: tenant, includeSecrets: includeSecrets, pageSize: pageSize, pageToken: pageToken), timeout: timeout) {
            switch $0 {
            case .exportPage(let bytes, let revision, let next): (bytes, revision, next)
            case .export(let bytes, let revision): (bytes, revision, "")
            default: nil
            }
        }
    }

    /// Exports in pages of `pageSize` records, all read from one snapshot of the daemon (one
    /// revision), handing each page to `page` as it arrives: memory is one page on both sides.
    /// Returns the revision the export was read at. Also throws what `page` throws.
    @discardableResult
    public func exportPaged(tenant: ID?, includeSecrets: Bool, pageSize: Int = 10_000, timeout: TimeAmount = .seconds(600),
                            page: ([UInt8]) throws -> Void) async throws -> UInt64 {
        var token = ""
        repeat {
            let (bytes, revision, next) = try await exportPage(tenant: tenant, includeSecrets: includeSecrets, pageSize: pageSize,
                                                               pageToken: token, timeout: timeout)
            try page(bytes)
            if next.isEmpty { return revision }
            token = next
        } while true
    }

    // MARK: the daemon

    /// The daemon's version, revision, protocol version, record counts and, in log mode, its
    /// place in the replicated log.
    public func serverInfo(timeout: TimeAmount? = nil) async throws -> ServerInfo {
        try await expect(.serverInfo, timeout: timeout) { if case .serverInfo(let i) = $0 { i } else { nil } }
    }

    /// Whether the daemon serves (`true` when it answers at all). Needs no key.
    public func health(timeout: TimeAmount? = nil) async throws -> Bool {
        try await expect(.health, timeout: timeout) { if case .health(let serving) = $0 { serving } else { nil } }
    }

    /// Reloads the daemon's key ring and re-encrypts credential secrets to its active key in the
    /// background; asked again while that runs, reports progress. Superuser only
    /// (PERMISSION_DENIED for every key; docs/security.md).
    public func rotateSecrets(timeout: TimeAmount? = nil) async throws -> SecretRotationStatus {
        try await expect(.rotateSecrets, timeout: timeout) { if case .rotateSecrets(let s) = $0 { s } else { nil } }
    }

    // MARK: API keys (operators and the daemon's uid)

    /// Creates an API key of `role` (bound to `tenant` for checker and admin keys, none for
    /// operator and gateway keys), labelled `name`, expiring at `expiresAt` (microseconds since
    /// the epoch; 0: never). Returns its record and its secret, which the daemon never shows
    /// again (it stores only a hash).
    public func createKey(tenant: ID?, role: KeyRole, name: String = "", expiresAt: Int64 = 0,
                          timeout: TimeAmount? = nil) async throws -> (key: ApiKey, secret: String) {
        try await expect(.createKey(tenantId: tenant, role: role, name: name, expiresAt: expiresAt), timeout: timeout) {
            if case .createKey(let key, let secret) = $0 { (key, secret) } else { nil }
        }
    }

    /// The API keys (of `tenant`, or every key when nil), by id, never with their secrets or
    /// hashes.
    public func listKeys(tenant: ID? = nil, timeout: TimeAmount? = nil) async throws -> [ApiKey] {
        try await expect(.listKeys(tenantId: tenant), timeout: timeout) { if case .listKeys(let keys) = $0 { keys } else { nil } }
    }

    /// Revokes the key `id` now (`expiresAt` 0), or sets it to expire at `expiresAt`
    /// (microseconds since the epoch); returns its record as updated. Connections using it fail
    /// their next request with UNAUTHENTICATED once it is no longer valid.
    public func revokeKey(_ id: ID, expiresAt: Int64 = 0, timeout: TimeAmount? = nil) async throws -> ApiKey {
        try await expect(.revokeKey(id: id, expiresAt: expiresAt), timeout: timeout) { if case .revokeKey(let key) = $0 { key } else { nil } }
    }

    // MARK: changes

    /// Watches committed changes (docs/watch.md): every change after `call.fromRevision` (or
    /// after the daemon's revision now), then new ones as they commit, in commit order, as
    /// frames of changes. Runs on a connection of its own, closed when the sequence ends or
    /// its consumer stops iterating. The sequence throws the error that ended the stream
    /// (OUT_OF_RANGE: no longer kept; RESOURCE_EXHAUSTED: read too slowly; UNAVAILABLE: the
    /// daemon stopped or the connection broke; INTERNAL, the unexpected-reply error: a frame
    /// that is not a Watch result); resume with a new watch from the last
    /// `WatchBatch.revision` received: nothing is missed (a revision may come twice).
    /// Frames the consumer has not taken yet are buffered in memory. No deadline.
    public func watch(_ call: WatchCall) -> AsyncThrowingStream<WatchBatch, Error> {
        AsyncThrowingStream { continuation in
            let endpoint = self.endpoint
            // Set before connecting: a consumer that stops first still gets the connection closed.
            let state = NIOLockedValueBox<(ended: Bool, channel: Channel?)>((false, nil))
            continuation.onTermination = { _ in
                let ch = state.withLockedValue { s -> Channel? in
                    s.ended = true
                    return s.channel
                }
                ch?.close(promise: nil)
            }
            connectDedicated().whenComplete { result in
                switch result {
                case .failure(let error):
                    continuation.finish(throwing: (error as? AuthzError) ?? AuthzError(.unavailable, "cannot connect to authzd at \(endpoint): \(error)"))
                case .success(let c):
                    let ended = state.withLockedValue { s -> Bool in
                        s.channel = c.channel
                        return s.ended
                    }
                    if ended { return c.channel.close(promise: nil) }
                    c.channel.eventLoop.execute {
                        c.handler.value.stream(.watch(call), channel: c.channel) { frame in
                            switch frame {
                            case .success(.watch(let batch)): continuation.yield(batch)
                            case .success(let other): continuation.finish(throwing: AuthzClient.unexpectedReply(to: .watch, "a \(other.kind.name) result"))
                            case .failure(let e): continuation.finish(throwing: e)
                            }
                        }
                    }
                }
            }
        }
    }
}
