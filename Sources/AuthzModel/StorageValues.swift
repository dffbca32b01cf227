import Foundation

// Values the storage layer and the layers above it share: how writes reach the disk, where a
// reading of the change log stands, and what one message of the replicated log changes. Plain
// values: the store defines how they are kept, the engine and the server only pass them on.

/// How a write reaches the disk.
public enum SyncMode: String, Sendable, CaseIterable {
    /// Default. A write is acknowledged after LMDB's commit has fsynced: it survives `kill -9`
    /// and power loss.
    case full
    /// `MDB_NOSYNC`: commits are not fsynced. A write survives a crash of the process (the
    /// kernel holds it) but the last writes before a power loss or kernel crash may be lost.
    case nosync
}

/// Where a reading of the change log stopped: resume a later read after it.
public struct ChangePosition: Sendable, Equatable, Comparable {
    /// The revision of the last change read.
    public var revision: UInt64
    /// Its index within that revision (`UInt32.max`: after all of the revision's changes).
    public var index: UInt32

    /// Just after every change of `revision` (a watcher that has seen all of it).
    public static func after(revision: UInt64) -> ChangePosition { ChangePosition(revision: revision, index: .max) }

    /// The position after change `index` of `revision`.
    public init(revision: UInt64, index: UInt32) {
        self.revision = revision
        self.index = index
    }

    /// Log order: by revision, then by index.
    public static func < (a: ChangePosition, b: ChangePosition) -> Bool {
        (a.revision, a.index) < (b.revision, b.index)
    }
}

/// A page of the change log (`Engine.changes(after:limit:includeBeforeImages:where:)`).
public struct ChangePage: Sendable {
    /// The changes that matched, in commit order.
    public var changes: [Change]
    /// With `includeBeforeImages`: bindings as they were before a write re-pointed them to
    /// another user, role or permission (what a reader needs to know who lost a grant).
    public var beforeImages: [Change] = []
    /// Where the next page starts (after the last change scanned, matching or not).
    public var position: ChangePosition
    /// Every change up to this revision has been scanned: the reader holds them all.
    public var complete: UInt64
    /// The reading reached the end of the log at the reader's revision.
    public var atEnd: Bool

    /// A page as the change log's reader assembles it.
    public init(changes: [Change], beforeImages: [Change] = [], position: ChangePosition, complete: UInt64, atEnd: Bool) {
        self.changes = changes
        self.beforeImages = beforeImages
        self.position = position
        self.complete = complete
        self.atEnd = atEnd
    }
}

/// What one message of a replicated log changes (`Engine.applyLogged`).
public enum LoggedChange: Sendable {
    /// Operations, applied as `write(_:now:keepTimestamps:)` would.
    case write([WriteOp], now: Int64, keepTimestamps: Bool)
    /// An API key record to store.
    case key(ApiKey)
    /// Nothing to store here (another shard's tenant, an unreadable message).
    case skip
}

/// The result of an acknowledged write: everything the compiled index needs to follow it,
/// so that nothing above the store re-reads what the write just wrote.
public struct WriteOutcome: Sendable {
    /// One active role binding of a user: the role and the scope it is bound at.
    public typealias Binding = (role: ID, scope: Scope)

    /// The revision the batch created.
    public var revision: UInt64
    /// Every record the batch touched: as it was before the batch (nil when new) and as it is
    /// now, in the order the batch first touched them.
    public var changes: [(before: Entity?, after: Entity)]
    /// `upsertIfNewer` operations that changed nothing (the stored record was as new or newer).
    public var skipped = 0
    /// By tenant, then user: the complete list of active role bindings, as the batch leaves
    /// them, of every user whose role bindings the batch touched (a binding moved from one
    /// user to another counts for both). A user with no active binding left has an empty list.
    public var roleBindings: [ID: [ID: [Binding]]] = [:]

    /// An outcome of `changes` at `revision`.
    public init(revision: UInt64, changes: [(before: Entity?, after: Entity)], skipped: Int = 0,
                roleBindings: [ID: [ID: [Binding]]] = [:]) {
        self.revision = revision
        self.changes = changes
        self.skipped = skipped
        self.roleBindings = roleBindings
    }
}
