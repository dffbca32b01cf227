import ArgumentParser
import AuthzClient
import AuthzEngine
import AuthzModel
import AuthzWire
import AuthzServer
import AuthzStore
import Dispatch
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOPosix
import Prometheus
import ServiceLifecycle
import UnixSignals

/// `authzd`: the authorization decision daemon.
@main
struct Authzd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authzd",
        abstract: "Multi-tenant authorization decision daemon.",
        version: Dispatcher.version,
        subcommands: [Serve.self, Keys.self, Migrate.self, ImportOffline.self, Verify.self, Backup.self, Restore.self],
        defaultSubcommand: Serve.self
    )
}

struct ServeOptions: ParsableArguments {
    @Option(name: .long, help: "Config file of key = value lines (see docs/operations.md).")
    var config: String?
    @Option(name: .long, help: "LMDB data directory (default ./data).")
    var dataDir: String?
    @Option(name: .long, help: "Unix socket path to listen on (default ./authzd.sock when no --address is given).")
    var socket: String?
    @Option(name: .long, help: "TCP HOST:PORT to listen on.")
    var address: String?
    @Option(name: .long, help: "Event-loop threads (default: cores).")
    var threads: Int?
    @Option(name: .long, help: "Maximum frame size in bytes (default 16777216).")
    var maxFrameSize: Int?
    @Option(name: .long, help: "Durability: full (fsync every write, default) or nosync.")
    var sync: String?
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical (default info).")
    var logLevel: String = "info"
    @Option(name: .long, help: "Key ring file for credential secrets (default DATA_DIR/keyring, created 0600).")
    var keyring: String?
    @Option(name: .long, help: "Unix peer uids granted a role without a key: UID:checker|admin:TENANT_ID, comma-separated.")
    var allowUid: String?
    @Flag(name: .long, help: "Treat every caller, TCP included, as a superuser. Benchmarks and laptops only.")
    var insecureNoAuth = false
    @Flag(name: .long, help: "Refuse an older data directory instead of migrating it at start.")
    var noAutoMigrate = false
    @Option(name: .long, help: "Seconds within which a started frame must complete (default 10).")
    var frameTimeout: Int?
    @Option(name: .long, help: "Seconds a connection may stay idle (default 300; 0 = never).")
    var idleTimeout: Int?
    @Option(name: .long, help: "Maximum open connections (default 4096).")
    var maxConnections: Int?
    @Option(name: .long, help: "HTTP HOST:PORT for /metrics (Prometheus), /healthz and /readyz.")
    var metricsAddress: String?
    @Option(name: .long, help: "Decision log file (JSON Lines of sampled checks).")
    var decisionLog: String?
    @Option(name: .long, help: "Share of checks logged, in (0, 1] (default 1).")
    var decisionLogSampleRate: Double?
    @Option(name: .long, help: "Audit trail file (JSON Lines of writes, imports, key changes and refused authentications; rotated by size, see --set audit-max-bytes, audit-keep).")
    var auditLog: String?
    @Option(name: .long, help: "HTTP authorization listener for gateways, HOST:PORT (nginx auth_request, Envoy HTTP ext_authz; docs/gateways.md).")
    var httpAddress: String?
    @Option(name: .long, help: "The HTTP authorization listener on a Unix socket, for a proxy on the same host.")
    var httpSocket: String?
    @Option(name: .long, help: "Envoy gRPC ext_authz listener (HTTP/2 cleartext), HOST:PORT.")
    var grpcAddress: String?
    @Option(name: .long, help: "Route map for the gateway listeners: METHOD PATH-PATTERN PERMISSION SCOPE lines; re-read on SIGHUP.")
    var routeMap: String?
    @Option(name: .long, help: "PEM certificate chain for TLS on every TCP listener (with --tls-key).")
    var tlsCert: String?
    @Option(name: .long, help: "PEM private key for --tls-cert.")
    var tlsKey: String?
    @Option(name: .long, help: "PEM CA bundle of accepted client certificates (mTLS; identities mapped by tls-identity, docs/security.md).")
    var tlsClientCa: String?
    @Flag(name: .long, help: "Allow TCP listeners without TLS (logged as a warning). Required for --address without --tls-cert.")
    var insecurePlaintext = false
    @Option(name: .long, help: "Log mode: NATS JetStream servers every change goes through, nats://H:P,... (docs/scale-out.md).")
    var log: String?
    @Option(name: .long, help: "JetStream stream of the log (default authzd; created if missing).")
    var logStream: String?
    @Option(name: .long, help: "Replicas of the stream when this daemon creates it (default 3, or 1 for a single server).")
    var logReplicas: Int?
    @Option(name: .long, help: "Stream limit when this daemon creates the stream: seconds a message is kept (default 0 = forever).")
    var logMaxAge: Int?
    @Option(name: .long, help: "Stream limit when this daemon creates the stream: bytes kept (default 0 = unlimited).")
    var logMaxBytes: Int?
    @Option(name: .long, help: "Stream limit when this daemon creates the stream: messages kept (default 0 = unlimited).")
    var logMaxMsgs: Int?
    @Option(name: .long, help: "Consume user events from nats://H:P,.../SUBJECT or kafka://H:P,.../TOPIC (docs/events.md).")
    var events: String?
    @Option(name: .long, help: "Consumer group of --events (NATS: the durable consumer's name; default authzd); daemons sharing it share the events.")
    var eventsGroup: String?
    @Option(name: .long, help: "Publish the users whose permissions changed to nats://H:P,.../SUBJECT (SUBJECT.<tenant>; docs/watch.md).")
    var push: String?
    @Option(name: .long, help: "Hold only these tenants (comma-separated ids) in log mode.")
    var logTenants: String?
    @Option(name: .long, help: "Hold only shard K of N (0 <= K < N, by a stable hash of the tenant id) in log mode.")
    var logShard: String?
    @Option(name: .long, help: ArgumentHelp("Any config-file setting as KEY=VALUE (repeatable), e.g. --set max-inheritance-depth=16.", valueName: "KEY=VALUE"))
    var set: [String] = []

