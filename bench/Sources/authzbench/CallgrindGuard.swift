import ArgumentParser
import AuthzModel
import Foundation

/// Counts the instructions a server executes per batch-1 check, with valgrind's callgrind, and
/// fails when authzd's count exceeds a checked-in threshold. Counts, never times: the figure
/// does not depend on the machine's speed or load, so CI can assert it.
///
/// The server runs under `valgrind --tool=callgrind` on a Unix socket, one event-loop thread.
/// After a warm-up on its own connection, the guard zeroes the counters (vgdb monitor command
/// `zero`), runs a fixed number of batch-1 checks over one connection with 16 in flight (the
/// check-path issue's measurement point), and has callgrind dump (`dump`). The dump's total
/// (`Ir`, every thread of the server) divided by the checks is the figure. The window also holds
/// the measured connection's accept, Hello and close: about 175,000 instructions, 9 a check at
/// 20,000 checks. The server handles 16 requests per read, run after run: the count repeats to
/// 0.1%.
enum CallgrindGuard {
    struct Measurement {
        var server: String
        var checks: Int
        var instructions: UInt64
        var seconds: Double

        var perCheck: Double { Double(instructions) / Double(checks) }
    }

    /// Measures authzd (release build, next to authzbench): imports the `small` dataset into a
    /// plain authzd (fast), restarts it under callgrind holding the data, then measures.
    /// Verifies every answer; throws on a wrong answer, an error, a missing tool or a timeout.
    /// Stops every process it started, also when it throws.
    static func measureAuthzd(checks: Int, warmup: Int, seed: UInt64, keepDump: String?, noPtrace: Bool = false, inFlight: Int = 16) throws -> Measurement {
        let tenants = Dataset.generate(size: DatasetSize.named("small")!, seed: seed)
        let queries = Queries.make(tenants, count: 65_536, skewed: false, allowShare: 0.5, seed: seed)
        let encoded = Encoded(target: .authzd, tenants: tenants, queries: queries)
        let h = Harness()
        defer { h.stop() }
        do {
            try h.importDataset(tenants, seed: seed)
            h.authzd!.stop()
            var vg = try Valgrind(dir: h.dir)
            vg.noPtrace = noPtrace
            h.authzdExecutable = try vg.withoutDebugInfo(h.authzdExecutable)
            h.authzdLauncher = vg.launcher
            h.authzdStartTimeout = 300
            try h.startAuthzd()
            return try measure(server: "authzd", pid: h.authzd!.pid, socket: h.authzdSocket, valgrind: vg, checks: checks, warmup: warmup, keepDump: keepDump) { n in
                var o = LoadOptions(target: .authzd, endpoint: h.authzdSocket, connections: 1, inFlight: inFlight, batch: 1, duration: 0, maxRequests: n)
                o.apiKey = h.checkerKey
                return try LoadRunner.run(o, encoded: encoded, group: h.group)
            }
        } catch {
            throw HarnessError("\(error)\n" + logTail(h.dir + "/authzd.log"))
        }
    }

    /// Measures redis-server the same way, `GETBIT` for a check (the dataset loaded under
    /// callgrind: Redis keeps it in memory only). For the README's comparison; never asserted.
    static func measureRedis(checks: Int, warmup: Int, seed: UInt64, keepDump: String?, noPtrace: Bool = false, inFlight: Int = 16) throws -> Measurement {
        let tenants = Dataset.generate(size: DatasetSize.named("small")!, seed: seed)
        let queries = Queries.make(tenants, count: 65_536, skewed: false, allowShare: 0.5, seed: seed)
        let encoded = Encoded(target: .redis, tenants: tenants, queries: queries)
        let h = Harness()
        defer { h.stop() }
        do {
            var vg = try Valgrind(dir: h.dir)
            vg.noPtrace = noPtrace
            h.redisLauncher = vg.launcher
            h.redisStartTimeout = 300
            try h.loadRedis(tenants)
            return try measure(server: "redis", pid: h.redis!.pid, socket: h.redisSocket, valgrind: vg, checks: checks, warmup: warmup, keepDump: keepDump) { n in
                let o = LoadOptions(target: .redis, endpoint: h.redisSocket, connections: 1, inFlight: inFlight, batch: 1, duration: 0, maxRequests: n)
                return try LoadRunner.run(o, encoded: encoded, group: h.group)
            }
        } catch {
            throw HarnessError("\(error)\n" + logTail(h.dir + "/redis.log"))
        }
    }

