import AuthzEngine
import AuthzModel
import AuthzWire

/// Where a call runs.
enum Lane {
    /// On the connection's event loop: checks and other index reads that never block.
    case inline
    /// On the reader pool: LMDB reads (explain, get, list, export) and O(users) listings.
    case reader
    /// On the single writer thread: LMDB write transactions, which block and fsync.
    case writer
    /// A stream of many replies (Watch), driven by the connection (`WatchStream`).
    case stream
}

/// A caller below the superuser: an API key, an allowlisted Unix uid or a mapped client
/// certificate, as the role and tenant it acts with (docs/security.md). What `Command.authorize`
/// decides on.
struct Caller {
    let role: KeyRole
    /// The key's tenant; `.zero` for operator and gateway keys.
    let tenant: ID

    /// PERMISSION_DENIED "a <role> key may not <what>" (no field).
    func denied(_ what: String) -> AuthzError { AuthzError(.permissionDenied, "a \(role) key may not \(what)") }

    /// Nil when `t` is the caller's tenant, else PERMISSION_DENIED naming `field`.
    func sameTenant(_ t: ID, _ field: String) -> AuthzError? {
        t == tenant ? nil : AuthzError(.permissionDenied, "\(field) names another tenant than the key's", field: field)
    }

    /// nil for an operator key, else `refused(call)`: the rule of the calls that manage keys and
    /// read the daemon's state (CreateKey, RevokeKey, ListKeys, ServerInfo).
    func operatorOnly(_ call: Call) -> AuthzError? {
        switch role {
        case .operator: return nil
        case .checker, .admin, .gateway: return refused(call)
        }
    }

    /// The refusal of a call the caller's role may not make at all, saying what the role may do.
    func refused(_ call: Call) -> AuthzError {
        switch role {
        case .gateway: return denied("call \(call.name) (gateway keys may check, batch check, list a user's permissions and watch only)")
        case .operator: return denied("call \(call.name) (operators manage tenants and keys only)")
        case .checker: return denied("call \(call.name) (checker keys may check, explain and list only)")
        case .admin: return denied("call \(call.name)")
        }
    }
}

/// What the daemon does for one call: the lane it runs on, who may make it, what it reads and
/// what it runs. One conformer per call, one file per conformer in `Commands/`; the dispatcher,
/// `authorize` and the connection find it in `Commands` by `CallKind`.
///
/// Every requirement is given a `Call` whose `kind` is the command's. Conformers hold no state:
/// what a call keeps between requests (paged exports, chunked imports) lives in the
/// `Dispatcher` (`ExportSessions`, `ImportSessions`).
protocol Command: Sendable {
    /// The call this command runs.
    static var kind: CallKind { get }

    /// Whether a connection that has not authenticated may make the call (Health, Hello).
    /// Such a call is allowed for every principal. Default: false.
    static var open: Bool { get }

    /// Where `call` runs. Never blocks; allocates nothing.
    static func lane(_ call: Call) -> Lane

    /// Nil when `caller` may make `call`; else the refusal (PERMISSION_DENIED naming the field
    /// that crosses a tenant, or `caller.refused`). Called only for callers below the superuser
    /// (the superuser may make every call; an unauthenticated one only `open` calls). Never
    /// evaluates anything; never touches the store.
    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError?

    /// The tenants `call` reads, for log mode's refusals (`Dispatcher.refuseRead`): empty for a
    /// read of every tenant, nil when the call is not a read. Default: nil.
    static func readTenants(_ call: Call) -> [ID]?

    /// The field (`"get.include_secrets"`) when `call` asks for credential secrets, which only
    /// some keys may (`KeyTable.secretsDenied`); nil otherwise. Default: nil.
    static func secretsField(_ call: Call) -> String?

    /// Runs `call` for `principal` (authorized already) from `peer`, synchronously, on the
    /// thread of its lane. Throws `AuthzError` for the caller; anything else becomes an opaque
    /// INTERNAL in `Dispatcher.execute`.
    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply
}

extension Command {
    static var open: Bool { false }
    static func readTenants(_ call: Call) -> [ID]? { nil }
    static func secretsField(_ call: Call) -> String? { nil }

    /// The error for a call that is not this command's (a table mistake): INTERNAL, logged.
    static func mismatch(_ call: Call) -> AuthzError {
        AuthzError.internalError("\(call.name) was given to \(Self.self)")
    }
}

/// The table of every call's command, indexed by `CallKind`. Adding a call adds its command
/// to `all`; `CallKind.allCases` must each have exactly one (checked when the table is built).
enum Commands {
    /// Every call's command, in any order.
    static let all: [any Command.Type] = [
        CheckCommand.self, BatchCheckCommand.self, ExplainCommand.self, ListUserPermissionsCommand.self, ListPermissionUsersCommand.self,
        WriteCommand.self, GetCommand.self, ListCommand.self, ImportCommand.self, ExportCommand.self, ServerInfoCommand.self,
        HealthCommand.self, HelloCommand.self, CreateKeyCommand.self, ListKeysCommand.self, RevokeKeyCommand.self,
        RotateSecretsCommand.self, WatchCommand.self,
    ]

    /// `all`, at index `kind.rawValue - first`.
    private static let byKind: [any Command.Type] = {
        let table = CallKind.allCases.map { kind -> any Command.Type in
            let commands = all.filter { $0.kind == kind }
            precondition(commands.count == 1, "Commands.all must hold exactly one command for \(kind) (it holds \(commands.count))")
            return commands[0]
        }
        precondition(table.count == all.count, "Commands.all holds a command twice")
        return table
    }()

    private static let first = CallKind.allCases.map(\.rawValue).min()!

    /// The command of `kind`. One array index; allocates nothing.
    static func command(_ kind: CallKind) -> any Command.Type { byKind[Int(kind.rawValue - first)] }

    /// The command of `call`.
    static func command(for call: Call) -> any Command.Type { command(call.kind) }
}
