import ArgumentParser
import AuthzClient
import AuthzModel
import AuthzWire
import Foundation

/// `authzctl`: the command-line client of authzd.
@main
struct Authzctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authzctl",
        abstract: "Command-line client of authzd.",
        discussion: """
        Exit status: 0 success (check: allow), 1 check or explain denied, 2 error (check --file: \
        a line that is an error), 64 a usage error the argument parser found (an unknown flag, a \
        missing argument).
        Environment: AUTHZD_SOCKET, AUTHZD_ADDRESS, AUTHZD_KEY_FILE and AUTHZ_API_KEY stand in for \
        --socket, --address, --key-file and --key; a config file (AUTHZCTL_CONFIG, default \
        ~/.config/authzctl/config: `socket = PATH` lines) for the connection flags. Shell completions: \
        authzctl --generate-completion-script bash > /etc/bash_completion.d/authzctl (or zsh, fish).
        """,
        version: "0.1.0",
        subcommands: [Check.self, Explain.self, Permissions.self, Users.self, Import.self, Export.self,
                      Get.self, List.self, Put.self, Delete.self, Activate.self, Info.self, Health.self, Audit.self, Watch.self]
    )
}

/// `--output json|table`: JSON Lines by default when stdout is not a terminal, a table when it is.
struct Output: ParsableArguments {
    enum Format: String, ExpressibleByArgument { case json, table }
    @Option(name: .long, help: "json (JSON Lines) or table (default: table on a terminal, json when piped).")
    var output: Format?

    var isTable: Bool { (output ?? (isatty(1) != 0 ? .table : .json)) == .table }
}

/// Prints rows as columns padded to their widest cell, under an upper-case header.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 || i >= widths.count ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
    print(line(header))
    for r in rows { print(line(r)) }
}

struct Connection: ParsableArguments {
    @Option(name: .long, help: "Unix socket of the daemon (default $AUTHZD_SOCKET, else ./authzd.sock).")
    var socket: String?
    @Option(name: .long, help: "TCP HOST:PORT of the daemon (default $AUTHZD_ADDRESS when no --socket is given).")
    var address: String?
    @Option(name: .long, help: "Deadline of each call in milliseconds (default 30000).")
    var timeoutMs: Int?
    @Option(name: .long, help: "API key. Visible to other local users in `ps`: prefer --key-file or $AUTHZ_API_KEY. Not needed on the Unix socket as the daemon's uid.")
    var key: String?
    @Option(name: .long, help: "File holding the API key (one line; default $AUTHZD_KEY_FILE). Default when neither --key nor --key-file is given: $AUTHZ_API_KEY.")
    var keyFile: String?
    @Option(name: .long, help: "TLS: PEM CA bundle to verify the daemon's certificate (default $AUTHZD_TLS_CA; with --address, TLS is on when any --tls-* is given).")
    var tlsCa: String?
    @Option(name: .long, help: "TLS client certificate (PEM) for mTLS (default $AUTHZD_TLS_CERT).")
    var tlsCert: String?
    @Option(name: .long, help: "Key of --tls-cert (PEM; default $AUTHZD_TLS_KEY).")
    var tlsKey: String?

    /// A client configured from the flags, then the environment, then the config file, then
    /// the defaults. A usage error (exit 2) for a bad address, key file or TLS file.
    func client() throws -> AuthzClient {
        let env = ProcessInfo.processInfo.environment
        let file = try CtlConfig.load(environment: env)
        let endpoint: Endpoint
        // Flags, then the environment, then the config file, then the defaults.
        var address = self.address ?? (self.socket == nil ? env["AUTHZD_ADDRESS"] : nil)
        if address == nil && self.socket == nil && env["AUTHZD_SOCKET"] == nil && file["socket"] == nil { address = file["address"] }
        let socket = self.socket ?? env["AUTHZD_SOCKET"] ?? file["socket"]
        // The config file's key-file comes after both environment variables ($AUTHZ_API_KEY too).
        let keyFile = self.keyFile ?? (key == nil ? env["AUTHZD_KEY_FILE"] ?? (env["AUTHZ_API_KEY"] == nil ? file["key-file"] : nil) : nil)
        if let address {
            guard let e = Endpoint(address), case .tcp = e else { throw usageError("--address must be HOST:PORT (an IPv6 host in brackets: [::1]:7000)") }
            endpoint = e
        } else {
            endpoint = .unix(socket ?? "./authzd.sock")
        }
        let apiKey: String?
        do {
            apiKey = try KeySource.resolve(flag: key, file: keyFile, environment: ProcessInfo.processInfo.environment)
        } catch let e as AuthzError {
            throw usageError(e.message)
        }
        let ca = tlsCa ?? env["AUTHZD_TLS_CA"] ?? file["tls-ca"], cert = tlsCert ?? env["AUTHZD_TLS_CERT"] ?? file["tls-cert"]
        let tkey = tlsKey ?? env["AUTHZD_TLS_KEY"] ?? file["tls-key"]
        var tls: ClientTLS?
        if case .tcp = endpoint, ca != nil || cert != nil || tkey != nil { tls = ClientTLS(caPath: ca, certPath: cert, keyPath: tkey) }
        // A deadline is a positive number of milliseconds, from the flag or the config file.
        var timeout = 30_000
        if let t = timeoutMs {
            guard t > 0 else { throw usageError("--timeout-ms must be a positive number of milliseconds (got \(t))") }
            timeout = t
        } else if let text = file["timeout-ms"] {
            guard let t = Int(text), t > 0 else { throw usageError("timeout-ms in the config file must be a positive number of milliseconds (got \"\(text)\")") }
            timeout = t
        }
        if case .tcp = endpoint, tls == nil, apiKey != nil {
            FileHandle.standardError.write(Data("warning: the API key goes to \(endpoint) in plain text (no --tls-ca/--tls-cert given); use TLS outside a trusted network\n".utf8))
        }
        let configuration = AuthzClient.Configuration(
            endpoint: endpoint, apiKey: apiKey, tls: tls, defaultTimeout: .milliseconds(Int64(timeout)))
        do { return try AuthzClient(configuration: configuration) } catch let e as AuthzError {
            throw usageError(e.message)
        }
    }
}

