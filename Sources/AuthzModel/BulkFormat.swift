/// The spec's JSON Lines bulk format: one entity per line, `"kind"` naming it.
///
/// Decoding is strict: an unknown field, a wrong type or a malformed value is an
/// `.invalidArgument` error naming the field. `created_at` and `updated_at` are decoded (an
/// import keeps them, so that export → import → export is exact; a Write through the API
/// still sets them); `schema_version` is accepted and ignored.
public enum BulkFormat {
    /// Decodes one line. Throws `AuthzError` (`.invalidArgument`) naming the field.
    ///
    /// A line of the common shape (a flat object of plain ASCII strings, booleans, nulls,
    /// arrays of such strings and empty metadata: `FlatLine`) is read in place without a
    /// `JSONValue` tree; any other line, and any line that is not a valid record, is decoded
    /// by the general parser, whose result (or error) is the contract. Both read the fields
    /// through the same mapping (`entity(from:)`).
    public static func decode(line: [UInt8]) throws -> Entity {
        if let e = line.withUnsafeBytes({ decodeFlat($0) }) { return e }
        var r = Reader(members: try object(line, field: "line"))
        return try entity(from: &r)
    }

    /// The record of a line of the common shape, or nil to leave the line to the general
    /// parser (another shape, or anything wrong with it: that parser reports the error).
    static func decodeFlat(_ bytes: UnsafeRawBufferPointer) -> Entity? {
        guard var f = FlatLine(bytes) else { return nil }
        return try? entity(from: &f)
    }

    /// The record whose fields `r` holds (the format's field mapping, shared by both readers).
    static func entity<R: BulkFields>(from r: inout R) throws -> Entity {
        guard let kindName = try r.string("kind") else { throw AuthzError.invalid("kind", "is required") }
        guard let kind = EntityKind(name: kindName) else {
            throw AuthzError.invalid("kind", "\"\(kindName)\" is not one of tenant, user, role, permission, role_binding, permission_binding, platform_credential")
        }
        r.prefix = kind.name + "."
        let id = try r.requiredID("id")
        let isActive = try r.bool("is_active") ?? true
        let metadata = try r.metadata()
        let createdAt = try r.timestamp("created_at") ?? 0, updatedAt = try r.timestamp("updated_at") ?? 0
        r.skip("schema_version")
        var entity: Entity
        switch kind {
        case .tenant:
            if let t = try r.id("tenant_id"), t != id {
                throw AuthzError.invalid("tenant.tenant_id", "must equal the tenant's own id")
            }
            entity = .tenant(Tenant(id: id, name: try r.requiredString("name"), isActive: isActive, metadata: metadata))
        case .user:
            entity = .user(User(id: id, tenantId: try r.requiredID("tenant_id"), email: try r.string("email"),
                                displayName: try r.string("display_name"), externalId: try r.string("external_id"),
                                isActive: isActive, metadata: metadata))
        case .role:
            entity = .role(Role(id: id, tenantId: try r.requiredID("tenant_id"), name: try r.requiredString("name"),
                                description: try r.string("description") ?? "", scopes: try r.scopes("scopes"),
                                inherits: try r.ids("inherits"), isActive: isActive, metadata: metadata))
        case .permission:
            entity = .permission(Permission(id: id, tenantId: try r.requiredID("tenant_id"), name: try r.requiredString("name"),
                                            service: try r.requiredString("service"), scopes: try r.scopes("scopes"),
                                            isActive: isActive, metadata: metadata))
        case .roleBinding:
            let userId = try r.requiredID("user_id")
            if let owner = try r.id("owner_user_id"), owner != userId {
                throw AuthzError.invalid("role_binding.owner_user_id", "must equal user_id")
            }
            entity = .roleBinding(RoleBinding(id: id, tenantId: try r.requiredID("tenant_id"), userId: userId,
                                              roleId: try r.requiredID("role_id"), scope: try r.requiredScope("scope"),
                                              isActive: isActive, metadata: metadata))
        case .permissionBinding:
            entity = .permissionBinding(PermissionBinding(id: id, tenantId: try r.requiredID("tenant_id"),
                                                          roleId: try r.requiredID("role_id"),
                                                          permissionId: try r.requiredID("permission_id"),
                                                          scope: try r.requiredScope("scope"), isActive: isActive,
                                                          metadata: metadata))
        case .platformCredential:
            var c = PlatformCredential(id: id, tenantId: try r.requiredID("tenant_id"),
                                       ownerUserId: try r.requiredID("owner_user_id"),
                                       platform: try r.requiredString("platform"),
                                       externalAccountId: try r.requiredString("external_account_id"),
                                       accessToken: try r.string("access_token") ?? "",
                                       refreshToken: try r.string("refresh_token") ?? "",
                                       tokenExpiresAt: try r.timestamp("token_expires_at") ?? 0,
                                       oauthScopes: try r.strings("oauth_scopes"), isActive: isActive, metadata: metadata)
            c.secretsRedacted = try r.bool("secrets_redacted") ?? false
            // Written by the server on export; the store decides it again on write.
            c.secretUnreadable = try r.bool("secret_unreadable") ?? false
            entity = .platformCredential(c)
        }
        if let extra = r.leftover {
            throw AuthzError.invalid(r.prefix + extra, "is not a field of \(kind.name)")
        }
        entity.fields.createdAt = createdAt
        entity.fields.updatedAt = updatedAt
        try entity.validate()
        return entity
    }

