import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire
import NIOConcurrencyHelpers
import NIOCore

/// Import: JSON Lines applied as one write. Whole (`Call.importJSONL`, on the writer thread),
/// or in chunks under a session (`Call.importChunk`: chunks with `more` are staged on the
/// reader pool, the last applies everything on the writer thread; `ImportSessions`). Admin keys
/// only (each line's tenant is checked after parsing: the staging is bound to the key's
/// tenant). Committed imports are audited; a whole import that fails for lack of space makes
/// the daemon unready until a write succeeds.
enum ImportCommand: Command {
    static let kind = CallKind.importJSONL

    static func lane(_ call: Call) -> Lane {
        if case .importChunk(_, _, _, true) = call { return .reader }
        return .writer
    }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        switch caller.role {
        case .admin: return nil  // each line's tenant is checked after parsing (ImportStaging.onlyTenant)
        case .checker, .operator, .gateway: return caller.refused(call)
        }
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        switch call {
        case .importJSONL(let bytes):
            do {
                var staging = ImportStaging(onlyTenant: principal.tenant)
                try d.engine.stage(bytes, into: &staging)
                let r = try d.engine.commit(staging)
                d.audit?.imported(records: r.records, revision: r.revision, tenants: staging.tenants, who: d.actor(principal, peer), peer: peer)
                return .importResult(revision: r.revision, records: UInt64(r.records))
            } catch let e as AuthzError {
                d.noteStorageFailure(e)
                throw e
            }
        case .importChunk(let session, let bytes, let firstLine, let more):
            return try d.imports.chunk(session: session, bytes: bytes, firstLine: firstLine, more: more, principal: principal, peer: peer, on: d)
        default:
            throw mismatch(call)
        }
    }
}

/// The chunked imports in progress, daemon-wide: at most `maxImports`, one per caller, staging
/// together at most `max-import-bytes`. Thread-safe (one lock, held for table updates only,
/// never while parsing or committing).
final class ImportSessions: @unchecked Sendable {  // every StagedImport is reached through `table`'s lock; `busy` keeps one call on it at a time
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

    private let table = NIOLockedValueBox<[ID: StagedImport]>([:])
    /// At most this many chunked imports at once, each of at most `maxImportBytes`.
    static let maxImports = 4

    /// Chunked imports in progress (tests and diagnostics).
    var count: Int { table.withLockedValue { $0.count } }

    /// Discards every import idle past `idle` (none of its chunks running): the timeout holds
    /// even when no other chunk arrives to notice it (`Dispatcher.sweepSessions`).
    func sweep(idle: TimeAmount) {
        let now = NIODeadline.now()
        table.withLockedValue { table in
            for (k, v) in table where !v.busy && now - v.lastChunk > idle { table.removeValue(forKey: k) }
        }
    }

    /// Forgets a chunked import (its connection closed, or a chunk failed) if `owner` started it.
    func drop(_ session: ID, owner: Principal) {
        table.withLockedValue { table in
            if table[session]?.owner == owner { table.removeValue(forKey: session) }
        }
    }

    /// Stages one chunk (parsed and checked, nothing written) or, for the last, applies the whole
    /// import atomically. The session belongs to the principal that started it; a session idle
    /// past `importIdleTimeoutSeconds` is discarded. RESOURCE_EXHAUSTED past `maxImportBytes` or
    /// `maxImports`; FAILED_PRECONDITION for an unknown (discarded) session in the middle;
    /// PERMISSION_DENIED for another caller's session. A failed chunk voids the whole import.
    func chunk(session: ID, bytes: [UInt8], firstLine: UInt64, more: Bool, principal: Principal, peer: PeerInfo, on d: Dispatcher) throws -> Reply {
        let idle = TimeAmount.seconds(Int64(d.config.importIdleTimeoutSeconds))
        // first_line is how a chunk says where it belongs: unset (0) would let a chunk of a
        // discarded session start a new one and commit a partial import alone.
        guard firstLine >= 1 else {
            throw AuthzError.invalid("import.first_line", "must be the 1-based number of the chunk's first line in the whole import (set on every chunk of a chunked import; 1 on the first)")
        }
        let entry = try table.withLockedValue { table -> StagedImport in
            let now = NIODeadline.now()
            for (k, v) in table where !v.busy && now - v.lastChunk > idle { table.removeValue(forKey: k) }
            if let e = table[session] {
                guard e.owner == principal else { throw AuthzError(.permissionDenied, "import.session \(session) was started by another caller", field: "import.session") }
                guard !e.busy else { throw AuthzError(.failedPrecondition, "import.session \(session) is still applying its previous chunk; send chunks one at a time", field: "import.session") }
                guard firstLine == UInt64(e.staging.lastLine) + 1 else {
                    throw AuthzError(.failedPrecondition, "import.first_line \(firstLine) does not follow line \(e.staging.lastLine) of import.session \(session)", field: "import.first_line")
                }
                e.busy = true
                return e
            }
            guard firstLine == 1 else {
                throw AuthzError(.failedPrecondition, "import.session \(session) is not in progress (discarded after a failed chunk, a disconnect or import-idle-timeout); nothing of it was applied: start the import again", field: "import.session")
            }
            // One chunked import per caller, and a few in all: one tenant cannot hold them all.
            if table.values.contains(where: { $0.owner == principal }) {
                throw AuthzError(.resourceExhausted, "this caller already has a chunked import in progress; finish it or let it time out (import-idle-timeout) first", field: "import.session")
            }
            guard table.count < ImportSessions.maxImports else {
                throw AuthzError(.resourceExhausted, "\(ImportSessions.maxImports) chunked imports are already in progress; retry when one finishes", field: "import.session")
            }
            let e = StagedImport(owner: principal, staging: ImportStaging(onlyTenant: principal.tenant))
            e.busy = true
            table[session] = e
            return e
        }
        defer { table.withLockedValue { _ in entry.busy = false; entry.lastChunk = .now() } }
        // The budget is for all staged imports together: staging holds parsed records in memory.
        let staged = table.withLockedValue { table -> Int in
            entry.bytes += bytes.count
            return table.values.reduce(0) { $0 + $1.bytes }
        }
        do {
            if staged > d.config.maxImportBytes {
                throw AuthzError(.resourceExhausted, "chunked imports in progress would stage more than max-import-bytes (\(d.config.maxImportBytes)); this one is discarded, nothing of it was applied (retry later, or use authzctl import --chunk-commit)", field: "import.jsonl")
            }
            try d.engine.stage(bytes, into: &entry.staging)
            if more { return .importResult(revision: 0, records: UInt64(entry.staging.records)) }
            drop(session, owner: principal)
            let r = try d.engine.commit(entry.staging)
            d.audit?.imported(records: r.records, revision: r.revision, tenants: entry.staging.tenants, who: d.actor(principal, peer), peer: peer)
            return .importResult(revision: r.revision, records: UInt64(r.records))
        } catch {
            // The owner's chunk failed: the whole import is void.
            drop(session, owner: principal)
            throw error
        }
    }
}
