internal import CLMDB
#if canImport(Glibc)
import Glibc
#endif

/// An LMDB return code, named. The one place that maps `MDB_*` and errno values.
struct LMDBError: Error, CustomStringConvertible, Equatable {
    let code: Int32

    static let notFound = LMDBError(code: MDB_NOTFOUND)
    static let mapFull = LMDBError(code: MDB_MAP_FULL)
    static let readersFull = LMDBError(code: MDB_READERS_FULL)
    static let invalid = LMDBError(code: MDB_INVALID)
    static let versionMismatch = LMDBError(code: MDB_VERSION_MISMATCH)
    static let mapResized = LMDBError(code: MDB_MAP_RESIZED)
    static let keyExist = LMDBError(code: MDB_KEYEXIST)
    static let noSpace = LMDBError(code: ENOSPC)

    var description: String { String(cString: mdb_strerror(code)) + " (\(code))" }

    static func ~= (lhs: LMDBError, rhs: Error) -> Bool { (rhs as? LMDBError) == lhs }

    /// Throws for any code but `MDB_SUCCESS`.
    @inline(__always) static func check(_ rc: Int32) throws {
        if rc != 0 { throw LMDBError(code: rc) }
    }
}

/// Owns an `MDB_env`. Opened with `MDB_NOTLS` (read transactions are not tied to threads) and
/// `MDB_NOSUBDIR` off: the environment is `data.mdb` + `lock.mdb` in a directory.
final class LMDBEnvironment {
    let env: OpaquePointer
    private(set) var mapSize: Int

    /// The corresponding C functions are `mdb_env_create`, `mdb_env_set_*`, `mdb_env_open`.
    /// Throws `LMDBError` (e.g. `MDB_INVALID` for a file that is not LMDB, `MDB_VERSION_MISMATCH`).
    /// `noLock` (`MDB_NOLOCK`): no `lock.mdb` is created or used; only for a read-only look at an
    /// environment no process writes (a backup).
    init(path: String, mapSize: Int, maxReaders: UInt32, maxDatabases: UInt32, noSync: Bool, readOnly: Bool = false, noLock: Bool = false) throws {
        var e: OpaquePointer?
        try LMDBError.check(mdb_env_create(&e))
        guard let env = e else { throw LMDBError(code: ENOMEM) }
        self.env = env
        self.mapSize = mapSize
        // From here on a throw runs deinit, which closes the environment.
        try LMDBError.check(mdb_env_set_maxreaders(env, maxReaders))
        try LMDBError.check(mdb_env_set_maxdbs(env, maxDatabases))
        try LMDBError.check(mdb_env_set_mapsize(env, mapSize))
        var flags = UInt32(MDB_NOTLS)
        if noSync { flags |= UInt32(MDB_NOSYNC) }
        if readOnly { flags |= UInt32(MDB_RDONLY) }
        if noLock { flags |= UInt32(MDB_NOLOCK) }
        try LMDBError.check(mdb_env_open(env, path, flags, 0o600))
        var info = MDB_envinfo()
        if mdb_env_info(env, &info) == 0 { self.mapSize = max(mapSize, info.me_mapsize) }
    }

    deinit { mdb_env_close(env) }

    /// Clears reader slots left by dead processes. The corresponding C function is `mdb_reader_check`.
    func clearStaleReaders() -> Int32 {
        var dead: Int32 = 0
        _ = mdb_reader_check(env, &dead)
        return dead
    }

    /// Grows the map. Caller guarantees no transaction of this process is active
    /// (`mdb_env_set_mapsize` requires it).
    func setMapSize(_ size: Int) throws {
        try LMDBError.check(mdb_env_set_mapsize(env, size))
        mapSize = size
    }

    /// Flushes to disk; used by the fast sync mode at shutdown. The C function is `mdb_env_sync`.
    func sync() throws { try LMDBError.check(mdb_env_sync(env, 1)) }

    /// Bytes in use: last page number times page size.
    func usedBytes() -> Int {
        var info = MDB_envinfo()
        var stat = MDB_stat()
        guard mdb_env_info(env, &info) == 0, mdb_env_stat(env, &stat) == 0 else { return 0 }
        return (info.me_last_pgno + 1) * Int(stat.ms_psize)
    }