/// authzctl's config file: `key = value` lines (`#` comments) for the connection flags —
/// `socket`, `address`, `key-file`, `timeout-ms`, `tls-ca`, `tls-cert`, `tls-key` — read from
/// `$AUTHZCTL_CONFIG`, else `$XDG_CONFIG_HOME/authzctl/config` (`~/.config/authzctl/config`)
/// when it exists. Flags and environment variables win over it. Never an API key itself: a
/// key in a config file would sit in clear beside everything else (`key-file` points at one).
enum CtlConfig {
    static let keys: Set<String> = ["socket", "address", "key-file", "timeout-ms", "tls-ca", "tls-cert", "tls-key"]

    /// The settings of the config file, or none when there is no file. A bad line is a usage
    /// error naming the file, the line and what is allowed.
    static func load(environment env: [String: String]) throws -> [String: String] {
        let explicit = env["AUTHZCTL_CONFIG"]
        let home = env["HOME"] ?? NSHomeDirectory()
        let path = explicit ?? ((env["XDG_CONFIG_HOME"].map { $0.isEmpty ? nil : $0 } ?? nil) ?? home + "/.config") + "/authzctl/config"
        guard let data = FileManager.default.contents(atPath: path) else {
            if explicit != nil { throw usageError("cannot read the config file \(path) named by AUTHZCTL_CONFIG") }
            return [:]
        }
        var out: [String: String] = [:]
        for (i, raw) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            let kv = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, !kv[1].isEmpty else { throw usageError("\(path):\(i + 1): expected `key = value` (got \"\(line)\")") }
            if kv[0] == "key" { throw usageError("\(path):\(i + 1): an API key does not go in the config file: put it in a file of its own (mode 0600) and name it with key-file") }
            guard keys.contains(kv[0]) else { throw usageError("\(path):\(i + 1): unknown setting \"\(kv[0])\" (known: \(keys.sorted().joined(separator: ", ")))") }
            out[kv[0]] = kv[1]
        }
        return out
    }
}

/// Runs `body` with a client; prints an `AuthzError` as `error: CODE: message`, and any other
/// failure (a file that cannot be read, …) as `error: description`, and exits 2.
func withClient<T>(_ conn: Connection, _ body: (AuthzClient) async throws -> T) async throws -> T {
    let client = try conn.client()
    defer { client.close() }
    do {
        return try await body(client)
    } catch let e as AuthzError {
        FileHandle.standardError.write(Data("error: \(e.code.name): \(e.message)\n".utf8))
        throw ExitCode(2)
    } catch let e as ExitCode {
        throw e
    } catch {
        FileHandle.standardError.write(Data("error: \((error as NSError).localizedDescription)\n".utf8))
        throw ExitCode(2)
    }
}

/// Writes `bytes` to standard output. False when the reader has gone (EPIPE: `| head`), so
/// that a command stops quietly instead of dying on the closed pipe.
func writeOut(_ bytes: [UInt8]) -> Bool {
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return false }
        off += n
    }
    return true
}

/// Prints `error: INVALID_ARGUMENT: message` and returns the exit status 2 to throw.
func usageError(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("error: INVALID_ARGUMENT: \(message)\n".utf8))
    return ExitCode(2)
}

func parseID(_ s: String, _ name: String) throws -> ID {
    guard let id = ID(s) else { throw usageError("\(name) must be a UUID in 8-4-4-4-12 form (got \"\(s)\")") }
    return id
}

func parseScope(_ s: String) throws -> Scope {
    guard let scope = Scope(name: s) else { throw usageError("SCOPE must be self, tenant or global (got \"\(s)\")") }
    return scope
}

