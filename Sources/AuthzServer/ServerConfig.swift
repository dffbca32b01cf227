import AuthzLog
import AuthzModel
import AuthzWire
import Foundation
import NIOCore

/// Everything `authzd serve` can be told, with its documented default (docs/operations.md).
/// Flags override the config file; the config file overrides the defaults.
public struct ServerConfig: Sendable {
    /// LMDB data directory.
    public var dataDir = "./data"
    /// Unix socket path; nil = no Unix listener.
    public var socketPath: String? = nil
    /// TCP `host:port`; nil = no TCP listener. Port 0 picks a free port.
    public var address: String? = nil
    /// Event-loop threads (default: the number of cores).
    public var threads = System.coreCount
    /// Largest frame accepted, in bytes (the 4-byte length excluded). Larger lengths are refused
    /// from the header alone and the connection is closed.
    public var maxFrameSize = 16 * 1024 * 1024
    /// Most checks in one BatchCheck.
    public var maxBatchChecks = 10_000
    /// Most operations in one Write.
    public var maxWriteOps = 100_000
    /// Most requests in flight per connection; past it the daemon stops reading that socket.
    public var maxInFlight = 1024
    /// Changes the change log keeps for Watch (0: none, Watch refused). See docs/watch.md.
    public var watchRetention = 1_000_000
    /// Open Watch streams the daemon serves at once.
    public var maxWatchers = 1024
    /// Seconds a watcher may leave its connection unwritable (not reading) before it is cut.
    public var watchStallSeconds = 30
    /// Seconds between progress frames of a watcher that is caught up and sees no change.
    public var watchProgressSeconds = 10
    /// Most open TCP connections; further ones are closed on accept. The Unix socket and the
    /// metrics listener have limits of their own, so TCP callers can never lock out local ones.
    public var maxConnections = 4096
    /// Most open Unix-socket connections.
    public var maxUnixConnections = 1024
    /// Most open connections to the metrics listener.
    public var maxMetricsConnections = 32
    /// A metrics request must arrive, whole, within this many seconds of the connection.
    public var metricsTimeoutSeconds = 10
    /// File descriptors kept free beyond the listeners' limits (LMDB, logs, the Unix socket's
    /// own accepts). At start the daemon raises its soft descriptor limit to the hard one and
    /// lowers `maxConnections` (logging it) if the sum would not fit.
    public var reservedFileDescriptors = 64
    /// Largest frame read from a connection that has not authenticated yet (no Hello with a
    /// valid key, not a trusted Unix peer). Such a connection may only say Hello or Health, or
    /// send requests carrying their own key.
    public var preAuthMaxFrameSize = 64 * 1024
    /// A connection that has not authenticated within this many seconds is closed. 0 = never.
    public var authTimeoutSeconds = 10
    /// Outbound bytes queued on a connection above which the daemon stops reading it until the
    /// peer has read its answers (below the low mark).
    public var writeBufferHighWater = 1 << 20
    /// A chunked import with no chunk for this many seconds is discarded.
    public var importIdleTimeoutSeconds = 60
    /// Most bytes of JSON Lines all chunked imports together may stage (held in memory, parsed,
    /// until their last chunk: plan about 9× this in RAM).
    public var maxImportBytes = 256 << 20
    /// Per-tenant size and inheritance-depth limits.
    public var tenantLimits = TenantLimits()
    /// A connection idle this long (no bytes read, nothing in flight) is closed. 0 = never.
    public var idleTimeoutSeconds = 300
    /// Once a frame has started, all of it must arrive within this many seconds (slow clients).
    public var frameTimeoutSeconds = 10
    /// How long a check naming a future `min_revision` waits before UNAVAILABLE.
    public var revisionWaitMillis = 1000
    /// Deadline of a request that names none.
    public var defaultDeadlineMillis = 30_000
    /// Durability of writes.
    public var sync: SyncMode = .full
    /// Initial LMDB map size and its growth ceiling.
    public var mapSize = 1 << 30
    public var maxMapSize = 1 << 40
    /// Key ring file for platform-credential secrets (nil: `DATA_DIR/keyring`, created 0600).
    public var keyRingPath: String? = nil
    /// Serve every caller as superuser, TCP included. For benchmarks and local development only;
    /// logged loudly at start.
    public var insecureNoAuth = false
    /// Plaintext connections send their answers on the socket directly, bypassing swift-nio's
    /// write path while it holds nothing of theirs (`SocketWriter`; docs/architecture.md).
    /// false writes every answer through NIO.
    public var directWrites = true
    /// A Unix peer running as the daemon's own uid or as root is a superuser (it can read the
    /// data directory anyway).
    public var localSuperuser = true
    /// Migrate an older data directory at start (false: refuse it).
    public var autoMigrate = true
    /// HTTP `host:port` for /metrics, /healthz and /readyz; nil = off.
    public var metricsAddress: String? = nil
    /// Decision log file (JSON Lines); nil = off.
    public var decisionLogPath: String? = nil
    /// Share of checks written to the decision log, in (0, 1].
    public var decisionLogSampleRate = 1.0
    /// Audit trail file (JSON Lines of writes, imports, key changes and refused
    /// authentications; docs/security.md); nil = off.
    public var auditLogPath: String? = nil
    /// The audit file is rotated before it would grow past this many bytes.
    public var auditMaxBytes = 100 << 20
    /// Rotated audit files kept (`PATH.1` … `PATH.<keep>`); the oldest beyond is deleted.
    public var auditKeep = 10
    /// The audit writer writes and fsyncs queued lines this often (milliseconds): a crash can
    /// lose the lines of the last interval.
    public var auditSyncMillis = 200
    /// Unix peer uids granted a role without a key: uid → (role, tenant).
    public var allowUIDs: [UInt32: (KeyRole, ID)] = [:]
    /// HTTP authorization listener for gateways (nginx auth_request, Envoy HTTP ext_authz),
    /// TCP `host:port`; nil = off. See docs/gateways.md.
    public var httpAddress: String? = nil
    /// The same listener on a Unix socket (for a proxy beside the daemon); nil = off.
    public var httpSocketPath: String? = nil
    /// Envoy gRPC ext_authz listener (h2c), TCP `host:port`; nil = off.
    public var grpcAddress: String? = nil
    /// Most open connections to the gateway listeners, each.
    public var maxHTTPConnections = 4096
    /// Header names, path prefix and route map of the gateway listeners.
    public var gateway = GatewayOptions()
    /// TLS for every TCP listener (the metrics listener only with `metricsTLS`).
    public var tls = TLSSettings()
    /// Credentials re-encrypted per write transaction by a background secret rotation.
    public var secretRotationBatch = 256
    /// Milliseconds a background secret rotation pauses between two batches (0: none), to
    /// spread its disk writes on a busy daemon.
    public var secretRotationPauseMillis = 0
    /// Serve TCP listeners without TLS. Required (and logged as a warning) for any TCP listener
    /// when no certificate is configured; `insecureNoAuth` implies it.
    public var insecurePlaintext = false
    /// Log mode (docs/scale-out.md): the NATS JetStream servers every change goes through;
    /// nil = a standalone daemon.
    public var log: LogSettings? {
        guard !logSettings.servers.isEmpty else { return nil }
        var l = logSettings
        if !logReplicasSet && l.servers.count == 1 { l.replicas = 1 }
        return l
    }
    /// The log settings as given (servers empty = off); `log` applies the replica default.
    public var logSettings = LogSettings(servers: [])
    /// Whether log-replicas was given (else 3, or 1 for a single server).
    public var logReplicasSet = false
    /// Which tenants this daemon holds in log mode.
    public var logShard: TenantShard = .all
    /// Where changed users are published (`--push`, docs/watch.md); nil = off.
    public var push: PushSettings? = nil
    /// User events consumed from a NATS subject or a Kafka topic (`--events`, docs/events.md);
    /// nil = off.
    public var events: EventSettings? = nil
    /// Seconds a write waits for the log to acknowledge it and for this daemon to apply it.
    public var logWriteTimeoutSeconds = 10

