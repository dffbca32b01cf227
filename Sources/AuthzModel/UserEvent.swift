/// A user lifecycle event from the platform's user service (`proto/events.proto`,
/// `authz.events.v1.UserEvent`; docs/events.md). Services share user ids through these events;
/// authzd turns each into a conditional upsert of the user (`WriteOp.upsertIfNewer`) ordered by
/// `occurredAt`, so that a redelivered or older event never overwrites a newer state.
public struct UserEvent: Hashable, Sendable {
    /// The event types, as numbered in `authz.events.v1.UserEventType`.
    public enum Kind: UInt8, CaseIterable, Sendable {
        case created = 1, updated = 2, deactivated = 3, reactivated = 4

        /// `user.created`, … (the JSON form's `type`).
        public var name: String {
            switch self {
            case .created: return "user.created"
            case .updated: return "user.updated"
            case .deactivated: return "user.deactivated"
            case .reactivated: return "user.reactivated"
            }
        }

        /// Parses `user.created` or the proto enum name `USER_CREATED`.
        public init?(name: String) {
            switch name {
            case "user.created", "USER_CREATED": self = .created
            case "user.updated", "USER_UPDATED": self = .updated
            case "user.deactivated", "USER_DEACTIVATED": self = .deactivated
            case "user.reactivated", "USER_REACTIVATED": self = .reactivated
            default: return nil
            }
        }
    }

    /// The schema this release reads; events of a higher version are refused (dead-lettered).
    public static let schemaVersion: UInt32 = 1

    public var schemaVersion: UInt32
    /// Unique per event (a UUID): named in metrics, logs and dead letters.
    public var eventId: ID
    public var kind: Kind
    public var tenantId: ID
    public var userId: ID
    /// When the change happened at the producer, microseconds since the epoch (> 0): it orders
    /// the events of one user.
    public var occurredAt: Int64
    /// The user's fields after the event. Required for created and updated; for deactivated
    /// and reactivated, nil keeps the stored fields.
    public var user: Fields?

    /// A user's fields as the data model has them (docs/data-models/user-models.md).
    public struct Fields: Hashable, Sendable {
        public var email: String?
        public var displayName: String?
        public var externalId: String?
        /// A JSON object as text ("" = none).
        public var metadata: String

        public init(email: String? = nil, displayName: String? = nil, externalId: String? = nil, metadata: String = "") {
            self.email = email
            self.displayName = displayName
            self.externalId = externalId
            self.metadata = metadata
        }
    }

    public init(eventId: ID, kind: Kind, tenantId: ID, userId: ID, occurredAt: Int64, user: Fields?,
                schemaVersion: UInt32 = UserEvent.schemaVersion) {
        self.schemaVersion = schemaVersion
        self.eventId = eventId
        self.kind = kind
        self.tenantId = tenantId
        self.userId = userId
        self.occurredAt = occurredAt
        self.user = user
    }

    /// Checks what the write path does not: the schema version, ids, the time, and fields
    /// present where the type needs them. INVALID_ARGUMENT naming the field.
    public func validate() throws {
        guard schemaVersion >= 1, schemaVersion <= UserEvent.schemaVersion else {
            throw AuthzError.invalid("event.schema_version", "must be between 1 and \(UserEvent.schemaVersion) (got \(schemaVersion))")
        }
        guard eventId != .zero else { throw AuthzError.invalid("event.event_id", "is required") }
        guard tenantId != .zero else { throw AuthzError.invalid("event.tenant_id", "is required") }
        guard userId != .zero else { throw AuthzError.invalid("event.user_id", "is required") }
        guard occurredAt > 0 else { throw AuthzError.invalid("event.occurred_at", "is required (it orders a user's events)") }
        if (kind == .created || kind == .updated) && user == nil {
            throw AuthzError.invalid("event.user", "is required for \(kind.name)")
        }
    }

