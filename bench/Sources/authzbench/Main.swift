import ArgumentParser
import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import NIOCore
import NIOPosix

@main
struct AuthzBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authzbench",
        abstract: "authzd side by side with Redis, on the same client.",
        subcommands: [Matrix.self, Smoke.self, AllocGuard.self, CallgrindGuardCommand.self, Soak.self, Micro.self, Generate.self, EchoServer.self, ReplicationBench.self]
    )
}

struct Row: Hashable {
    var transport: String  // unix | tcp
    var connections: Int
    var inFlight: Int
    var batch: Int
}

struct Measured {
    var row: Row
    var target: TargetKind
    var result: LoadResult
}

/// Starts authzd, Redis and the echo server on temporary sockets, loads the same dataset into
/// both, runs `rows` alternating the two servers, and cleans up every process it started.
final class Harness {
    let dir: String
    let binDir: String
    var authzd: ServerProcess?
    var redis: ServerProcess?
    var echo: ServerProcess?
    let authzdPort = freePort()
    let redisPort = freePort()
    let echoPort = freePort()
    var facts: [String: Any] = [:]
    var authzdThreads = 1
    /// A checker key for the load connections (Hello on connect).
    var checkerKey: String?
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    init() {
        dir = "/tmp/authzbench-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        binDir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
    }

    var authzdSocket: String { dir + "/authzd.sock" }
    var redisSocket: String { dir + "/redis.sock" }
    var echoSocket: String { dir + "/echo.sock" }

    /// Several tenants' checks share connections, which one tenant's key cannot do: then the
    /// daemon runs with --insecure-no-auth (recorded in the facts).
    var insecure = false
    /// Metrics listener and a 1% decision log on (to measure their cost).
    var observability = false
    /// The authzd binary started: `$AUTHZD` when set (as bench/replication.sh and
    /// bench/gateways.sh take it), else the one beside authzbench, where
    /// `swift build -c release --product authzd` in bench/ puts it.
    lazy var authzdExecutable = ProcessInfo.processInfo.environment["AUTHZD"] ?? (binDir + "/authzd")
    /// A command that runs authzd (`valgrind --tool=callgrind …`): its first word is executed,
    /// authzd's path and arguments follow the rest. Empty: authzd itself.
    var authzdLauncher: [String] = []
    /// Seconds `startAuthzd` waits for the socket (a daemon under valgrind starts slowly).
    var authzdStartTimeout = 60.0
    /// `authzdLauncher` and `authzdStartTimeout` for redis-server.
    var redisLauncher: [String] = []
    var redisStartTimeout = 60.0

    func startAuthzd() throws {
        guard FileManager.default.isExecutableFile(atPath: authzdExecutable) else {
            throw HarnessError("no authzd at \(authzdExecutable): build it beside authzbench (in bench/: swift build -c release --product authzd) or name one in AUTHZD")
        }
        let started = Date()
        facts["authzd_auth"] = insecure ? "insecure-no-auth (multi-tenant load)" : "checker key via Hello"
        let executable = authzdLauncher.first ?? authzdExecutable
        let launcherArgs: [String] = authzdLauncher.isEmpty ? [] : Array(authzdLauncher.dropFirst()) + [authzdExecutable]
        authzd = try ServerProcess(name: "authzd", executable: executable,
                                   arguments: launcherArgs + ["serve", "--data-dir", dir + "/data", "--socket", authzdSocket, "--address", "127.0.0.1:\(authzdPort)", "--insecure-plaintext", "--log-level", "warning",
                                               "--threads", "\(authzdThreads)"] + (insecure ? ["--insecure-no-auth"] : [])
                                               + (observability ? ["--metrics-address", "127.0.0.1:\(freePort())", "--decision-log", dir + "/decisions.jsonl", "--decision-log-sample-rate", "0.01"] : []),
                                   logPath: dir + "/authzd.log")
        let process = authzd!.process
        try waitForSocket(authzdSocket, timeout: authzdStartTimeout, while: { process.isRunning })
        facts["authzd_listening_seconds"] = Date().timeIntervalSince(started)
    }

