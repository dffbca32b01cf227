import AuthzModel
#if canImport(Glibc)
import Glibc
#endif

// The store's two error translations, each in one place: system calls' `-1`/`errno` become
// `POSIXFailure` (`posix`), and LMDB codes become what callers see (`Store.translate`), by the
// operation they failed in. Nothing else in the store reads `errno` or matches LMDB codes to
// build an `AuthzError`.

/// A failed system call: its name, the path it concerned and `errno`. Thrown by `posix`;
/// turned into an `AuthzError` where the store knows what the call was for.
struct POSIXFailure: Error, CustomStringConvertible {
    let call: String
    let path: String
    let errno: Int32

    var description: String { "\(call) \(path): \(String(cString: strerror(errno)))" }
    /// The C library's text for `errno` ("No such file or directory").
    var reason: String { String(cString: strerror(errno)) }
}

/// Runs a system call that reports failure as `-1` with `errno`, retrying on `EINTR` (as
/// NIOPosix's `System.swift` does); throws `POSIXFailure` naming `call` and `path` otherwise.
/// Returns the call's result (a descriptor, a byte count, 0).
@discardableResult
func posix<T: FixedWidthInteger>(_ call: String, _ path: String, _ body: () -> T) throws -> T {
    while true {
        let r = body()
        if r != -1 { return r }
        let e = Glibc.errno
        if e == EINTR { continue }
        throw POSIXFailure(call: call, path: path, errno: e)
    }
}

/// What the store was doing when LMDB failed: the same code means different things (an
/// `MDB_INVALID` file at open is someone else's data; `EIO` in a write may be a full disk).
enum StoreOperation {
    /// `mdb_env_open` of the daemon's data directory.
    case openEnvironment
    /// Creating or opening the named databases and the format record at start.
    case openDatabases
    /// Beginning a read transaction.
    case beginRead
    /// A write transaction (`writeTransaction`), its commit included.
    case write
    /// Taking a backup of the data directory.
    case backup
    /// Reading a backup directory (restore's checks).
    case readBackup(String)
}

extension Store {
    /// The one translation of an LMDB failure into the error callers see, by operation:
    /// - opening: a file that is not LMDB (`MDB_INVALID`, `MDB_VERSION_MISMATCH`) is DATA_LOSS
    ///   (never reset someone's data), anything else FAILED_PRECONDITION naming the directory;
    /// - reads: no reader slot left is UNAVAILABLE (retry), anything else INTERNAL;
    /// - writes: `MDB_MAP_FULL` is `MapFull` (the write loop grows the map and retries; never
    ///   leaves the store), `ENOSPC` RESOURCE_EXHAUSTED, `EIO` RESOURCE_EXHAUSTED when the device
    ///   has under 8 MiB free (LMDB reports a short write as EIO) and UNAVAILABLE otherwise;
    /// - backups: FAILED_PRECONDITION naming the directory.
    func translate(_ e: LMDBError, _ operation: StoreOperation) -> Error {
        Store.translate(e, operation, directory: directory, maxReaders: Int(options.maxReaders))
    }

    /// `translate` for code that has no open store (backups, restores).
    static func translate(_ e: LMDBError, _ operation: StoreOperation, directory: String, maxReaders: Int? = nil) -> Error {
        switch operation {
        case .openEnvironment:
            if e == .invalid || e == .versionMismatch {
                return AuthzError(.dataLoss, "\(directory)/data.mdb is not an authzd LMDB environment (\(e)); refusing to start rather than reset it")
            }
            return AuthzError(.failedPrecondition, "cannot open LMDB environment in \(directory): \(e)")
        case .openDatabases:
            return AuthzError(.dataLoss, "cannot open the databases in \(directory): \(e)")
        case .beginRead, .write:
            switch e {
            case .mapFull where operation.isWrite: return MapFull()
            case .readersFull: return AuthzError(.unavailable, "all \(maxReaders.map { "\($0) " } ?? "")LMDB reader slots are in use; retry")
            case .noSpace: return AuthzError(.resourceExhausted, "no space left on the device holding \(directory)")
            case LMDBError(code: EIO) where operation.isWrite:
                var fs = statvfs()
                if statvfs(directory, &fs) == 0, UInt64(fs.f_bavail) * UInt64(fs.f_frsize) < 8 << 20 {
                    return AuthzError(.resourceExhausted, "no space left on the device holding \(directory); the write was not applied")
                }
                return AuthzError(.unavailable, "I/O error on \(directory); the write was not applied")
            default:
                return AuthzError.internalError(operation.isWrite ? "LMDB: \(e)" : "mdb_txn_begin: \(e)")
            }
        case .backup:
            return AuthzError(.failedPrecondition, "backup of \(directory) failed: \(e)")
        case .readBackup(let backup):
            return AuthzError(.failedPrecondition, "\(backup)/data.mdb is not a readable authzd backup: \(e)")
        }
    }
}

extension StoreOperation {
    var isWrite: Bool {
        if case .write = self { return true }
        return false
    }
}