    public init() {}

    /// The decoding bounds these settings imply.
    public var wireLimits: WireLimits {
        WireLimits(maxBatchChecks: maxBatchChecks, maxWriteOps: maxWriteOps, maxListItems: 1024)
    }

    /// Reads a config file of `key = value` lines (`#` comments, blank lines ignored). Keys are
    /// the long flag names: data-dir, socket, address, threads, max-frame-size, max-batch-checks,
    /// max-write-ops, max-in-flight, max-connections, max-unix-connections,
    /// max-metrics-connections, metrics-timeout, reserved-fds, pre-auth-max-frame-size,
    /// auth-timeout, write-buffer-high-water, idle-timeout, revision-wait-ms,
    /// default-deadline-ms, sync, map-size, max-map-size, the tenant limits
    /// (max-inheritance-depth, max-roles-per-tenant, max-permissions-per-tenant,
    /// max-permission-bindings-per-tenant, max-role-bindings-per-tenant), the audit trail
    /// (audit-log, audit-max-bytes, audit-keep, audit-sync-ms) and the others below.
    /// Unknown keys are an error.
    public mutating func load(file path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError("cannot read config file \(path)")
        }
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            guard let eq = line.firstIndex(of: "=") else { throw ConfigError("\(path):\(n + 1): expected key = value") }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            try set(key, value, origin: "\(path):\(n + 1)")
        }
    }

    /// Sets one setting by its flag name. Throws for an unknown key or a bad value.
    public mutating func set(_ key: String, _ value: String, origin: String) throws {
        func int() throws -> Int {
            guard let v = Int(value), v >= 0 else { throw ConfigError("\(origin): \(key) must be a non-negative integer (got \"\(value)\")") }
            return v
        }
        switch key {
        case "data-dir": dataDir = value
        case "socket": socketPath = value.isEmpty ? nil : value
        case "address": address = value.isEmpty ? nil : value
        case "threads": threads = max(1, try int())
        case "max-frame-size": maxFrameSize = max(64, try int())
        case "max-batch-checks": maxBatchChecks = max(1, try int())
        case "max-write-ops": maxWriteOps = max(1, try int())
        case "max-in-flight": maxInFlight = max(1, try int())
        case "watch-retention":
            let v = try int()
            guard v == 0 || v >= 1000 else { throw ConfigError("\(origin): watch-retention must be 0 (no change log) or at least 1000 changes (got \(v))") }
            watchRetention = v
        case "max-watchers": maxWatchers = max(0, try int())
        case "watch-stall-timeout": watchStallSeconds = max(1, try int())
        case "watch-progress-interval": watchProgressSeconds = max(1, try int())
        case "max-connections": maxConnections = max(1, try int())
        case "max-unix-connections": maxUnixConnections = max(1, try int())
        case "max-metrics-connections": maxMetricsConnections = max(1, try int())
        case "metrics-timeout": metricsTimeoutSeconds = max(1, try int())
        case "reserved-fds": reservedFileDescriptors = try int()
        case "pre-auth-max-frame-size": preAuthMaxFrameSize = max(64, try int())
        case "auth-timeout": authTimeoutSeconds = try int()
        case "import-idle-timeout": importIdleTimeoutSeconds = max(1, try int())
        case "max-import-bytes": maxImportBytes = max(1 << 20, try int())
        case "write-buffer-high-water": writeBufferHighWater = max(4096, try int())
        case "max-inheritance-depth": tenantLimits.maxInheritanceDepth = max(1, try int())
        case "max-roles-per-tenant": tenantLimits.maxRoles = max(1, try int())
        case "max-permissions-per-tenant": tenantLimits.maxPermissions = max(1, try int())
        case "max-permission-bindings-per-tenant": tenantLimits.maxPermissionBindings = max(1, try int())
        case "max-role-bindings-per-tenant": tenantLimits.maxRoleBindings = max(1, try int())
        case "idle-timeout": idleTimeoutSeconds = try int()
        case "frame-timeout": frameTimeoutSeconds = max(1, try int())
        case "revision-wait-ms": revisionWaitMillis = try int()
        case "default-deadline-ms": defaultDeadlineMillis = max(1, try int())
        case "map-size": mapSize = max(1 << 20, try int())
        case "max-map-size": maxMapSize = max(1 << 20, try int())
        case "keyring": keyRingPath = value.isEmpty ? nil : value
        case "auto-migrate": autoMigrate = value != "false"
        case "metrics-address": metricsAddress = value.isEmpty ? nil : value
        case "decision-log": decisionLogPath = value.isEmpty ? nil : value
        case "decision-log-sample-rate":
            guard let r = Double(value), r > 0, r <= 1 else { throw ConfigError("\(origin): decision-log-sample-rate must be in (0, 1] (got \"\(value)\")") }
            decisionLogSampleRate = r
        case "audit-log": auditLogPath = value.isEmpty ? nil : value
        case "audit-max-bytes": auditMaxBytes = max(1024, try int())
        case "audit-keep":
            let v = try int()
            guard (1...1000).contains(v) else { throw ConfigError("\(origin): audit-keep must be between 1 and 1000 (got \"\(value)\")") }
            auditKeep = v
        case "audit-sync-ms": auditSyncMillis = min(60_000, max(1, try int()))
        case "insecure-no-auth": insecureNoAuth = value == "true"
        case "direct-writes":
            guard value == "true" || value == "false" else { throw ConfigError("\(origin): direct-writes is true or false (got \"\(value)\")") }
            directWrites = value == "true"
        case "local-superuser": localSuperuser = value != "false"
        case "allow-uid":
            // UID:ROLE:TENANT_ID, comma-separated for several.
            for item in value.split(separator: ",") {
                let parts = item.split(separator: ":").map(String.init)
                guard parts.count == 3, let uid = UInt32(parts[0]), let role = KeyRole(name: parts[1]), role == .checker || role == .admin, let t = ID(parts[2]) else {
                    throw ConfigError("\(origin): allow-uid entries are UID:checker|admin:TENANT_ID (got \"\(item)\")")
                }
                allowUIDs[uid] = (role, t)
            }
        case "http-address": httpAddress = value.isEmpty ? nil : value
        case "http-socket": httpSocketPath = value.isEmpty ? nil : value
        case "grpc-address": grpcAddress = value.isEmpty ? nil : value
        case "max-http-connections": maxHTTPConnections = max(1, try int())
        case "route-map": gateway.routeMapPath = value.isEmpty ? nil : value
        case "http-tenant-header", "http-user-header", "http-permission-header", "http-scope-header",
             "http-api-key-header", "http-method-header", "http-uri-header":
            let name = value.lowercased()
            guard !name.isEmpty, name.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }) else {
                throw ConfigError("\(origin): \(key) must be a header name of letters, digits and - (got \"\(value)\")")
            }
            switch key {
            case "http-tenant-header": gateway.tenantHeader = name
            case "http-user-header": gateway.userHeader = name
            case "http-permission-header": gateway.permissionHeader = name
            case "http-scope-header": gateway.scopeHeader = name
            case "http-api-key-header": gateway.apiKeyHeader = name
            case "http-method-header": gateway.methodHeader = name
            default: gateway.uriHeader = name
            }
        case "http-path-prefix":
            guard value.hasPrefix("/"), !value.hasSuffix("/"), !value.contains("?") else {
                throw ConfigError("\(origin): http-path-prefix must start with / and not end with / (got \"\(value)\")")
            }
            gateway.pathPrefix = value
        case "tls-cert": tls.certPath = value.isEmpty ? nil : value
        case "tls-key": tls.keyPath = value.isEmpty ? nil : value
        case "tls-client-ca": tls.clientCAPath = value.isEmpty ? nil : value
        case "tls-client-auth":
            guard value == "optional" || value == "require" else { throw ConfigError("\(origin): tls-client-auth must be optional or require (got \"\(value)\")") }
            tls.requireClientCertificate = value == "require"
        case "tls-identity":
            // Patterns separated by whitespace or commas, replacing the defaults.
            let patterns = value.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init)
            _ = try CertificateIdentityMap(patterns)
            tls.identityPatterns = patterns
        case "metrics-tls": tls.metricsTLS = value == "true"
        case "insecure-plaintext": insecurePlaintext = value == "true"
        case "secret-rotation-batch": secretRotationBatch = max(1, try int())
        case "secret-rotation-pause":
            let v = try int()
            guard (0...60_000).contains(v) else { throw ConfigError("\(origin): secret-rotation-pause must be 0 to 60000 milliseconds (got \(v))") }
            secretRotationPauseMillis = v
        case "push":
            if value.isEmpty { push = nil; break }
            do { push = try PushSettings.parse(value) } catch let e as AuthzError { throw ConfigError("\(origin): \(e.message)") }
        case "log":
            do { logSettings.servers = value.isEmpty ? [] : try LogSettings.parseServers(value) } catch let e as AuthzError { throw ConfigError("\(origin): \(e.message)") }
        case "log-stream":
            guard !value.isEmpty, value.count <= 64, value.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x5F }) else {
                throw ConfigError("\(origin): log-stream must be 1 to 64 letters, digits, - and _ (got \"\(value)\")")
            }
            logSettings.stream = value
        case "log-replicas":
            let v = try int()
            guard (1...5).contains(v) else { throw ConfigError("\(origin): log-replicas must be between 1 and 5 (got \"\(value)\")") }
            logSettings.replicas = v
            logReplicasSet = true
        case "log-max-age":
            // JetStream takes nanoseconds in an Int64: at most about 292 years; 100 is plenty.
            let v = try int()
            guard v <= 3_153_600_000 else { throw ConfigError("\(origin): log-max-age must be at most 3153600000 seconds (100 years; 0 = unlimited) (got \"\(value)\")") }
            logSettings.maxAgeSeconds = Int64(v)
        case "log-max-bytes": logSettings.maxBytes = Int64(try int())
        case "log-max-msgs": logSettings.maxMessages = Int64(try int())
        case "log-max-message-bytes": logSettings.maxMessageBytes = Int32(min(64 << 20, try int()))
        case "log-duplicate-window":
            let v = try int()
            guard (1...604_800).contains(v) else { throw ConfigError("\(origin): log-duplicate-window must be 1 to 604800 seconds (a week) (got \"\(value)\")") }
            logSettings.duplicateWindowSeconds = Int64(v)
        case "log-tenants", "log-shard":
            if logShard != .all && (key == "log-tenants") != ({ if case .tenants = logShard { return true } else { return false } }()) {
                throw ConfigError("\(origin): log-tenants and log-shard cannot be combined")
            }
            do {
                logShard = try key == "log-tenants" ? TenantShard.parse(tenants: value, shard: nil) : TenantShard.parse(tenants: nil, shard: value)
            } catch let e as AuthzError { throw ConfigError("\(origin): \(e.message)") }
        case "log-write-timeout":
            let v = try int()
            guard (1...3_600).contains(v) else { throw ConfigError("\(origin): log-write-timeout must be 1 to 3600 seconds (got \"\(value)\")") }
            logWriteTimeoutSeconds = v
        case "events":
            if value.isEmpty { events = nil; break }
            do {
                var e = try EventSettings.parse(value)
                if let old = events {
                    // Settings given before (a config file, then the flag) stay.
                    (e.group, e.ackWaitSeconds, e.sessionTimeoutMillis) = (old.group, old.ackWaitSeconds, old.sessionTimeoutMillis)
                    if old.transport == e.transport { e.deadLetterSubject = old.deadLetterSubject }
                }
                events = e
            } catch let e as AuthzError { throw ConfigError("\(origin): \(e.message)") }
        case "events-ack-wait":
            guard var e = events else { throw ConfigError("\(origin): events-ack-wait needs events (--events nats://HOST:PORT/SUBJECT) first") }
            guard e.transport == .nats else { throw ConfigError("\(origin): events-ack-wait applies to nats:// events only (Kafka: events-session-timeout)") }
            e.ackWaitSeconds = max(1, try int())
            events = e
        case "events-session-timeout":
            guard var e = events else { throw ConfigError("\(origin): events-session-timeout needs events (--events kafka://HOST:PORT/TOPIC) first") }
            guard e.transport == .kafka else { throw ConfigError("\(origin): events-session-timeout applies to kafka:// events only (NATS: events-ack-wait)") }
            let v = try int()
            guard (100...3_600_000).contains(v) else { throw ConfigError("\(origin): events-session-timeout must be between 100 and 3600000 milliseconds (got \"\(value)\")") }
            e.sessionTimeoutMillis = v
            events = e
        case "events-group", "events-dead-letter":
            guard var e = events else { throw ConfigError("\(origin): \(key) needs events (--events nats://HOST:PORT/SUBJECT or kafka://HOST:PORT/TOPIC) first") }
            if e.transport == .kafka {
                // Kafka: a group id and a topic name alike, [a-zA-Z0-9._-].
                if let why = EventSettings.kafkaTopicProblem(value) { throw ConfigError("\(origin): \(key) \"\(value)\" \(why)") }
            } else {
                guard !value.isEmpty, !value.contains(" "), !value.contains("*"), !value.contains(">") else {
                    throw ConfigError("\(origin): \(key) must be a name without spaces or wildcards (got \"\(value)\")")
                }
                if key == "events-group", value.contains(".") { throw ConfigError("\(origin): events-group must not contain dots (got \"\(value)\")") }
            }
            if key == "events-group" { e.group = value } else { e.deadLetterSubject = value }
            events = e
        case "sync":
            guard let m = SyncMode(rawValue: value) else { throw ConfigError("\(origin): sync must be full or nosync (got \"\(value)\")") }
            sync = m
        default:
            throw ConfigError("\(origin): unknown setting \"\(key)\"")
        }
    }
}

/// A bad flag or config file entry.
public struct ConfigError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