    /// The last `lines` lines of a server's log (valgrind's messages go there too), headed by
    /// its path; a note when it cannot be read.
    static func logTail(_ path: String, lines: Int = 20) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "(no log at \(path))" }
        return "last lines of \(path):\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// Warm-up run, zero, measured run, dump, read. `run(n)` drives `n` batch-1 requests and
    /// returns their result; a wrong answer, an error or a short count throws.
    private static func measure(server: String, pid: Int32, socket: String, valgrind vg: Valgrind, checks: Int, warmup: Int, keepDump: String?,
                                run: (Int) throws -> LoadResult) throws -> Measurement {
        let wake = { _ = try? waitForSocket(socket, timeout: 1) }
        func verified(_ n: Int, _ phase: String) throws {
            let r = try run(n)
            guard r.wrong == 0, r.errors == 0, r.checks == UInt64(n) else {
                throw HarnessError("callgrind-guard: \(server) \(phase): \(r.checks) of \(n) checks answered, \(r.wrong) wrong, \(r.errors) errors")
            }
        }
        if warmup > 0 { try verified(warmup, "warm-up") }
        try vg.monitor("zero", pid: pid, wake: wake)
        let t0 = Date()
        try verified(checks, "measured run")
        let seconds = Date().timeIntervalSince(t0)
        try vg.monitor("dump measured", pid: pid, wake: wake)
        let dump = try vg.latestDump()
        let ir = try Valgrind.totalInstructions(dumpFile: dump)
        if let keepDump {
            try? FileManager.default.removeItem(atPath: keepDump)
            try FileManager.default.copyItem(atPath: dump, toPath: keepDump)
        }
        return Measurement(server: server, checks: checks, instructions: ir, seconds: seconds)
    }

    /// The threshold: the first line of `path` that is not empty or a `#` comment, an integer
    /// (instructions per check; `_` and `,` allowed as digit separators). Throws, naming the
    /// file and the line, when there is none or it is not a positive integer.
    static func readThreshold(_ path: String) throws -> Int {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw HarnessError("callgrind-guard: cannot read the threshold file \(path)")
        }
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let v = Int(line.filter { $0 != "_" && $0 != "," }), v > 0 else {
                throw HarnessError("callgrind-guard: \(path):\(i + 1): \"\(line)\" is not a positive integer (instructions per check)")
            }
            return v
        }
        throw HarnessError("callgrind-guard: \(path) holds no threshold (a line with an integer)")
    }
}

/// valgrind's callgrind driven from outside: the launcher words for a server, the vgdb monitor
/// commands (`zero`, `dump`; `callgrind_control` is a Perl wrapper of the same commands), and
/// the dump files. Files and vgdb's FIFOs live under `dir`.
struct Valgrind {
    let valgrind: String
    let vgdb: String
    let outFile: String
    let vgdbPrefix: String

    /// Throws, naming the package, when valgrind or vgdb is not on `PATH`.
    init(dir: String) throws {
        guard let v = findExecutable("valgrind"), let g = findExecutable("vgdb") else {
            throw HarnessError("callgrind-guard: valgrind (with vgdb) is not on PATH; scripts/install-deps.sh installs the Debian package valgrind")
        }
        valgrind = v
        vgdb = g
        outFile = dir + "/callgrind.out"
        vgdbPrefix = dir + "/vgdb"
    }