    /// Encodes one entity as a line (no trailing newline). Without `includeSecrets`, platform
    /// credential tokens are left out and `"secrets_redacted":true` is written instead; a
    /// credential whose stored tokens cannot be decrypted also gets `"secret_unreadable":true`
    /// (callers that need the tokens check `Entity.requireReadableSecrets` first).
    ///
    /// The line never holds a raw line break, whatever the record holds: strings are escaped
    /// and metadata is re-serialised (`exportedMetadata`).
    public static func encode(_ entity: Entity, includeSecrets: Bool = false) -> String {
        var w = Writer()
        let f = entity.fields
        w.str("kind", entity.kind.name)
        w.str("id", f.id.description)
        if entity.kind != .tenant { w.str("tenant_id", f.tenantId.description) }
        switch entity {
        case .tenant(let t):
            w.str("name", t.name)
        case .user(let u):
            if let v = u.email { w.str("email", v) }
            if let v = u.displayName { w.str("display_name", v) }
            if let v = u.externalId { w.str("external_id", v) }
        case .role(let r):
            w.str("name", r.name)
            if !r.description.isEmpty { w.str("description", r.description) }
            w.raw("scopes", "[" + r.scopes.scopes.map { "\"\($0.name)\"" }.joined(separator: ",") + "]")
            w.raw("inherits", "[" + r.inherits.map { "\"\($0)\"" }.joined(separator: ",") + "]")
        case .permission(let p):
            w.str("name", p.name)
            w.str("service", p.service)
            w.raw("scopes", "[" + p.scopes.scopes.map { "\"\($0.name)\"" }.joined(separator: ",") + "]")
        case .roleBinding(let b):
            w.str("user_id", b.userId.description)
            w.str("role_id", b.roleId.description)
            w.str("scope", b.scope.name)
            w.str("owner_user_id", b.userId.description)
        case .permissionBinding(let b):
            w.str("role_id", b.roleId.description)
            w.str("permission_id", b.permissionId.description)
            w.str("scope", b.scope.name)
        case .platformCredential(let c):
            w.str("owner_user_id", c.ownerUserId.description)
            w.str("platform", c.platform)
            w.str("external_account_id", c.externalAccountId)
            if includeSecrets && !c.secretsRedacted {
                w.str("access_token", c.accessToken)
                w.str("refresh_token", c.refreshToken)
            } else {
                w.raw("secrets_redacted", "true")
            }
            if c.secretUnreadable { w.raw("secret_unreadable", "true") }
            if c.tokenExpiresAt != 0 { w.str("token_expires_at", Timestamp.format(c.tokenExpiresAt)) }
            var scopes = ""
            JSONWriter.write(.array(c.oauthScopes.map { .string($0) }), into: &scopes)
            w.raw("oauth_scopes", scopes)
        }
        w.raw("is_active", f.isActive ? "true" : "false")
        if f.createdAt != 0 { w.str("created_at", Timestamp.format(f.createdAt)) }
        if f.updatedAt != 0 { w.str("updated_at", Timestamp.format(f.updatedAt)) }
        w.raw("metadata", exportedMetadata(f.metadata))
        w.raw("schema_version", String(f.schemaVersion))
        return w.finish()
    }

