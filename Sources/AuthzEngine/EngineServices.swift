import AuthzModel
import AuthzStore

// What the daemon needs of the storage beyond records and decisions — API keys, the data key
// ring, the replicated log's sealing and bookkeeping, storage figures — offered by the engine,
// so that nothing above it (AuthzServer) imports AuthzStore or sees LMDB. Each facade is a thin
// value over the engine's store; its methods block on LMDB (call them off event loops).

extension EngineOptions {
    /// How a write reaches the disk (default `.full`: fsynced before it is acknowledged).
    public var sync: SyncMode {
        get { store.sync }
        set { store.sync = newValue }
    }
    /// Initial LMDB map size in bytes; the map doubles when full, up to `maxMapSize`.
    public var mapSize: Int {
        get { store.mapSize }
        set { store.mapSize = newValue }
    }
    /// Ceiling of the map's growth: a write needing more is RESOURCE_EXHAUSTED.
    public var maxMapSize: Int {
        get { store.maxMapSize }
        set { store.maxMapSize = newValue }
    }
    /// The data key ring's path (nil: `DIR/keyring`, created at first start).
    public var keyRingPath: String? {
        get { store.keyRingPath }
        set { store.keyRingPath = newValue }
    }
    /// Migrate an older data directory at open (default) instead of refusing it.
    public var autoMigrate: Bool {
        get { store.autoMigrate }
        set { store.autoMigrate = newValue }
    }
    /// How many changes the change log keeps for Watch (0: none, Watch refused).
    public var changeRetention: Int {
        get { store.changeRetention }
        set { store.changeRetention = newValue }
    }
}

/// Where the daemon's API key records persist: the engine's store (`Engine.keyStorage`) or a
/// data directory opened without a daemon (`init(directory:keyRingPath:)`, for
/// `authzd keys … --offline`). Key records hold no secret, only its hash.
public struct KeyStorage: Sendable {
    let store: Store

    init(store: Store) { self.store = store }

    /// Opens the data directory `directory` for key management only (no index is compiled).
    /// It never creates a key ring: key management seals nothing. Throws what opening the
    /// store throws (a data directory another process holds is FAILED_PRECONDITION).
    public init(directory: String, keyRingPath: String?) throws {
        var o = StoreOptions()
        o.keyRingPath = keyRingPath
        o.keyRing = .loadIfPresent
        store = try Store(directory: directory, options: o)
    }

    /// Every stored key.
    public func all() throws -> [ApiKey] { try store.keys() }

    /// Stores (inserts or replaces) `key`. Blocks for the commit.
    public func save(_ key: ApiKey) throws { try store.putKey(key) }

    /// Whether a tenant record `id` exists (active or not).
    public func tenantExists(_ id: ID) throws -> Bool {
        try store.read { try $0.entity(.tenant, tenant: id, id: id) } != nil
    }

    /// The bytes of a key record as it is stored and replicated (`decode(id:_:)` reads them).
    public static func encode(_ key: ApiKey) -> [UInt8] { Store.keyRecordBytes(key) }

    /// Decodes `encode`'s bytes. DATA_LOSS for a malformed record.
    public static func decode(id: ID, _ bytes: [UInt8]) throws -> ApiKey { try Store.keyRecord(id: id, bytes) }
}

/// The data key ring and the re-encryption of credential secrets to its active key
/// (`Engine.secrets`; see docs/security.md, "Key rotation").
public struct SecretKeys: Sendable {
    let store: Store

    /// The active key's id, or nil when no key ring is loaded.
    public var activeKeyId: String? { store.sealer?.ring.activeId }

    /// Every key id of the ring in use, sorted (empty without a ring).
    public var keyIds: [String] { store.sealer?.ring.ids ?? [] }

    /// Re-reads the key ring file and seals new secrets with its active key at once.
    /// FAILED_PRECONDITION (old ring kept) when it lacks a key still sealing a secret, or when
    /// no ring is loaded. Returns the new ring's active id and key ids.
    public func reload() throws -> (activeKeyId: String, keyIds: [String]) {
        let ring = try store.reloadKeyRing()
        return (ring.activeId, ring.ids)
    }

    /// Credentials whose secrets a key other than the active one sealed.
    public func staleCount() throws -> Int { try store.staleSecretCount() }

    /// The key an unfinished rotation re-encrypts to (recorded so a restart resumes it), or nil.
    public func rotationTarget() throws -> String? { try store.rotationTarget() }

    /// Records (or, with nil, clears) the rotation in progress.
    public func setRotationTarget(_ id: String?) throws { try store.setRotationTarget(id) }

    /// Re-encrypts at most `batchSize` stale credentials in one commit; returns how many.
    public func rotateBatch(batchSize: Int) throws -> Int { try store.rotateSecretsBatch(batchSize: batchSize) }
}

/// Seals and opens the replicated log's messages with the data key ring (every replica needs
/// the same ring). `Engine.logSealer` is nil when no key ring is loaded.
public struct LogSealer: Sendable {
    let sealer: SecretSealer

    /// AES-GCM with the ring's active key, bound to `context` (subject, id, kind, time).
    public func seal(_ plaintext: [UInt8], context: String) throws -> [UInt8] {
        try sealer.sealMessage(plaintext, context: context)
    }

    /// Opens `seal`'s output. DATA_LOSS naming the key when it is not in the ring, or when the
    /// message was altered or moved to another subject or id.
    public func open(_ sealed: [UInt8], context: String) throws -> [UInt8] {
        try sealer.openMessage(sealed, context: context)
    }

    /// Whether the ring holds key `id`.
    public func knows(_ id: String) -> Bool { sealer.ring.ids.contains(id) }

    /// The id of the key that sealed `sealed`, or nil when it is not a sealed message.
    public static func keyId(of sealed: [UInt8]) -> String? { SecretSealer.keyId(of: sealed) }
}

extension Engine {
    /// The API key records of this engine's data directory.
    public var keyStorage: KeyStorage { KeyStorage(store: store) }

    /// The data key ring and secret rotation.
    public var secrets: SecretKeys { SecretKeys(store: store) }

    /// The log sealer over the current key ring, or nil when none is loaded.
    public var logSealer: LogSealer? { store.sealer.map(LogSealer.init) }

    /// A text setting kept beside the data (`log.stream`, `push.position`), or nil when unset.
    public func setting(_ key: String) throws -> String? { try store.metaText(key) }

    /// Sets a text setting kept beside the data. Blocks for the commit.
    public func setSetting(_ key: String, _ value: String) throws { try store.setMetaText(key, value) }

    /// The committed revision as the store holds it (equal to `revision` except during a write,
    /// between its commit and its publish).
    public func storedRevision() throws -> UInt64 { try store.revision() }

    /// Every tenant id of the store, in id order.
    public func tenantIDs() throws -> [ID] { try store.read { try $0.tenantIDs() } }

    /// The LMDB map's size and the bytes in use (metrics).
    public var storageUsage: (size: Int, used: Int) { store.mapUsage() }

    /// Flushes everything to disk (meaningful in `.nosync` mode). Called at shutdown.
    public func sync() throws { try store.sync() }
}