func parseKind(_ s: String) throws -> EntityKind {
    guard let k = EntityKind(name: s) else {
        throw usageError("KIND must be one of tenant, user, role, permission, role_binding, permission_binding, platform_credential (got \"\(s)\")")
    }
    return k
}

func decisionLine(_ d: Decision) -> String {
    "{\"decision\":\(JSONWriter.quoted(d.allowed ? "allow" : "deny")),\"reason\":\(JSONWriter.quoted(d.reason.name)),\"revision\":\(d.revision)}"
}

func errorLine(_ e: AuthzError) -> String {
    var s = "{\"error\":{\"code\":\(JSONWriter.quoted(e.code.name)),\"message\":"
    JSONWriter.writeString(e.message, into: &s)
    return s + "}}"
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check one permission (exit 0 allow, 1 deny, 2 error), or a JSON Lines file of checks with --file (exit 0 when every line was decided, allowed or denied; 2 when any line is an error).")
    @OptionGroup var conn: Connection
    @Option(name: .long, help: "JSON Lines of {tenant_id, user_id, permission, scope}; answers one a line, same order.")
    var file: String?
    @Option(name: .long, help: "Evaluate at this revision or later.")
    var minRevision: UInt64 = 0
    @Argument(help: "TENANT_ID USER_ID PERMISSION SCOPE") var args: [String] = []

    func run() async throws {
        if let file {
            guard args.isEmpty else { throw usageError("give either --file or TENANT_ID USER_ID PERMISSION SCOPE, not both") }
            guard let data = FileManager.default.contents(atPath: file) else { throw usageError("cannot read \(file)") }
            var items: [Result<CheckCall, AuthzError>] = []
            var lineOf: [Int] = []  // the file line of each item, for the daemon's errors
            for (i, line) in data.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
                lineOf.append(i + 1)
                do {
                    let c = try CheckLine.decode(line: Array(line))
                    items.append(.success(CheckCall(tenantId: c.tenantId, userId: c.userId, permission: c.permission, scope: c.scope, minRevision: minRevision)))
                } catch var e as AuthzError {
                    e.message = "line \(i + 1): \(e.message)"
                    items.append(.failure(e))
                }
            }
            var failed = false
            try await withClient(conn) { client in
                var answers = [Result<Decision, AuthzError>?](repeating: nil, count: items.count)
                let valid = items.enumerated().compactMap { i, r -> (Int, CheckCall)? in
                    if case .success(let c) = r { return (i, c) }
                    answers[i] = r.map { _ in Decision(reason: .noGrant, revision: 0) }
                    return nil
                }
                for chunk in stride(from: 0, to: valid.count, by: 10_000) {
                    let part = Array(valid[chunk..<min(chunk + 10_000, valid.count)])
                    let results = try await client.batchCheck(part.map(\.1), minRevision: minRevision)
                    for (k, r) in results.enumerated() {
                        let i = part[k].0
                        // The daemon numbers the items of its batch; the file's line is what helps.
                        answers[i] = r.mapError { e in
                            var e = e
                            e.message = "line \(lineOf[i]): \(e.message)"
                            return e
                        }
                    }
                }
                for a in answers {
                    switch a! {
                    case .success(let d): print(decisionLine(d))
                    case .failure(let e):
                        failed = true
                        print(errorLine(e))
                    }
                }
            }
            if failed { throw ExitCode(2) }
            return
        }
        guard args.count == 4 else { throw usageError("usage: authzctl check TENANT_ID USER_ID PERMISSION SCOPE (or --file FILE.jsonl)") }
        let d = try await withClient(conn) {
            try await $0.check(tenant: try parseID(args[0], "TENANT_ID"), user: try parseID(args[1], "USER_ID"), permission: args[2],
                               scope: try parseScope(args[3]), minRevision: minRevision)
        }
        if isatty(1) != 0 {
            // A person at a terminal gets a sentence; scripts and pipes keep the JSON line.
            let reason = String(describing: d.reason).replacingOccurrences(of: "([a-z])([A-Z])", with: "$1 $2", options: .regularExpression).lowercased()
            print("\(d.allowed ? "ALLOW" : "DENY"): \(args[2]) at scope \(args[3]) (\(reason), revision \(d.revision))")
        } else {
            print(decisionLine(d))
        }
        if !d.allowed { throw ExitCode(1) }
    }
}