    /// Compacting copy into an open file descriptor the caller owns (and created with the mode
    /// it wants: `mdb_env_copy2` would create `data.mdb` 0644). The corresponding C function is
    /// `mdb_env_copyfd2` with `MDB_CP_COMPACT`; it does not fsync or close `fd`.
    func copy(toDescriptor fd: Int32) throws {
        try LMDBError.check(mdb_env_copyfd2(env, fd, UInt32(MDB_CP_COMPACT)))
    }
}

/// An LMDB transaction. Aborts in `deinit` unless `commit()` was called. Bytes handed to the
/// closures of `get` and `Cursor` are valid only inside them (lmdb.h: "values returned from the
/// database are valid only until a subsequent update operation, or the end of the transaction").
final class LMDBTransaction {
    private(set) var txn: OpaquePointer?
    /// The parent of a nested transaction, kept alive (and so not aborted) while the child lives.
    private let parent: LMDBTransaction?
    let readOnly: Bool

    /// The corresponding C function is `mdb_txn_begin`. A write transaction must be used,
    /// committed or aborted on the thread that began it.
    init(env: LMDBEnvironment, readOnly: Bool) throws {
        var t: OpaquePointer?
        try LMDBError.check(mdb_txn_begin(env.env, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &t))
        txn = t
        self.readOnly = readOnly
        parent = nil
    }

    /// A write transaction nested in `parent` (`mdb_txn_begin` with a parent): its changes
    /// reach the parent when it commits and vanish when it aborts; the parent must not be used
    /// until then.
    init(env: LMDBEnvironment, parent: LMDBTransaction) throws {
        var t: OpaquePointer?
        try LMDBError.check(mdb_txn_begin(env.env, parent.txn, 0, &t))
        txn = t
        readOnly = false
        self.parent = parent
    }

    deinit {
        if let txn { mdb_txn_abort(txn) }
    }

    /// The corresponding C function is `mdb_txn_commit`; afterwards the transaction is gone
    /// whatever the result.
    func commit() throws {
        guard let t = txn else { return }
        txn = nil
        try LMDBError.check(mdb_txn_commit(t))
    }

    func abort() {
        if let t = txn { mdb_txn_abort(t) }
        txn = nil
    }

    /// Opens (or with `create`, creates) a named database. The C function is `mdb_dbi_open`.
    func openDatabase(_ name: String, create: Bool) throws -> UInt32 {
        var dbi: MDB_dbi = 0
        try LMDBError.check(mdb_dbi_open(txn, name, create ? UInt32(MDB_CREATE) : 0, &dbi))
        return dbi
    }

