import AuthzModel
import Foundation
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif

/// Counts of records, for ServerInfo.
public struct StoreCounts: Sendable, Equatable {
    public var byKind: [EntityKind: Int] = [:]
}

/// authzd's persistent store: one LMDB environment in a data directory. The only code that
/// touches LMDB.
///
/// Keys put every record under its tenant (`tenant_id ‖ kind ‖ id`), so a scan of one tenant
/// never reads another's records. Secondary keys: names (unique per tenant, tenants' names
/// unique in the daemon), a global id → (tenant, kind) map, and parent → child references
/// (a user's role bindings, a role's bindings, a user's credentials).
///
/// Thread safety: reads may run on any thread concurrently; writes are serialised by the store
/// and each runs start to finish on the calling thread (LMDB write transactions are bound to
/// their thread). A write blocks while it commits (and fsyncs, in `.full` sync mode).
public final class Store: @unchecked Sendable {
    /// The data-directory format this build writes and reads (see docs/migrations.md).
    /// 1: the first format. 2: per-kind record counts kept in `meta` (`count.<kind>`).
    /// 3: the change log (`changes` database, `changes.floor` in `meta`) that Watch reads.
    public static let formatVersion: UInt32 = 3

    let env: LMDBEnvironment
    let records: UInt32
    let ids: UInt32
    let names: UInt32
    let refs: UInt32
    let meta: UInt32
    let keysDB: UInt32
    /// The change log: `revision u64 BE ‖ index u32 BE` → the record after the change
    /// (RecordCodec, credential secrets stripped). See ChangeLog.swift.
    let changesDB: UInt32
    let options: StoreOptions
    private let resizeLock = ReadWriteLock()
    /// Serialises write transactions (writes, key records, secret rotation batches).
    let writeLock = NIOLock()
    private let lock: LockFile
    private let sealerLock = NIOLock()
    private var currentSealer: SecretSealer?
    /// The key ring file (`--keyring`, default `DATA_DIR/keyring`).
    let ringPath: String
    public let directory: String

    /// Seals platform-credential secrets; nil when opened with `.loadIfPresent` and no key
    /// ring exists. Replaced while serving by `reloadKeyRing()`.
    public var sealer: SecretSealer? {
        sealerLock.withLock { currentSealer }
    }

    /// Swaps the sealer (`reloadKeyRing`).
    func replaceSealer(_ s: SecretSealer) {
        sealerLock.withLock { currentSealer = s }
    }

    /// Opens (creating if needed) the store in `directory`.
    ///
    /// Takes an exclusive lock on `directory/authzd.lock`: a second process opening the same
    /// directory fails with FAILED_PRECONDITION. Clears reader slots of dead processes.
    /// Refuses, with FAILED_PRECONDITION and both versions named, a directory written by a newer
    /// format; refuses a file that is not an LMDB environment with DATA_LOSS.
    /// Refuses with FAILED_PRECONDITION a data directory writable by group or others (naming it
    /// and the `chmod` that fixes it), and a key ring `KeyRing.load` refuses. Creates the default
    /// key ring only under `KeyRingPolicy.createIfMissing`.
    public init(directory: String, options: StoreOptions = StoreOptions()) throws {
        self.directory = directory
        self.options = options
        try Store.makeDirectories(directory)
        try Store.checkPrivateDirectory(directory)
        lock = try LockFile(path: directory + "/authzd.lock")
        let ringPath = options.keyRingPath ?? directory + "/keyring"
        self.ringPath = ringPath
        if options.keyRingPath == nil && access(ringPath, F_OK) != 0 {
            switch options.keyRing {
            case .createIfMissing: currentSealer = SecretSealer(ring: try KeyRing.create(path: ringPath))
            case .loadIfPresent: currentSealer = nil
            case .require:
                throw AuthzError(.failedPrecondition, "key ring \(ringPath) does not exist: put the key ring that sealed this data there (mode 0600) or pass --keyring")
            }
        } else {
            currentSealer = SecretSealer(ring: try KeyRing.load(path: ringPath))
        }
        do {
            env = try LMDBEnvironment(path: directory, mapSize: options.mapSize, maxReaders: options.maxReaders,
                                      maxDatabases: 8, noSync: options.sync == .nosync)
        } catch let e as LMDBError {
            throw Store.translate(e, .openEnvironment, directory: directory)
        }
        _ = env.clearStaleReaders()
        do {
            let txn = try LMDBTransaction(env: env, readOnly: false)
            records = try txn.openDatabase("records", create: true)
            ids = try txn.openDatabase("ids", create: true)
            names = try txn.openDatabase("names", create: true)
            refs = try txn.openDatabase("refs", create: true)
            meta = try txn.openDatabase("meta", create: true)
            keysDB = try txn.openDatabase("keys", create: true)
            changesDB = try txn.openDatabase("changes", create: true)
            let format = try txn.get(meta, Array("format".utf8)) { raw -> UInt32 in
                raw.count == 4 ? raw.loadUnaligned(as: UInt32.self).littleEndian : 0
            }
            if let format {
                if format > Store.formatVersion {
                    throw AuthzError(.failedPrecondition, "data directory \(directory) has format version \(format), newer than this authzd (format version \(Store.formatVersion)); upgrade authzd")
                }
                if format < Store.formatVersion && !options.autoMigrate {
                    throw AuthzError(.failedPrecondition, "data directory \(directory) has format version \(format); this authzd uses format version \(Store.formatVersion): run `authzd migrate --data-dir \(directory)` or start without --no-auto-migrate")
                }
            } else {
                if try txn.count(records) != 0 {
                    throw AuthzError(.dataLoss, "data directory \(directory) holds records but no format version; refusing to guess")
                }
                var v = Store.formatVersion.littleEndian
                try txn.put(meta, Array("format".utf8), withUnsafeBytes(of: &v) { Array($0) })
            }
            try txn.commit()
            if let format, format < Store.formatVersion { try migrate(from: format) }
        } catch let e as LMDBError {
            throw Store.translate(e, .openDatabases, directory: directory)
        }
    }

