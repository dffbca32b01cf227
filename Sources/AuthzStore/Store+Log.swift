import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Store {
    // MARK: the replicated log (log mode) and meta settings

    /// Applies consecutive log messages in one write transaction (one commit, one fsync), each
    /// in a nested transaction of its own, recording `revision` of the last as the store's
    /// revision. A message whose change breaks a rule (INVALID_ARGUMENT, NOT_FOUND,
    /// ALREADY_EXISTS, FAILED_PRECONDITION, PERMISSION_DENIED: what every replica decides
    /// alike) changes nothing and gets that error in its result; any other failure (disk full,
    /// LMDB) throws and keeps nothing of the batch. `revisions` must rise, above the current.
    public func applyLogged(_ changes: [(revision: UInt64, change: LoggedChange)]) throws -> [Result<WriteOutcome?, AuthzError>] {
        guard let lastRevision = changes.last?.revision else { return [] }
        return try writeTransaction { txn in
            let current = try StoreReader(store: self, txn: txn).revision()
            guard changes[0].revision > current else {
                throw AuthzError.internalError("log revision \(changes[0].revision) is not above the store's \(current)")
        }
            var results: [Result<WriteOutcome?, AuthzError>] = []
            results.reserveCapacity(changes.count)
            for (revision, change) in changes {
                switch change {
                case .skip:
                    results.append(.success(nil))
                case .key(var k):
                    // A revocation is final: a key record never clears one (an old or
                    // replayed record cannot bring a revoked key back).
                    if let old = try txn.get(keysDB, Store.idKey(k.id), { try Store.decodeKey(id: k.id, $0) }), old.revokedAt != 0 {
                        k.revokedAt = k.revokedAt == 0 ? old.revokedAt : min(k.revokedAt, old.revokedAt)
                    }
                    try txn.put(keysDB, Store.idKey(k.id), Store.encodeKey(k))
                    results.append(.success(nil))
                case .write(let ops, let now, let keepTimestamps):
                    let child = try LMDBTransaction(env: env, parent: txn)
                    defer { child.abort() }  // a no-op once committed; aborts the child before the parent on any error
                    do {
                        let label: (Int) -> String = { "ops[\($0)]" }
                        let normalized = try normalize(ops, reader: StoreReader(store: self, txn: child), label: label)
                        let batch = WriteBatch(store: self, txn: child, now: now)
                        batch.keepTimestamps = keepTimestamps
                        batch.revision = revision
                        let outcome = try batch.apply(normalized, label: label)
                        try child.commit()
                        results.append(.success(outcome))
                    } catch let e as AuthzError where Store.decidedAlike(e) {
                        child.abort()
                        results.append(.failure(e))
                    }
                }
        }
            if try StoreReader(store: self, txn: txn).revision() < lastRevision {
                var v = lastRevision.littleEndian
                try txn.put(meta, Array("revision".utf8), withUnsafeBytes(of: &v) { Array($0) })
        }
            return results
        }
    }

    /// Errors every replica reaches alike from the same state and change.
    public static func decidedAlike(_ e: AuthzError) -> Bool {
        switch e.code {
        case .invalidArgument, .notFound, .alreadyExists, .failedPrecondition, .permissionDenied: return true
        default: return false
        }
    }

    /// Moves the revision to `revision` without changing a record: a replicated log's message
    /// that applies to nothing here (another shard's tenant, a write that failed validation on
    /// every replica). Blocks for the commit. INTERNAL when `revision` is not above the current.
    public func advanceRevision(to revision: UInt64) throws {
        try writeTransaction { try setRevision(revision, $0) }
    }

    private func setRevision(_ revision: UInt64, _ txn: LMDBTransaction) throws {
        let current = try StoreReader(store: self, txn: txn).revision()
        guard revision > current else { throw AuthzError.internalError("log revision \(revision) is not above the store's \(current)") }
        var v = revision.littleEndian
        try txn.put(meta, Array("revision".utf8), withUnsafeBytes(of: &v) { Array($0) })
    }

    /// A text setting kept in the store's meta table (`log.stream`: the replicated log this
    /// data was built from), or nil when unset.
    public func metaText(_ key: String) throws -> String? {
        try read { r in
            try r.txn.get(meta, Array(("text." + key).utf8)) { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// Sets a text setting of the meta table. Blocks for the commit.
    public func setMetaText(_ key: String, _ value: String) throws {
        try writeTransaction { try $0.put(meta, Array(("text." + key).utf8), Array(value.utf8)) }
    }

}
