import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Store {
    // MARK: API keys

    /// Stores (inserts or replaces) an API key record. Blocks for the commit.
    public func putKey(_ k: ApiKey) throws {
        try writeTransaction { try $0.put(keysDB, Store.idKey(k.id), Store.encodeKey(k)) }
    }

    /// The bytes of a key record as the store keeps it (no secret: its hash), for replicating
    /// key changes through a log. `keyRecord(id:_:)` reads it back.
    public static func keyRecordBytes(_ k: ApiKey) -> [UInt8] { encodeKey(k) }

    /// Decodes `keyRecordBytes`. DATA_LOSS for a malformed record.
    public static func keyRecord(id: ID, _ bytes: [UInt8]) throws -> ApiKey {
        try bytes.withUnsafeBytes { try decodeKey(id: id, $0) }
    }

    /// Every stored API key (secrets are not stored; only their hashes).
    public func keys() throws -> [ApiKey] {
        try read { r in
            var out: [ApiKey] = []
            try r.txn.scan(keysDB, prefix: []) { key, value in
                out.append(try Store.decodeKey(id: readID(key, at: 0), value))
                return true
            }
            return out
        }
    }

    /// The encoding of a key record (version 1): `1 ‖ role ‖ tenant ‖ created ‖ expires ‖
    /// revoked ‖ hash ‖ name`, then, since keys carry the secrets rule, `flags (bit 0: may read
    /// secrets) ‖ created_by`. The trailing fields are an extension older builds skip (they read
    /// up to the name and ignore the rest), so a rollback still starts; a key such a build
    /// rewrites loses them and with them the right to read secrets (fail closed).
    static func encodeKey(_ k: ApiKey) -> [UInt8] {
        var w = ByteWriter()
        w.u8(1)
        w.u8(k.role.rawValue)
        w.id(k.tenantId)
        w.i64(k.createdAt)
        w.i64(k.expiresAt)
        w.i64(k.revokedAt)
        w.bytes(k.secretHash)
        w.str(k.name)
        w.u8(k.maySeeSecrets ? 1 : 0)
        w.id(k.createdBy)
        return w.bytes
    }

    /// Decodes a key record. One without the trailing fields (stored before keys carried the
    /// secrets rule) decodes with `maySeeSecrets == false` and `createdBy == .zero`: fail closed,
    /// since who created it is unknown. Throws DATA_LOSS for an unknown version or a truncated
    /// record.
    static func decodeKey(id: ID, _ value: UnsafeRawBufferPointer) throws -> ApiKey {
        var b = ByteReader(value)
        guard try b.u8() == 1, let role = KeyRole(rawValue: try b.u8()) else { throw ByteReader.corrupt }
        let tenant = try b.id()
        let created = try b.i64(), expires = try b.i64(), revoked = try b.i64()
        let hash = try b.bytes()
        let name = try b.str()
        var k = ApiKey(id: id, tenantId: tenant, role: role, name: name, createdAt: created,
                       expiresAt: expires, revokedAt: revoked, secretHash: hash)
        if b.pos < value.count {
            k.maySeeSecrets = try b.u8() & 1 != 0
            k.createdBy = try b.id()
        }
        return k
    }

}
