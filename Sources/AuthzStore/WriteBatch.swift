import AuthzModel
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Applies one batch of write operations inside one LMDB write transaction, then validates
/// every touched record against the state the batch leaves. Throwing leaves the transaction
/// to be aborted by its owner: nothing of the batch is kept.
final class WriteBatch {
    let store: Store
    let txn: LMDBTransaction
    let reader: StoreReader
    let now: Int64
    /// What the batch knows of one touched record.
    private struct Slot {
        /// The record as stored before the batch (nil when the batch creates it).
        var before: Entity?
        /// The record as the batch leaves it.
        var current: Entity
        /// The stored bytes the batch wrote for it last (the change log reuses them).
        var encoded: [UInt8]
        /// The op that first touched it (error labels).
        var firstOp: Int
    }
    /// Touched records in first-touch order; `slotOf` finds one by id. One table instead of a
    /// dictionary per attribute: a bulk import hashes each id once or twice, not six times.
    private var slots: [Slot] = []
    private var slotOf: [ID: Int] = [:]
    private var currentOp = 0
    private var created: [EntityKind: Int] = [:]
    /// Referenced records already looked up during validation (records outside the batch
    /// cannot change while the batch holds the write transaction).
    private var referenceCache: [ID: Entity] = [:]

    /// With `deferPuts` (imports), new keys of the records, ids, refs and names databases are
    /// collected here and written at the end of `apply`, sorted, with `MDB_APPEND` wherever
    /// they sort after the database's last key (every key, into an empty database): LMDB then
    /// fills pages in order instead of searching the tree and splitting pages for each put.
    /// Deletes are never deferred. Before an op re-touches a record of the batch, everything
    /// pending is written, so the op sees LMDB exactly as without deferral.
    var deferPuts = false
    private var pending: [UInt32: PendingPuts] = [:]
    /// The bytes each database's pending list starts with (from the batch's op count).
    private var pendingCapacity = 0
    /// Names the pending puts claim (uniqueness is checked against them and LMDB).
    private var pendingNames: [[UInt8]: ID] = [:]

    private func current(_ id: ID) -> Entity? { slotOf[id].map { slots[$0].current } }

    /// Keep `created_at` / `updated_at` given in upserted records (imports) instead of setting them.
    var keepTimestamps = false
    /// The revision to record instead of the next one (a replicated log's sequence).
    var revision: UInt64?
    /// `upsertIfNewer` operations that changed nothing (the stored record was as new or newer).
    private(set) var skipped = 0

    init(store: Store, txn: LMDBTransaction, now: Int64) {
        self.store = store
        self.txn = txn
        self.reader = StoreReader(store: store, txn: txn)
        self.now = now
    }

    /// Applies `ops`; an error's message is prefixed with `label(i)` of the op it concerns
    /// (when the batch has more than one op).
    func apply(_ ops: [WriteOp], label: (Int) -> String) throws -> WriteOutcome {
        if deferPuts {
            // An import touches about one record per op: size the tables once rather than
            // growing (and copying) them a dozen times.
            slots.reserveCapacity(ops.count)
            slotOf.reserveCapacity(ops.count)
            pendingCapacity = 64 * ops.count
        }
        for (i, op) in ops.enumerated() {
            currentOp = i
            do {
                try apply(op)
            } catch var e as AuthzError where e.code != .internal {
                if ops.count > 1 { e.message = label(i) + ": " + e.message }
                throw e
            }
        }
        var changes: [(before: Entity?, after: Entity)] = []
        changes.reserveCapacity(slots.count)
        for slot in slots {
            do {
                try validateReferences(slot.current)
            } catch var err as AuthzError where err.code != .internal {
                if ops.count > 1 { err.message = label(slot.firstOp) + ": " + err.message }
                throw err
            }
            changes.append((slot.before, slot.current))
        }
        try writePending()
        let roleBindings = try roleBindingsOfTouchedUsers()
        let revision = try self.revision ?? (reader.revision() + 1)
        try putCounter("revision", revision)
        try store.recordChanges(txn, revision: revision, count: slots.count) { i in (slots[i].current, slots[i].encoded, slots[i].before) }
        for (kind, n) in created {
            try putCounter("count." + kind.name, try reader.counter("count." + kind.name) + UInt64(n))
        }
        return WriteOutcome(revision: revision, changes: changes, skipped: skipped, roleBindings: roleBindings)
    }