    func load(_ tenants: [TenantData], seed: UInt64, withRedis: Bool) throws {
        try importDataset(tenants, seed: seed)
        // Restart: time from process start to the first answered check, holding the dataset.
        authzd!.stop()
        let t1 = Date()
        try startAuthzd()
        let probe = AuthzClient(endpoint: .unix(authzdSocket), group: group)
        let t = tenants[0]
        _ = try probe.send(.check(CheckCall(tenantId: t.id, userId: t.users[0], permission: t.permissionNames[0], scope: .self))).wait()
        facts["authzd_first_check_seconds"] = Date().timeIntervalSince(t1)
        probe.close()
        facts["authzd_rss_kib"] = authzd!.residentKiB()
        facts["authzd_rss_anon_kib"] = authzd!.anonymousKiB()
        if withRedis { try loadRedis(tenants) }
        echo = try ServerProcess(name: "echo", executable: binDir + "/authzbench",
                                 arguments: ["echo-server", "--socket", echoSocket, "--port", "\(echoPort)", "--threads", "2"],
                                 logPath: dir + "/echo.log")
        try waitForSocket(echoSocket)
    }

    /// Starts authzd and imports `tenants` through its Import call; with one tenant, also
    /// creates the checker key the load connections present (`checkerKey`). Leaves authzd
    /// running. Throws when an import or the key fails.
    func importDataset(_ tenants: [TenantData], seed: UInt64) throws {
        insecure = tenants.count > 1
        try startAuthzd()
        let client = try AuthzClient(configuration: .init(endpoint: .unix(authzdSocket), defaultTimeout: .seconds(600), maxFrameSize: 64 << 20), group: group)
        if tenants.count == 1 {
            // One tenant: load connections authenticate with a checker key, as a sidecar would.
            guard case .importResult = try client.send(.importJSONL(Dataset.jsonlChunks([tenants[0]], seed: seed, chunk: 1)[0])).wait(),
                  case .createKey(_, let secret) = try client.send(.createKey(tenantId: tenants[0].id, role: .checker, name: "bench", expiresAt: 0)).wait() else {
                throw HarnessError("cannot create the bench's checker key")
            }
            checkerKey = secret
        }
        // The dataset as `authzctl import FILE` sends a file: one atomic import, in 4 MiB chunks
        // under one session (AuthzClient.importChunked), applied with the last; a new file
        // (import) wherever the next part would take one past 200 MB (max-import-bytes is 256).
        var files: [[UInt8]] = [[]]
        for part in Dataset.jsonlChunks(tenants, seed: seed, chunk: 1 << 30) {
            if !files[files.count - 1].isEmpty && files[files.count - 1].count + part.count > 200 << 20 { files.append([]) }
            files[files.count - 1] += part
        }
        let t0 = Date()
        var records: UInt64 = 0
        for file in files {
            let parts = AuthzClient.chunks(of: file, chunkBytes: 4 << 20)
            let session = ID.random()
            for (i, part) in parts.enumerated() {
                let more = i < parts.count - 1
                let call = Call.importChunk(session: session, jsonl: Array(file[part.range]), firstLine: UInt64(part.firstLine), more: more)
                guard case .importResult(_, let n) = try client.send(call).wait() else { throw HarnessError("import failed") }
                if !more { records += n }
            }
        }
        let secs = Date().timeIntervalSince(t0)
        facts["import_records"] = records
        facts["import_seconds"] = secs
        facts["import_records_per_second"] = Double(records) / secs
        client.close()
    }