struct Explain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Explain a decision: the role binding, role chain and permission binding that grant it.")
    @OptionGroup var conn: Connection
    @OptionGroup var out: Output
    @Argument var tenant: String
    @Argument var user: String
    @Argument var permission: String
    @Argument var scope: String

    func run() async throws {
        let e = try await withClient(conn) {
            try await $0.explain(tenant: try parseID(tenant, "TENANT_ID"), user: try parseID(user, "USER_ID"), permission: permission, scope: try parseScope(scope))
        }
        if out.isTable {
            var rows = [["decision", e.decision.allowed ? "allow" : "deny"], ["reason", e.decision.reason.name], ["revision", "\(e.decision.revision)"]]
            if let rb = e.roleBindingId {
                rows += [["role binding", "\(rb) at \(e.roleBindingScope?.name ?? "")"], ["role chain", e.roleChainNames.joined(separator: " → ")],
                         ["permission binding", "\(e.permissionBindingId?.description ?? "") at \(e.permissionBindingScope?.name ?? "")"]]
            }
            printTable(["FIELD", "VALUE"], rows)
            if !e.decision.allowed { throw ExitCode(1) }
            return
        }
        var s = "{\"decision\":\(JSONWriter.quoted(e.decision.allowed ? "allow" : "deny")),\"reason\":\(JSONWriter.quoted(e.decision.reason.name)),\"revision\":\(e.decision.revision)"
        if let rb = e.roleBindingId {
            s += ",\"role_binding_id\":\(JSONWriter.quoted(rb.description)),\"role_binding_scope\":\(JSONWriter.quoted(e.roleBindingScope?.name ?? ""))"
            s += ",\"role_chain\":[" + e.roleChainNames.map(JSONWriter.quoted).joined(separator: ",") + "]"
            s += ",\"role_chain_ids\":[" + e.roleChain.map { JSONWriter.quoted($0.description) }.joined(separator: ",") + "]"
            s += ",\"permission_binding_id\":\(JSONWriter.quoted(e.permissionBindingId?.description ?? "")),\"permission_binding_scope\":\(JSONWriter.quoted(e.permissionBindingScope?.name ?? ""))"
        }
        print(s + "}")
        if !e.decision.allowed { throw ExitCode(1) }
    }
}

struct Permissions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a user's permissions with the highest scope of each.")
    @OptionGroup var conn: Connection
    @OptionGroup var out: Output
    @Argument var tenant: String
    @Argument var user: String

    func run() async throws {
        let (reason, list, revision) = try await withClient(conn) {
            try await $0.userPermissions(tenant: try parseID(tenant, "TENANT_ID"), user: try parseID(user, "USER_ID"))
        }
        if reason != .granted { FileHandle.standardError.write(Data("note: \(reason.name) (revision \(revision))\n".utf8)) }
        if out.isTable { return printTable(["PERMISSION", "SCOPE"], list.map { [$0.name, $0.scope.name] }) }
        for (name, scope) in list { print("{\"permission\":\(JSONWriter.quoted(name)),\"scope\":\(JSONWriter.quoted(scope.name))}") }
    }
}

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the users holding a permission at a scope (every page).")
    @OptionGroup var conn: Connection
    @OptionGroup var out: Output
    @Argument var tenant: String
    @Argument var permission: String
    @Argument var scope: String
    @Flag(name: .long, help: "No progress on stderr (shown only when stderr is a terminal and the list goes elsewhere).") var quiet = false

    func run() async throws {
        // Progress only when the list itself is not on the terminal (redirected to a file).
        let showProgress = !quiet && isatty(2) != 0 && isatty(1) == 0
        let started = Date()
        var count = 0, revision: UInt64 = 0
        try await withClient(conn) { client in
            var after: ID? = nil
            repeat {
                let (users, next, rev) = try await client.permissionUsers(tenant: try parseID(tenant, "TENANT_ID"), permission: permission,
                                                                          scope: try parseScope(scope), pageSize: 1000, after: after)
                if out.isTable && after == nil { print("USER_ID") }
                for u in users { print(out.isTable ? "\(u)" : "{\"user_id\":\(JSONWriter.quoted(u.description))}") }
                count += users.count
                revision = rev
                if showProgress {
                    FileHandle.standardError.write(Data(String(format: "\rlisted %d users, %.0f users/s   ", count, Double(count) / max(0.001, Date().timeIntervalSince(started))).utf8))
                }
                after = next
            } while after != nil
        }
        if showProgress { FileHandle.standardError.write(Data("\nlisted \(count) users at revision \(revision)\n".utf8)) }
    }
}

struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import a JSON Lines file of any size, atomically.",
        discussion: """
        The file is sent in chunks below the frame limit; the daemon checks each as it arrives and \
        applies the whole file as one write with the last chunk. A bad line anywhere (its number \
        counts from the start of the file), a dropped connection or a daemon restart applies \
        nothing. created_at and updated_at in the file are kept. With --chunk-commit every chunk \
        is its own atomic import instead (for files too large to stage in the daemon's memory); on \
        failure the last committed line is printed so that a rerun can resume after it with \
        --skip-lines.
        """)
    @OptionGroup var conn: Connection
    @Option(name: .long, help: "Bytes per chunk (default 4 MiB; the daemon's frame limit is 16 MiB).") var chunkBytes = 4 << 20
    @Flag(name: .long, help: "Commit each chunk on its own (not atomic as a whole).") var chunkCommit = false
    @Option(name: .long, help: "Skip this many lines first (to resume a --chunk-commit import).") var skipLines = 0
    @Flag(name: .long, help: "No progress on stderr (it is shown only on a terminal anyway).") var quiet = false
    @Argument var file: String

    func run() async throws {
        // Read chunk by chunk: constant memory in the CLI whatever the file's size.
        let reader: JSONLChunkReader
        do { reader = try JSONLChunkReader(path: file, chunkBytes: chunkBytes, skipLines: skipLines) } catch let e as AuthzError { throw usageError(e.message) }
        let skipped = reader.consumed
        let total = max(1, reader.totalBytes - skipped), started = Date()
        let showProgress = !quiet && isatty(2) != 0
        func progress(_ consumed: Int) {
            guard showProgress else { return }
            let sent = consumed - skipped
            let secs = max(0.001, Date().timeIntervalSince(started)), done = Double(sent) / Double(total)
            FileHandle.standardError.write(Data(String(format: "\rsent %.1f of %.1f MB (%.0f%%), %.1f MB/s, ETA %.0f s   ", Double(sent) / 1e6, Double(total) / 1e6,
                                                       done * 100, Double(sent) / 1e6 / secs, secs / max(done, 0.001) - secs).utf8))
        }
        defer { if showProgress { FileHandle.standardError.write(Data("\n".utf8)) } }
        let reply: (UInt64, UInt64) = try await withClient(conn) { client in
            if !chunkCommit { return try await client.importChunked(reader, progress: progress) }
            var records: UInt64 = 0, revision: UInt64 = 0
            while let part = try reader.next() {
                do {
                    let (rev, n) = try await client.importJSONL(part.bytes)
                    records += n
                    revision = rev
                    progress(reader.consumed)
                } catch var e as AuthzError {
                    let committed = part.firstLine - 1
                    // The daemon numbers lines within the chunk: count them from the file's start.
                    if e.message.hasPrefix("line "), let colon = e.message.firstIndex(of: ":"),
                       let n = Int(e.message[e.message.index(e.message.startIndex, offsetBy: 5)..<colon]) {
                        e.message = "line \(committed + n)" + e.message[colon...]
                    }
                    e.message += "; lines 1-\(committed) are committed: rerun with --skip-lines \(committed) after fixing the file"
                    throw e
                }
            }
            return (revision, records)
        }
        print("{\"records\":\(reply.1),\"revision\":\(reply.0)}")
    }
}

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Export records as JSON Lines (secrets redacted unless --include-secrets).")
    @OptionGroup var conn: Connection
    @Option(name: .long) var tenant: String?
    @Flag(name: .long) var includeSecrets = false

    @Option(name: .long, help: "Records per page (the export streams page by page from one snapshot).") var pageSize = 10_000
    @Flag(name: .long, help: "No progress on stderr (it is shown only on a terminal anyway).") var quiet = false

    func run() async throws {
        let showProgress = !quiet && isatty(2) != 0
        var records = 0
        let started = Date()
        let t = try tenant.map { try parseID($0, "--tenant") }
        let revision = try await withClient(conn) { client in
            try await client.exportPaged(tenant: t, includeSecrets: includeSecrets, pageSize: pageSize) { bytes in
                // The reader went away (`| head`): stop asking for pages, end quietly.
                guard writeOut(bytes) else { throw ExitCode.success }
                guard showProgress else { return }
                records += bytes.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
                FileHandle.standardError.write(Data(String(format: "\rexported %d records, %.0f records/s   ", records, Double(records) / max(0.001, Date().timeIntervalSince(started))).utf8))
            }
        }
        if showProgress { FileHandle.standardError.write(Data("\nexported \(records) records at revision \(revision)\n".utf8)) }
    }
}

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print committed changes as JSON Lines, then follow new ones (docs/watch.md).",
        discussion: """
        Each line: {"revision":R,"kind":K,"tenant_id":T,"id":I,"record":{…}} with the record as \
        export writes it (secrets always redacted). Resumes by itself from the last revision \
        received when the connection drops or the daemon restarts; exits 2 when the changes \
        asked for are no longer kept (OUT_OF_RANGE).
        """)
    @OptionGroup var conn: Connection
    @Option(name: .long, help: "Changes after this revision (default: from now on).")
    var from: UInt64?
    @Option(name: .long, help: "Only this tenant's changes (a tenant-bound key sees only its own anyway).")
    var tenant: String?
    @Option(name: .long, parsing: .upToNextOption, help: "Only these kinds (tenant, user, role, permission, role_binding, permission_binding, platform_credential).")
    var kind: [String] = []
    @Flag(name: .long, help: "Also print progress lines {\"progress\":{\"revision\":R,\"caught_up\":B}}.")
    var progress = false
    @Flag(name: .long, help: "Exit 0 once the stream has caught up with the daemon (print what was missed, then stop).")
    var untilCaughtUp = false

    func run() async throws {
        var call = WatchCall(fromRevision: from, tenantId: try tenant.map { try parseID($0, "--tenant") },
                             kinds: Set(try kind.map(parseKind)))
        let client = try conn.client()
        defer { client.close() }
        var delay: UInt64 = 100_000_000
        // A stream that never opened (no daemon, a wrong socket) is an error; one that did
        // and dropped is resumed (docs/watch.md).
        var opened = false
        while true {
            do {
                for try await batch in client.watch(call) {
                    opened = true
                    delay = 100_000_000
                    var text = ""
                    for c in batch.changes {
                        let e = c.entity
                        text += "{\"revision\":\(c.revision),\"kind\":\(JSONWriter.quoted(e.kind.name)),\"tenant_id\":\(JSONWriter.quoted(e.tenantId.description)),\"id\":\(JSONWriter.quoted(e.id.description)),\"record\":\(BulkFormat.encode(e))}\n"
                    }
                    if progress { text += "{\"progress\":{\"revision\":\(batch.revision),\"caught_up\":\(batch.caughtUp)}}\n" }
                    // The reader went away (`| head`): stop quietly.
                    if !text.isEmpty && !writeOut(Array(text.utf8)) { return }
                    call.fromRevision = batch.revision
                    if untilCaughtUp && batch.caughtUp { return }
                }
                throw AuthzError(.unavailable, "the watch ended")
            } catch let e as AuthzError where e.code == .unavailable && opened {
                FileHandle.standardError.write(Data("authzctl watch: \(e.message); resuming\(call.fromRevision.map { " after revision \($0)" } ?? "")\n".utf8))
                try await Task.sleep(nanoseconds: delay)
                delay = min(delay * 2, 5_000_000_000)
            } catch let e as AuthzError {
                FileHandle.standardError.write(Data("error: \(e.code.name): \(e.message)\n".utf8))
                throw ExitCode(2)
            }
        }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print one record as a JSON line: KIND TENANT_ID ID.")
    @OptionGroup var conn: Connection
    @Flag(name: .long) var includeSecrets = false
    @Argument var kind: String
    @Argument var tenant: String
    @Argument var id: String

    func run() async throws {
        let ref = RecordRef(kind: try parseKind(kind), tenantId: try parseID(tenant, "TENANT_ID"), id: try parseID(id, "ID"))
        let e = try await withClient(conn) { try await $0.get(ref, includeSecrets: includeSecrets) }
        print(BulkFormat.encode(e, includeSecrets: includeSecrets))
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List records of a kind in a tenant (every page), as JSON lines or a table.")
    @OptionGroup var conn: Connection
    @OptionGroup var out: Output
    @Argument var kind: String
    @Argument var tenant: String?

    func run() async throws {
        let k = try parseKind(kind)
        let t = try tenant.map { try parseID($0, "TENANT_ID") } ?? .zero
        if k != .tenant && t == .zero { throw usageError("TENANT_ID is required for \(k.name)") }
        let table = out.isTable
        var rows: [[String]] = []
        try await withClient(conn) { client in
            var after: ID? = nil
            repeat {
                let (items, next) = try await client.list(k, tenant: t, pageSize: 1000, after: after)
                if table {
                    // One table for every page: columns sized over all rows.
                    rows += items.map { [$0.id.description, $0.fields.isActive ? "yes" : "no", describe($0)] }
                } else {
                    for e in items { print(BulkFormat.encode(e)) }
                }
                after = next
            } while after != nil
        }
        if table { printTable(["ID", "ACTIVE", "DESCRIBES"], rows) }
    }
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Upsert records given as JSON lines (arguments, or stdin when none), in one atomic write.")
    @OptionGroup var conn: Connection
    @Argument var lines: [String] = []

    func run() async throws {
        var input = lines
        if input.isEmpty {
            // Empty lines kept, so that an error names the line of the input it is on.
            input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        }
        var ops: [WriteOp] = []
        for (i, l) in input.enumerated() where !l.trimmingCharacters(in: .whitespaces).isEmpty {
            do { ops.append(.upsert(try BulkFormat.decode(line: Array(l.utf8)))) } catch let e as AuthzError {
                FileHandle.standardError.write(Data("error: INVALID_ARGUMENT: line \(i + 1): \(e.message)\n".utf8))
                throw ExitCode(2)
            }
        }
        let rev = try await withClient(conn) { try await $0.write(ops) }
        print("{\"revision\":\(rev)}")
    }
}

/// Soft-deletes or re-activates one record and prints the new revision.
func setActive(_ active: Bool, _ conn: Connection, _ kind: String, _ tenant: String, _ id: String) async throws {
    let ref = RecordRef(kind: try parseKind(kind), tenantId: try parseID(tenant, "TENANT_ID"), id: try parseID(id, "ID"))
    let rev = try await withClient(conn) { active ? try await $0.activate(ref) : try await $0.deactivate(ref) }
    print("{\"revision\":\(rev)}")
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Soft-delete a record (is_active = false): KIND TENANT_ID ID.")
    @OptionGroup var conn: Connection
    @Argument var kind: String
    @Argument var tenant: String
    @Argument var id: String

    func run() async throws { try await setActive(false, conn, kind, tenant, id) }
}

struct Activate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Re-activate a soft-deleted record: KIND TENANT_ID ID.")
    @OptionGroup var conn: Connection
    @Argument var kind: String
    @Argument var tenant: String
    @Argument var id: String

    func run() async throws { try await setActive(true, conn, kind, tenant, id) }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the daemon's version, revision and record counts.")
    @OptionGroup var conn: Connection
    @OptionGroup var out: Output

    func run() async throws {
        let i = try await withClient(conn) { try await $0.serverInfo() }
        if out.isTable {
            var rows = [["version", i.version], ["revision", "\(i.revision)"], ["protocol version", "\(i.protocolVersion)"]]
                + EntityKind.allCases.filter { $0 != .platformCredential }.map { ["\($0.name)s", "\(i.counts[$0] ?? 0)"] }
            if let l = i.log {
                rows += [["log stream", l.stream], ["log applied", "\(l.applied)"], ["log stream last", "\(l.streamLast)"], ["log lag", "\(l.lag)"],
                         ["log connected", "\(l.connected)"], ["log shard", l.shard]]
                if !l.refusal.isEmpty { rows.append(["log refusal", l.refusal]) }
            }
            return printTable(["FIELD", "VALUE"], rows)
        }
        let counts = EntityKind.allCases.filter { $0 != .platformCredential }.map { "\(JSONWriter.quoted($0.name + "s")):\(i.counts[$0] ?? 0)" }.joined(separator: ",")
        var log = ""
        if let l = i.log {
            log = ",\"log\":{\"stream\":\(JSONWriter.quoted(l.stream)),\"applied\":\(l.applied),\"stream_last\":\(l.streamLast),\"lag\":\(l.lag),\"connected\":\(l.connected),\"shard\":\(JSONWriter.quoted(l.shard)),\"refusal\":\(JSONWriter.quoted(l.refusal))}"
        }
        print("{\"version\":\(JSONWriter.quoted(i.version)),\"revision\":\(i.revision),\"protocol_version\":\(i.protocolVersion),\(counts)\(log)}")
    }
}

struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Exit 0 when the daemon answers and serves.")
    @OptionGroup var conn: Connection

    func run() async throws {
        let serving = try await withClient(conn) { try await $0.health(timeout: .seconds(2)) }
        guard serving else { throw ExitCode(2) }
        print("{\"serving\":true}")
    }
}

/// `authzctl audit`: a reader of the daemon's audit trail files. Never connects to the daemon;
/// reads the files line by line (memory: one line and, for a table, the matching rows).
struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the daemon's audit trail from its files (no daemon needed), oldest first, filtered.",
        discussion: """
        Reads PATH.N … PATH.1 (rotated files, oldest first) and then PATH, and prints the lines \
        that match every filter given: as they are (JSON Lines) when piped, as a table on a \
        terminal. A line that is not a JSON object (a torn last line after a crash) is skipped \
        with a note on stderr. Lines marked "dropped_before" follow a gap: that many lines were \
        never written (docs/security.md, "Audit trail"). A rotation while this runs may repeat \
        or skip the lines of one file; run it again.
        """)
    /// The events the daemon writes (docs/security.md); `--event` must name one.
    static let events = ["write", "import", "key_created", "key_revoked", "key_expiry_set", "key_expired", "auth_refused"]

    @OptionGroup var out: Output
    @Option(name: .long, help: "The audit log (the daemon's audit-log setting; default $AUTHZD_AUDIT_LOG, else ./audit.log).")
    var file: String?
    @Option(name: .long, help: "Only lines at or after this RFC 3339 time.")
    var since: String?
    @Option(name: .long, help: "Only this event: write, import, key_created, key_revoked, key_expiry_set, key_expired or auth_refused.")
    var event: String?
    @Option(name: .long, help: "Only lines by or about this API key id (who.key_id or key_id).")
    var keyId: String?
    @Option(name: .long, help: "Only lines naming this tenant (who.tenant_id, tenant_id, tenants, or an operation's tenant_id).")
    var tenant: String?

    func run() async throws {
        let path = file ?? ProcessInfo.processInfo.environment["AUTHZD_AUDIT_LOG"] ?? "./audit.log"
        let from = try since.map { text -> Int64 in
            guard let t = Timestamp.parse(text) else { throw usageError("--since must be RFC 3339, e.g. 2026-01-31T00:00:00Z (got \"\(text)\")") }
            return t
        }
        if let event, !Audit.events.contains(event) { throw usageError("--event must be one of \(Audit.events.joined(separator: ", ")) (got \"\(event)\")") }
        let key = try keyId.map { try parseID($0, "--key-id").description }
        let tenantText = try tenant.map { try parseID($0, "--tenant").description }
        var files: [String] = []
        var n = 1
        while n <= 1000, FileManager.default.fileExists(atPath: "\(path).\(n)") { files.insert("\(path).\(n)", at: 0); n += 1 }
        if FileManager.default.fileExists(atPath: path) { files.append(path) }
        if files.isEmpty { throw usageError("cannot read the audit log \(path) (give --file PATH or set AUTHZD_AUDIT_LOG)") }

        func matches(_ v: JSONValue) -> Bool {
            if let event, v["event"] != .string(event) { return false }
            if let from {
                guard case .string(let t)? = v["time"], let time = Timestamp.parse(t), time >= from else { return false }
            }
            if let key, v["who"]?["key_id"] != .string(key) && v["key_id"] != .string(key) { return false }
            if let tenantText {
                let id = JSONValue.string(tenantText)
                var named = v["who"]?["tenant_id"] == id || v["tenant_id"] == id
                if !named, case .array(let ts)? = v["tenants"] { named = ts.contains(id) }
                if !named, case .array(let ops)? = v["ops"] { named = ops.contains { $0["tenant_id"] == id } }
                if !named { return false }
            }
            return true
        }
        let table = out.isTable
        var rows: [[String]] = []
        for f in files {
            guard let handle = FileHandle(forReadingAtPath: f) else {
                FileHandle.standardError.write(Data("note: cannot read \(f); skipped\n".utf8))
                continue
            }
            defer { try? handle.close() }
            var lineNo = 0
            var pending: [UInt8] = []
            func take(_ line: ArraySlice<UInt8>) {
                lineNo += 1
                if line.isEmpty { return }
                guard let v = try? JSONParser.parse(Array(line)), case .object = v else {
                    FileHandle.standardError.write(Data("note: \(f):\(lineNo) is not a JSON object; skipped\n".utf8))
                    return
                }
                guard matches(v) else { return }
                if table { rows.append(Audit.row(v)) } else { print(String(decoding: line, as: UTF8.self)) }
            }
            while true {
                let chunk = handle.readData(ofLength: 1 << 20)
                if chunk.isEmpty { break }
                pending += chunk
                var start = 0
                while let nl = pending[start...].firstIndex(of: 0x0A) {
                    take(pending[start..<nl])
                    start = nl + 1
                }
                pending.removeFirst(start)
            }
            if !pending.isEmpty { take(pending[...]) }
        }
        if table { printTable(["TIME", "EVENT", "WHO", "PEER", "WHAT"], rows) }
    }

    /// One table row of an audit line: time, event, who, peer and a summary of the rest.
    static func row(_ v: JSONValue) -> [String] {
        func text(_ x: JSONValue?) -> String {
            switch x {
            case .string(let s)?: return s
            case .number(let n)?: return n
            case .bool(let b)?: return b ? "true" : "false"
            default: return ""
            }
        }
        let who = v["who"]
        var whoText = text(who?["kind"])
        if let k = who?["key_id"] { whoText += " \(text(k)) (\(text(who?["role"])))" }
        if let u = who?["uid"] { whoText += " uid \(text(u))" + (who?["role"] != nil ? " (\(text(who?["role"])))" : "") }
        if let i = who?["identity"] { whoText += " \(text(i))" }
        var what: String
        switch text(v["event"]) {
        case "write":
            var ops: [JSONValue] = []
            if case .array(let list)? = v["ops"] { ops = list }
            let shown = ops.prefix(3).map { "\(text($0["op"])) \(text($0["kind"])) \(text($0["id"]))" }
            what = "revision \(text(v["revision"])), \(ops.count) op\(ops.count == 1 ? "" : "s"): " + shown.joined(separator: ", ") + (ops.count > 3 ? ", … (+\(ops.count - 3))" : "")
        case "import":
            var tenants: [String] = []
            if case .array(let list)? = v["tenants"] { tenants = list.map { text($0) } }
            what = "revision \(text(v["revision"])), \(text(v["records"])) records, tenants \(tenants.joined(separator: " "))"
        case "auth_refused":
            what = text(v["reason"]) + (v["key_id"].map { " key \(text($0))" } ?? "") + " on \(text(v["listener"]))" + (v["closing"] != nil ? ", connection closed" : "")
        default:
            what = "key \(text(v["key_id"])) (\(text(v["role"])))" + (v["tenant_id"].map { " tenant \(text($0))" } ?? "")
            for f in ["expires_at", "revoked_at", "expired_at"] where v[f] != nil { what += " \(f.replacingOccurrences(of: "_", with: " ")) \(text(v[f]))" }
        }
        if let d = v["dropped_before"] { what += " [\(text(d)) lines dropped before this one]" }
        return [text(v["time"]), text(v["event"]), whoText, text(v["peer"]), what]
    }
}

/// A record's human handle for tables: its name, email or what it binds.
func describe(_ e: Entity) -> String {
    switch e {
    case .tenant(let x): return x.name
    case .user(let u): return u.email ?? u.displayName ?? u.externalId ?? ""
    case .role(let r): return r.name
    case .permission(let p): return p.name
    case .roleBinding(let b): return "user \(b.userId) → role \(b.roleId) at \(b.scope.name)"
    case .permissionBinding(let b): return "role \(b.roleId) → permission \(b.permissionId) at \(b.scope.name)"
    case .platformCredential(let c): return "\(c.platform) \(c.externalAccountId)"
    }
}