    func resolve() throws -> ServerConfig {
        var c = ServerConfig()
        if let config { try c.load(file: config) }
        if let dataDir { c.dataDir = dataDir }
        if let socket { c.socketPath = socket }
        if let address { c.address = address }
        if let threads { try c.set("threads", String(threads), origin: "--threads") }
        if let maxFrameSize { try c.set("max-frame-size", String(maxFrameSize), origin: "--max-frame-size") }
        if let sync { try c.set("sync", sync, origin: "--sync") }
        if let keyring { c.keyRingPath = keyring }
        if let allowUid { try c.set("allow-uid", allowUid, origin: "--allow-uid") }
        if insecureNoAuth { c.insecureNoAuth = true }
        if noAutoMigrate { c.autoMigrate = false }
        if let frameTimeout { try c.set("frame-timeout", String(frameTimeout), origin: "--frame-timeout") }
        if let idleTimeout { try c.set("idle-timeout", String(idleTimeout), origin: "--idle-timeout") }
        if let maxConnections { try c.set("max-connections", String(maxConnections), origin: "--max-connections") }
        if let metricsAddress { c.metricsAddress = metricsAddress }
        if let decisionLog { c.decisionLogPath = decisionLog }
        if let auditLog { c.auditLogPath = auditLog }
        if let httpAddress { c.httpAddress = httpAddress }
        if let httpSocket { c.httpSocketPath = httpSocket }
        if let grpcAddress { c.grpcAddress = grpcAddress }
        if let routeMap { c.gateway.routeMapPath = routeMap }
        if let tlsCert { c.tls.certPath = tlsCert }
        if let tlsKey { c.tls.keyPath = tlsKey }
        if let tlsClientCa { c.tls.clientCAPath = tlsClientCa }
        if insecurePlaintext { c.insecurePlaintext = true }
        if let log { try c.set("log", log, origin: "--log") }
        if let logStream { try c.set("log-stream", logStream, origin: "--log-stream") }
        if let logReplicas { try c.set("log-replicas", String(logReplicas), origin: "--log-replicas") }
        if let logMaxAge { try c.set("log-max-age", String(logMaxAge), origin: "--log-max-age") }
        if let logMaxBytes { try c.set("log-max-bytes", String(logMaxBytes), origin: "--log-max-bytes") }
        if let logMaxMsgs { try c.set("log-max-msgs", String(logMaxMsgs), origin: "--log-max-msgs") }
        if let events { try c.set("events", events, origin: "--events") }
        if let eventsGroup { try c.set("events-group", eventsGroup, origin: "--events-group") }
        if let push { try c.set("push", push, origin: "--push") }
        if let logTenants { try c.set("log-tenants", logTenants, origin: "--log-tenants") }
        if let logShard { try c.set("log-shard", logShard, origin: "--log-shard") }
        if let decisionLogSampleRate { try c.set("decision-log-sample-rate", String(decisionLogSampleRate), origin: "--decision-log-sample-rate") }
        for item in set {
            guard let eq = item.firstIndex(of: "=") else { throw ConfigError("--set \(item): expected KEY=VALUE") }
            try c.set(String(item[..<eq]), String(item[item.index(after: eq)...]), origin: "--set")
        }
        if c.socketPath == nil && c.address == nil { c.socketPath = "./authzd.sock" }
        return c
    }
}

