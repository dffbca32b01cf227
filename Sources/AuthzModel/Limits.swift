/// Size bounds on record fields. Every bound is checked by `Entity.validate()`.
public enum FieldLimits {
    public static let maxMetadataBytes = 16 * 1024
    public static let maxNameBytes = 128
    public static let maxTextBytes = 1024
    public static let maxTokenBytes = 8 * 1024
    public static let maxListItems = 256
    public static let maxJSONDepth = 32
}

/// Per-tenant bounds on the size of the data and the depth of role inheritance. A write that
/// would take a tenant past one is refused with FAILED_PRECONDITION naming the limit; data
/// already past a limit (written before it existed, or under a higher setting) still opens and
/// serves, and writes that do not grow past the limit are still accepted.
///
/// Why these exist: the compiled index holds `roles × 3 × permissions / 64` words per tenant
/// and a role or permission write recompiles them, so both counts are what one tenant's admin
/// can make everyone pay for.
public struct TenantLimits: Sendable, Equatable {
    /// Most `inherits` hops on any chain R0 → R1 → … → Rk (k ≤ this).
    public var maxInheritanceDepth = 32
    /// Most roles a tenant holds (soft-deleted ones count: they keep their name).
    public var maxRoles = 5_000
    /// Most permissions a tenant holds (soft-deleted ones count).
    public var maxPermissions = 10_000
    /// Most permission bindings a tenant holds.
    public var maxPermissionBindings = 1_000_000
    /// Most role bindings a tenant holds.
    public var maxRoleBindings = 10_000_000

    public init() {}
}