    /// Stored metadata as one line of JSON: `{}` for empty, otherwise the object re-serialised
    /// compactly, so that a record stored before metadata was canonicalised on write (which may
    /// hold whitespace line breaks) still exports as one line. Stored metadata was validated as
    /// a JSON object on write; text that no longer parses (a corrupt record) is exported as
    /// `{"authzd_unparseable_metadata":"<the text, escaped>"}` rather than dropped or split.
    static func exportedMetadata(_ stored: String) -> String {
        if stored.isEmpty { return "{}" }
        guard let v = try? JSONParser.parse(Array(stored.utf8)), case .object = v else {
            var out = "{\"authzd_unparseable_metadata\":"
            JSONWriter.writeString(stored, into: &out)
            return out + "}"
        }
        return JSONWriter.serialize(v)
    }

    private struct Writer {
        var out = "{"
        var first = true
        mutating func key(_ k: String) {
            if !first { out += "," }
            first = false
            out += "\"" + k + "\":"
        }
        mutating func str(_ k: String, _ v: String) { key(k); JSONWriter.writeString(v, into: &out) }
        mutating func raw(_ k: String, _ v: String) { key(k); out += v }
        mutating func finish() -> String { out + "}" }
    }

    /// The members of the JSON object `bytes` hold; INVALID_ARGUMENT naming `field` when they
    /// are not valid JSON or not an object.
    static func object(_ bytes: [UInt8], field: String) throws -> [(String, JSONValue)] {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch let e as JSONParser.Failure {
            throw AuthzError.invalid(field, "is not valid JSON: \(e.message)")
        }
        guard case .object(let members) = value else { throw AuthzError.invalid(field, "must be a JSON object") }
        return members
    }

    /// The general reader: members of a parsed `JSONValue` object.
    struct Reader: BulkFields {
        var members: [(String, JSONValue)]
        var prefix = ""

        mutating func skip(_ key: String) { _ = take(key) }

        var leftover: String? { members.first?.0 }

        mutating func take(_ key: String) -> JSONValue? {
            guard let i = members.firstIndex(where: { $0.0 == key }) else { return nil }
            let v = members[i].1
            members.remove(at: i)
            if case .null = v { return nil }
            return v
        }

        mutating func string(_ key: String) throws -> String? {
            guard let v = take(key) else { return nil }
            guard case .string(let s) = v else { throw AuthzError.invalid(prefix + key, "must be a string") }
            return s
        }

        mutating func requiredString(_ key: String) throws -> String {
            guard let s = try string(key) else { throw AuthzError.invalid(prefix + key, "is required") }
            return s
        }

        mutating func bool(_ key: String) throws -> Bool? {
            guard let v = take(key) else { return nil }
            guard case .bool(let b) = v else { throw AuthzError.invalid(prefix + key, "must be true or false") }
            return b
        }

        mutating func id(_ key: String) throws -> ID? {
            guard let s = try string(key) else { return nil }
            guard let id = ID(s) else { throw AuthzError.invalid(prefix + key, "must be a UUID in 8-4-4-4-12 form (got \(Validate.quoted(s)))") }
            return id
        }

