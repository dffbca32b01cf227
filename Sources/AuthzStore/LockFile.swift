import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive `flock` on a file, held for the object's lifetime (and released by the kernel
/// if the process dies).
final class LockFile {
    let fd: Int32

    init(path: String) throws {
        do {
            fd = try posix("open", path) { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        } catch let f as POSIXFailure {
            throw AuthzError(.failedPrecondition, "cannot open \(path): \(f.reason)")
        }
        do {
            try posix("flock", path) { flock(fd, LOCK_EX | LOCK_NB) }
        } catch {
            close(fd)
            throw AuthzError(.failedPrecondition, "data directory is in use by another authzd process (lock \(path) is held)")
        }
    }

    deinit { close(fd) }
}