    /// Starts redis-server (persistence off; `redisLauncher` first when set) and loads
    /// `tenants` as one bitmap per user and scope. Throws when nothing listens within
    /// `redisStartTimeout` seconds.
    func loadRedis(_ tenants: [TenantData]) throws {
        let executable = redisLauncher.first ?? "/usr/bin/redis-server"
        let launcherArgs: [String] = redisLauncher.isEmpty ? [] : Array(redisLauncher.dropFirst()) + ["/usr/bin/redis-server"]
        redis = try ServerProcess(name: "redis", executable: executable,
                                  arguments: launcherArgs + ["--port", "\(redisPort)", "--bind", "127.0.0.1", "--unixsocket", redisSocket, "--unixsocketperm", "700",
                                                             "--save", "", "--appendonly", "no", "--protected-mode", "no"],
                                  logPath: dir + "/redis.log")
        let process = redis!.process
        try waitForSocket(redisSocket, timeout: redisStartTimeout, while: { process.isRunning })
        let baseline = redis!.residentKiB()
        let cmds = Dataset.redisCommands(tenants)
        var n = 0
        for i in 0..<(cmds.count - 2) where cmds[i] == 0x2A && cmds[i + 1] == 0x33 && cmds[i + 2] == 0x0D && (i == 0 || cmds[i - 1] == 0x0A) { n += 1 }
        try redisPipe(path: redisSocket, commands: cmds, expectReplies: n)
        facts["redis_keys"] = n
        facts["redis_rss_kib"] = redis!.residentKiB()
        facts["redis_rss_anon_kib"] = redis!.anonymousKiB()
        facts["redis_rss_empty_kib"] = baseline
    }

    func endpoint(_ target: TargetKind, _ transport: String) -> String {
        switch (target, transport) {
        case (.authzd, "unix"): return authzdSocket
        case (.authzd, _): return "127.0.0.1:\(authzdPort)"
        case (.redis, "unix"): return redisSocket
        case (.redis, _): return "127.0.0.1:\(redisPort)"
        case (.echo, "unix"): return echoSocket
        default: return "127.0.0.1:\(echoPort)"
        }
    }

    func stop() {
        authzd?.stop()
        redis?.stop()
        echo?.stop()
        try? group.syncShutdownGracefully()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

func machineInfo() -> [String: Any] {
    var u = utsname()
    uname(&u)
    func s<T>(_ v: T) -> String { withUnsafeBytes(of: v) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } }
    let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.split(separator: "\n").first { $0.hasPrefix("model name") }.map { String($0.split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) } ?? "?"
    return ["kernel": "\(s(u.sysname)) \(s(u.release))", "machine": s(u.machine), "cpu": cpu, "cores": ProcessInfo.processInfo.activeProcessorCount,
            "memory_bytes": ProcessInfo.processInfo.physicalMemory, "date": ISO8601DateFormatter().string(from: Date())]
}

/// Runs `rows` against authzd (and Redis and the echo server). With a `duration`, each row's
/// time per server is cut into `rounds` slices that alternate between the servers (authzd,
/// Redis, …, then Redis, authzd, …), and a server's slices are added up: a slow spell of the
/// shared machine then falls on both servers, not on whichever ran during it.
func runMatrix(size: DatasetSize, seed: UInt64, rows: [Row], duration: Double?, requests: Int?, withRedis: Bool, withEcho: Bool,
               skewed: Bool, allowShare: Double, jsonOut: String?, authzdThreads: Int = 1, observability: Bool = false, rounds: Int = 1) throws -> Bool {
    let tenants = Dataset.generate(size: size, seed: seed)
    let queries = Queries.make(tenants, count: 200_000, skewed: skewed, allowShare: allowShare, seed: seed)
    let h = Harness()
    h.authzdThreads = authzdThreads
    h.observability = observability
    h.facts["authzd_observability"] = observability ? "metrics + 1% decision log" : "off"
    h.facts["authzd_threads"] = authzdThreads
    defer { h.stop() }
    FileHandle.standardError.write(Data("dataset \(size.name): \(tenants.count) tenant(s), \(tenants.reduce(0) { $0 + $1.users.count }) users; loading...\n".utf8))
    try h.load(tenants, seed: seed, withRedis: withRedis)
    let encoded: [TargetKind: Encoded] = [.authzd: Encoded(target: .authzd, tenants: tenants, queries: queries),
                                          .redis: Encoded(target: .redis, tenants: tenants, queries: queries),
                                          .echo: Encoded(target: .echo, tenants: tenants, queries: queries)]
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    defer { try? group.syncShutdownGracefully() }
    var measured: [Measured] = []
    var allCorrect = true
    let slices = duration == nil ? 1 : max(1, rounds)
    for (i, row) in rows.enumerated() {
        var sums: [TargetKind: LoadResult] = [:]
        var order: [TargetKind] = []
        for round in 0..<slices {
            var targets: [TargetKind] = withRedis ? ((i + round) % 2 == 0 ? [.authzd, .redis] : [.redis, .authzd]) : [.authzd]
            if withEcho && row.batch == 1 { targets.append(.echo) }
            for target in targets {
                var o = LoadOptions(target: target, endpoint: h.endpoint(target, row.transport), connections: row.connections, inFlight: row.inFlight,
                                    batch: row.batch, duration: (duration ?? 0) / Double(slices), maxRequests: requests)
                o.apiKey = h.checkerKey
                let r = try LoadRunner.run(o, encoded: encoded[target]!, group: group)
                if var sum = sums[target] {
                    sum.checks += r.checks
                    sum.requests += r.requests
                    sum.wrong += r.wrong
                    sum.errors += r.errors
                    sum.seconds += r.seconds
                    sum.histogram.add(r.histogram)
                    sums[target] = sum
                } else {
                    sums[target] = r
                    order.append(target)
                }
            }
        }
        for target in order {
            let r = sums[target]!
            if r.wrong > 0 || r.errors > 0 || r.checks == 0 { allCorrect = false }
            measured.append(Measured(row: row, target: target, result: r))
            FileHandle.standardError.write(Data(String(format: "%@ %@ c=%d f=%d b=%d: %.0f checks/s p50 %.1f µs p99 %.1f µs wrong %llu errors %llu\n",
                                                       target.rawValue, row.transport, row.connections, row.inFlight, row.batch, r.checksPerSecond,
                                                       r.percentile(50), r.percentile(99), r.wrong, r.errors).utf8))
        }
    }
    printTable(measured, facts: h.facts)
    if let jsonOut {
        var rowsJSON: [[String: Any]] = []
        for m in measured {
            let r = m.result
            rowsJSON.append(["server": m.target.rawValue, "transport": m.row.transport, "connections": m.row.connections, "in_flight": m.row.inFlight,
                             "batch": m.row.batch, "checks": r.checks, "requests": r.requests, "seconds": r.seconds, "checks_per_second": r.checksPerSecond,
                             "p50_us": r.percentile(50), "p90_us": r.percentile(90), "p99_us": r.percentile(99), "p999_us": r.percentile(99.9),
                             "max_us": Double(r.histogram.max) / 1000, "wrong": r.wrong, "errors": r.errors])
        }
        let doc: [String: Any] = ["machine": machineInfo(), "dataset": ["size": size.name, "seed": seed, "tenants": size.tenants, "users_per_tenant": size.users],
                                  "facts": h.facts, "rows": rowsJSON]
        let data = try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: jsonOut))
    }
    return allCorrect
}