    /// `WriteOutcome.roleBindings`: for every user whose role bindings the batch touched, the
    /// active bindings as the batch leaves them. A user the batch created can only hold
    /// bindings of this batch (references are validated), so those come from the batch
    /// itself (a bulk import reads nothing back); the others are read in this transaction,
    /// after every pending put, so they include the batch.
    private func roleBindingsOfTouchedUsers() throws -> [ID: [ID: [WriteOutcome.Binding]]] {
        var touched: [ID: Set<ID>] = [:]
        var createdUsers: Set<ID> = []
        var fromBatch: [ID: [WriteOutcome.Binding]] = [:]
        for slot in slots {
            switch slot.current {
            case .roleBinding(let b):
                touched[b.fields.tenantId, default: []].insert(b.userId)
                if case .roleBinding(let old)? = slot.before, old.userId != b.userId { touched[b.fields.tenantId, default: []].insert(old.userId) }
                if b.fields.isActive { fromBatch[b.userId, default: []].append((b.roleId, b.scope)) }
            case .user(let u) where slot.before == nil:
                createdUsers.insert(u.fields.id)
            default:
                break
            }
        }
        var out: [ID: [ID: [WriteOutcome.Binding]]] = [:]
        for (tenant, users) in touched {
            var lists: [ID: [WriteOutcome.Binding]] = [:]
            lists.reserveCapacity(users.count)
            for u in users {
                if createdUsers.contains(u) {
                    lists[u] = fromBatch[u] ?? []
                } else {
                    lists[u] = try reader.roleBindings(ofUser: u, tenant: tenant).filter(\.fields.isActive).map { ($0.roleId, $0.scope) }
                }
            }
            out[tenant] = lists
        }
        return out
    }

    private func putCounter(_ key: String, _ value: UInt64) throws {
        var v = value.littleEndian
        try txn.put(store.meta, Array(key.utf8), withUnsafeBytes(of: &v) { Array($0) })
    }

    /// Records `e` (encoded as `bytes`) as the batch's latest version of its record.
    private func touch(_ e: Entity, old: Entity?, bytes: [UInt8]) {
        if let i = slotOf[e.id] {
            slots[i].current = e
            slots[i].encoded = bytes
            return
        }
        slotOf[e.id] = slots.count
        slots.append(Slot(before: old, current: e, encoded: bytes, firstOp: currentOp))
        if old == nil { created[e.kind, default: 0] += 1 }
    }

