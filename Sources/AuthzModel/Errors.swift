/// The error every layer of authzd reports to its callers.
///
/// `code` is one of gRPC's status codes, so that the daemon can put it on the wire unchanged.
/// `message` names the field and the rule that was broken; `field` is the dotted path of the
/// offending field when there is one. Errors with code `.internal` carry a message meant for
/// the log only: the daemon replaces it with an opaque text before it leaves the process.
public struct AuthzError: Error, Equatable, CustomStringConvertible, Sendable {
    /// gRPC status codes (the same numbers as `google.rpc.Code`).
    public enum Code: Int, Sendable, CaseIterable {
        case cancelled = 1, unknown = 2, invalidArgument = 3, deadlineExceeded = 4, notFound = 5
        case alreadyExists = 6, permissionDenied = 7, resourceExhausted = 8, failedPrecondition = 9
        case aborted = 10, outOfRange = 11, unimplemented = 12, `internal` = 13, unavailable = 14
        case dataLoss = 15, unauthenticated = 16

        /// The upper-case gRPC name, e.g. `INVALID_ARGUMENT`.
        public var name: String {
            switch self {
            case .cancelled: return "CANCELLED"
            case .unknown: return "UNKNOWN"
            case .invalidArgument: return "INVALID_ARGUMENT"
            case .deadlineExceeded: return "DEADLINE_EXCEEDED"
            case .notFound: return "NOT_FOUND"
            case .alreadyExists: return "ALREADY_EXISTS"
            case .permissionDenied: return "PERMISSION_DENIED"
            case .resourceExhausted: return "RESOURCE_EXHAUSTED"
            case .failedPrecondition: return "FAILED_PRECONDITION"
            case .aborted: return "ABORTED"
            case .outOfRange: return "OUT_OF_RANGE"
            case .unimplemented: return "UNIMPLEMENTED"
            case .internal: return "INTERNAL"
            case .unavailable: return "UNAVAILABLE"
            case .dataLoss: return "DATA_LOSS"
            case .unauthenticated: return "UNAUTHENTICATED"
            }
        }
    }

    public var code: Code
    public var message: String
    public var field: String
    /// Set when the call can succeed once this revision is published here (a `min_revision`
    /// not yet reached): the server waits for it instead of answering at once. Never on the
    /// wire; matched by this property, never by `field` or `message`.
    public var awaitedRevision: UInt64?

    public init(_ code: Code, _ message: String, field: String = "") {
        self.code = code
        self.message = message
        self.field = field
    }

    public var description: String { "\(code.name): \(message)" }

    /// A malformed request: `field` names what was wrong, `rule` the rule it broke.
    public static func invalid(_ field: String, _ rule: String) -> AuthzError {
        AuthzError(.invalidArgument, "\(field) \(rule)", field: field)
    }

    public static func notFound(_ what: String, field: String = "") -> AuthzError {
        AuthzError(.notFound, what, field: field)
    }

    public static func internalError(_ what: String) -> AuthzError {
        AuthzError(.internal, what)
    }
}
