import AuthzModel

// The change log: every record a write touched, keyed by `revision ‖ index`, in the same
// transaction as the write, so a committed revision has all its changes and an aborted one
// none. Bounded by `StoreOptions.changeRetention`: the write that passes the bound drops the
// oldest entries and raises `changes.floor`, the oldest revision a reader may resume after.

extension Store {
    static func changeKey(_ revision: UInt64, _ index: UInt32) -> [UInt8] {
        var k: [UInt8] = []
        k.reserveCapacity(12)
        for i in 0..<8 { k.append(UInt8(truncatingIfNeeded: revision >> (56 - 8 * UInt64(i)))) }
        for i in 0..<4 { k.append(UInt8(truncatingIfNeeded: index >> (24 - 8 * UInt32(i)))) }
        return k
    }

    /// Most entries one write drops from the log (a write after a huge import drops the rest
    /// over the following writes rather than in one long transaction).
    static let maxPrunedPerWrite = 100_000

    /// Index of the first before-image of a revision (they sort after its changes).
    static let beforeImageIndex: UInt32 = 0x8000_0000

    /// The binding `before` was, when `after` re-points it (another user, role or permission):
    /// the before-image to log, else nil.
    static func beforeImage(_ before: Entity?, _ after: Entity) -> Entity? {
        switch (before, after) {
        case (.roleBinding(let b)?, .roleBinding(let a)) where b.userId != a.userId || b.roleId != a.roleId: return before
        case (.permissionBinding(let b)?, .permissionBinding(let a)) where b.roleId != a.roleId || b.permissionId != a.permissionId: return before
        default: return nil
        }
    }

    /// Records the `count` changes `change(0..<count)` (in order) as the changes of `revision`,
    /// then drops the oldest entries beyond the retention. Inside the write's transaction. Each
    /// record may come with the bytes the records database got for it (reused unless it holds
    /// secrets), and with the record it replaced: a binding re-pointed elsewhere is also logged as it was (a
    /// before-image, after the revision's changes), so that `--push` names who lost a grant.
    func recordChanges(_ txn: LMDBTransaction, revision: UInt64, count: Int, _ change: (Int) -> (after: Entity, stored: [UInt8]?, before: Entity?)) throws {
        let retention = options.changeRetention
        guard retention > 0 else {
            // No log: a reader could resume from nowhere but here.
            var v = revision.littleEndian
            try txn.put(meta, Array("changes.floor".utf8), withUnsafeBytes(of: &v) { Array($0) })
            return
        }
        for i in 0..<count {
            let (e, stored, _) = change(i)
            let bytes: [UInt8]
            if case .platformCredential(var c) = e {
                c.accessToken = ""
                c.refreshToken = ""
                c.unreadableSecret = nil
                c.secretUnreadable = false
                c.secretsRedacted = true
                bytes = try RecordCodec.encode(.platformCredential(c), sealer: nil)
            } else {
                bytes = try stored ?? RecordCodec.encode(e, sealer: nil)
            }
            // Keys rise with the revision: appended at the end of the tree (a plain put if some
            // key sorts after, which only a damaged log could hold).
            let key = Store.changeKey(revision, UInt32(truncatingIfNeeded: i))
            do {
                try txn.append(changesDB, key, bytes)
            } catch LMDBError.keyExist {
                try txn.put(changesDB, key, bytes)
            }
        }
        var images = 0
        for i in 0..<count {
            let (e, _, before) = change(i)
            guard let old = Store.beforeImage(before, e) else { continue }
            let key = Store.changeKey(revision, Store.beforeImageIndex + UInt32(truncatingIfNeeded: images))
            images += 1
            let bytes = try RecordCodec.encode(old, sealer: nil)
            do {
                try txn.append(changesDB, key, bytes)
            } catch LMDBError.keyExist {
                try txn.put(changesDB, key, bytes)
            }
        }
        let excess = min(try txn.count(changesDB) - retention, Store.maxPrunedPerWrite)
        guard excess > 0 else { return }
        var doomed: [[UInt8]] = []
        doomed.reserveCapacity(excess)
        try txn.scan(changesDB, prefix: []) { key, _ in
            doomed.append(Array(key))
            return doomed.count < excess
        }
        var floor = try StoreReader(store: self, txn: txn).changeFloor()
        for k in doomed {
            try txn.delete(changesDB, k)
            let r = k.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            floor = max(floor, r)
        }
        var v = floor.littleEndian
        try txn.put(meta, Array("changes.floor".utf8), withUnsafeBytes(of: &v) { Array($0) })
    }
}

