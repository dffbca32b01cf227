import AuthzModel

/// The binary encoding of a record in LMDB.
///
/// Layout (little-endian): `schema_version u16`, `kind u8`, `flags u8` (bit 0 = active),
/// `id 16`, `tenant_id 16`, `created_at i64`, `updated_at i64`, `metadata str`, then the
/// kind's own fields. `str` is a u32 length and UTF-8 bytes; an optional string is a u8 flag
/// and a `str`. A reader dispatches on `schema_version` first, so that records written by an
/// older build stay readable (see docs/migrations.md).
enum RecordCodec {
    /// Encodes a record; platform-credential tokens are sealed with `sealer` (an error without
    /// one, so that no secret is ever written in clear). A credential that carries the
    /// ciphertexts of unreadable tokens (`unreadableSecret`) has them written back byte for
    /// byte instead: nothing can re-seal what nothing can open.
    static func encode(_ e: Entity, sealer: SecretSealer?) throws -> [UInt8] {
        var w = ByteWriter()
        let f = e.fields
        w.u16(RecordFields.currentSchemaVersion)
        w.u8(e.kind.rawValue)
        w.u8(f.isActive ? 1 : 0)
        w.id(f.id)
        w.id(f.tenantId)
        w.i64(f.createdAt)
        w.i64(f.updatedAt)
        w.str(f.metadata)
        switch e {
        case .tenant(let t):
            w.str(t.name)
        case .user(let u):
            w.optStr(u.email); w.optStr(u.displayName); w.optStr(u.externalId)
        case .role(let r):
            w.str(r.name); w.str(r.description); w.u8(r.scopes.mask)
            w.u32(UInt32(r.inherits.count))
            for i in r.inherits { w.id(i) }
        case .permission(let p):
            w.str(p.name); w.str(p.service); w.u8(p.scopes.mask)
        case .roleBinding(let b):
            w.id(b.userId); w.id(b.roleId); w.u8(b.scope.rawValue)
        case .permissionBinding(let b):
            w.id(b.roleId); w.id(b.permissionId); w.u8(b.scope.rawValue)
        case .platformCredential(let c):
            w.id(c.ownerUserId); w.str(c.platform); w.str(c.externalAccountId)
            if let kept = c.unreadableSecret {
                w.bytes(kept.sealedAccessToken)
                w.bytes(kept.sealedRefreshToken)
            } else {
                if c.secretUnreadable {
                    throw AuthzError.internalError("platform_credential \(f.id) is marked secret_unreadable without its stored ciphertexts")
                }
                if !(c.accessToken.isEmpty && c.refreshToken.isEmpty) && sealer == nil {
                    throw AuthzError(.failedPrecondition, "no key ring is loaded: refusing to store platform credential secrets in clear")
                }
                w.bytes(try sealer?.seal(c.accessToken, tenant: f.tenantId, owner: c.ownerUserId, credential: f.id, field: "access_token") ?? [])
                w.bytes(try sealer?.seal(c.refreshToken, tenant: f.tenantId, owner: c.ownerUserId, credential: f.id, field: "refresh_token") ?? [])
            }
            w.i64(c.tokenExpiresAt)
            w.u32(UInt32(c.oauthScopes.count))
            for s in c.oauthScopes { w.str(s) }
        }
        return w.bytes
    }

