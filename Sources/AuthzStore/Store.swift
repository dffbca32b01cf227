import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How a write reaches the disk.
public enum SyncMode: String, Sendable, CaseIterable {
    /// Default. A write is acknowledged after LMDB's commit has fsynced: it survives `kill -9`
    /// and power loss.
    case full
    /// `MDB_NOSYNC`: commits are not fsynced. A write survives a crash of the process (the
    /// kernel holds it) but the last writes before a power loss or kernel crash may be lost.
    case nosync
}

/// Options of the LMDB environment.
public struct StoreOptions: Sendable {
    /// Initial map size in bytes. The map grows (doubling) when full.
    public var mapSize: Int = 1 << 30
    /// Ceiling for growth; a write that needs more fails with RESOURCE_EXHAUSTED.
    public var maxMapSize: Int = 1 << 40
    /// LMDB reader slots (LMDB's default of 126 is too few for a busy daemon).
    public var maxReaders: UInt32 = 1024
    public var sync: SyncMode = .full
    /// Migrate an older data directory at open (default). False: refuse it with a message that
    /// names both versions (then run `authzd migrate`).
    public var autoMigrate = true
    /// Key ring for platform-credential secrets. Nil: `DIR/keyring`. See `KeyRing` and
    /// docs/security.md. A path given here must exist, whatever `keyRing` says.
    public var keyRingPath: String?
    /// What to do when the default key ring `DIR/keyring` does not exist (default: create it,
    /// as the daemon does at first start).
    public var keyRing: KeyRingPolicy = .createIfMissing
    /// How many changes the change log keeps for Watch (the oldest are dropped by the write
    /// that passes the bound); 0 records none (Watch is then refused).
    public var changeRetention: Int = 1_000_000

    public init() {}
}

/// How a store treats a missing default key ring (`DIR/keyring`).
public enum KeyRingPolicy: Sendable {
    /// Create it (0600, one fresh active key). Only for code that will seal secrets: the daemon.
    case createIfMissing
    /// Open without one: reading a sealed secret then fails with DATA_LOSS naming its key, and
    /// storing a secret fails with FAILED_PRECONDITION. For commands that never seal (verify,
    /// migrate, restore, offline key management): they must not invent a key ring that later
    /// seals new secrets with a key the real ring lacks.
    case loadIfPresent
    /// Refuse to open (FAILED_PRECONDITION naming the path) without one.
    case require
}

/// Secondary-key tags in the `refs` database.
enum RefTag: UInt8 {
    case userRoleBinding = 0x75        // 'u': user → role binding
    case roleRoleBinding = 0x72        // 'r': role → role binding
    case rolePermissionBinding = 0x70  // 'p': role → permission binding
    case permissionBinding = 0x71      // 'q': permission → permission binding
    case userCredential = 0x63         // 'c': user → platform credential
    case tenant = 0x54                 // 'T': (nil tenant) → tenant
}

/// Counts of records, for ServerInfo.
public struct StoreCounts: Sendable, Equatable {
    public var byKind: [EntityKind: Int] = [:]
}

/// A read transaction kept open across calls (see `Store.openSnapshot`). Thread-safe: uses are
/// serialised; the environment is opened `MDB_NOTLS`, so successive uses may come from
/// different threads. Closed by `close()`, by `deinit`, or by the store when its map grows.
public final class StoreSnapshot: @unchecked Sendable {
    let store: Store
    private var txn: LMDBTransaction?
    private var lock = pthread_mutex_t()

    init(store: Store, txn: LMDBTransaction) {
        self.store = store
        self.txn = txn
        pthread_mutex_init(&lock, nil)
    }

    deinit {
        txn?.abort()
        pthread_mutex_destroy(&lock)
    }

    func withTransaction<T>(_ body: (LMDBTransaction?) throws -> T) rethrows -> T {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return try body(txn)
    }

    /// Aborts the transaction; later reads are ABORTED.
    func invalidate() {
        pthread_mutex_lock(&lock)
        txn?.abort()
        txn = nil
        pthread_mutex_unlock(&lock)
    }

    /// Reads at the snapshot. ABORTED once the snapshot is closed.
    public func read<T>(_ body: (StoreReader) throws -> T) throws -> T { try store.read(self, body) }

    /// Ends the snapshot (its reader slot and pinned pages are released).
    public func close() {
        invalidate()
        store.snapshots.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
    }
}

/// The store's registry of open snapshots.
final class LockedSnapshots: @unchecked Sendable {
    private var open: [ObjectIdentifier: StoreSnapshot] = [:]
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }
    func withLock<T>(_ body: (inout [ObjectIdentifier: StoreSnapshot]) throws -> T) rethrows -> T {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return try body(&open)
    }
}