    /// The write this event makes, given the user as stored (nil when unknown): a conditional
    /// upsert whose `updated_at` is `occurredAt`. A deactivation or reactivation without
    /// fields keeps the stored ones (or creates the user with none, so that an older
    /// `created` arriving later cannot resurrect it).
    public func writeOp(stored: User?) throws -> WriteOp {
        try validate()
        let f = user ?? Fields(email: stored?.email, displayName: stored?.displayName, externalId: stored?.externalId,
                               metadata: stored?.fields.metadata ?? "")
        var u = User(id: userId, tenantId: tenantId, email: f.email, displayName: f.displayName, externalId: f.externalId,
                     isActive: kind != .deactivated, metadata: f.metadata)
        if kind == .updated, let s = stored { u.fields.isActive = s.fields.isActive }  // an update keeps the active flag
        u.fields.updatedAt = occurredAt
        return .upsertIfNewer(.user(u))
    }

    /// Decodes the JSON form (one object a message):
    /// `{"schema_version":1,"event_id":…,"type":"user.created","tenant_id":…,"user_id":…,
    /// "occurred_at":"2026-11-30T12:00:00.000001Z","user":{"email":…,"display_name":…,
    /// "external_id":…,"metadata":{…}}}`. Unknown fields are refused. INVALID_ARGUMENT naming
    /// the field and the rule.
    public static func decode(json bytes: [UInt8]) throws -> UserEvent {
        var r = BulkFormat.Reader(members: try BulkFormat.object(bytes, field: "event"))
        r.prefix = "event."
        var version = UserEvent.schemaVersion
        if let v = r.take("schema_version") {
            guard case .number(let n) = v, let parsed = UInt32(n) else { throw AuthzError.invalid("event.schema_version", "must be a positive integer") }
            version = parsed
        }
        let eventId = try r.requiredID("event_id")
        let typeName = try r.requiredString("type")
        guard let kind = Kind(name: typeName) else {
            throw AuthzError.invalid("event.type", "\(Validate.quoted(typeName)) is not one of user.created, user.updated, user.deactivated, user.reactivated")
        }
        let tenant = try r.requiredID("tenant_id")
        let userId = try r.requiredID("user_id")
        guard let occurred = try r.timestamp("occurred_at") else { throw AuthzError.invalid("event.occurred_at", "is required") }
        var fields: Fields?
        if let u = r.take("user") {
            guard case .object(let um) = u else { throw AuthzError.invalid("event.user", "must be a JSON object") }
            var ur = BulkFormat.Reader(members: um)
            ur.prefix = "event.user."
            fields = Fields(email: try ur.string("email"), displayName: try ur.string("display_name"),
                            externalId: try ur.string("external_id"), metadata: try ur.metadata())
            if let extra = ur.members.first { throw AuthzError.invalid("event.user." + extra.0, "is not a field of a user event") }
        }
        if let extra = r.members.first { throw AuthzError.invalid("event." + extra.0, "is not a field of a user event") }
        let e = UserEvent(eventId: eventId, kind: kind, tenantId: tenant, userId: userId, occurredAt: occurred, user: fields, schemaVersion: version)
        try e.validate()
        return e
    }

    /// The JSON form of this event (one line, no newline).
    public var json: String {
        var out = "{\"schema_version\":\(schemaVersion),\"event_id\":\"\(eventId)\",\"type\":\"\(kind.name)\",\"tenant_id\":\"\(tenantId)\",\"user_id\":\"\(userId)\",\"occurred_at\":\"\(Timestamp.format(occurredAt))\""
        if let u = user {
            var parts: [String] = []
            func add(_ key: String, _ v: String?) {
                guard let v else { return }
                var s = ""
                JSONWriter.writeString(v, into: &s)
                parts.append("\"\(key)\":\(s)")
            }
            add("email", u.email)
            add("display_name", u.displayName)
            add("external_id", u.externalId)
            if !u.metadata.isEmpty { parts.append("\"metadata\":\(u.metadata)") }
            out += ",\"user\":{" + parts.joined(separator: ",") + "}"
        }
        return out + "}"
    }
}