extension StoreReader {
    /// The oldest revision a reader may resume after: changes of later revisions are all in
    /// the log; some of this one's or earlier ones' were dropped (or never recorded: a data
    /// directory from before the change log starts it at its revision then).
    public func changeFloor() throws -> UInt64 {
        try counter("changes.floor")
    }

    /// Up to `limit` changes after `position` for which `matches(tenant, kind)` holds, scanning
    /// at most `scanLimit` entries. OUT_OF_RANGE when `position` is before the floor (changes
    /// it needs were dropped); FAILED_PRECONDITION when the store keeps no change log.
    public func changes(after position: ChangePosition, limit: Int, scanLimit: Int = 4096, includeBeforeImages: Bool = false,
                        where matches: (ID, EntityKind) -> Bool) throws -> ChangePage {
        guard store.options.changeRetention > 0 else {
            throw AuthzError(.failedPrecondition, "this daemon keeps no change log (watch-retention = 0): set watch-retention to watch changes")
        }
        let floor = try changeFloor()
        // Inside a revision (a reader paging through a large write), the floor's own revision
        // may have lost entries after the position too.
        if position.revision < floor || (position.index != .max && position.revision == floor) {
            throw AuthzError(.outOfRange, "changes after revision \(position.revision) are no longer kept (the change log starts after revision \(floor)): re-read the state (Export) and watch from its revision", field: "watch.from_revision")
        }
        let head = try revision()
        var out: [Change] = []
        var images: [Change] = []
        var last = position
        var scanned = 0
        var ended = true
        let start = position.index == .max ? Store.changeKey(position.revision &+ 1, 0) : Store.changeKey(position.revision, position.index &+ 1)
        if position < .after(revision: head) {
            try txn.scan(store.changesDB, prefix: [], from: start) { key, value in
                if scanned >= scanLimit || out.count >= limit { ended = false; return false }
                scanned += 1
                let r = key.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                let i = key.dropFirst(8).prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                last = ChangePosition(revision: r, index: i)
                // kind at byte 2, tenant at 20..36 of the record encoding.
                guard value.count >= 36, let kind = EntityKind(rawValue: value[2]) else { throw AuthzError(.dataLoss, "change \(r).\(i) is not a record") }
                if i >= Store.beforeImageIndex {
                    if includeBeforeImages && matches(readID(value, at: 20), kind) {
                        images.append(Change(revision: r, entity: try RecordCodec.decode(value, sealer: nil)))
                    }
                    return true
                }
                if matches(readID(value, at: 20), kind) {
                    var e = try RecordCodec.decode(value, sealer: nil)
                    if case .platformCredential(var c) = e {
                        c.secretsRedacted = true
                        e = .platformCredential(c)
                    }
                    out.append(Change(revision: r, entity: e))
                }
                return true
            }
        }
        // Complete through the revision before the last one scanned, unless the log ended.
        let complete = ended ? head : (last.revision > 0 ? last.revision - 1 : 0)
        // Never past the store's own revision: a position ahead of it (a watcher resuming on a
        // daemon restored from an older backup) is complete only through what this store has,
        // so that a resume repeats changes rather than skips them.
        return ChangePage(changes: out, beforeImages: images, position: ended ? .after(revision: head) : last,
                          complete: min(head, max(complete, position.index == .max ? position.revision : position.revision &- 1)), atEnd: ended)
    }
}
