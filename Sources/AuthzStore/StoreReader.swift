import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A consistent read view of the store, valid only inside `Store.read`'s closure (or a write
/// batch). Every method names its tenant: no method returns a record of another tenant.
public final class StoreReader {
    let store: Store
    let txn: LMDBTransaction

    init(store: Store, txn: LMDBTransaction) {
        self.store = store
        self.txn = txn
    }

    /// The last committed revision.
    public func revision() throws -> UInt64 {
        try counter("revision")
    }

    /// The record of `kind` with `id` in `tenant`, or nil.
    public func entity(_ kind: EntityKind, tenant: ID, id: ID) throws -> Entity? {
        try FixedKey(record: tenant, kind, id).withUnsafeBytes { key in
            try txn.get(store.records, key) { try RecordCodec.decode($0, sealer: store.sealer) }
        }
    }

    public func entity(_ ref: RecordRef) throws -> Entity? {
        try entity(ref.kind, tenant: ref.tenantId, id: ref.id)
    }

    /// Where an id lives: its tenant and kind, whatever the tenant. Used to explain a
    /// cross-tenant or wrong-kind reference; never to return the record.
    public func locate(_ id: ID) throws -> (tenant: ID, kind: EntityKind)? {
        try FixedKey(id: id).withUnsafeBytes { key in
            try txn.get(store.ids, key) { raw -> (ID, EntityKind)? in
                guard raw.count == 17, let kind = EntityKind(rawValue: raw[16]) else { return nil }
                return (readID(raw, at: 0), kind)
            } ?? nil
        }
    }

    /// The id of the record of `kind` named `name` in `tenant` (tenants: `tenant` is ignored).
    public func id(named name: String, kind: EntityKind, tenant: ID) throws -> ID? {
        try txn.get(store.names, Store.nameKey(tenant, kind, name)) { raw -> ID? in
            raw.count == 16 ? readID(raw, at: 0) : nil
        } ?? nil
    }

    func children(_ tenant: ID, _ tag: RefTag, _ parent: ID) throws -> [ID] {
        var out: [ID] = []
        try txn.scan(store.refs, prefix: Store.refPrefix(tenant, tag, parent)) { key, _ in
            out.append(readID(key, at: 33))
            return true
        }
        return out
    }

    /// A user's role bindings, active or not.
    public func roleBindings(ofUser user: ID, tenant: ID) throws -> [RoleBinding] {
        try children(tenant, .userRoleBinding, user).compactMap {
            if case .roleBinding(let b)? = try entity(.roleBinding, tenant: tenant, id: $0) { return b }
            return nil
        }
    }

    /// A role's role bindings (the users bound to it), active or not.
    public func roleBindings(ofRole role: ID, tenant: ID) throws -> [RoleBinding] {
        try children(tenant, .roleRoleBinding, role).compactMap {
            if case .roleBinding(let b)? = try entity(.roleBinding, tenant: tenant, id: $0) { return b }
            return nil
        }
    }

    /// A role's permission bindings, active or not.
    public func permissionBindings(ofRole role: ID, tenant: ID) throws -> [PermissionBinding] {
        try children(tenant, .rolePermissionBinding, role).compactMap {
            if case .permissionBinding(let b)? = try entity(.permissionBinding, tenant: tenant, id: $0) { return b }
            return nil
        }
    }

    /// A permission's bindings, active or not.
    public func permissionBindings(ofPermission permission: ID, tenant: ID) throws -> [PermissionBinding] {
        try children(tenant, .permissionBinding, permission).compactMap {
            if case .permissionBinding(let b)? = try entity(.permissionBinding, tenant: tenant, id: $0) { return b }
            return nil
        }
    }

    /// A user's platform credentials, active or not.
    public func credentials(ofUser user: ID, tenant: ID) throws -> [PlatformCredential] {
        try children(tenant, .userCredential, user).compactMap {
            if case .platformCredential(let c)? = try entity(.platformCredential, tenant: tenant, id: $0) { return c }
            return nil
        }
    }