    deinit {
        if options.sync == .nosync { try? env.sync() }
    }


    /// Flushes everything to disk (meaningful in `.nosync` mode; a no-op cost otherwise).
    public func sync() throws {
        do { try env.sync() } catch { throw AuthzError.internalError("mdb_env_sync: \(error)") }
    }

    // MARK: reads

    /// Open snapshots (paged exports), closed when the map must grow.
    let snapshots = NIOLockedValueBox<[ObjectIdentifier: StoreSnapshot]>([:])

    /// Opens a read snapshot that stays consistent across calls until `StoreSnapshot.close()`
    /// (one LMDB read transaction, held; it pins the pages it sees and takes a reader slot, so
    /// callers bound how many are open and for how long). UNAVAILABLE when reader slots are out.
    public func openSnapshot() throws -> StoreSnapshot {
        resizeLock.lockShared()
        defer { resizeLock.unlock() }
        let s = StoreSnapshot(store: self, txn: try beginRead())
        snapshots.withLockedValue { $0[ObjectIdentifier(s)] = s }
        return s
    }

    /// Begins a read transaction (the caller holds `resizeLock` for reading). UNAVAILABLE when
    /// LMDB's reader slots are exhausted; anything else from `mdb_txn_begin` is INTERNAL.
    private func beginRead() throws -> LMDBTransaction {
        do {
            return try LMDBTransaction(env: env, readOnly: true)
        } catch let e as LMDBError {
            throw translate(e, .beginRead)
        }
    }

    /// Runs `body` on `snapshot`'s transaction (never concurrently with a map resize).
    /// ABORTED when the snapshot was closed because the map grew.
    func read<T>(_ snapshot: StoreSnapshot, _ body: (StoreReader) throws -> T) throws -> T {
        resizeLock.lockShared()
        defer { resizeLock.unlock() }
        return try snapshot.withTransaction { txn in
            guard let txn else { throw AuthzError(.aborted, "the snapshot was closed (the store grew or it was closed); start again") }
            return try mapped { try body(StoreReader(store: self, txn: txn)) }
        }
    }

    /// Runs `body` in a read transaction: a consistent snapshot of the whole store. The reader
    /// must not escape `body`. Throws UNAVAILABLE when LMDB's reader slots are exhausted.
    public func read<T>(_ body: (StoreReader) throws -> T) throws -> T {
        resizeLock.lockShared()
        defer { resizeLock.unlock() }
        let txn = try beginRead()
        defer { txn.abort() }
        return try mapped { try body(StoreReader(store: self, txn: txn)) }
    }

    /// The last committed revision (0 for an empty store).
    public func revision() throws -> UInt64 {
        try read { try $0.revision() }
    }

    // MARK: writes

    /// Applies `ops` atomically in one write transaction and returns the new revision.
    ///
    /// Checks every rule of the spec against the state the batch leaves: field formats, names
    /// unique per tenant (tenant names in the daemon), references to existing records of the
    /// same tenant, scopes allowed by the referenced role or permission, an acyclic inheritance
    /// graph. Any failure changes nothing and throws: INVALID_ARGUMENT (format), NOT_FOUND
    /// (a missing reference or record, or a reference into another tenant), ALREADY_EXISTS
    /// (a name or an id taken), FAILED_PRECONDITION (cycle, a reference to a record of
    /// another kind, scope not allowed),
    /// RESOURCE_EXHAUSTED (map at its ceiling or disk full).
    ///
    /// The map grows when full. Blocks until the commit is durable (per `SyncMode`).
    /// An empty batch is INVALID_ARGUMENT.
    ///
    /// `precommit`, when given, sees the outcome after every rule above held and before the
    /// commit; throwing from it aborts the batch (nothing is kept). The engine uses it for the
    /// per-tenant limits its in-memory index can check in time linear in the batch.
    ///
    /// With `keepTimestamps` (imports), an upserted record that carries a `created_at` keeps it
    /// and its `updated_at` (or gets now); records without one are stamped as usual.
    public func write(_ ops: [WriteOp], now: Int64 = Timestamp.now(),
                      label: (Int) -> String = { "ops[\($0)]" }, keepTimestamps: Bool = false,
                      precommit: ((WriteOutcome) throws -> Void)? = nil) throws -> WriteOutcome {
        if ops.isEmpty { throw AuthzError.invalid("ops", "must contain at least one operation") }
        return try writeTransaction { txn in
            let normalized = try normalize(ops, reader: StoreReader(store: self, txn: txn), label: label)
            let batch = WriteBatch(store: self, txn: txn, now: now)
            batch.keepTimestamps = keepTimestamps
            batch.deferPuts = keepTimestamps  // imports: many new records, written sorted
            let outcome = try batch.apply(normalized, label: label)
            try precommit?(outcome)
            return outcome
        }
    }

