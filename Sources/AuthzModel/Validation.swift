extension Entity {
    /// Checks every rule that can be decided from the record alone: formats, sizes, required
    /// fields, metadata is a JSON object within its bound. Rules that need other records
    /// (uniqueness, references, cycles, scopes allowed by the referenced role or permission)
    /// are checked by the store inside the write transaction.
    ///
    /// Throws `AuthzError` with code `.invalidArgument`, naming the field as `kind.field`.
    public func validate() throws {
        let k = kind.name
        let f = fields
        if f.id == .zero { throw AuthzError.invalid("\(k).id", "must be a UUID other than the nil UUID") }
        if f.tenantId == .zero { throw AuthzError.invalid("\(k).tenant_id", "must be a UUID other than the nil UUID") }
        try Validate.metadata(f.metadata, field: "\(k).metadata")
        switch self {
        case .tenant(let t):
            if t.fields.tenantId != t.fields.id {
                throw AuthzError.invalid("tenant.tenant_id", "must equal the tenant's own id")
            }
            try Validate.name(t.name, field: "tenant.name")
        case .user(let u):
            if let email = u.email {
                try Validate.text(email, field: "user.email", max: 320)
                if !email.utf8.contains(UInt8(ascii: "@")) {
                    throw AuthzError.invalid("user.email", "must contain \"@\"")
                }
            }
            if let d = u.displayName { try Validate.text(d, field: "user.display_name", max: 256) }
            if let e = u.externalId { try Validate.text(e, field: "user.external_id", max: 256) }
        case .role(let r):
            try Validate.name(r.name, field: "role.name")
            try Validate.text(r.description, field: "role.description", max: FieldLimits.maxTextBytes, allowEmpty: true)
            if r.scopes.isEmpty { throw AuthzError.invalid("role.scopes", "must name at least one scope") }
            if r.inherits.count > FieldLimits.maxListItems {
                throw AuthzError.invalid("role.inherits", "must have at most \(FieldLimits.maxListItems) roles")
            }
            if r.inherits.contains(r.fields.id) {
                throw AuthzError.invalid("role.inherits", "must not contain the role itself (inheritance cycle)")
            }
            if Set(r.inherits).count != r.inherits.count {
                throw AuthzError.invalid("role.inherits", "must not repeat a role")
            }
        case .permission(let p):
            try Validate.permissionName(p.name, field: "permission.name")
            try Validate.identifier(p.service, field: "permission.service")
            if p.scopes.isEmpty { throw AuthzError.invalid("permission.scopes", "must name at least one scope") }
        case .roleBinding(let b):
            if b.userId == .zero { throw AuthzError.invalid("role_binding.user_id", "is required") }
            if b.roleId == .zero { throw AuthzError.invalid("role_binding.role_id", "is required") }
        case .permissionBinding(let b):
            if b.roleId == .zero { throw AuthzError.invalid("permission_binding.role_id", "is required") }
            if b.permissionId == .zero { throw AuthzError.invalid("permission_binding.permission_id", "is required") }
        case .platformCredential(let c):
            if c.ownerUserId == .zero { throw AuthzError.invalid("platform_credential.owner_user_id", "is required") }
            try Validate.identifier(c.platform, field: "platform_credential.platform")
            try Validate.text(c.externalAccountId, field: "platform_credential.external_account_id", max: 256)
            try Validate.text(c.accessToken, field: "platform_credential.access_token", max: FieldLimits.maxTokenBytes, allowEmpty: true, secret: true)
            try Validate.text(c.refreshToken, field: "platform_credential.refresh_token", max: FieldLimits.maxTokenBytes, allowEmpty: true, secret: true)
            if c.oauthScopes.count > FieldLimits.maxListItems {
                throw AuthzError.invalid("platform_credential.oauth_scopes", "must have at most \(FieldLimits.maxListItems) items")
            }
            for (i, s) in c.oauthScopes.enumerated() {
                try Validate.text(s, field: "platform_credential.oauth_scopes[\(i)]", max: 256)
            }
        }
    }
}

/// Field-format rules shared by the model, the codec and the engine's request checks.
public enum Validate {
    /// A display name: 1...128 bytes of UTF-8, no control characters.
    public static func name(_ s: String, field: String) throws {
        try text(s, field: field, max: FieldLimits.maxNameBytes)
    }