    /// A copy of `binary` under `dir` without its DWARF sections (`objcopy --strip-debug`; the
    /// symbol table stays, so callgrind still names functions). valgrind 3.19 gives up on the
    /// DWARF 5 forms in a Swift release build ("unhandled dwarf2 abbrev form code 0x25"); the
    /// code, and so the instruction count, is the same. Throws when objcopy fails or is missing.
    func withoutDebugInfo(_ binary: String) throws -> String {
        guard let objcopy = findExecutable("objcopy") else {
            throw HarnessError("callgrind-guard: objcopy (Debian binutils) is not on PATH; it strips the debug info valgrind cannot read")
        }
        let copy = URL(fileURLWithPath: outFile).deletingLastPathComponent().path + "/" + URL(fileURLWithPath: binary).lastPathComponent + "-nodebug"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: objcopy)
        p.arguments = ["--strip-debug", binary, copy]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw HarnessError("callgrind-guard: objcopy --strip-debug \(binary) failed (status \(p.terminationStatus))") }
        return copy
    }

    /// valgrind and its options; the server's path and arguments follow. Instrumentation and
    /// collection on from the start: the counters are zeroed before the measured window.
    var launcher: [String] {
        [valgrind, "--tool=callgrind", "--callgrind-out-file=\(outFile)", "--vgdb=yes", "--vgdb-prefix=\(vgdbPrefix)"]
    }

    /// Never let vgdb wake a server blocked in a system call through ptrace (`--max-invoke-ms=0`),
    /// as where ptrace is not permitted: then only `monitor`'s `wake` does.
    var noPtrace = false

    /// Sends one monitor command to the callgrind process `pid` and waits for its answer, at
    /// most `timeout` seconds (then vgdb is killed and this throws). valgrind reads the command
    /// only while the server runs: vgdb wakes a server blocked in a system call through ptrace
    /// (root, or `kernel.yama.ptrace_scope` 0); where that fails, `wake` (one connection opened
    /// and closed) is called every second until the answer comes, and its cost lands in the count.
    func monitor(_ command: String, pid: Int32, timeout: Double = 120, wake: () -> Void) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: vgdb)
        p.arguments = ["--vgdb-prefix=\(vgdbPrefix)", "--pid=\(pid)"] + (noPtrace ? ["--max-invoke-ms=0"] : [])
            + command.split(separator: " ").map(String.init)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        var nextWake = Date().addingTimeInterval(1)
        while p.isRunning && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
            if Date() > nextWake {
                wake()
                nextWake = Date().addingTimeInterval(1)
            }
        }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            throw HarnessError("callgrind-guard: vgdb \(command) got no answer from pid \(pid) in \(Int(timeout)) s")
        }
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw HarnessError("callgrind-guard: vgdb \(command) failed (status \(p.terminationStatus)): \(text)")
        }
    }

    /// The path of the newest dump: callgrind numbers them `callgrind.out.1`, `.2`, … Throws
    /// when there is none.
    func latestDump() throws -> String {
        let dir = URL(fileURLWithPath: outFile).deletingLastPathComponent().path
        let base = URL(fileURLWithPath: outFile).lastPathComponent + "."
        let numbered = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).compactMap { name -> (Int, String)? in
            guard name.hasPrefix(base), let n = Int(name.dropFirst(base.count)) else { return nil }
            return (n, dir + "/" + name)
        }
        guard let newest = numbered.max(by: { $0.0 < $1.0 }) else { throw HarnessError("callgrind-guard: callgrind wrote no dump under \(dir)") }
        return newest.1
    }

    /// The instructions (`Ir`, the first event) of a callgrind dump: its `summary:` line (what
    /// callgrind_annotate prints as PROGRAM TOTALS), else its `totals:` line. After a `zero`,
    /// `totals:` (the sum of the dumped cost lines) comes out about 180,000 above `summary:`,
    /// the same at 16 checks as at 20,000. Throws, naming the file, when it has neither.
    static func totalInstructions(dumpFile: String) throws -> UInt64 {
        let text = try String(contentsOfFile: dumpFile, encoding: .utf8)
        var totals: UInt64?
        for line in text.split(separator: "\n") {
            for key in ["summary:", "totals:"] where line.hasPrefix(key) {
                guard let v = line.dropFirst(key.count).split(separator: " ").first.flatMap({ UInt64($0) }) else { continue }
                if key == "summary:" { return v }
                totals = v
            }
        }
        guard let totals else { throw HarnessError("callgrind-guard: \(dumpFile) has no summary: or totals: line") }
        return totals
    }
}

