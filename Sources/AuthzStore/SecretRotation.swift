import AuthzModel
#if canImport(Glibc)
import Glibc
#endif

/// Re-encryption of platform-credential secrets to the key ring's active key, offline
/// (`authzd keys rotate-data --offline`) or while the daemon serves (the RotateSecrets call).
///
/// Crash-safe and resumable: every ciphertext names the key that sealed it, each batch
/// commits atomically, and a rotation in progress is recorded in `meta` (`rotate_secrets_to`)
/// so a daemon restarted mid-rotation resumes it. Batches take the store's write lock one at a
/// time, so writes interleave with a rotation that runs in the background. Rotation does not
/// change the revision (no logical change).
extension Store {
    static let rotationMetaKey = Array("rotate_secrets_to".utf8)

    /// Re-reads the key ring file and makes it the sealer: new secrets are sealed with its
    /// active key at once. FAILED_PRECONDITION (naming them) when the new ring lacks a key id
    /// that still seals a secret in the store, or when the store has no key ring; the old ring
    /// then stays in use. Returns the new ring.
    public func reloadKeyRing() throws -> KeyRing {
        guard sealer != nil else {
            throw AuthzError(.failedPrecondition, "no key ring is loaded: rotation needs the key ring (\(ringPath) or --keyring)")
        }
        let ring = try KeyRing.load(path: ringPath)
        let missing = try sealingKeyIdsInUse().subtracting(ring.ids).sorted()
        if !missing.isEmpty {
            throw AuthzError(.failedPrecondition, "the key ring \(ringPath) lacks key id(s) \(missing.joined(separator: ", ")) that still seal secrets; keep them in the ring (retired, without `active`) until rotation finishes")
        }
        replaceSealer(SecretSealer(ring: ring))
        return ring
    }

    /// The ids of the keys sealing the credential secrets held now.
    public func sealingKeyIdsInUse() throws -> Set<String> {
        var used = Set<String>()
        try read { reader in
            for t in try reader.tenantIDs() {
                try mapped {
                    try reader.txn.scan(records, prefix: Store.credentialPrefix(t)) { _, value in
                        if let ids = try RecordCodec.credentialKeyIds(value) { used.formUnion(ids) }
                        return true
                    }
                }
            }
        }
        return used
    }

    /// Credentials whose secrets some key other than the active one sealed.
    public func staleSecretCount() throws -> Int {
        guard let active = sealer?.ring.activeId else { return 0 }
        var n = 0
        try read { reader in
            for t in try reader.tenantIDs() {
                try mapped {
                    try reader.txn.scan(records, prefix: Store.credentialPrefix(t)) { _, value in
                        if let ids = try RecordCodec.credentialKeyIds(value), ids.contains(where: { $0 != active }) { n += 1 }
                        return true
                    }
                }
            }
        }
        return n
    }

    static func credentialPrefix(_ tenant: ID) -> [UInt8] {
        var prefix: [UInt8] = []
        appendID(tenant, to: &prefix)
        prefix.append(EntityKind.platformCredential.rawValue)
        return prefix
    }

    /// The key id a rotation in progress re-encrypts to, or nil when none is recorded.
    public func rotationTarget() throws -> String? {
        try read { reader in
            try mapped { try reader.txn.get(meta, Store.rotationMetaKey) { String(decoding: $0, as: UTF8.self) } }
        }
    }

    /// Records (or, with nil, clears) the rotation in progress.
    public func setRotationTarget(_ id: String?) throws {
        try writeTransaction { txn in
            if let id { try txn.put(meta, Store.rotationMetaKey, Array(id.utf8)) } else { try txn.delete(meta, Store.rotationMetaKey) }
        }
    }

    /// Re-encrypts at most `batchSize` stale credentials to the active key in one write
    /// transaction, under the write lock. Returns how many it re-encrypted: 0 when none is
    /// left. DATA_LOSS naming the credential when a secret cannot be opened with the ring.
    public func rotateSecretsBatch(batchSize: Int = 256) throws -> Int {
        guard let sealer else {
            throw AuthzError(.failedPrecondition, "no key ring is loaded: rotation needs the key ring (\(ringPath) or --keyring)")
        }
        let active = sealer.ring.activeId
        return try writeTransaction { txn in
            let reader = StoreReader(store: self, txn: txn)
            var stale: [([UInt8], Entity)] = []
            for t in try reader.tenantIDs() {
                try txn.scan(records, prefix: Store.credentialPrefix(t)) { key, value in
                    if let ids = try RecordCodec.credentialKeyIds(value), ids.contains(where: { $0 != active }) {
                        let e = try RecordCodec.decode(value, sealer: sealer)
                        if case .platformCredential(let c) = e, let why = c.unreadableSecret {
                            throw AuthzError(.dataLoss, "cannot re-encrypt platform_credential \(c.fields.id): \(why.reason); add its key to the ring, or overwrite or deactivate the credential", field: "platform_credential.secret_unreadable")
                        }
                        stale.append((Array(key), e))
                    }
                    return stale.count < batchSize
                }
                if stale.count >= batchSize { break }
            }
            for (key, e) in stale { try txn.put(records, key, try RecordCodec.encode(e, sealer: sealer)) }
            return stale.count
        }
    }

    /// Re-encrypts every stale credential, batch by batch (see `rotateSecretsBatch`), recording
    /// the rotation in `meta` until it finishes. Returns the number re-encrypted.
    /// `stopAfter` (tests) stops after about that many records, as a crash would, leaving the
    /// rotation recorded. `progress` is called after each batch with the running total.
    public func rotateSecrets(batchSize: Int = 256, stopAfter: Int? = nil, progress: (Int) -> Void = { _ in }) throws -> Int {
        guard let active = sealer?.ring.activeId else {
            throw AuthzError(.failedPrecondition, "no key ring is loaded: rotation needs the key ring (\(ringPath) or --keyring)")
        }
        try setRotationTarget(active)
        var done = 0
        while true {
            let size = stopAfter.map { min(batchSize, $0 - done) } ?? batchSize
            if size <= 0 { return done }
            let n = try rotateSecretsBatch(batchSize: size)
            if n == 0 { break }
            done += n
            progress(done)
        }
        try setRotationTarget(nil)
        return done
    }
}
