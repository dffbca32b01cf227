import AuthzModel
import Foundation
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif

/// A read transaction kept open across calls (see `Store.openSnapshot`). Thread-safe: uses are
/// serialised; the environment is opened `MDB_NOTLS`, so successive uses may come from
/// different threads. Closed by `close()`, by `deinit`, or by the store when its map grows.
public final class StoreSnapshot: @unchecked Sendable {  // `txn` is only touched under `lock`
    let store: Store
    private var txn: LMDBTransaction?
    private let lock = NIOLock()

    init(store: Store, txn: LMDBTransaction) {
        self.store = store
        self.txn = txn
    }

    deinit {
        txn?.abort()
    }

    func withTransaction<T>(_ body: (LMDBTransaction?) throws -> T) rethrows -> T {
        try lock.withLock { try body(txn) }
    }

    /// Aborts the transaction; later reads are ABORTED.
    func invalidate() {
        lock.withLock {
            txn?.abort()
            txn = nil
        }
    }

    /// Reads at the snapshot. ABORTED once the snapshot is closed.
    public func read<T>(_ body: (StoreReader) throws -> T) throws -> T { try store.read(self, body) }

    /// Ends the snapshot (its reader slot and pinned pages are released).
    public func close() {
        invalidate()
        store.snapshots.withLockedValue { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
    }
}