/// The first executable file named `name` in a directory of `PATH`, or nil.
func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for dir in path.split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

struct CallgrindGuardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "callgrind-guard",
        abstract: "Fails when authzd executes more instructions per batch-1 check (callgrind, 1 connection × 16 in flight, small dataset) than the threshold file allows. Counts, never times. Meaningful in a release build only.")
    @Option(help: "File holding the allowed instructions per check.") var thresholdFile = "bench/callgrind-threshold"
    @Option(help: "Checks counted (after the warm-up).") var checks = 20_000
    @Option(help: "Checks run before counting, on their own connection.") var warmup = 2_000
    @Option var seed: UInt64 = 42
    @Option(help: "Copy authzd's callgrind dump here (for callgrind_annotate).") var keepDump: String?
    @Flag(help: "Measure redis-server's instructions per GETBIT the same way too (reported, never asserted).") var redis = false
    @Flag(help: "Print the figure without reading or enforcing the threshold.") var noThreshold = false
    @Flag(help: "Never let vgdb wake the daemon through ptrace (as where ptrace is not permitted); a connection wakes it instead.") var noPtrace = false
    @Option(help: "Requests in flight on the measured connection (the threshold is for 16; 1 shows the per-wake-up cost).") var inFlight = 16

    func validate() throws {
        if inFlight < 1 { throw ValidationError("--in-flight must be at least 1") }
        if checks < 1 { throw ValidationError("--checks must be at least 1") }
        if warmup < 0 { throw ValidationError("--warmup must not be negative") }
    }

    func run() throws {
        #if DEBUG
        print("callgrind-guard: a debug build's instruction count means nothing; run it from a release build")
        #else
        let threshold = noThreshold ? nil : try CallgrindGuard.readThreshold(thresholdFile)
        let started = Date()
        let m = try CallgrindGuard.measureAuthzd(checks: checks, warmup: warmup, seed: seed, keepDump: keepDump, noPtrace: noPtrace, inFlight: inFlight)
        var line: [String: Any] = ["guard": "callgrind", "server": m.server, "checks": m.checks, "instructions": m.instructions,
                                   "instructions_per_check": (m.perCheck * 10).rounded() / 10, "measured_seconds": (m.seconds * 10).rounded() / 10]
        if let threshold { line["threshold"] = threshold }
        if let keepDump { line["dump"] = keepDump }
        if redis {
            let r = try CallgrindGuard.measureRedis(checks: checks, warmup: warmup, seed: seed, keepDump: keepDump.map { $0 + ".redis" }, noPtrace: noPtrace, inFlight: inFlight)
            line["redis_instructions_per_getbit"] = (r.perCheck * 10).rounded() / 10
        }
        line["total_seconds"] = (Date().timeIntervalSince(started) * 10).rounded() / 10
        line["ok"] = threshold.map { m.perCheck <= Double($0) } ?? true
        let json = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
        if let threshold, m.perCheck > Double(threshold) {
            throw HarnessError("callgrind-guard: authzd executed \(Int(m.perCheck.rounded())) instructions per batch-1 check, above the threshold of \(threshold) in \(thresholdFile): the check path regressed (or, with a measured reason, raise the threshold)")
        }
        #endif
    }
}