/// Bootstraps logging for the process (stderr) and returns authzd's logger at `level`.
/// The only place logging is bootstrapped; call once, before anything logs.
func makeLogger(_ level: String) -> Logger {
    LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
    var logger = Logger(label: "authzd")
    logger.logLevel = Logger.Level(rawValue: level) ?? .info
    return logger
}

/// `authzd serve`: the daemon assembled as services in one `ServiceGroup` (docs/architecture.md,
/// "How the daemon is assembled"). Logging and metrics are bootstrapped here and nowhere else.
///
/// The process's main thread waits for the group on a semaphore (a `Latch`) instead of running an async
/// main: Swift's async main parks the main thread in `dispatch_main`, which valgrind (the CI's
/// instruction-count guard, bench/smoke.sh) cannot run. The services themselves run on
/// Swift's concurrency threads either way.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve checks and writes over a Unix socket and/or TCP.")

    @OptionGroup var options: ServeOptions

    func run() throws {
        let done = Latch()
        let outcome = NIOLockedValueBox<Error?>(nil)
        let options = self.options
        Task.detached {
            do { try await Serve.serve(options) } catch { outcome.withLockedValue { $0 = error } }
            done.signal()
        }
        done.wait()
        if let error = outcome.withLockedValue({ $0 }) { throw error }
    }

    /// Builds the services and runs the group until graceful shutdown.
    static func serve(_ options: ServeOptions) async throws {
        let logger = makeLogger(options.logLevel)
        let config: ServerConfig
        do { config = try options.resolve() } catch {
            logger.critical("bad configuration: \(error)")
            throw ExitCode(2)
        }
        // Metrics handlers bind to the factory when they are made: bootstrap before anything
        // makes one (the decision log's counter, the server's metrics).
        var registry: PrometheusCollectorRegistry?
        if config.metricsAddress != nil {
            let r = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(MetricsServer.factory(registry: r))
            registry = r
        }
        let decisionLog: DecisionLog?
        do {
            decisionLog = try config.decisionLogPath.map { try DecisionLog(path: $0, sampleRate: config.decisionLogSampleRate) }
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: max(1, config.threads))
        let server = AuthzServer(config: config, logger: logger, group: loops, decisionLog: decisionLog)
        // Graceful shutdown goes through the services in reverse: the metrics listener closes,
        // SIGHUP stops being handled, the server drains, then the decision log writes what
        // the drained checks left and closes.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let decisionLog { services.append(.init(service: decisionLog, serviceName: "decision-log")) }
        services.append(.init(service: server, serviceName: "server"))
        services.append(.init(service: ReloadOnHangup(server: server, logger: logger), serviceName: "sighup-reload"))
        if let registry { services.append(.init(service: MetricsServer(server: server, registry: registry), serviceName: "metrics")) }
        // The group traps SIGTERM and SIGINT before any service starts: a SIGTERM sent as soon
        // as "listening" is logged (tests do) is never lost.
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        var failure: Error?
        do {
            try await group.run()
        } catch {
            failure = error
        }
        try? await loops.shutdownGracefully()
        if let failure {
            logger.critical("cannot start: \(failure)")
            throw ExitCode(1)
        }
    }
}

/// SIGHUP re-reads the route map and the TLS certificate (keeping the old ones when the new
/// ones do not load), until graceful shutdown. Traps SIGHUP from the moment it runs.
struct ReloadOnHangup: Service {
    let server: AuthzServer
    let logger: Logger

    func run() async {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            logger.info("SIGHUP received; reloading")
            server.reload()
        }
    }
}

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage API keys and the encryption of credential secrets.",
        subcommands: [KeysCreate.self, KeysList.self, KeysRevoke.self, KeysRotateData.self]
    )
}