    /// Free text: at most `max` bytes, no control characters (U+0000-U+001F, U+007F); empty
    /// only when `allowEmpty`. With `secret`, messages never quote the value.
    public static func text(_ s: String, field: String, max: Int, allowEmpty: Bool = false, secret: Bool = false) throws {
        let n = s.utf8.count
        if n == 0 && !allowEmpty { throw AuthzError.invalid(field, "must not be empty") }
        if n > max { throw AuthzError.invalid(field, "must be at most \(max) bytes (got \(n))") }
        // Secrets too: a token is printable text, and a NUL would be cut by C code downstream.
        if s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
            throw AuthzError.invalid(field, "must not contain control characters (NUL included)")
        }
    }

    /// A service or platform identifier: `[a-z0-9_-]`, 1...64 bytes, starting with a letter.
    public static func identifier(_ s: String, field: String) throws {
        let u = Array(s.utf8)
        if u.isEmpty { throw AuthzError.invalid(field, "must not be empty") }
        if u.count > 64 { throw AuthzError.invalid(field, "must be at most 64 bytes (got \(u.count))") }
        guard isLower(u[0]), u.allSatisfy({ isLower($0) || isDigit($0) || $0 == 0x5F || $0 == 0x2D }) else {
            throw AuthzError.invalid(field, "\(quoted(s)) must be lowercase letters, digits, '_' or '-', starting with a letter")
        }
    }

    /// A permission name: dotted lowercase like `gmail.messages.read` — two or more segments of
    /// `[a-z][a-z0-9_-]*` joined by dots, at most 128 bytes.
    public static func permissionName(_ s: String, field: String) throws {
        let u = Array(s.utf8)
        if u.isEmpty { throw AuthzError.invalid(field, "must not be empty") }
        if u.count > FieldLimits.maxNameBytes {
            throw AuthzError.invalid(field, "must be at most \(FieldLimits.maxNameBytes) bytes (got \(u.count))")
        }
        let failure = AuthzError.invalid(field, "\(quoted(s)) must be dotted lowercase like \"gmail.messages.read\"")
        var segments = 0
        var atStart = true
        for b in u {
            if atStart {
                guard isLower(b) else { throw failure }
                atStart = false
                segments += 1
            } else if b == 0x2E {
                atStart = true
            } else if !(isLower(b) || isDigit(b) || b == 0x5F || b == 0x2D) {
                throw failure
            }
        }
        if atStart || segments < 2 { throw failure }
    }

    /// Metadata: empty (meaning `{}`) or the text of one JSON object of at most 16 KiB that
    /// repeats no member name. Same rules as `canonicalMetadata`, result discarded.
    public static func metadata(_ s: String, field: String) throws {
        _ = try canonicalMetadata(s, field: field)
    }

    /// Metadata in the form the store keeps and export writes: "" for absent or `{}`, otherwise
    /// the object re-serialised compactly by `JSONWriter` (members in the order sent, numbers
    /// as sent, no insignificant whitespace, control characters and Unicode line separators
    /// escaped), so that the result never holds a raw line break and one record stays one line.
    /// Idempotent: `canonicalMetadata(canonicalMetadata(x)) == canonicalMetadata(x)`.
    ///
    /// Throws `.invalidArgument` naming `field` when `s` is not one JSON object, repeats a member
    /// name in any object (readers would disagree on which value counts), or when `s` or its
    /// canonical form is larger than `FieldLimits.maxMetadataBytes`. Costs one parse and one
    /// serialisation of `s`; recursion is bounded by `FieldLimits.maxJSONDepth`.
    public static func canonicalMetadata(_ s: String, field: String) throws -> String {
        if s.isEmpty { return "" }
        let n = s.utf8.count
        if n > FieldLimits.maxMetadataBytes {
            throw AuthzError.invalid(field, "must be at most \(FieldLimits.maxMetadataBytes) bytes (got \(n))")
        }
        let value: JSONValue
        do {
            value = try JSONParser.parse(Array(s.utf8))
        } catch let e as JSONParser.Failure {
            throw AuthzError.invalid(field, "must be a JSON object: \(e.message)")
        }
        guard case .object(let members) = value else { throw AuthzError.invalid(field, "must be a JSON object") }
        if members.isEmpty { return "" }
        if let key = repeatedKey(value) {
            throw AuthzError.invalid(field, "must not repeat the member name \(quoted(key)) in one object")
        }
        let canonical = JSONWriter.serialize(value)
        let m = canonical.utf8.count
        if m > FieldLimits.maxMetadataBytes {
            throw AuthzError.invalid(field, "must be at most \(FieldLimits.maxMetadataBytes) bytes once re-serialised (got \(m))")
        }
        return canonical
    }

    /// The first member name repeated within one object, at any depth; nil when there is none.
    private static func repeatedKey(_ v: JSONValue) -> String? {
        switch v {
        case .object(let members):
            var seen = Set<String>()
            for (k, child) in members {
                if !seen.insert(k).inserted { return k }
                if let r = repeatedKey(child) { return r }
            }
            return nil
        case .array(let items):
            for child in items { if let r = repeatedKey(child) { return r } }
            return nil
        default:
            return nil
        }
    }

    static func quoted(_ s: String) -> String {
        let cut = s.utf8.count > 64 ? String(decoding: s.utf8.prefix(64), as: UTF8.self) + "…" : s
        return "\"" + cut + "\""
    }

    @inline(__always) static func isLower(_ b: UInt8) -> Bool { b >= 0x61 && b <= 0x7A }
    @inline(__always) static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
}
