import ArgumentParser
import AuthzEngine
import AuthzModel
import AuthzServer
import AuthzStore
import Dispatch
import Foundation
import Logging

/// `authzd`: the authorization decision daemon.
@main
struct Authzd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authzd",
        abstract: "Multi-tenant authorization decision daemon.",
        version: Dispatcher.version,
        subcommands: [Serve.self, Verify.self, Backup.self, CrashWriter.self],
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

    func resolve() throws -> ServerConfig {
        var c = ServerConfig()
        if let config { try c.load(file: config) }
        if let dataDir { c.dataDir = dataDir }
        if let socket { c.socketPath = socket }
        if let address { c.address = address }
        if let threads { try c.set("threads", String(threads), origin: "--threads") }
        if let maxFrameSize { try c.set("max-frame-size", String(maxFrameSize), origin: "--max-frame-size") }
        if let sync { try c.set("sync", sync, origin: "--sync") }
        if c.socketPath == nil && c.address == nil { c.socketPath = "./authzd.sock" }
        return c
    }
}

func makeLogger(_ level: String) -> Logger {
    LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
    var logger = Logger(label: "authzd")
    logger.logLevel = Logger.Level(rawValue: level) ?? .info
    return logger
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve checks and writes over a Unix socket and/or TCP.")

    @OptionGroup var options: ServeOptions

    func run() throws {
        let logger = makeLogger(options.logLevel)
        let config: ServerConfig
        do { config = try options.resolve() } catch {
            logger.critical("bad configuration: \(error)")
            throw ExitCode(2)
        }
        let server = AuthzServer(config: config, logger: logger)
        do {
            try server.start()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        let done = DispatchSemaphore(value: 0)
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                logger.info("signal received; shutting down", metadata: ["signal": "\(sig)"])
                done.signal()
            }
            s.resume()
            sources.append(s)
        }
        done.wait()
        server.shutdown()
        _ = sources
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rebuild the index from LMDB and compare it with a fresh compile (offline).")

    @Option(name: .long, help: "LMDB data directory.")
    var dataDir = "./data"

    func run() throws {
        let engine = try Engine(directory: dataDir)
        let problems = try engine.verifyIndex()
        print("revision \(engine.revision): \(problems.isEmpty ? "index consistent" : problems.joined(separator: "\n"))")
        if !problems.isEmpty { throw ExitCode(1) }
    }
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Compacting copy of an idle data directory into DEST (empty directory).")

    @Option(name: .long, help: "LMDB data directory.")
    var dataDir = "./data"
    @Argument(help: "Destination directory (created; must be empty).")
    var dest: String

    func run() throws {
        try FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: true)
        let store = try Store(directory: dataDir)
        try store.backup(to: dest)
        print("backed up revision \(try store.revision()) to \(dest)")
    }
}

/// Test helper: writes one user per transaction forever, printing each acknowledged revision
/// and user id on stdout. The crash test SIGKILLs it and checks every printed write survived.
struct CrashWriter: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "debug-crash-writer", abstract: "Test helper (hidden).", shouldDisplay: false)

    @Option(name: .long) var dataDir: String
    @Option(name: .long) var tenant: String

    func run() throws {
        setvbuf(stdout, nil, _IOLBF, 0)
        let engine = try Engine(directory: dataDir)
        guard let t = ID(tenant) else { throw ValidationError("bad tenant") }
        if engine.snapshot.tenant(t) == nil {
            try engine.write([.upsert(.tenant(Tenant(id: t, name: "crash")))])
        }
        while true {
            let u = ID.random()
            let rev = try engine.write([.upsert(.user(User(id: u, tenantId: t)))])
            print("\(rev) \(u)")
        }
    }
}