    /// Every tenant's id, in id order.
    public func tenantIDs() throws -> [ID] {
        try children(.zero, .tenant, .zero)
    }

    /// Up to `limit` records of `kind` in `tenant` with id > `after`, in id order. For tenants,
    /// `tenant` is ignored and every tenant is listed.
    public func list(_ kind: EntityKind, tenant: ID, after: ID?, limit: Int) throws -> [Entity] {
        if kind == .tenant {
            var out: [Entity] = []
            for t in try tenantIDs() where after.map({ t > $0 }) ?? true {
                if let e = try entity(.tenant, tenant: t, id: t) { out.append(e) }
                if out.count >= limit { break }
            }
            return out
        }
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        prefix.append(kind.rawValue)
        var from: [UInt8]? = nil
        if let after {
            from = Store.recordKey(tenant, kind, after)
            from!.append(0)  // strictly after
        }
        var out: [Entity] = []
        try txn.scan(store.records, prefix: prefix, from: from) { _, value in
            out.append(try RecordCodec.decode(value, sealer: store.sealer))
            return out.count < limit
        }
        return out
    }

    /// Visits every record of `tenant` (the tenant record first, then by kind and id).
    /// Visits `tenant`'s records in key order starting after the record key `after` (nil: from
    /// the first), until `body` returns false. `body` gets each record's key (an opaque resume
    /// point) and the record.
    public func forEachRecord(tenant: ID, after: [UInt8]?, _ body: ([UInt8], Entity) throws -> Bool) throws {
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        var skipFirst = false
        var from: [UInt8]? = nil
        if let after, after.count > prefix.count, Array(after.prefix(prefix.count)) == prefix {
            from = after
            skipFirst = true
        }
        try txn.scan(store.records, prefix: prefix, from: from) { key, value in
            if skipFirst {
                skipFirst = false
                if Array(key) == from! { return true }
            }
            return try body(Array(key), try RecordCodec.decode(value, sealer: store.sealer))
        }
    }

    public func forEachRecord(tenant: ID, _ body: (Entity) throws -> Void) throws {
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        try txn.scan(store.records, prefix: prefix) { _, value in
            try body(try RecordCodec.decode(value, sealer: store.sealer))
            return true
        }
    }

    /// Visits every role binding of `tenant` reading only the fields the index needs:
    /// `(isActive, userId, roleId, scope)`. Much cheaper than `forEachRecord` on large tenants.
    public func forEachRoleBinding(tenant: ID, _ body: (Bool, ID, ID, Scope) throws -> Void) throws {
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        prefix.append(EntityKind.roleBinding.rawValue)
        try txn.scan(store.records, prefix: prefix) { _, value in
            if let (active, user, role, scope) = try RecordCodec.peekRoleBinding(value) {
                try body(active, user, role, scope)
            }
            return true
        }
    }

    /// Visits the id and active flag of every user of `tenant`, without decoding the rest.
    public func forEachUser(tenant: ID, _ body: (ID, Bool) throws -> Void) throws {
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        prefix.append(EntityKind.user.rawValue)
        try txn.scan(store.records, prefix: prefix) { key, value in
            guard value.count >= 4 else { throw ByteReader.corrupt }
            try body(readID(key, at: 17), value[3] & 1 != 0)
            return true
        }
    }

    func counter(_ key: String) throws -> UInt64 {
        try txn.get(store.meta, Array(key.utf8)) { raw in
            raw.count == 8 ? raw.loadUnaligned(as: UInt64.self).littleEndian : 0
        } ?? 0
    }

    /// Counts of records per kind (active or not), over all tenants. O(1): kept by writes.
    public func counts() throws -> StoreCounts {
        var c = StoreCounts()
        for k in EntityKind.allCases { c.byKind[k] = Int(try counter("count." + k.name)) }
        return c
    }
}
