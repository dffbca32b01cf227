import AuthzModel

/// The protocol version a client announces and ServerInfo reports.
public let protocolVersion: UInt32 = 1

/// One check, as the daemon receives it: ids parsed, scope known, permission non-empty.
public struct CheckCall: Hashable, Sendable {
    public var tenantId: ID
    public var userId: ID
    public var permission: String
    public var scope: Scope
    public var minRevision: UInt64

    public init(tenantId: ID, userId: ID, permission: String, scope: Scope, minRevision: UInt64 = 0) {
        self.tenantId = tenantId
        self.userId = userId
        self.permission = permission
        self.scope = scope
        self.minRevision = minRevision
    }
}

/// Every call of the protocol, typed. See docs/protocol.md.
public enum Call: Sendable {
    case check(CheckCall)
    /// Items that failed validation carry their own error; the batch still answers the rest.
    case batchCheck([Result<CheckCall, AuthzError>], minRevision: UInt64)
    case explain(CheckCall)
    case listUserPermissions(tenantId: ID, userId: ID, minRevision: UInt64)
    case listPermissionUsers(tenantId: ID, permission: String, scope: Scope, pageSize: Int, after: ID?, minRevision: UInt64)
    case write([WriteOp])
    case get(RecordRef, includeSecrets: Bool)
    case list(EntityKind, tenantId: ID, pageSize: Int, after: ID?, includeSecrets: Bool)
    case importJSONL([UInt8])
    /// One chunk of a chunked import (`ImportRequest.session` set): staged until `more` is false.
    case importChunk(session: ID, jsonl: [UInt8], firstLine: UInt64, more: Bool)
    case export(tenantId: ID?, includeSecrets: Bool)
    /// One page of a paged export (`ExportRequest.page_size` > 0 or a `page_token`).
    case exportPage(tenantId: ID?, includeSecrets: Bool, pageSize: Int, pageToken: String)
    case serverInfo
    case health
    /// Authenticates the connection with a key.
    case hello(apiKey: String, protocolVersion: UInt32)
    case createKey(tenantId: ID?, role: KeyRole, name: String, expiresAt: Int64)
    case listKeys(tenantId: ID?)
    /// Revokes now (`expiresAt == 0`) or sets the expiry.
    case revokeKey(id: ID, expiresAt: Int64)
    /// Reloads the key ring and re-encrypts stale secrets in the background.
    case rotateSecrets
    /// Streams committed changes (many replies to one request).
    case watch(WatchCall)

    /// The call's name as in the proto service (`"Check"`), for logs and metrics.
    public var name: String { kind.name }

    /// Which call this is: the key of the per-call codec (`WireCalls`) and command tables.
    /// Both import cases are `.importJSONL`, both export cases `.export`.
    public var kind: CallKind {
        switch self {
        case .check: return .check
        case .batchCheck: return .batchCheck
        case .explain: return .explain
        case .listUserPermissions: return .listUserPermissions
        case .listPermissionUsers: return .listPermissionUsers
        case .write: return .write
        case .get: return .get
        case .list: return .list
        case .importJSONL, .importChunk: return .importJSONL
        case .export, .exportPage: return .export
        case .serverInfo: return .serverInfo
        case .health: return .health
        case .hello: return .hello
        case .createKey: return .createKey
        case .listKeys: return .listKeys
        case .revokeKey: return .revokeKey
        case .rotateSecrets: return .rotateSecrets
        case .watch: return .watch
        }
    }
}

/// What a Watch asks for: changes after a revision (or after the daemon's current one), of
/// one tenant or every tenant the caller may see, of some kinds or all.
public struct WatchCall: Sendable, Equatable {
    /// Changes after this revision; nil = after the daemon's revision when the call arrives.
    public var fromRevision: UInt64?
    /// Only this tenant's changes; nil = every tenant the caller may see.
    public var tenantId: ID?
    /// Only these kinds; empty = every kind.
    public var kinds: Set<EntityKind>

    public init(fromRevision: UInt64?, tenantId: ID? = nil, kinds: Set<EntityKind> = []) {
        self.fromRevision = fromRevision
        self.tenantId = tenantId
        self.kinds = kinds
    }
}

/// One frame of a Watch stream: changes in commit order, and how far the stream has come.
public struct WatchBatch: Sendable, Equatable {
    /// The changes (empty in a progress frame).
    public var changes: [Change]
    /// Every matching change up to this revision has been sent: resume after it.
    public var revision: UInt64
    /// The stream had reached the daemon's revision when this frame was read.
    public var caughtUp: Bool

    public init(changes: [Change], revision: UInt64, caughtUp: Bool) {
        self.changes = changes
        self.revision = revision
        self.caughtUp = caughtUp
    }
}

