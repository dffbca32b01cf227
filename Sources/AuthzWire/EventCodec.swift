import AuthzModel
internal import CAuthzProto

/// `authz.events.v1` (proto/events.proto) to and from `UserEvent`: the protobuf form, and the
/// JSON form for producers that do not speak protobuf (docs/events.md).
public enum EventCodec {
    /// Decodes one message: a JSON object when its first non-blank byte is `{`, else
    /// `authz.events.v1.UserEvent` in protobuf. INVALID_ARGUMENT naming the field and the rule.
    public static func decode(_ bytes: [UInt8]) throws -> UserEvent {
        if let first = bytes.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }), first == UInt8(ascii: "{") {
            return try UserEvent.decode(json: bytes)
        }
        return try decodeProtobuf(bytes)
    }

    /// Decodes the protobuf form.
    public static func decodeProtobuf(_ bytes: [UInt8]) throws -> UserEvent {
        guard let m = bytes.withUnsafeBufferPointer({ authz__events__v1__user_event__unpack(nil, $0.count, $0.baseAddress) }) else {
            throw AuthzError.invalid("event", "is neither a JSON object nor an authz.events.v1.UserEvent message")
        }
        defer { authz__events__v1__user_event__free_unpacked(m, nil) }
        let e = m.pointee
        func id(_ p: UnsafeMutablePointer<CChar>?, _ field: String) throws -> ID {
            let s = swiftString(p) ?? ""
            guard !s.isEmpty else { throw AuthzError.invalid("event.\(field)", "is required") }
            guard let id = ID(s) else { throw AuthzError.invalid("event.\(field)", "must be a UUID in 8-4-4-4-12 form (got \"\(s)\")") }
            return id
        }
        guard let kind = UserEvent.Kind(rawValue: UInt8(truncatingIfNeeded: e.type.rawValue)), e.type.rawValue <= 4 else {
            throw AuthzError.invalid("event.type", "must be USER_CREATED, USER_UPDATED, USER_DEACTIVATED or USER_REACTIVATED (got \(e.type.rawValue))")
        }
        var fields: UserEvent.Fields?
        if let u = e.user {
            func text(_ p: UnsafeMutablePointer<CChar>?) -> String? {
                guard let s = swiftString(p), !s.isEmpty else { return nil }
                return s
            }
            var metadata = swiftString(u.pointee.metadata) ?? ""
            if !metadata.isEmpty {
                metadata = try Validate.canonicalMetadata(metadata, field: "event.user.metadata")
            }
            fields = UserEvent.Fields(email: text(u.pointee.email), displayName: text(u.pointee.display_name),
                                      externalId: text(u.pointee.external_id), metadata: metadata)
        }
        let event = UserEvent(eventId: try id(e.event_id, "event_id"), kind: kind, tenantId: try id(e.tenant_id, "tenant_id"),
                              userId: try id(e.user_id, "user_id"), occurredAt: e.occurred_at, user: fields,
                              schemaVersion: e.schema_version == 0 ? UserEvent.schemaVersion : e.schema_version)
        try event.validate()
        return event
    }

    /// The protobuf form of `event`.
    public static func encodeProtobuf(_ event: UserEvent) -> [UInt8] {
        let a = Arena()
        let m = a.make(Authz__Events__V1__UserEvent.self) { authz__events__v1__user_event__init($0) }
        m.pointee.schema_version = event.schemaVersion
        m.pointee.event_id = a.cString(event.eventId.description)
        m.pointee.type = Authz__Events__V1__UserEventType(rawValue: UInt32(event.kind.rawValue))
        m.pointee.tenant_id = a.cString(event.tenantId.description)
        m.pointee.user_id = a.cString(event.userId.description)
        m.pointee.occurred_at = event.occurredAt
        if let u = event.user {
            m.pointee.user = a.make(Authz__Events__V1__UserFields.self) {
                authz__events__v1__user_fields__init($0)
                $0.pointee.email = a.cString(u.email ?? "")
                $0.pointee.display_name = a.cString(u.displayName ?? "")
                $0.pointee.external_id = a.cString(u.externalId ?? "")
                $0.pointee.metadata = a.cString(u.metadata)
            }
        }
        let n = authz__events__v1__user_event__get_packed_size(m)
        var out = [UInt8](repeating: 0, count: n)
        _ = out.withUnsafeMutableBufferPointer { authz__events__v1__user_event__pack(m, $0.baseAddress) }
        return out
    }

    /// `authz.events.v1.PermissionsChanged` for `users` of `tenant` at `revision` (every user of
    /// the tenant when `allUsers`).
    public static func encodePermissionsChanged(tenant: ID, users: [ID], revision: UInt64, allUsers: Bool = false) -> [UInt8] {
        let a = Arena()
        let m = a.make(Authz__Events__V1__PermissionsChanged.self) { authz__events__v1__permissions_changed__init($0) }
        m.pointee.tenant_id = a.cString(tenant.description)
        m.pointee.user_ids = a.cStrings(users.map(\.description))
        m.pointee.n_user_ids = users.count
        m.pointee.revision = revision
        m.pointee.all_users = allUsers ? 1 : 0
        let n = authz__events__v1__permissions_changed__get_packed_size(m)
        var out = [UInt8](repeating: 0, count: n)
        _ = out.withUnsafeMutableBufferPointer { authz__events__v1__permissions_changed__pack(m, $0.baseAddress) }
        return out
    }

    /// Decodes `authz.events.v1.PermissionsChanged` (for consumers and tests): the tenant, the
    /// users, the revision, and whether it names every user. INVALID_ARGUMENT when malformed.
    public static func decodePermissionsChanged(_ bytes: [UInt8]) throws -> (tenant: ID, users: [ID], revision: UInt64, allUsers: Bool) {
        guard let m = bytes.withUnsafeBufferPointer({ authz__events__v1__permissions_changed__unpack(nil, $0.count, $0.baseAddress) }) else {
            throw AuthzError.invalid("permissions_changed", "is not an authz.events.v1.PermissionsChanged message")
        }
        defer { authz__events__v1__permissions_changed__free_unpacked(m, nil) }
        let x = m.pointee
        guard let t = ID(swiftString(x.tenant_id) ?? "") else { throw AuthzError.invalid("permissions_changed.tenant_id", "must be a UUID") }
        let users = try (0..<x.n_user_ids).map { i -> ID in
            guard let u = ID(swiftString(x.user_ids[i]) ?? "") else { throw AuthzError.invalid("permissions_changed.user_ids[\(i)]", "must be a UUID") }
            return u
        }
        return (t, users, x.revision, x.all_users != 0)
    }
}
