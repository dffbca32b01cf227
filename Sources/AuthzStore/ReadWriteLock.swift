#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A reader-writer lock: many holders at once in shared mode, one alone in exclusive mode.
///
/// The one lock of the code base that NIO's vocabulary (`NIOLock`, `NIOLockedValueBox`,
/// `ConditionLock`) lacks. The store holds it shared around every read transaction and
/// exclusively to grow the LMDB map (`mdb_env_set_mapsize` needs no transaction open in the
/// process). The pthread lock lives in its own allocation, never inline in a Swift object
/// (whose stored properties have no stable address to hand to C).
final class ReadWriteLock: @unchecked Sendable {  // the pthread lock is the synchronisation
    private let rwlock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        rwlock = .allocate(capacity: 1)
        rwlock.initialize(to: pthread_rwlock_t())
        let err = pthread_rwlock_init(rwlock, nil)
        precondition(err == 0, "pthread_rwlock_init failed: \(err)")
    }

    deinit {
        pthread_rwlock_destroy(rwlock)
        rwlock.deinitialize(count: 1)
        rwlock.deallocate()
    }

    /// Takes the lock shared (blocks while an exclusive holder has it).
    func lockShared() {
        let err = pthread_rwlock_rdlock(rwlock)
        precondition(err == 0, "pthread_rwlock_rdlock failed: \(err)")
    }

    /// Takes the lock exclusively (blocks until every holder has released it).
    func lockExclusive() {
        let err = pthread_rwlock_wrlock(rwlock)
        precondition(err == 0, "pthread_rwlock_wrlock failed: \(err)")
    }

    /// Releases the lock taken by this thread (either mode).
    func unlock() {
        let err = pthread_rwlock_unlock(rwlock)
        precondition(err == 0, "pthread_rwlock_unlock failed: \(err)")
    }
}