/// A decoded request frame. `call` is a failure when the message was malformed; the error
/// names the field and the rule.
public struct WireRequest: Sendable {
    public var requestId: UInt64
    public var deadlineMs: UInt32
    public var call: Result<Call, AuthzError>
    /// A per-request API key (overrides the connection's Hello); nil when absent.
    public var apiKey: String?

    public init(requestId: UInt64, deadlineMs: UInt32 = 0, call: Result<Call, AuthzError>, apiKey: String? = nil) {
        self.requestId = requestId
        self.deadlineMs = deadlineMs
        self.call = call
        self.apiKey = apiKey
    }
}

/// ServerInfo's figures.
public struct ServerInfo: Sendable, Equatable {
    public var version: String
    public var revision: UInt64
    public var protocolVersion: UInt32
    public var counts: [EntityKind: UInt64]
    /// Log mode only: the daemon's place in the replicated log.
    public var log: LogStatus?

    public init(version: String, revision: UInt64, protocolVersion: UInt32, counts: [EntityKind: UInt64], log: LogStatus? = nil) {
        self.version = version
        self.revision = revision
        self.protocolVersion = protocolVersion
        self.counts = counts
        self.log = log
    }
}

/// A log-mode daemon's place in the replicated log (docs/scale-out.md).
public struct LogStatus: Sendable, Equatable {
    public var stream: String
    /// The last stream sequence applied here (the daemon's revision).
    public var applied: UInt64
    /// The stream's last sequence, as last seen.
    public var streamLast: UInt64
    public var lag: UInt64
    /// Whether a NATS server connection is up.
    public var connected: Bool
    /// `all`, `shard K/N` or `tenants ID,...`.
    public var shard: String
    /// Why reads are refused, or empty.
    public var refusal: String

    public init(stream: String, applied: UInt64, streamLast: UInt64, lag: UInt64, connected: Bool, shard: String, refusal: String) {
        self.stream = stream
        self.applied = applied
        self.streamLast = streamLast
        self.lag = lag
        self.connected = connected
        self.shard = shard
        self.refusal = refusal
    }
}

/// The result of every call, typed.
public enum Reply: Sendable {
    case check(Decision)
    case batchCheck([Result<Decision, AuthzError>], revision: UInt64)
    case explain(Explanation)
    case userPermissions(reason: Reason, permissions: [(String, Scope)], revision: UInt64)
    case permissionUsers([ID], nextPageToken: String, revision: UInt64)
    case write(revision: UInt64)
    case get(Entity)
    case list([Entity], nextPageToken: String)
    case importResult(revision: UInt64, records: UInt64)
    case export([UInt8], revision: UInt64)
    /// A page of a paged export; `nextPageToken` empty on the last.
    case exportPage([UInt8], revision: UInt64, nextPageToken: String)
    case serverInfo(ServerInfo)
    case health(serving: Bool)
    case hello(role: KeyRole?, tenantId: ID?, keyId: ID?)
    case createKey(ApiKey, secret: String)
    case listKeys([ApiKey])
    case revokeKey(ApiKey)
    case rotateSecrets(SecretRotationStatus)
    /// One frame of a Watch stream.
    case watch(WatchBatch)

    /// The call this answers: the key of the per-call codec table (`WireCalls`).
    public var kind: CallKind {
        switch self {
        case .check: return .check
        case .batchCheck: return .batchCheck
        case .explain: return .explain
        case .userPermissions: return .listUserPermissions
        case .permissionUsers: return .listPermissionUsers
        case .write: return .write
        case .get: return .get
        case .list: return .list
        case .importResult: return .importJSONL
        case .export, .exportPage: return .export
        case .serverInfo: return .serverInfo
        case .health: return .health
        case .hello: return .hello
        case .createKey: return .createKey
        case .listKeys: return .listKeys
        case .revokeKey: return .revokeKey
        case .rotateSecrets: return .rotateSecrets
        case .watch: return .watch
        }
    }
}

/// The state of secret re-encryption (RotateSecrets).
public struct SecretRotationStatus: Sendable, Equatable {
    public var activeKeyId: String
    public var keyIds: [String]
    public var running: Bool
    public var remaining: UInt64
    public var reencrypted: UInt64

    public init(activeKeyId: String, keyIds: [String], running: Bool, remaining: UInt64, reencrypted: UInt64) {
        self.activeKeyId = activeKeyId
        self.keyIds = keyIds
        self.running = running
        self.remaining = remaining
        self.reencrypted = reencrypted
    }
}

/// A response frame: the request id it answers and a reply or an error.
public struct WireResponse: Sendable {
    public var requestId: UInt64
    public var result: Result<Reply, AuthzError>

    public init(requestId: UInt64, result: Result<Reply, AuthzError>) {
        self.requestId = requestId
        self.result = result
    }
}