    /// Decodes a record. Throws `AuthzError(.dataLoss)` for bytes that are not a record of a
    /// known schema version.
    ///
    /// Never throws for platform-credential tokens that cannot be decrypted (no key ring, a key
    /// missing from it, a failed authentication): the credential is returned with empty tokens,
    /// `secretsRedacted` and `secretUnreadable` set and the ciphertexts in `unreadableSecret`,
    /// so that one bad ciphertext fails only the reads that need it.
    static func decode(_ raw: UnsafeRawBufferPointer, sealer: SecretSealer?) throws -> Entity {
        var r = ByteReader(raw)
        let version = try r.u16()
        guard version >= 1 && version <= RecordFields.currentSchemaVersion else {
            throw AuthzError(.dataLoss, "record has schema_version \(version); this build reads 1...\(RecordFields.currentSchemaVersion)")
        }
        guard let kind = EntityKind(rawValue: try r.u8()) else { throw AuthzError(.dataLoss, "record has an unknown kind") }
        let flags = try r.u8()
        var f = RecordFields(id: try r.id(), tenantId: try r.id())
        f.isActive = flags & 1 != 0
        f.createdAt = try r.i64()
        f.updatedAt = try r.i64()
        f.metadata = try r.str()
        f.schemaVersion = version
        var e: Entity
        switch kind {
        case .tenant:
            e = .tenant(Tenant(id: f.id, name: try r.str()))
        case .user:
            e = .user(User(id: f.id, tenantId: f.tenantId, email: try r.optStr(), displayName: try r.optStr(), externalId: try r.optStr()))
        case .role:
            let name = try r.str(), desc = try r.str(), mask = try r.u8()
            let n = Int(try r.u32())
            guard n <= FieldLimits.maxListItems else { throw AuthzError(.dataLoss, "role record is corrupt") }
            var inherits: [ID] = []
            for _ in 0..<n { inherits.append(try r.id()) }
            e = .role(Role(id: f.id, tenantId: f.tenantId, name: name, description: desc, scopes: ScopeSet(mask: mask), inherits: inherits))
        case .permission:
            e = .permission(Permission(id: f.id, tenantId: f.tenantId, name: try r.str(), service: try r.str(), scopes: ScopeSet(mask: try r.u8())))
        case .roleBinding:
            e = .roleBinding(RoleBinding(id: f.id, tenantId: f.tenantId, userId: try r.id(), roleId: try r.id(), scope: try r.scope()))
        case .permissionBinding:
            e = .permissionBinding(PermissionBinding(id: f.id, tenantId: f.tenantId, roleId: try r.id(), permissionId: try r.id(), scope: try r.scope()))
        case .platformCredential:
            let owner = try r.id(), platform = try r.str(), ext = try r.str(), atSealed = try r.bytes(), rtSealed = try r.bytes(), exp = try r.i64()
            func open(_ sealed: [UInt8], _ field: String) throws -> String {
                if sealed.isEmpty { return "" }
                guard let sealer else {
                    throw AuthzError(.dataLoss, "platform_credential.\(field) of \(f.id) is encrypted and no key ring is loaded")
                }
                return try sealer.open(sealed, tenant: f.tenantId, owner: owner, credential: f.id, field: field)
            }
            var at = "", rt = ""
            var unreadable: UnreadableSecret?
            do {
                at = try open(atSealed, "access_token")
                rt = try open(rtSealed, "refresh_token")
            } catch let e as AuthzError where e.code == .dataLoss {
                at = ""; rt = ""
                unreadable = UnreadableSecret(reason: e.message, sealedAccessToken: atSealed, sealedRefreshToken: rtSealed)
            }
            let n = Int(try r.u32())
            guard n <= FieldLimits.maxListItems else { throw AuthzError(.dataLoss, "credential record is corrupt") }
            var scopes: [String] = []
            for _ in 0..<n { scopes.append(try r.str()) }
            var c = PlatformCredential(id: f.id, tenantId: f.tenantId, ownerUserId: owner, platform: platform,
                                       externalAccountId: ext, accessToken: at, refreshToken: rt,
                                       tokenExpiresAt: exp, oauthScopes: scopes)
            if let unreadable {
                c.secretsRedacted = true
                c.secretUnreadable = true
                c.unreadableSecret = unreadable
            }
            e = .platformCredential(c)
        }
        e.fields = f
        return e
    }

    /// The key ids the sealed tokens of a credential record were made with (empty tokens have
    /// none). Nil when the record is not a platform credential.
    static func credentialKeyIds(_ raw: UnsafeRawBufferPointer) throws -> [String]? {
        var r = ByteReader(raw)
        _ = try r.u16()
        guard try r.u8() == EntityKind.platformCredential.rawValue else { return nil }
        _ = try r.u8()
        try r.skip(16 + 16 + 8 + 8)
        try r.skipStr()
        try r.skip(16)
        try r.skipStr()
        try r.skipStr()
        return [try r.bytes(), try r.bytes()].compactMap { SecretSealer.keyId(of: $0) }
    }