    /// Runs `body` in one write transaction under the write lock and commits it; when the map
    /// is full, grows it and runs `body` again in a fresh transaction (nothing was kept). Any
    /// other error aborts the transaction. Blocks for the commit.
    func writeTransaction<T>(_ body: (LMDBTransaction) throws -> T) throws -> T {
        writeLock.lock()
        defer { writeLock.unlock() }
        while true {
            do {
                resizeLock.lockShared()
                defer { resizeLock.unlock() }
                return try mapped {
                    let txn = try LMDBTransaction(env: env, readOnly: false)
                    let result = try body(txn)
                    try txn.commit()
                    return result
                }
            } catch is MapFull {
                try grow()
            }
        }
    }

    /// Puts every upsert in the form the store keeps, before the batch validates it: metadata
    /// canonical (`Validate.canonicalMetadata`: never a raw line break), and a platform
    /// credential's `secretUnreadable` decided by the store, never by the writer. A redacted
    /// write-back (`secretsRedacted`) of a credential whose stored tokens cannot be decrypted
    /// carries the stored ciphertexts, so that they are kept byte for byte; any other upsert of
    /// a credential clears the marker. Throws INVALID_ARGUMENT for bad metadata, prefixed by
    /// `label(i)` when the batch has more than one op (as the batch's own errors are).
    func normalize(_ ops: [WriteOp], reader: StoreReader, label: (Int) -> String) throws -> [WriteOp] {
        var out = ops
        for (i, op) in ops.enumerated() {
            var e: Entity
            switch op {
            case .upsert(let x), .upsertIfNewer(let x): e = x
            default: continue
            }
            // Only a changed record is written back: an import's ops are mostly copied as they are.
            var changed = false
            if !e.fields.metadata.isEmpty {
                do {
                    let canonical = try Validate.canonicalMetadata(e.fields.metadata, field: "\(e.kind.name).metadata")
                    if canonical != e.fields.metadata {
                        e.fields.metadata = canonical
                        changed = true
                    }
                } catch var err as AuthzError {
                    if ops.count > 1 { err.message = label(i) + ": " + err.message }
                    throw err
                }
            }
            if case .platformCredential(var c) = e {
                changed = true
                c.secretUnreadable = false
                c.unreadableSecret = nil
                if c.secretsRedacted,
                   case .platformCredential(let old)? = try reader.entity(.platformCredential, tenant: c.fields.tenantId, id: c.fields.id),
                   let kept = old.unreadableSecret {
                    c.secretUnreadable = true
                    c.unreadableSecret = kept
                }
                e = .platformCredential(c)
            }
            if !changed { continue }
            if case .upsertIfNewer = op { out[i] = .upsertIfNewer(e) } else { out[i] = .upsert(e) }
        }
        return out
    }

    private func grow() throws {
        resizeLock.lockExclusive()
        defer { resizeLock.unlock() }
        // mdb_env_set_mapsize needs no transaction open in this process: close the snapshots.
        snapshots.withLockedValue { open in
            for s in open.values { s.invalidate() }
            open.removeAll()
        }
        let next = min(env.mapSize * 2, options.maxMapSize)
        if next <= env.mapSize {
            throw AuthzError(.resourceExhausted, "the store is full: map size \(env.mapSize) bytes is at its ceiling (max_map_size)")
        }
        do { try env.setMapSize(next) } catch {
            throw AuthzError(.resourceExhausted, "cannot grow the map to \(next) bytes: \(error)")
        }
    }

    /// Map size and bytes in use.
    public func mapUsage() -> (size: Int, used: Int) { (env.mapSize, env.usedBytes()) }

    /// The map is full: `writeTransaction` grows it and runs its body again. Never leaves the
    /// store (the growth ceiling is RESOURCE_EXHAUSTED).
    struct MapFull: Error {}

    /// Runs a write transaction's body, translating LMDB failures (`translate(_:.write)`):
    /// MAP_FULL becomes `MapFull` for the retry loop of `writeTransaction` (the only writer).
    func mapped<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as LMDBError {
            throw translate(e, .write)
        }
    }

}