/// The result of an acknowledged write.
public struct WriteOutcome: Sendable {
    /// The revision the batch created.
    public var revision: UInt64
    /// Every record the batch touched: as it was before the batch (nil when new) and as it is
    /// now, in the order the batch first touched them.
    public var changes: [(before: Entity?, after: Entity)]
    /// `upsertIfNewer` operations that changed nothing (the stored record was as new or newer).
    public var skipped = 0
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

    /// One step of the format, `from` → `from + 1`, applied inside one write transaction
    /// together with the new format number: killed halfway, the step did not happen.
    struct Migration {
        let from: UInt32
        let name: String
        let apply: (LMDBTransaction, Store) throws -> Void
    }

    /// Every step, in order. Adding a format means adding a step here (docs/migrations.md).
    static let migrations: [Migration] = [
        Migration(from: 1, name: "count records per kind into meta") { txn, store in
            var counts: [EntityKind: UInt64] = [:]
            try txn.scan(store.ids, prefix: []) { _, value in
                if value.count == 17, let k = EntityKind(rawValue: value[16]) { counts[k, default: 0] += 1 }
                return true
            }
            for k in EntityKind.allCases {
                var v = (counts[k] ?? 0).littleEndian
                try txn.put(store.meta, Array("count.\(k.name)".utf8), withUnsafeBytes(of: &v) { Array($0) })
            }
        },
        Migration(from: 2, name: "start the change log at the current revision") { txn, store in
            // Changes before this revision were never recorded: Watch resumes only from here.
            let revision = try StoreReader(store: store, txn: txn).revision()
            var v = revision.littleEndian
            try txn.put(store.meta, Array("changes.floor".utf8), withUnsafeBytes(of: &v) { Array($0) })
        },
    ]

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
    private var resizeLock = pthread_rwlock_t()
    /// Serialises write transactions (writes, key records, secret rotation batches).
    var writeLock = pthread_mutex_t()
    private let lock: LockFile
    private var sealerLock = pthread_mutex_t()
    private var currentSealer: SecretSealer?
    /// The key ring file (`--keyring`, default `DATA_DIR/keyring`).
    let ringPath: String
    public let directory: String

    /// Seals platform-credential secrets; nil when opened with `.loadIfPresent` and no key
    /// ring exists. Replaced while serving by `reloadKeyRing()`.
    public var sealer: SecretSealer? {
        pthread_mutex_lock(&sealerLock)
        defer { pthread_mutex_unlock(&sealerLock) }
        return currentSealer
    }