    /// Reads `key`; `body` sees the value's bytes only for the duration of the call.
    /// Returns nil when the key is absent (`MDB_NOTFOUND`).
    func get<T>(_ dbi: UInt32, _ key: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T? {
        try key.withUnsafeBytes { try get(dbi, $0, body) }
    }

    /// `get` of a key given as bytes in place.
    func get<T>(_ dbi: UInt32, _ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T? {
        var kv = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var dv = MDB_val()
        let rc = mdb_get(txn, dbi, &kv, &dv)
        if rc == MDB_NOTFOUND { return nil }
        try LMDBError.check(rc)
        return try body(UnsafeRawBufferPointer(start: dv.mv_data, count: dv.mv_size))
    }

    /// `mdb_put` with no flags. Throws `LMDBError.mapFull` when the map is full.
    func put(_ dbi: UInt32, _ key: [UInt8], _ value: [UInt8]) throws {
        try put(dbi, key, value, flags: 0)
    }

    /// `mdb_put` with `MDB_APPEND`: `key` must sort after every key of the database (LMDB then
    /// skips the tree search and fills pages to the end). `LMDBError` keyExist otherwise.
    func append(_ dbi: UInt32, _ key: [UInt8], _ value: [UInt8]) throws {
        try put(dbi, key, value, flags: UInt32(MDB_APPEND))
    }

    private func put(_ dbi: UInt32, _ key: [UInt8], _ value: [UInt8], flags: UInt32) throws {
        try key.withUnsafeBytes { k in
            try value.withUnsafeBytes { v in try put(dbi, k, v, flags: flags) }
        }
    }

    /// `mdb_put` of bytes in place (`flags` 0 or `MDB_APPEND`). Throws `LMDBError.mapFull`
    /// when the map is full.
    func put(_ dbi: UInt32, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, flags: UInt32 = 0) throws {
        var kv = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var dv = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        try LMDBError.check(mdb_put(txn, dbi, &kv, &dv, flags))
    }

    /// `mdb_del` of a key; absent keys are not an error.
    func delete(_ dbi: UInt32, _ key: [UInt8]) throws {
        try key.withUnsafeBytes { try delete(dbi, $0) }
    }

    /// `delete` of a key given as bytes in place.
    func delete(_ dbi: UInt32, _ key: UnsafeRawBufferPointer) throws {
        var kv = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        let rc = mdb_del(txn, dbi, &kv, nil)
        if rc == MDB_NOTFOUND { return }
        try LMDBError.check(rc)
    }

    /// Visits, in key order, every entry whose key starts with `prefix` and is ≥ `from`
    /// (default: the prefix itself). `body` returns false to stop. Keys and values are valid
    /// only inside `body`.
    func scan(_ dbi: UInt32, prefix: [UInt8], from: [UInt8]? = nil,
              _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool) throws {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, dbi, &cursor))
        defer { mdb_cursor_close(cursor) }
        let start = from ?? prefix
        try start.withUnsafeBytes { s in
            var kv = MDB_val(mv_size: s.count, mv_data: UnsafeMutableRawPointer(mutating: s.baseAddress))
            var dv = MDB_val()
            var rc = mdb_cursor_get(cursor, &kv, &dv, start.isEmpty ? MDB_FIRST : MDB_SET_RANGE)
            while rc == 0 {
                let key = UnsafeRawBufferPointer(start: kv.mv_data, count: kv.mv_size)
                if key.count < prefix.count { return }
                for i in 0..<prefix.count where key[i] != prefix[i] { return }
                if try !body(key, UnsafeRawBufferPointer(start: dv.mv_data, count: dv.mv_size)) { return }
                rc = mdb_cursor_get(cursor, &kv, &dv, MDB_NEXT)
            }
            if rc != MDB_NOTFOUND { try LMDBError.check(rc) }
        }
    }

    /// The last (greatest) key of a database, nil when it is empty (`MDB_LAST`).
    func lastKey(_ dbi: UInt32) throws -> [UInt8]? {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, dbi, &cursor))
        defer { mdb_cursor_close(cursor) }
        var kv = MDB_val()
        var dv = MDB_val()
        let rc = mdb_cursor_get(cursor, &kv, &dv, MDB_LAST)
        if rc == MDB_NOTFOUND { return nil }
        try LMDBError.check(rc)
        return Array(UnsafeRawBufferPointer(start: kv.mv_data, count: kv.mv_size))
    }

    /// Runs `body` with one write cursor on `dbi` (`mdb_cursor_open`, closed on return): many
    /// puts into one database without setting up a cursor for each (`mdb_put` does).
    func withCursor<T>(_ dbi: UInt32, _ body: (LMDBCursor) throws -> T) throws -> T {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, dbi, &cursor))
        defer { mdb_cursor_close(cursor) }
        return try body(LMDBCursor(cursor: cursor))
    }

    /// Number of entries in a database (`mdb_stat`).
    func count(_ dbi: UInt32) throws -> Int {
        var st = MDB_stat()
        try LMDBError.check(mdb_stat(txn, dbi, &st))
        return st.ms_entries
    }
}

/// A write cursor lent by `LMDBTransaction.withCursor`; valid only inside that call.
struct LMDBCursor {
    let cursor: OpaquePointer?

    /// `mdb_cursor_put` (LMDB copies the bytes into its page): with `append`, `MDB_APPEND`
    /// (`key` must sort after every key of the database; `LMDBError` keyExist otherwise), else
    /// a plain put. Throws `LMDBError.mapFull` when the map is full.
    func put(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, append: Bool) throws {
        var kv = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var dv = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        try LMDBError.check(mdb_cursor_put(cursor, &kv, &dv, append ? UInt32(MDB_APPEND) : 0))
    }
}
