/// Why a check came out the way it did. Raw values match the wire's `Reason` enum.
public enum Reason: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case granted = 1
    case noGrant = 2
    case unknownTenant = 3
    case inactiveTenant = 4
    case unknownUser = 5
    case inactiveUser = 6
    case unknownPermission = 7
    case inactivePermission = 8

    /// The snake_case name used in JSON answers (`"no_grant"`).
    public var name: String {
        switch self {
        case .granted: return "granted"
        case .noGrant: return "no_grant"
        case .unknownTenant: return "unknown_tenant"
        case .inactiveTenant: return "inactive_tenant"
        case .unknownUser: return "unknown_user"
        case .inactiveUser: return "inactive_user"
        case .unknownPermission: return "unknown_permission"
        case .inactivePermission: return "inactive_permission"
        }
    }

    public var description: String { name }
}

/// The answer to a check: allow if and only if `reason == .granted`.
public struct Decision: Hashable, Sendable {
    public var reason: Reason
    /// The revision of the data the decision was evaluated at.
    public var revision: UInt64

    @inlinable
    public init(reason: Reason, revision: UInt64) {
        self.reason = reason
        self.revision = revision
    }

    @inlinable
    public var allowed: Bool { reason == .granted }
}

/// Why a check was allowed: the role binding, the role chain (R0 first) and the permission
/// binding that granted it. Empty ids when the decision is a deny.
public struct Explanation: Sendable, Equatable {
    public var decision: Decision
    public var roleBindingId: ID?
    public var roleBindingScope: Scope?
    public var roleChain: [ID] = []
    public var roleChainNames: [String] = []
    public var permissionBindingId: ID?
    public var permissionBindingScope: Scope?

    public init(decision: Decision) { self.decision = decision }
}
