import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Store {
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
        do {
            try makeDirectory(destination)
        } catch let f as POSIXFailure {
            throw AuthzError(.failedPrecondition, "cannot create \(destination): \(f.reason)")
        }
        if access(destination + "/data.mdb", F_OK) == 0 {
            throw AuthzError(.alreadyExists, "\(destination) already holds a data.mdb; refusing to overwrite it")
        }
        do {
            let env = try LMDBEnvironment(path: directory, mapSize: 0, maxReaders: 1024, maxDatabases: 8, noSync: false, readOnly: true)
            try copyPrivately(env, to: destination)
            // The copy is one snapshot taken while writes go on: its revision is read from the
            // copy itself (no lock file: nothing else opens it), not from the source before.
            let copy = try LMDBEnvironment(path: destination, mapSize: 0, maxReaders: 1, maxDatabases: 8, noSync: false, readOnly: true, noLock: true)
            return try withExtendedLifetime(copy) {
                let txn = try LMDBTransaction(env: copy, readOnly: true)
                defer { txn.abort() }
                let meta = try txn.openDatabase("meta", create: false)
                return try txn.get(meta, Array("revision".utf8)) { raw in raw.count == 8 ? raw.loadUnaligned(as: UInt64.self).littleEndian : 0 } ?? 0
            }
        } catch let e as LMDBError {
            throw translate(e, .backup, directory: directory)
        }
    }

    /// Copies `env` into a new `directory/data.mdb` created 0600 (never readable by others, even
    /// for a moment), fsynced; removes the partial file on failure. Throws `LMDBError` from the
    /// copy, FAILED_PRECONDITION when the file cannot be created.
    static func copyPrivately(_ env: LMDBEnvironment, to directory: String) throws {
        let path = directory + "/data.mdb"
        let fd: Int32
        do {
            fd = try posix("open", path) { open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        } catch let f as POSIXFailure {
            throw AuthzError(.failedPrecondition, "cannot create \(path): \(f.reason)")
        }
        do {
            try env.copy(toDescriptor: fd)
            do { try posix("fsync", path) { fsync(fd) } } catch let f as POSIXFailure { throw AuthzError(.unavailable, "cannot fsync \(path): \(f.reason)") }
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
            throw translate(e, .readBackup(backup), directory: backup)
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
            do {
                try makeDirectory(path)
            } catch let f as POSIXFailure {
                throw AuthzError(.failedPrecondition, "cannot create data directory \(path): \(f.reason)")
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
        do {
            try posix("rename", tmp) { rename(tmp, directory + "/data.mdb") }
        } catch let f as POSIXFailure {
            throw AuthzError(.failedPrecondition, "cannot move the restored file into place: \(f.reason)")
        }
    }

    /// Copies a file into a new file created 0600 and fsynced. FAILED_PRECONDITION naming the
    /// path that failed.
    static func copyFile(_ source: String, to destination: String) throws {
        let src: Int32
        do {
            src = try posix("open", source) { open(source, O_RDONLY | O_CLOEXEC) }
        } catch let f as POSIXFailure {
            throw AuthzError(.notFound, "\(source) cannot be read: \(f.reason)")
        }
        defer { close(src) }
        do {
            let dst = try posix("open", destination) { open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
            defer { close(dst) }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let n = try posix("read", source) { buffer.withUnsafeMutableBytes { Glibc.read(src, $0.baseAddress, $0.count) } }
                if n == 0 { break }
                var off = 0
                while off < n {
                    let w = try posix("write", destination) { buffer[off..<n].withUnsafeBytes { Glibc.write(dst, $0.baseAddress, $0.count) } }
                    guard w > 0 else { throw POSIXFailure(call: "write", path: destination, errno: EIO) }
                    off += w
                }
            }
            try posix("fsync", destination) { fsync(dst) }
        } catch let f as POSIXFailure {
            let what = f.call == "open" ? "create" : f.call
            throw AuthzError(.failedPrecondition, "cannot \(what) \(f.path): \(f.reason)")
        }
    }

    /// `mkdir(path, 0700)`; an existing directory (EEXIST) is not an error. Throws `POSIXFailure`.
    static func makeDirectory(_ path: String) throws {
        do {
            try posix("mkdir", path) { mkdir(path, 0o700) }
        } catch let f as POSIXFailure where f.errno == EEXIST {
            return
        }
    }

    /// Throws FAILED_PRECONDITION when `path` is not a directory, or is writable by group or
    /// others (another local user could then replace its files: the LMDB environment, the lock,
    /// the default key ring), naming the path, its mode and the `chmod` that fixes it.
    static func checkPrivateDirectory(_ path: String) throws {
        var st = stat()
        do {
            try posix("stat", path) { stat(path, &st) }
        } catch let f as POSIXFailure {
            throw AuthzError(.failedPrecondition, "data directory \(path) cannot be read: \(f.reason)")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw AuthzError(.failedPrecondition, "data directory \(path) is not a directory")
        }
        if st.st_mode & 0o022 != 0 {
            throw AuthzError(.failedPrecondition, "data directory \(path) has mode \(String(st.st_mode & 0o7777, radix: 8)): it is writable by group or others, so another local user could replace its files; refusing to use it (fix: chmod 700 \(path))")
        }
    }

}