struct KeyTarget: ParsableArguments {
    @Option(name: .long, help: "Unix socket of a running daemon (default ./authzd.sock).")
    var socket = "./authzd.sock"
    @Option(name: .long, help: "Operator key to present (not needed as the daemon's uid or root). Visible to other local users in `ps`: prefer --key-file or $AUTHZ_API_KEY.")
    var key: String?
    @Option(name: .long, help: "File holding the operator key (one line). Default when neither --key nor --key-file is given: $AUTHZ_API_KEY.")
    var keyFile: String?
    @Flag(name: .long, help: "Work on the data directory directly (the daemon must be stopped).")
    var offline = false
    @Option(name: .long, help: "Data directory, with --offline.")
    var dataDir = "./data"
    @Option(name: .long, help: "Key ring, with --offline.")
    var keyring: String?

    /// Runs `body` with a client of the daemon (presenting the resolved key; 30 s deadline per
    /// call) and returns what it returns, blocking this thread until it is done (these commands
    /// have no async main: see `Serve`). An `AuthzError` is printed as `error: CODE: message`
    /// and becomes exit status 2.
    func withClient<T: Sendable>(_ body: @escaping @Sendable (AuthzClient) async throws -> T) throws -> T {
        let apiKey: String?
        do {
            apiKey = try KeySource.resolve(flag: key, file: keyFile, environment: ProcessInfo.processInfo.environment)
        } catch let e as AuthzError {
            FileHandle.standardError.write(Data("error: \(e.code.name): \(e.message)\n".utf8))
            throw ExitCode(2)
        }
        let client = AuthzClient(endpoint: .unix(socket), apiKey: apiKey)
        defer { client.close() }
        let done = DispatchSemaphore(value: 0)
        let outcome = NIOLockedValueBox<Result<T, Error>?>(nil)
        Task.detached {
            do {
                let value = try await body(client)
                outcome.withLockedValue { $0 = .success(value) }
            } catch {
                outcome.withLockedValue { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        do {
            return try outcome.withLockedValue { $0! }.get()
        } catch let e as AuthzError {
            FileHandle.standardError.write(Data("error: \(e.code.name): \(e.message)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// `--expires` as microseconds since the epoch; 0 when absent.
func parseExpiry(_ text: String?) throws -> Int64 {
    guard let text else { return 0 }
    guard let v = Timestamp.parse(text) else { throw ValidationError("--expires must be RFC 3339") }
    return v
}

func keyLine(_ k: ApiKey) -> String {
    var s = "{\"id\":\(JSONWriter.quoted(k.id.description)),\"role\":\(JSONWriter.quoted(k.role.name))"
    if k.tenantId != .zero { s += ",\"tenant_id\":\(JSONWriter.quoted(k.tenantId.description))" }
    s += ",\"name\":\(JSONWriter.quoted(k.name))"
    s += ",\"created_at\":\(JSONWriter.quoted(Timestamp.format(k.createdAt)))"
    if k.expiresAt != 0 { s += ",\"expires_at\":\(JSONWriter.quoted(Timestamp.format(k.expiresAt)))" }
    if k.revokedAt != 0 { s += ",\"revoked_at\":\(JSONWriter.quoted(Timestamp.format(k.revokedAt)))" }
    return s + "}"
}

struct KeysCreate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a key and print it once (only its hash is stored).")
    @OptionGroup var target: KeyTarget
    @Option(name: .long, help: "Tenant of a checker or admin key.") var tenant: String?
    @Option(name: .long, help: "checker or admin (bound to --tenant), or gateway (checks in every tenant; for nginx and Envoy, see docs/gateways.md).") var role: String?
    @Flag(name: .long, help: "An operator key (tenants and keys).") var `operator` = false
    @Option(name: .long, help: "A label for listings.") var name = ""
    @Option(name: .long, help: "Expiry, RFC 3339.") var expires: String?

    func run() throws {
        let r: KeyRole
        if `operator` {
            r = .operator
        } else {
            guard let role, let parsed = KeyRole(name: role), parsed != .operator else { throw ValidationError("--role must be checker, admin or gateway (or give --operator)") }
            r = parsed
        }
        let t = try tenant.map { s -> ID in
            guard let id = ID(s) else { throw ValidationError("--tenant must be a UUID") }
            return id
        }
        let exp = try parseExpiry(expires)
        let (k, secret): (ApiKey, String)
        if target.offline {
            (k, secret) = try OfflineKeys.create(dataDir: target.dataDir, keyRing: target.keyring, tenant: t, role: r, name: name, expiresAt: exp)
        } else {
            let name = self.name
            (k, secret) = try target.withClient { try await $0.createKey(tenant: t, role: r, name: name, expiresAt: exp) }
        }
        FileHandle.standardError.write(Data("\(keyLine(k))\nThe key below is shown once; store it now.\n".utf8))
        print(secret)
    }
}

struct KeysList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List keys by id (never their secrets).")
    @OptionGroup var target: KeyTarget
    @Option(name: .long) var tenant: String?

    func run() throws {
        let t = tenant.flatMap { ID($0) }
        let keys: [ApiKey]
        if target.offline {
            keys = try OfflineKeys.list(dataDir: target.dataDir, keyRing: target.keyring, tenant: t)
        } else {
            keys = try target.withClient { try await $0.listKeys(tenant: t) }
        }
        for k in keys { print(keyLine(k)) }
    }
}

struct KeysRevoke: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a key now, or set its expiry with --expires.")
    @OptionGroup var target: KeyTarget
    @Argument var id: String
    @Option(name: .long, help: "Expire at this RFC 3339 time instead of revoking now.") var expires: String?

    func run() throws {
        guard let kid = ID(id) else { throw ValidationError("ID must be a UUID") }
        let exp = try parseExpiry(expires)
        let k: ApiKey
        if target.offline {
            k = try OfflineKeys.revoke(dataDir: target.dataDir, keyRing: target.keyring, id: kid, expiresAt: exp)
        } else {
            k = try target.withClient { try await $0.revokeKey(kid, expiresAt: exp) }
        }
        print(keyLine(k))
    }
}

struct KeysRotateData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-data",
        abstract: "Re-encrypt every credential secret to the key ring's active key (resumable).",
        discussion: """
        Against a running daemon (the default, over --socket as its uid or root): it re-reads the \
        key ring file, seals new secrets with the active key at once and re-encrypts the others \
        in the background while it serves; --wait prints progress until done. A daemon killed \
        mid-way resumes at its next start. With --offline, on a stopped daemon's data directory.
        Add the new key to the ring file first (`ID BASE64KEY active`, the old one kept without \
        `active`); remove the old key only after the rotation finished.
        """)
    @OptionGroup var target: KeyTarget
    @Option(name: .long, help: "Records per transaction.") var batch = 256
    @Flag(name: .long, help: "Wait for the background rotation to finish, printing progress on stderr.") var wait = false

    func run() throws {
        if target.offline {
            var o = StoreOptions()
            o.keyRingPath = target.keyring
            o.keyRing = .require
            let store = try Store(directory: target.dataDir, options: o)
            let n = try store.rotateSecrets(batchSize: batch)
            print("{\"reencrypted\":\(n),\"active_key_id\":\(JSONWriter.quoted(store.sealer?.ring.activeId ?? ""))}")
            return
        }
        var s = try target.withClient { try await $0.rotateSecrets() }
        while wait && s.running {
            FileHandle.standardError.write(Data("re-encrypted \(s.reencrypted), \(s.remaining) remaining\n".utf8))
            Thread.sleep(forTimeInterval: 1)
            s = try target.withClient { try await $0.rotateSecrets() }
        }
        var line = "{\"active_key_id\":\(JSONWriter.quoted(s.activeKeyId))"
        line += ",\"key_ids\":[" + s.keyIds.map(JSONWriter.quoted).joined(separator: ",") + "]"
        line += ",\"running\":\(s.running),\"remaining\":\(s.remaining),\"reencrypted\":\(s.reencrypted)}"
        print(line)
    }
}

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Migrate a stopped daemon's data directory to this build's format (docs/migrations.md).")
    @Option(name: .long) var dataDir = "./data"
    @Option(name: .long) var keyring: String?

    func run() throws {
        var o = StoreOptions()
        o.keyRingPath = keyring
        o.keyRing = .loadIfPresent  // migrating seals nothing: never invent a key ring
        let store = try Store(directory: dataDir, options: o)
        print("{\"data_dir\":\(JSONWriter.quoted(dataDir)),\"format\":\(try store.format())}")
    }
}

struct ImportOffline: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Load a JSON Lines file into a stopped daemon's data directory (first loads), atomically.",
        discussion: """
        The same rules as the Import call (every line checked, one atomic write, created_at and \
        updated_at kept), without a socket, a frame limit or another writer: the data directory's \
        lock keeps a running daemon out. Progress goes to stderr on a terminal.
        """)