    /// The fields the index needs from a role binding, without building an `Entity`:
    /// `(isActive, userId, roleId, scope)`. Nil when the record is not a role binding.
    static func peekRoleBinding(_ raw: UnsafeRawBufferPointer) throws -> (Bool, ID, ID, Scope)? {
        var r = ByteReader(raw)
        _ = try r.u16()
        guard try r.u8() == EntityKind.roleBinding.rawValue else { return nil }
        let active = try r.u8() & 1 != 0
        try r.skip(16 + 16 + 8 + 8)
        _ = try r.skipStr()
        return (active, try r.id(), try r.id(), try r.scope())
    }
}

struct ByteWriter {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(128) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v & 0xFF)); bytes.append(UInt8(v >> 8)) }
    mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    mutating func i64(_ v: Int64) {
        let u = UInt64(bitPattern: v)
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: u >> (8 * UInt64(i)))) }
    }
    mutating func id(_ v: ID) { appendID(v, to: &bytes) }
    mutating func str(_ s: String) {
        u32(UInt32(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }
    mutating func bytes(_ b: [UInt8]) {
        u32(UInt32(b.count))
        bytes.append(contentsOf: b)
    }
    mutating func optStr(_ s: String?) {
        if let s { u8(1); str(s) } else { u8(0) }
    }
}

/// Appends an id's 16 big-endian bytes (big-endian so that keys sort by id).
@inline(__always) func appendID(_ v: ID, to bytes: inout [UInt8]) {
    for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v.hi >> (56 - 8 * UInt64(i)))) }
    for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v.lo >> (56 - 8 * UInt64(i)))) }
}

@inline(__always) func readID(_ raw: UnsafeRawBufferPointer, at offset: Int) -> ID {
    var hi: UInt64 = 0, lo: UInt64 = 0
    for i in 0..<8 { hi = hi << 8 | UInt64(raw[offset + i]) }
    for i in 0..<8 { lo = lo << 8 | UInt64(raw[offset + 8 + i]) }
    return ID(hi: hi, lo: lo)
}

struct ByteReader {
    let raw: UnsafeRawBufferPointer
    var pos = 0

    init(_ raw: UnsafeRawBufferPointer) { self.raw = raw }

    static let corrupt = AuthzError(.dataLoss, "record is truncated or corrupt")

    mutating func need(_ n: Int) throws {
        if n < 0 || pos + n > raw.count { throw ByteReader.corrupt }
    }
    mutating func skip(_ n: Int) throws { try need(n); pos += n }
    mutating func u8() throws -> UInt8 { try need(1); defer { pos += 1 }; return raw[pos] }
    mutating func u16() throws -> UInt16 { try need(2); defer { pos += 2 }; return UInt16(raw[pos]) | UInt16(raw[pos + 1]) << 8 }
    mutating func u32() throws -> UInt32 {
        try need(4)
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(raw[pos + i]) << (8 * UInt32(i)) }
        pos += 4
        return v
    }
    mutating func i64() throws -> Int64 {
        try need(8)
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(raw[pos + i]) << (8 * UInt64(i)) }
        pos += 8
        return Int64(bitPattern: v)
    }
    mutating func id() throws -> ID { try need(16); defer { pos += 16 }; return readID(raw, at: pos) }
    mutating func scope() throws -> Scope {
        guard let s = Scope(rawValue: try u8()) else { throw ByteReader.corrupt }
        return s
    }
    mutating func str() throws -> String {
        let n = Int(try u32())
        try need(n)
        defer { pos += n }
        return String(decoding: UnsafeRawBufferPointer(rebasing: raw[pos..<pos + n]), as: UTF8.self)
    }
    mutating func skipStr() throws { try skip(Int(try u32())) }
    mutating func bytes() throws -> [UInt8] {
        let n = Int(try u32())
        try need(n)
        defer { pos += n }
        return Array(raw[pos..<pos + n])
    }
    mutating func optStr() throws -> String? { try u8() == 0 ? nil : try str() }
}