        mutating func requiredID(_ key: String) throws -> ID {
            guard let id = try id(key) else { throw AuthzError.invalid(prefix + key, "is required") }
            return id
        }

        mutating func ids(_ key: String) throws -> [ID] {
            guard let v = take(key) else { return [] }
            guard case .array(let items) = v else { throw AuthzError.invalid(prefix + key, "must be an array of UUIDs") }
            return try items.enumerated().map { i, item in
                guard case .string(let s) = item, let id = ID(s) else {
                    throw AuthzError.invalid("\(prefix)\(key)[\(i)]", "must be a UUID in 8-4-4-4-12 form")
                }
                return id
            }
        }

        mutating func strings(_ key: String) throws -> [String] {
            guard let v = take(key) else { return [] }
            guard case .array(let items) = v else { throw AuthzError.invalid(prefix + key, "must be an array of strings") }
            return try items.enumerated().map { i, item in
                guard case .string(let s) = item else { throw AuthzError.invalid("\(prefix)\(key)[\(i)]", "must be a string") }
                return s
            }
        }

        mutating func requiredScope(_ key: String) throws -> Scope {
            guard let s = try string(key) else { throw AuthzError.invalid(prefix + key, "is required") }
            guard let scope = Scope(name: s) else {
                throw AuthzError.invalid(prefix + key, "\(Validate.quoted(s)) is not one of self, tenant, global")
            }
            return scope
        }

        mutating func scopes(_ key: String) throws -> ScopeSet {
            guard let v = take(key) else { return .all }
            guard case .array(let items) = v else { throw AuthzError.invalid(prefix + key, "must be an array of scopes") }
            var set = ScopeSet(mask: 0)
            for (i, item) in items.enumerated() {
                guard case .string(let s) = item, let scope = Scope(name: s) else {
                    throw AuthzError.invalid("\(prefix)\(key)[\(i)]", "must be one of self, tenant, global")
                }
                set.mask |= 1 << scope.rawValue
            }
            if set.isEmpty { throw AuthzError.invalid(prefix + key, "must name at least one scope") }
            return set
        }

        mutating func timestamp(_ key: String) throws -> Int64? {
            guard let s = try string(key) else { return nil }
            guard let t = Timestamp.parse(s) else { throw AuthzError.invalid(prefix + key, "must be an RFC 3339 timestamp") }
            return t
        }

        mutating func metadata() throws -> String {
            guard let v = take("metadata") else { return "" }
            guard case .object(let m) = v else { throw AuthzError.invalid(prefix + "metadata", "must be a JSON object") }
            if m.isEmpty { return "" }
            return JSONWriter.serialize(v)
        }
    }
}

/// One line of a batch-check file: `{"tenant_id":…,"user_id":…,"permission":…,"scope":…}`.
public struct CheckLine: Hashable, Sendable {
    public var tenantId: ID
    public var userId: ID
    public var permission: String
    public var scope: Scope

    public init(tenantId: ID, userId: ID, permission: String, scope: Scope) {
        self.tenantId = tenantId
        self.userId = userId
        self.permission = permission
        self.scope = scope
    }

    /// Parses one line; throws `.invalidArgument` naming the field.
    public static func decode(line: [UInt8]) throws -> CheckLine {
        let value: JSONValue
        do {
            value = try JSONParser.parse(line)
        } catch let e as JSONParser.Failure {
            throw AuthzError.invalid("line", "is not valid JSON: \(e.message)")
        }
        guard case .object(let members) = value else { throw AuthzError.invalid("line", "must be a JSON object") }
        var r = BulkFormat.Reader(members: members)
        let t = try r.requiredID("tenant_id")
        let u = try r.requiredID("user_id")
        let p = try r.requiredString("permission")
        let s = try r.requiredScope("scope")
        if let extra = r.members.first { throw AuthzError.invalid(extra.0, "is not a field of a check") }
        return CheckLine(tenantId: t, userId: u, permission: p, scope: s)
    }
}
