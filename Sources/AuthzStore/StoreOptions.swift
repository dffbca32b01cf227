import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Options of the LMDB environment.
public struct StoreOptions: Sendable {
    /// Initial map size in bytes. The map grows (doubling) when full.
    public var mapSize: Int = 1 << 30
    /// Ceiling for growth; a write that needs more fails with RESOURCE_EXHAUSTED.
    public var maxMapSize: Int = 1 << 40
    /// LMDB reader slots (LMDB's default of 126 is too few for a busy daemon).
    public var maxReaders: UInt32 = 1024
    public var sync: SyncMode = .full
    /// Migrate an older data directory at open (default). False: refuse it with a message that
    /// names both versions (then run `authzd migrate`).
    public var autoMigrate = true
    /// Key ring for platform-credential secrets. Nil: `DIR/keyring`. See `KeyRing` and
    /// docs/security.md. A path given here must exist, whatever `keyRing` says.
    public var keyRingPath: String?
    /// What to do when the default key ring `DIR/keyring` does not exist (default: create it,
    /// as the daemon does at first start).
    public var keyRing: KeyRingPolicy = .createIfMissing
    /// How many changes the change log keeps for Watch (the oldest are dropped by the write
    /// that passes the bound); 0 records none (Watch is then refused).
    public var changeRetention: Int = 1_000_000

    public init() {}
}

/// How a store treats a missing default key ring (`DIR/keyring`).
public enum KeyRingPolicy: Sendable {
    /// Create it (0600, one fresh active key). Only for code that will seal secrets: the daemon.
    case createIfMissing
    /// Open without one: reading a sealed secret then fails with DATA_LOSS naming its key, and
    /// storing a secret fails with FAILED_PRECONDITION. For commands that never seal (verify,
    /// migrate, restore, offline key management): they must not invent a key ring that later
    /// seals new secrets with a key the real ring lacks.
    case loadIfPresent
    /// Refuse to open (FAILED_PRECONDITION naming the path) without one.
    case require
}