    /// Puts `key` now, or collects it for `writePending` when puts are deferred.
    private func put(_ dbi: UInt32, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws {
        if deferPuts {
            pendingList(dbi).append(key: key, value: value)
        } else {
            try txn.put(dbi, key, value)
        }
    }

    /// The pending puts of `dbi`, created on first use.
    private func pendingList(_ dbi: UInt32) -> PendingPuts {
        if let list = pending[dbi] { return list }
        let list = PendingPuts(reservingBytes: pendingCapacity)
        pending[dbi] = list
        return list
    }

    /// Writes every deferred put, each database's keys in order: appended (`MDB_APPEND`) while
    /// they sort after the database's last key, plain puts before that.
    private func writePending() throws {
        let lists = Array(pending)
        let orders = PendingPuts.sortedOffsets(lists.map(\.value))
        for (n, (dbi, puts)) in lists.enumerated() {
            let order = orders[n]
            // Keys up to the database's last key go in with plain puts; every later one (all of
            // them, into an empty database) is appended. The split is found by binary search.
            var split = 0
            if let last = try txn.lastKey(dbi) {
                var hi = order.count
                while split < hi {
                    let mid = (split + hi) / 2
                    let before = last.withUnsafeBytes { PendingPuts.precedes($0, puts.key(at: order[mid])) }
                    if before { hi = mid } else { split = mid + 1 }
                }
            }
            try txn.withCursor(dbi) { cursor in
                for j in order.indices {
                    // The entry a few puts ahead starts on its way into the cache: in key order
                    // the entries are scattered over the arena.
                    if j + 8 < order.count { puts.prefetch(order[j + 8]) }
                    try cursor.put(puts.key(at: order[j]), puts.value(at: order[j]), append: j >= split)
                }
            }
        }
        pending.removeAll()
        pendingNames.removeAll()
    }

    private func apply(_ op: WriteOp) throws {
        switch op {
        case .upsert(var entity), .upsertIfNewer(var entity):
            try entity.validate()
            let existing = try existingRecord(for: entity.kind, tenant: entity.tenantId, id: entity.id)
            var f = entity.fields
            if case .upsertIfNewer = op {
                guard f.updatedAt > 0 else {
                    throw AuthzError.invalid("\(entity.kind.name).updated_at", "is required for upsert_if_newer (it orders the change)")
                }
                if let old = existing {
                    if old.fields.updatedAt >= f.updatedAt { skipped += 1; return }
                    f.createdAt = old.fields.createdAt
                } else if f.createdAt == 0 {
                    f.createdAt = f.updatedAt
                }
            } else if keepTimestamps && f.createdAt != 0 {
                f.updatedAt = f.updatedAt != 0 ? f.updatedAt : now
            } else {
                f.createdAt = existing?.fields.createdAt ?? now
                f.updatedAt = now
            }
            f.schemaVersion = RecordFields.currentSchemaVersion
            entity.fields = f
            if case .platformCredential(var c) = entity, c.secretsRedacted {
                // A redacted read written back keeps the stored secrets.
                guard case .platformCredential(let old)? = existing else {
                    throw AuthzError.invalid("platform_credential.secrets_redacted", "is set but no stored credential exists to take the tokens from")
                }
                c.accessToken = old.accessToken
                c.refreshToken = old.refreshToken
                c.secretsRedacted = false
                entity = .platformCredential(c)
            }
            try put(entity, replacing: existing)
        case .deactivate(let ref), .activate(let ref):
            var activate = false
            if case .activate = op { activate = true }
            guard ref.id != .zero else { throw AuthzError.invalid("ref.id", "must be a UUID other than the nil UUID") }
            let tenant = ref.kind == .tenant ? ref.id : ref.tenantId
            guard let existing = try existingRecord(for: ref.kind, tenant: tenant, id: ref.id, mustExist: true) else {
                throw AuthzError.notFound("\(ref.kind.name) \(ref.id) does not exist in tenant \(tenant)", field: "ref.id")
            }
            var e = existing
            e.fields.isActive = activate
            e.fields.updatedAt = now
            try put(e, replacing: existing)
        }
    }

    /// The stored record with `id`, after checking that the id is not used by a record of
    /// another kind or tenant.
    ///
    /// Nothing about another tenant leaks: an id held in another tenant answers ALREADY_EXISTS
    /// "is not available" (ids are unique in the daemon) without the holder's kind or tenant,
    /// and for `mustExist` (deactivate, activate) it is the same NOT_FOUND as a missing id.
    private func existingRecord(for kind: EntityKind, tenant: ID, id: ID, mustExist: Bool = false) throws -> Entity? {
        if !pending.isEmpty, slotOf[id] != nil { try writePending() }
        guard let (t, k) = try reader.locate(id) else { return nil }
        if t != tenant {
            if mustExist { return nil }
            throw AuthzError(.alreadyExists, "\(kind.name).id \(id) is not available: ids are unique in the daemon; choose another", field: "\(kind.name).id")
        }
        if k != kind {
            throw AuthzError(.alreadyExists, "\(kind.name).id \(id) is already used by a \(k.name)", field: "\(kind.name).id")
        }
        return try reader.entity(kind, tenant: tenant, id: id)
    }

    private func put(_ e: Entity, replacing old: Entity?) throws {
        let t = e.tenantId
        // A second op on a record of the batch works on LMDB as it stands: write what is pending.
        if !pending.isEmpty, slotOf[e.id] != nil { try writePending() }
        // Names.
        if let (newKey, field) = uniqueKey(e) {
            let oldKey = old.flatMap { uniqueKey($0)?.0 }
            if oldKey != newKey {
                let holder = try pendingNames[newKey] ?? txn.get(store.names, newKey) { raw -> ID in
                    // A damaged value is never read past its end, nor overwritten as if free.
                    guard raw.count == 16 else { throw AuthzError(.dataLoss, "the name index entry for \(field) \(uniqueLabel(e)) is not an id (\(raw.count) bytes)") }
                    return readID(raw, at: 0)
                }
                if let holder, holder != e.id {
                    throw AuthzError(.alreadyExists, "\(field) \(uniqueLabel(e)) is already used by \(e.kind.name) \(holder)", field: field)
                }
                if let oldKey { try txn.delete(store.names, oldKey) }
                if deferPuts { pendingNames[newKey] = e.id }
                try FixedKey(id: e.id).withUnsafeBytes { id in try newKey.withUnsafeBytes { try put(store.names, $0, id) } }
            }
        }
        // References.
        let oldRefs = old.map(refKeys) ?? []
        let newRefs = refKeys(e)
        for k in oldRefs where !newRefs.contains(k) { try k.withUnsafeBytes { try txn.delete(store.refs, $0) } }
        for k in newRefs where !oldRefs.contains(k) { try k.withUnsafeBytes { try put(store.refs, $0, UnsafeRawBufferPointer(start: nil, count: 0)) } }
        if old == nil {
            try FixedKey(id: e.id).withUnsafeBytes { key in
                try FixedKey(location: t, e.kind).withUnsafeBytes { try put(store.ids, key, $0) }
            }
        }
        let bytes = try RecordCodec.encode(e, sealer: store.sealer)
        try FixedKey(record: t, e.kind, e.id).withUnsafeBytes { key in try bytes.withUnsafeBytes { try put(store.records, key, $0) } }
        touch(e, old: old, bytes: bytes)
    }

    private func uniqueKey(_ e: Entity) -> ([UInt8], String)? {
        switch e {
        case .tenant(let x): return (Store.nameKey(x.fields.id, .tenant, x.name), "tenant.name")
        case .role(let x): return (Store.nameKey(x.fields.tenantId, .role, x.name), "role.name")
        case .permission(let x): return (Store.nameKey(x.fields.tenantId, .permission, x.name), "permission.name")
        case .platformCredential(let c): return (Store.credentialKey(c), "platform_credential.external_account_id")
        default: return nil
        }
    }

    private func uniqueLabel(_ e: Entity) -> String {
        switch e {
        case .tenant(let x): return "\"\(x.name)\""
        case .role(let x): return "\"\(x.name)\""
        case .permission(let x): return "\"\(x.name)\""
        case .platformCredential(let c): return "\"\(c.externalAccountId)\" on \(c.platform) for user \(c.ownerUserId)"
        default: return ""
        }
    }

    private func refKeys(_ e: Entity) -> [FixedKey] {
        let t = e.tenantId
        switch e {
        case .tenant(let x): return [FixedKey(ref: .zero, .tenant, .zero, x.fields.id)]
        case .roleBinding(let b):
            return [FixedKey(ref: t, .userRoleBinding, b.userId, b.fields.id), FixedKey(ref: t, .roleRoleBinding, b.roleId, b.fields.id)]
        case .permissionBinding(let b):
            return [FixedKey(ref: t, .rolePermissionBinding, b.roleId, b.fields.id), FixedKey(ref: t, .permissionBinding, b.permissionId, b.fields.id)]
        case .platformCredential(let c): return [FixedKey(ref: t, .userCredential, c.ownerUserId, c.fields.id)]
        default: return []
        }
    }

    // MARK: validation against the resulting state

    /// Looks up a referenced record: it must exist, be of `kind` and live in `tenant`
    /// (`mustExist`'s rules and answers).
    private func referenced(_ kind: EntityKind, _ id: ID, tenant: ID, field fieldName: @autoclosure () -> String) throws -> Entity {
        try mustExist(kind, id, tenant: tenant, field: fieldName())
        if let e = current(id) ?? referenceCache[id] { return e }
        guard let e = try reader.entity(kind, tenant: tenant, id: id) else {
            throw AuthzError.internalError("index names \(id) but the record is missing")
        }
        referenceCache[id] = e
        return e
    }

    /// The tenant and kind of every id found in LMDB during validation. An id never changes
    /// either (an upsert that would is refused), and records outside the batch cannot change
    /// while the batch holds the write transaction: a lookup is valid for the whole batch.
    private var located: [ID: (tenant: ID, kind: EntityKind)] = [:]

    /// The tenant and kind of the record `id` as the batch leaves it (the batch's own records
    /// first, so that a record an import has not yet written counts), nil when no record has it.
    private func place(of id: ID) throws -> (tenant: ID, kind: EntityKind)? {
        if let i = slotOf[id] { return (slots[i].current.tenantId, slots[i].current.kind) }
        if let p = located[id] { return p }
        guard let p = try reader.locate(id) else { return nil }
        located[id] = p
        return p
    }

    /// Requires a reference to name a record of `kind` in `tenant`, without decoding it.
    /// NOT_FOUND for an id no record has and for another tenant's id (the same answer: another
    /// tenant's ids are not disclosed); FAILED_PRECONDITION for a record of another kind.
    private func mustExist(_ kind: EntityKind, _ id: ID, tenant: ID, field fieldName: @autoclosure () -> String) throws {
        guard let (t, k) = try place(of: id), t == tenant else {
            let field = fieldName()
            throw AuthzError(.notFound, "\(field) \(id) does not exist", field: field)
        }
        if k != kind {
            let field = fieldName()
            throw AuthzError(.failedPrecondition, "\(field) \(id) is a \(k.name), not a \(kind.name)", field: field)
        }
    }

    private func validateReferences(_ e: Entity) throws {
        let t = e.tenantId
        if e.kind != .tenant {
            try mustExist(.tenant, t, tenant: t, field: "\(e.kind.name).tenant_id")
        }
        switch e {
        case .tenant, .user:
            break
        case .role(let r):
            for (i, parent) in r.inherits.enumerated() {
                try mustExist(.role, parent, tenant: t, field: "role.inherits[\(i)]")
            }
            try checkAcyclic(from: r)
            for stored in try reader.roleBindings(ofRole: r.fields.id, tenant: t) {
                guard case .roleBinding(let b)? = current(stored.fields.id) ?? .roleBinding(stored), b.roleId == r.fields.id, !r.scopes.contains(b.scope) else { continue }
                throw AuthzError(.failedPrecondition, "role.scopes \(r.scopes) of role \"\(r.name)\" must include scope \"\(b.scope)\" of its role_binding \(b.fields.id)", field: "role.scopes")
            }
        case .permission(let p):
            for stored in try reader.permissionBindings(ofPermission: p.fields.id, tenant: t) {
                guard case .permissionBinding(let b)? = current(stored.fields.id) ?? .permissionBinding(stored), b.permissionId == p.fields.id, !p.scopes.contains(b.scope) else { continue }
                throw AuthzError(.failedPrecondition, "permission.scopes \(p.scopes) of permission \"\(p.name)\" must include scope \"\(b.scope)\" of its permission_binding \(b.fields.id)", field: "permission.scopes")
            }
        case .roleBinding(let b):
            try mustExist(.user, b.userId, tenant: t, field: "role_binding.user_id")
            guard case .role(let role) = try referenced(.role, b.roleId, tenant: t, field: "role_binding.role_id") else { return }
            if !role.scopes.contains(b.scope) {
                throw AuthzError(.failedPrecondition, "role_binding.scope \"\(b.scope)\" is not in role \"\(role.name)\".scopes \(role.scopes)", field: "role_binding.scope")
            }
        case .permissionBinding(let b):
            try mustExist(.role, b.roleId, tenant: t, field: "permission_binding.role_id")
            guard case .permission(let p) = try referenced(.permission, b.permissionId, tenant: t, field: "permission_binding.permission_id") else { return }
            if !p.scopes.contains(b.scope) {
                throw AuthzError(.failedPrecondition, "permission_binding.scope \"\(b.scope)\" is not in permission \"\(p.name)\".scopes \(p.scopes)", field: "permission_binding.scope")
            }
        case .platformCredential(let c):
            try mustExist(.user, c.ownerUserId, tenant: t, field: "platform_credential.owner_user_id")
        }
    }

    /// Roles of the batch's tenant whose whole ancestry is known to be acyclic (black) or is on
    /// the current search path (gray). Shared by every role the batch touches, so one batch
    /// visits each ancestor once: linear in the roles it reaches, whatever their depth.
    private var roleColor: [ID: Bool] = [:]  // false: on the path; true: done

    /// The role `id` of tenant `t` as the batch leaves it, nil when it is not a role there
    /// (references are reported elsewhere).
    private func roleRecord(_ id: ID, tenant t: ID) throws -> Role? {
        if let e = current(id) ?? referenceCache[id] {
            if case .role(let r) = e, r.fields.tenantId == t { return r }
            return nil
        }
        guard case .role(let r)? = try reader.entity(.role, tenant: t, id: id) else { return nil }
        referenceCache[id] = .role(r)
        return r
    }

    /// Iterative depth-first search from `role` along `inherits`, three-coloured: meeting a
    /// role that is on the current path is a cycle, reported with the whole path. Never
    /// recurses; never copies the path.
    private func checkAcyclic(from role: Role) throws {
        let t = role.fields.tenantId
        if roleColor[role.fields.id] == true { return }
        var stack: [(role: Role, next: Int)] = [(role, 0)]
        roleColor[role.fields.id] = false
        while !stack.isEmpty {
            let top = stack.count - 1
            let r = stack[top].role
            if stack[top].next == r.inherits.count {
                roleColor[r.fields.id] = true
                stack.removeLast()
                continue
            }
            let parentId = r.inherits[stack[top].next]
            stack[top].next += 1
            switch roleColor[parentId] {
            case true?:
                continue
            case false?:
                let from = stack.firstIndex { $0.role.fields.id == parentId } ?? 0
                let names = stack[from...].map(\.role.name) + [stack[from].role.name]
                throw AuthzError(.failedPrecondition, "role.inherits of role \"\(role.name)\" makes an inheritance cycle: \(names.joined(separator: " → "))", field: "role.inherits")
            case nil:
                guard let parent = try roleRecord(parentId, tenant: t) else { continue }
                roleColor[parentId] = false
                stack.append((parent, 0))
            }
        }
    }
}