func printTable(_ ms: [Measured], facts: [String: Any]) {
    print("| transport | conns | in flight | batch | authzd checks/s | redis checks/s | ratio | authzd p50/p99 µs | redis p50/p99 µs | echo p50 µs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    var rows: [Row] = []
    for m in ms where !rows.contains(m.row) { rows.append(m.row) }
    for row in rows {
        let a = ms.first { $0.row == row && $0.target == .authzd }?.result
        let r = ms.first { $0.row == row && $0.target == .redis }?.result
        let e = ms.first { $0.row == row && $0.target == .echo }?.result
        func f(_ x: LoadResult?) -> String { x.map { String(format: "%.0f", $0.checksPerSecond) } ?? "-" }
        func l(_ x: LoadResult?) -> String { x.map { String(format: "%.1f / %.1f", $0.percentile(50), $0.percentile(99)) } ?? "-" }
        let ratio = (a != nil && r != nil) ? String(format: "%.2f", a!.checksPerSecond / r!.checksPerSecond) : "-"
        print("| \(row.transport) | \(row.connections) | \(row.inFlight) | \(row.batch) | \(f(a)) | \(f(r)) | \(ratio) | \(l(a)) | \(l(r)) | \(e.map { String(format: "%.1f", $0.percentile(50)) } ?? "-") |")
    }
    print("")
    for (k, v) in facts.sorted(by: { $0.key < $1.key }) { print("- \(k): \(v)") }
}

struct Matrix: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The full matrix: Unix and TCP; connections 1, 16, 64; in flight 1, 16; batch 1, 100.")
    @Option var size = "reference"
    @Option var seed: UInt64 = 1
    @Option(help: "Seconds measured per row and server.") var duration = 3.0
    @Option(help: "Slices each row's time per server is cut into, alternating between the servers (1: one run each).") var rounds = 3
    @Option var connections = "1,16,64"
    @Option var inFlight = "1,16"
    @Option var batch = "1,100"
    @Option var transports = "unix,tcp"
    @Flag var skewed = false
    @Option var allowShare = 0.5
    @Option var json = "bench/results/latest.json"
    @Option(help: "authzd event-loop threads (Redis serves on one thread; the load generator uses one).") var authzdThreads = 1
    @Flag(help: "Run authzd with metrics and a 1% decision log.") var observability = false
    @Flag(help: "Skip Redis.") var noRedis = false

    func run() throws {
        guard let s = DatasetSize.named(size) else { throw ValidationError("size must be small, reference or ten") }
        var rows: [Row] = []
        for t in transports.split(separator: ",") {
            for c in connections.split(separator: ",") {
                for f in inFlight.split(separator: ",") {
                    for b in batch.split(separator: ",") { rows.append(Row(transport: String(t), connections: Int(c)!, inFlight: Int(f)!, batch: Int(b)!)) }
                }
            }
        }
        try? FileManager.default.createDirectory(atPath: URL(fileURLWithPath: json).deletingLastPathComponent().path, withIntermediateDirectories: true)
        let ok = try runMatrix(size: s, seed: seed, rows: rows, duration: duration, requests: nil, withRedis: !noRedis, withEcho: !noRedis,
                               skewed: skewed, allowShare: allowShare, jsonOut: json, authzdThreads: authzdThreads, observability: observability,
                               rounds: rounds)
        if !ok { throw HarnessError("some answers were wrong or failed") }
    }
}

