import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