    /// Swaps the sealer (`reloadKeyRing`).
    func replaceSealer(_ s: SecretSealer) {
        pthread_mutex_lock(&sealerLock)
        currentSealer = s
        pthread_mutex_unlock(&sealerLock)
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
        pthread_mutex_init(&sealerLock, nil)
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
            if e == .invalid || e == .versionMismatch {
                throw AuthzError(.dataLoss, "\(directory)/data.mdb is not an authzd LMDB environment (\(e)); refusing to start rather than reset it")
            }
            throw AuthzError(.failedPrecondition, "cannot open LMDB environment in \(directory): \(e)")
        }
        _ = env.clearStaleReaders()
        pthread_rwlock_init(&resizeLock, nil)
        pthread_mutex_init(&writeLock, nil)
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
            throw AuthzError(.dataLoss, "cannot open the databases in \(directory): \(e)")
        }
    }

    deinit {
        if options.sync == .nosync { try? env.sync() }
    }

    /// The format steps from `format` to the current one, each in its own write transaction
    /// that also records the new format number.
    private func migrate(from format: UInt32) throws {
        var current = format
        for step in Store.migrations where step.from == current {
            let txn = try LMDBTransaction(env: env, readOnly: false)
            try step.apply(txn, self)
            var v = (current + 1).littleEndian
            try txn.put(meta, Array("format".utf8), withUnsafeBytes(of: &v) { Array($0) })
            try txn.commit()
            current += 1
        }
        if current != Store.formatVersion {
            throw AuthzError(.failedPrecondition, "no migration from format version \(current) to \(Store.formatVersion)")
        }
    }

    /// The data directory's format version.
    public func format() throws -> UInt32 {
        try read { r in
            try r.txn.get(meta, Array("format".utf8)) { raw in raw.count == 4 ? raw.loadUnaligned(as: UInt32.self).littleEndian : 0 } ?? 0
        }
    }

    /// Flushes everything to disk (meaningful in `.nosync` mode; a no-op cost otherwise).
    public func sync() throws {
        do { try env.sync() } catch { throw AuthzError.internalError("mdb_env_sync: \(error)") }
    }

    // MARK: reads

    /// Open snapshots (paged exports), closed when the map must grow.
    let snapshots = LockedSnapshots()

    /// Opens a read snapshot that stays consistent across calls until `StoreSnapshot.close()`
    /// (one LMDB read transaction, held; it pins the pages it sees and takes a reader slot, so
    /// callers bound how many are open and for how long). UNAVAILABLE when reader slots are out.
    public func openSnapshot() throws -> StoreSnapshot {
        pthread_rwlock_rdlock(&resizeLock)
        defer { pthread_rwlock_unlock(&resizeLock) }
        let s = StoreSnapshot(store: self, txn: try beginRead())
        snapshots.withLock { $0[ObjectIdentifier(s)] = s }
        return s
    }

    /// Begins a read transaction (the caller holds `resizeLock` for reading). UNAVAILABLE when
    /// LMDB's reader slots are exhausted; anything else from `mdb_txn_begin` is INTERNAL.
    private func beginRead() throws -> LMDBTransaction {
        do {
            return try LMDBTransaction(env: env, readOnly: true)
        } catch let e as LMDBError {
            if e == .readersFull { throw AuthzError(.unavailable, "all \(options.maxReaders) LMDB reader slots are in use; retry") }
            throw AuthzError.internalError("mdb_txn_begin: \(e)")
        }
    }

    /// Runs `body` on `snapshot`'s transaction (never concurrently with a map resize).
    /// ABORTED when the snapshot was closed because the map grew.
    func read<T>(_ snapshot: StoreSnapshot, _ body: (StoreReader) throws -> T) throws -> T {
        pthread_rwlock_rdlock(&resizeLock)
        defer { pthread_rwlock_unlock(&resizeLock) }
        return try snapshot.withTransaction { txn in
            guard let txn else { throw AuthzError(.aborted, "the snapshot was closed (the store grew or it was closed); start again") }
            return try mapped { try body(StoreReader(store: self, txn: txn)) }
        }
    }

    /// Runs `body` in a read transaction: a consistent snapshot of the whole store. The reader
    /// must not escape `body`. Throws UNAVAILABLE when LMDB's reader slots are exhausted.
    public func read<T>(_ body: (StoreReader) throws -> T) throws -> T {
        pthread_rwlock_rdlock(&resizeLock)
        defer { pthread_rwlock_unlock(&resizeLock) }
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
    /// (a missing reference or record), ALREADY_EXISTS (a name or an id taken),
    /// FAILED_PRECONDITION (cycle, cross-tenant reference, scope not allowed),
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
            let outcome = try batch.apply(normalized, label: label)
            try precommit?(outcome)
            return outcome
        }
    }

    /// Runs `body` in one write transaction under the write lock and commits it; when the map
    /// is full, grows it and runs `body` again in a fresh transaction (nothing was kept). Any
    /// other error aborts the transaction. Blocks for the commit.
    private func writeTransaction<T>(_ body: (LMDBTransaction) throws -> T) throws -> T {
        pthread_mutex_lock(&writeLock)
        defer { pthread_mutex_unlock(&writeLock) }
        while true {
            do {
                pthread_rwlock_rdlock(&resizeLock)
                defer { pthread_rwlock_unlock(&resizeLock) }
                return try mapped {
                    let txn = try LMDBTransaction(env: env, readOnly: false)
                    let result = try body(txn)
                    try txn.commit()
                    return result
                }
            } catch let e as AuthzError where e.field == "lmdb.map_full" {
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
    private func normalize(_ ops: [WriteOp], reader: StoreReader, label: (Int) -> String) throws -> [WriteOp] {
        var out = ops
        for (i, op) in ops.enumerated() {
            var e: Entity
            switch op {
            case .upsert(let x), .upsertIfNewer(let x): e = x
            default: continue
            }
            do {
                e.fields.metadata = try Validate.canonicalMetadata(e.fields.metadata, field: "\(e.kind.name).metadata")
            } catch var err as AuthzError {
                if ops.count > 1 { err.message = label(i) + ": " + err.message }
                throw err
            }
            if case .platformCredential(var c) = e {
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
            if case .upsertIfNewer = op { out[i] = .upsertIfNewer(e) } else { out[i] = .upsert(e) }
        }
        return out
    }

    private func grow() throws {
        pthread_rwlock_wrlock(&resizeLock)
        defer { pthread_rwlock_unlock(&resizeLock) }
        // mdb_env_set_mapsize needs no transaction open in this process: close the snapshots.
        snapshots.withLock { open in
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

    // MARK: backups

    /// A consistent, compacting copy of the environment in `directory` into `destination` (an
    /// empty or new directory, created 0700), taken while a daemon serves: it opens the
    /// environment read-only beside the daemon (LMDB allows readers in other processes) and
    /// copies one read transaction's snapshot (`mdb_env_copyfd2` with `MDB_CP_COMPACT`) into
    /// `destination/data.mdb`, created 0600 and fsynced. Returns the revision the copy holds.
    /// The key ring is not copied: back it up separately.
    public static func backup(directory: String, to destination: String) throws -> UInt64 {
        guard access(directory + "/data.mdb", R_OK) == 0 else {
            throw AuthzError(.notFound, "\(directory)/data.mdb does not exist")
        }
        if mkdir(destination, 0o700) != 0 && errno != EEXIST {
            throw AuthzError(.failedPrecondition, "cannot create \(destination): \(String(cString: strerror(errno)))")
        }
        if access(destination + "/data.mdb", F_OK) == 0 {
            throw AuthzError(.alreadyExists, "\(destination) already holds a data.mdb; refusing to overwrite it")
        }
        do {
            let env = try LMDBEnvironment(path: directory, mapSize: 0, maxReaders: 1024, maxDatabases: 8, noSync: false, readOnly: true)
            let txn = try LMDBTransaction(env: env, readOnly: true)
            let meta = try txn.openDatabase("meta", create: false)
            let revision = try txn.get(meta, Array("revision".utf8)) { raw in raw.count == 8 ? raw.loadUnaligned(as: UInt64.self).littleEndian : 0 } ?? 0
            txn.abort()
            try copyPrivately(env, to: destination)
            return revision
        } catch let e as LMDBError {
            throw AuthzError(.failedPrecondition, "backup of \(directory) failed: \(e)")
        }
    }

    /// Copies `env` into a new `directory/data.mdb` created 0600 (never readable by others, even
    /// for a moment), fsynced; removes the partial file on failure. Throws `LMDBError` from the
    /// copy, FAILED_PRECONDITION when the file cannot be created.
    static func copyPrivately(_ env: LMDBEnvironment, to directory: String) throws {
        let path = directory + "/data.mdb"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AuthzError(.failedPrecondition, "cannot create \(path): \(String(cString: strerror(errno)))") }
        do {
            try env.copy(toDescriptor: fd)
            guard fsync(fd) == 0 else { throw AuthzError(.unavailable, "cannot fsync \(path): \(String(cString: strerror(errno)))") }
            close(fd)
        } catch {
            close(fd)
            unlink(path)
            throw error
        }
    }

    /// The ids of the keys that sealed the credential secrets held in the backup directory
    /// `backup` (empty when it holds none). Opens `backup/data.mdb` read-only without a lock
    /// file (nothing is written to the backup). NOT_FOUND when there is no `data.mdb`;
    /// FAILED_PRECONDITION when it is not an authzd LMDB environment.
    public static func sealingKeyIds(backup: String) throws -> Set<String> {
        guard access(backup + "/data.mdb", R_OK) == 0 else { throw AuthzError(.notFound, "\(backup)/data.mdb cannot be read") }
        do {
            let env = try LMDBEnvironment(path: backup, mapSize: 0, maxReaders: 1, maxDatabases: 8, noSync: false, readOnly: true, noLock: true)
            let txn = try LMDBTransaction(env: env, readOnly: true)
            defer { txn.abort() }
            let records = try txn.openDatabase("records", create: false)
            var ids = Set<String>()
            try txn.scan(records, prefix: []) { _, value in
                if let used = try RecordCodec.credentialKeyIds(value) { ids.formUnion(used) }
                return true
            }
            return ids
        } catch let e as LMDBError {
            throw AuthzError(.failedPrecondition, "\(backup)/data.mdb is not a readable authzd backup: \(e)")
        }
    }

    /// Restores a backup into `directory`, which must not be in use, must hold no data and must
    /// not be writable by group or others (created 0700 when missing). The restored `data.mdb`
    /// is 0600.
    ///
    /// Never creates a key ring. When the backup holds credential secrets, the key ring the
    /// restored data will be served with (`keyRingPath`, default `directory/keyring`) must exist
    /// and hold every key id that sealed them: otherwise FAILED_PRECONDITION naming the missing
    /// key ids and the path, before anything is written (a fresh key ring could not open them,
    /// and would seal new secrets with a key the real ring lacks).
    /// Creates `directory` and any missing parents, each 0700 (as `mkdir -p -m 0700`), leaving
    /// existing ones as they are. FAILED_PRECONDITION naming the path that could not be made.
    static func makeDirectories(_ directory: String) throws {
        var path = directory.hasPrefix("/") ? "" : "."
        for part in directory.split(separator: "/", omittingEmptySubsequences: true) {
            path += "/" + part
            if mkdir(path, 0o700) != 0 && errno != EEXIST {
                throw AuthzError(.failedPrecondition, "cannot create data directory \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    public static func restore(from backup: String, into directory: String, keyRingPath: String? = nil) throws {
        try makeDirectories(directory)
        try checkPrivateDirectory(directory)
        let lock = try LockFile(path: directory + "/authzd.lock")
        defer { _ = lock }
        if access(directory + "/data.mdb", F_OK) == 0 {
            throw AuthzError(.alreadyExists, "\(directory) already holds a data.mdb; restore into an empty directory")
        }
        let needed = try sealingKeyIds(backup: backup)
        if !needed.isEmpty {
            let ringPath = keyRingPath ?? directory + "/keyring"
            let names = needed.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
            guard access(ringPath, F_OK) == 0 else {
                throw AuthzError(.failedPrecondition, "\(backup) holds credential secrets sealed with key id(s) \(names), and there is no key ring at \(ringPath): copy the key ring that sealed them there (chmod 600) or pass --keyring PATH; nothing was restored")
            }
            let missing = needed.subtracting(try KeyRing.load(path: ringPath).ids)
            guard missing.isEmpty else {
                throw AuthzError(.failedPrecondition, "\(backup) holds credential secrets sealed with key id(s) \(missing.sorted().map { "\"\($0)\"" }.joined(separator: ", ")), which key ring \(ringPath) lacks: use the key ring that sealed them; nothing was restored")
            }
        }
        let tmp = directory + "/data.mdb.restoring"
        unlink(tmp)
        try copyFile(backup + "/data.mdb", to: tmp)
        guard rename(tmp, directory + "/data.mdb") == 0 else {
            throw AuthzError(.failedPrecondition, "cannot move the restored file into place: \(String(cString: strerror(errno)))")
        }
    }

    /// Copies a file into a new file created 0600 and fsynced. FAILED_PRECONDITION naming the
    /// path that failed.
    static func copyFile(_ source: String, to destination: String) throws {
        let src = open(source, O_RDONLY | O_CLOEXEC)
        guard src >= 0 else { throw AuthzError(.notFound, "\(source) cannot be read: \(String(cString: strerror(errno)))") }
        defer { close(src) }
        let dst = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard dst >= 0 else { throw AuthzError(.failedPrecondition, "cannot create \(destination): \(String(cString: strerror(errno)))") }
        defer { close(dst) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(src, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw AuthzError(.failedPrecondition, "cannot read \(source): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            var off = 0
            while off < n {
                let w = buffer[off..<n].withUnsafeBytes { Glibc.write(dst, $0.baseAddress, $0.count) }
                if w < 0 && errno == EINTR { continue }
                guard w > 0 else { throw AuthzError(.failedPrecondition, "cannot write \(destination): \(String(cString: strerror(errno)))") }
                off += w
            }
        }
        guard fsync(dst) == 0 else { throw AuthzError(.failedPrecondition, "cannot fsync \(destination): \(String(cString: strerror(errno)))") }
    }

    /// Throws FAILED_PRECONDITION when `path` is not a directory, or is writable by group or
    /// others (another local user could then replace its files: the LMDB environment, the lock,
    /// the default key ring), naming the path, its mode and the `chmod` that fixes it.
    static func checkPrivateDirectory(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw AuthzError(.failedPrecondition, "data directory \(path) cannot be read: \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw AuthzError(.failedPrecondition, "data directory \(path) is not a directory")
        }
        if st.st_mode & 0o022 != 0 {
            throw AuthzError(.failedPrecondition, "data directory \(path) has mode \(String(st.st_mode & 0o7777, radix: 8)): it is writable by group or others, so another local user could replace its files; refusing to use it (fix: chmod 700 \(path))")
        }
    }

    // MARK: API keys

    /// Stores (inserts or replaces) an API key record. Blocks for the commit.
    public func putKey(_ k: ApiKey) throws {
        try writeTransaction { try $0.put(keysDB, Store.idKey(k.id), Store.encodeKey(k)) }
    }

    /// One message of a replicated log, for `applyLogged`.
    public enum LoggedChange: Sendable {
        /// Operations, applied as `write(_:now:keepTimestamps:)` would.
        case write([WriteOp], now: Int64, keepTimestamps: Bool)
        /// An API key record to store.
        case key(ApiKey)
        /// Nothing to store here (another shard's tenant, an unreadable message).
        case skip
    }

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
        guard e.field != "lmdb.map_full" else { return false }
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

    /// The bytes of a key record as the store keeps it (no secret: its hash), for replicating
    /// key changes through a log. `keyRecord(id:_:)` reads it back.
    public static func keyRecordBytes(_ k: ApiKey) -> [UInt8] { encodeKey(k) }

    /// Decodes `keyRecordBytes`. DATA_LOSS for a malformed record.
    public static func keyRecord(id: ID, _ bytes: [UInt8]) throws -> ApiKey {
        try bytes.withUnsafeBytes { try decodeKey(id: id, $0) }
    }

    /// Every stored API key (secrets are not stored; only their hashes).
    public func keys() throws -> [ApiKey] {
        try read { r in
            var out: [ApiKey] = []
            try r.txn.scan(keysDB, prefix: []) { key, value in
                out.append(try Store.decodeKey(id: readID(key, at: 0), value))
                return true
            }
            return out
        }
    }

    /// The encoding of a key record (version 1): `1 ‖ role ‖ tenant ‖ created ‖ expires ‖
    /// revoked ‖ hash ‖ name`, then, since keys carry the secrets rule, `flags (bit 0: may read
    /// secrets) ‖ created_by`. The trailing fields are an extension older builds skip (they read
    /// up to the name and ignore the rest), so a rollback still starts; a key such a build
    /// rewrites loses them and with them the right to read secrets (fail closed).
    static func encodeKey(_ k: ApiKey) -> [UInt8] {
        var w = ByteWriter()
        w.u8(1)
        w.u8(k.role.rawValue)
        w.id(k.tenantId)
        w.i64(k.createdAt)
        w.i64(k.expiresAt)
        w.i64(k.revokedAt)
        w.bytes(k.secretHash)
        w.str(k.name)
        w.u8(k.maySeeSecrets ? 1 : 0)
        w.id(k.createdBy)
        return w.bytes
    }

    /// Decodes a key record. One without the trailing fields (stored before keys carried the
    /// secrets rule) decodes with `maySeeSecrets == false` and `createdBy == .zero`: fail closed,
    /// since who created it is unknown. Throws DATA_LOSS for an unknown version or a truncated
    /// record.
    static func decodeKey(id: ID, _ value: UnsafeRawBufferPointer) throws -> ApiKey {
        var b = ByteReader(value)
        guard try b.u8() == 1, let role = KeyRole(rawValue: try b.u8()) else { throw ByteReader.corrupt }
        let tenant = try b.id()
        let created = try b.i64(), expires = try b.i64(), revoked = try b.i64()
        let hash = try b.bytes()
        let name = try b.str()
        var k = ApiKey(id: id, tenantId: tenant, role: role, name: name, createdAt: created,
                       expiresAt: expires, revokedAt: revoked, secretHash: hash)
        if b.pos < value.count {
            k.maySeeSecrets = try b.u8() & 1 != 0
            k.createdBy = try b.id()
        }
        return k
    }

    /// Map size and bytes in use.
    public func mapUsage() -> (size: Int, used: Int) { (env.mapSize, env.usedBytes()) }

    /// Translates LMDB failures into `AuthzError`s. MAP_FULL is tagged for the retry loop.
    func mapped<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as LMDBError {
            switch e {
            case .mapFull: throw AuthzError(.resourceExhausted, "map full", field: "lmdb.map_full")
            case .noSpace: throw AuthzError(.resourceExhausted, "no space left on the device holding \(directory)")
            case LMDBError(code: EIO):
                // LMDB reports a short write as EIO: tell a full disk from a failing one.
                var fs = statvfs()
                if statvfs(directory, &fs) == 0, UInt64(fs.f_bavail) * UInt64(fs.f_frsize) < 8 << 20 {
                    throw AuthzError(.resourceExhausted, "no space left on the device holding \(directory); the write was not applied")
                }
                throw AuthzError(.unavailable, "I/O error on \(directory); the write was not applied")
            case .readersFull: throw AuthzError(.unavailable, "all LMDB reader slots are in use; retry")
            default: throw AuthzError.internalError("LMDB: \(e)")
            }
        }
    }

    // MARK: keys

    static func recordKey(_ tenant: ID, _ kind: EntityKind, _ id: ID) -> [UInt8] {
        var k: [UInt8] = []
        k.reserveCapacity(33)
        appendID(tenant, to: &k)
        k.append(kind.rawValue)
        appendID(id, to: &k)
        return k
    }

    static func nameKey(_ tenant: ID, _ kind: EntityKind, _ name: String) -> [UInt8] {
        var k: [UInt8] = []
        appendID(kind == .tenant ? .zero : tenant, to: &k)
        k.append(kind.rawValue)
        k.append(contentsOf: name.utf8)
        return k
    }

    static func credentialKey(_ c: PlatformCredential) -> [UInt8] {
        var k: [UInt8] = []
        appendID(c.fields.tenantId, to: &k)
        k.append(EntityKind.platformCredential.rawValue)
        appendID(c.ownerUserId, to: &k)
        k.append(contentsOf: c.platform.utf8)
        k.append(0)
        k.append(contentsOf: c.externalAccountId.utf8)
        return k
    }

    static func refKey(_ tenant: ID, _ tag: RefTag, _ parent: ID, _ child: ID) -> [UInt8] {
        var k = refPrefix(tenant, tag, parent)
        appendID(child, to: &k)
        return k
    }

    static func refPrefix(_ tenant: ID, _ tag: RefTag, _ parent: ID) -> [UInt8] {
        var k: [UInt8] = []
        k.reserveCapacity(49)
        appendID(tenant, to: &k)
        k.append(tag.rawValue)
        appendID(parent, to: &k)
        return k
    }

    static func idKey(_ id: ID) -> [UInt8] {
        var k: [UInt8] = []
        appendID(id, to: &k)
        return k
    }
}

/// An exclusive `flock` on a file, held for the object's lifetime (and released by the kernel
/// if the process dies).
final class LockFile {
    let fd: Int32

    init(path: String) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw AuthzError(.failedPrecondition, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw AuthzError(.failedPrecondition, "data directory is in use by another authzd process (lock \(path) is held)")
        }
    }

    deinit { close(fd) }
}

/// A consistent read view of the store, valid only inside `Store.read`'s closure (or a write
/// batch). Every method names its tenant: no method returns a record of another tenant.
public final class StoreReader {
    let store: Store
    let txn: LMDBTransaction

    init(store: Store, txn: LMDBTransaction) {
        self.store = store
        self.txn = txn
    }

    /// The last committed revision.
    public func revision() throws -> UInt64 {
        try counter("revision")
    }

    /// The record of `kind` with `id` in `tenant`, or nil.
    public func entity(_ kind: EntityKind, tenant: ID, id: ID) throws -> Entity? {
        try txn.get(store.records, Store.recordKey(tenant, kind, id)) { try RecordCodec.decode($0, sealer: store.sealer) }
    }

    public func entity(_ ref: RecordRef) throws -> Entity? {
        try entity(ref.kind, tenant: ref.tenantId, id: ref.id)
    }

    /// Where an id lives: its tenant and kind, whatever the tenant. Used to explain a
    /// cross-tenant or wrong-kind reference; never to return the record.
    public func locate(_ id: ID) throws -> (tenant: ID, kind: EntityKind)? {
        try txn.get(store.ids, Store.idKey(id)) { raw -> (ID, EntityKind)? in
            guard raw.count == 17, let kind = EntityKind(rawValue: raw[16]) else { return nil }
            return (readID(raw, at: 0), kind)
        } ?? nil
    }

    /// The id of the record of `kind` named `name` in `tenant` (tenants: `tenant` is ignored).
    public func id(named name: String, kind: EntityKind, tenant: ID) throws -> ID? {
        try txn.get(store.names, Store.nameKey(tenant, kind, name)) { raw -> ID? in
            raw.count == 16 ? readID(raw, at: 0) : nil
        } ?? nil
    }

    func children(_ tenant: ID, _ tag: RefTag, _ parent: ID) throws -> [ID] {
        var out: [ID] = []
        try txn.scan(store.refs, prefix: Store.refPrefix(tenant, tag, parent)) { key, _ in
            out.append(readID(key, at: 33))
            return true
        }
        return out
    }

    /// A user's role bindings, active or not.
    public func roleBindings(ofUser user: ID, tenant: ID) throws -> [RoleBinding] {
        try children(tenant, .userRoleBinding, user).compactMap {
            if case .roleBinding(let b)? = try entity(.roleBinding, tenant: tenant, id: $0) { return b }
            return nil
        }
    }

    /// A role's role bindings (the users bound to it), active or not.
    public func roleBindings(ofRole role: ID, tenant: ID) throws -> [RoleBinding] {
        try children(tenant, .roleRoleBinding, role).compactMap {
            if case .roleBinding(let b)? = try entity(.roleBinding, tenant: tenant, id: $0) { return b }
            return nil
        }
    }

    /// A role's permission bindings, active or not.
    public func permissionBindings(ofRole role: ID, tenant: ID) throws -> [PermissionBinding] {
        try children(tenant, .rolePermissionBinding, role).compactMap {
            if case .permissionBinding(let b)? = try entity(.permissionBinding, tenant: tenant, id: $0) { return b }
            return nil
        }
    }

    /// A permission's bindings, active or not.
    public func permissionBindings(ofPermission permission: ID, tenant: ID) throws -> [PermissionBinding] {
        try children(tenant, .permissionBinding, permission).compactMap {
            if case .permissionBinding(let b)? = try entity(.permissionBinding, tenant: tenant, id: $0) { return b }
            return nil
        }
    }

    /// A user's platform credentials, active or not.
    public func credentials(ofUser user: ID, tenant: ID) throws -> [PlatformCredential] {
        try children(tenant, .userCredential, user).compactMap {
            if case .platformCredential(let c)? = try entity(.platformCredential, tenant: tenant, id: $0) { return c }
            return nil
        }
    }

    /// Every tenant's id, in id order.
    public func tenantIDs() throws -> [ID] {
        try children(.zero, .tenant, .zero)
    }

    /// Up to `limit` records of `kind` in `tenant` with id > `after`, in id order. For tenants,
    /// `tenant` is ignored and every tenant is listed.
    public func list(_ kind: EntityKind, tenant: ID, after: ID?, limit: Int) throws -> [Entity] {
        if kind == .tenant {
            var out: [Entity] = []
            for t in try tenantIDs() where after.map({ t > $0 }) ?? true {
                if let e = try entity(.tenant, tenant: t, id: t) { out.append(e) }
                if out.count >= limit { break }
            }
            return out
        }
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        prefix.append(kind.rawValue)
        var from: [UInt8]? = nil
        if let after {
            from = Store.recordKey(tenant, kind, after)
            from!.append(0)  // strictly after
        }
        var out: [Entity] = []
        try txn.scan(store.records, prefix: prefix, from: from) { _, value in
            out.append(try RecordCodec.decode(value, sealer: store.sealer))
            return out.count < limit
        }
        return out
    }

    /// Visits every record of `tenant` (the tenant record first, then by kind and id).
    /// Visits `tenant`'s records in key order starting after the record key `after` (nil: from
    /// the first), until `body` returns false. `body` gets each record's key (an opaque resume
    /// point) and the record.
    public func forEachRecord(tenant: ID, after: [UInt8]?, _ body: ([UInt8], Entity) throws -> Bool) throws {
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        var skipFirst = false
        var from: [UInt8]? = nil
        if let after, after.count > prefix.count, Array(after.prefix(prefix.count)) == prefix {
            from = after
            skipFirst = true
        }
        try txn.scan(store.records, prefix: prefix, from: from) { key, value in
            if skipFirst {
                skipFirst = false
                if Array(key) == from! { return true }
            }
            return try body(Array(key), try RecordCodec.decode(value, sealer: store.sealer))
        }
    }

    public func forEachRecord(tenant: ID, _ body: (Entity) throws -> Void) throws {
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        try txn.scan(store.records, prefix: prefix) { _, value in
            try body(try RecordCodec.decode(value, sealer: store.sealer))
            return true
        }
    }

    /// Visits every role binding of `tenant` reading only the fields the index needs:
    /// `(isActive, userId, roleId, scope)`. Much cheaper than `forEachRecord` on large tenants.
    public func forEachRoleBinding(tenant: ID, _ body: (Bool, ID, ID, Scope) throws -> Void) throws {
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        prefix.append(EntityKind.roleBinding.rawValue)
        try txn.scan(store.records, prefix: prefix) { _, value in
            if let (active, user, role, scope) = try RecordCodec.peekRoleBinding(value) {
                try body(active, user, role, scope)
            }
            return true
        }
    }

    /// Visits the id and active flag of every user of `tenant`, without decoding the rest.
    public func forEachUser(tenant: ID, _ body: (ID, Bool) throws -> Void) throws {
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        prefix.append(EntityKind.user.rawValue)
        try txn.scan(store.records, prefix: prefix) { key, value in
            guard value.count >= 4 else { throw ByteReader.corrupt }
            try body(readID(key, at: 17), value[3] & 1 != 0)
            return true
        }
    }

    func counter(_ key: String) throws -> UInt64 {
        try txn.get(store.meta, Array(key.utf8)) { raw in
            raw.count == 8 ? raw.loadUnaligned(as: UInt64.self).littleEndian : 0
        } ?? 0
    }

    /// Counts of records per kind (active or not), over all tenants. O(1): kept by writes.
    public func counts() throws -> StoreCounts {
        var c = StoreCounts()
        for k in EntityKind.allCases { c.byKind[k] = Int(try counter("count." + k.name)) }
        return c
    }
}