struct AllocGuard: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "alloc-guard", abstract: "Fails when an in-process check allocates (by name, or on the daemon's in-place frame path). Counts, never times. Meaningful in a release build only.")

    func run() throws {
        #if DEBUG
        print("alloc-guard: a debug build allocates by design (unspecialised generics, closure contexts); run it from a release build")
        #else
        try AllocationGuard.run()
        #endif
    }
}

struct Smoke: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Seconds-long run on the small dataset: proves the harness works and every answer is correct. Asserts no speed.")
    @Flag(name: .long, help: "Skip Redis (when redis-server is not installed).") var noRedis = false

    func run() throws {
        let withRedis = !noRedis && FileManager.default.fileExists(atPath: "/usr/bin/redis-server")
        let rows = [Row(transport: "unix", connections: 1, inFlight: 1, batch: 1), Row(transport: "unix", connections: 4, inFlight: 8, batch: 10),
                    Row(transport: "tcp", connections: 2, inFlight: 4, batch: 1), Row(transport: "tcp", connections: 1, inFlight: 2, batch: 100)]
        let ok = try runMatrix(size: DatasetSize.named("small")!, seed: 42, rows: rows, duration: nil, requests: 300, withRedis: withRedis, withEcho: true,
                               skewed: true, allowShare: 0.5, jsonOut: nil)
        guard ok else { throw HarnessError("smoke: wrong answers or errors (see above)") }
        print("smoke: every answer correct")
    }
}

struct EchoServer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "echo-server", abstract: "Minimal length-prefixed echo server (the floor).")
    @Option var socket: String
    @Option var port: Int
    @Option var threads = 2

    func run() throws { try runEchoServer(socketPath: socket, port: port, threads: threads) }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a dataset as JSON Lines (authzd) and RESP commands (Redis).")
    @Option var size = "small"
    @Option var seed: UInt64 = 1
    @Option var out: String

    func run() throws {
        guard let s = DatasetSize.named(size) else { throw ValidationError("size must be small, reference or ten") }
        let tenants = Dataset.generate(size: s, seed: seed)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let jsonl = Dataset.jsonlChunks(tenants, seed: seed).reduce([], +)
        try Data(jsonl).write(to: URL(fileURLWithPath: out + "/authzd.jsonl"))
        try Data(Dataset.redisCommands(tenants)).write(to: URL(fileURLWithPath: out + "/redis.resp"))
        print("wrote \(out)/authzd.jsonl and \(out)/redis.resp")
    }
}