    @Option(name: .long, help: "LMDB data directory (created, 0700, with missing parents).")
    var dataDir = "./data"
    @Option(name: .long, help: "Key ring for credential secrets (default DATA_DIR/keyring, created 0600 if missing, as by serve).")
    var keyring: String?
    @Flag(name: .long, help: "No progress on stderr.")
    var quiet = false
    @Argument(help: "The JSON Lines file.")
    var file: String

    func run() throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            FileHandle.standardError.write(Data("error: cannot read \(file)\n".utf8))
            throw ExitCode(2)
        }
        var o = EngineOptions()
        o.store.keyRingPath = keyring
        let started = Date()
        let engine = try Engine(directory: dataDir, options: o)
        let bytes = [UInt8](data)
        var staging = ImportStaging(onlyTenant: nil)
        let progress = !quiet && isatty(2) != 0
        do {
            for part in AuthzClient.chunks(of: bytes, chunkBytes: 8 << 20) {
                try engine.stage(Array(bytes[part.range]), into: &staging)
                if progress {
                    let secs = max(0.001, Date().timeIntervalSince(started))
                    let done = Double(part.range.upperBound) / Double(max(1, bytes.count))
                    FileHandle.standardError.write(Data(String(format: "\rchecked %d records, %.0f%% of the file, %.0f records/s, ETA %.0f s   ",
                                                               staging.records, done * 100, Double(staging.records) / secs, secs / max(done, 0.001) - secs).utf8))
                }
            }
            if progress { FileHandle.standardError.write(Data("\rwriting \(staging.records) records in one transaction…                    ".utf8)) }
            let r = try engine.commit(staging)
            let secs = Date().timeIntervalSince(started)
            if progress { FileHandle.standardError.write(Data("\n".utf8)) }
            print(String(format: "{\"records\":%d,\"revision\":%llu,\"seconds\":%.3f,\"records_per_second\":%.0f}", r.records, r.revision, secs, Double(r.records) / secs))
        } catch let e as AuthzError {
            if progress { FileHandle.standardError.write(Data("\n".utf8)) }
            FileHandle.standardError.write(Data("error: \(e.code.name): \(e.message)\nnothing was written; fix the line and run the import again\n".utf8))
            throw ExitCode(2)
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rebuild the index from LMDB and compare it with a fresh compile (offline).")

    @Option(name: .long, help: "LMDB data directory.")
    var dataDir = "./data"
    @Option(name: .long, help: "Key ring (default DATA_DIR/keyring if it exists; verify never creates one).")
    var keyring: String?

    func run() throws {
        var o = EngineOptions()
        o.store.keyRingPath = keyring
        o.store.keyRing = .loadIfPresent  // verifying seals nothing: never invent a key ring
        let engine = try Engine(directory: dataDir, options: o)
        let problems = try engine.verifyIndex()
        print("revision \(engine.revision): \(problems.isEmpty ? "index consistent" : problems.joined(separator: "\n"))")
        if !problems.isEmpty { throw ExitCode(1) }
    }
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Consistent, compacting copy of the data directory into DEST, while the daemon serves.")

    @Option(name: .long, help: "LMDB data directory.")
    var dataDir = "./data"
    @Argument(help: "Destination directory (created; must hold no data.mdb).")
    var dest: String

    func run() throws {
        let revision = try Store.backup(directory: dataDir, to: dest)
        print("{\"backup\":\(JSONWriter.quoted(dest)),\"revision\":\(revision)}")
        FileHandle.standardError.write(Data("note: the key ring is not part of the backup; keep it separately\n".utf8))
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restore a backup into an empty data directory (no daemon running on it).")

    @Option(name: .long, help: "LMDB data directory to restore into.")
    var dataDir = "./data"
    @Option(name: .long, help: "Key ring the restored data will be served with (default DATA_DIR/keyring). Required, holding every key id that sealed the backup's secrets, when it holds any; never created.")
    var keyring: String?
    @Argument(help: "Backup directory (holding data.mdb).")
    var backup: String

    func run() throws {
        try Store.restore(from: backup, into: dataDir, keyRingPath: keyring)
        var o = EngineOptions()
        o.store.keyRingPath = keyring
        o.store.keyRing = .loadIfPresent
        let engine = try Engine(directory: dataDir, options: o)
        print("{\"restored\":\(JSONWriter.quoted(dataDir)),\"revision\":\(engine.revision)}")
    }
}
