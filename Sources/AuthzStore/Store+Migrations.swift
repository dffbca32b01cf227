import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Store {
    /// One step of the format, `from` → `from + 1`, applied inside one write transaction
    /// together with the new format number: killed halfway, the step did not happen.
    struct Migration: Sendable {
        let from: UInt32
        let name: String
        let apply: @Sendable (LMDBTransaction, Store) throws -> Void
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

    /// The format steps from `format` to the current one, each in its own write transaction
    /// that also records the new format number.
    func migrate(from format: UInt32) throws {
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
}
