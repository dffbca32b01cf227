import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// Item 13 of the Hardening issue: `authzd keys` and `authzctl` take a key from `--key-file` or
/// `AUTHZ_API_KEY`, so it need not sit on the command line where `ps` shows it.
final class KeyFileOptionTests: XCTestCase {
    var daemon: DaemonProcess!

    override func setUpWithError() throws { daemon = try DaemonProcess() }

    override func tearDown() {
        daemon.stop()
        daemon.remove()
    }

    /// Runs a built executable with `environment` added; returns status and merged output.
    func run(_ tool: String, _ args: [String], environment: [String: String] = [:]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = productsDirectory().appendingPathComponent(tool)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "AUTHZ_API_KEY")
        env.merge(environment) { $1 }
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    /// Item 13: both CLIs take a key from `--key-file` or `AUTHZ_API_KEY`, so it need not be on
    /// the command line, and say so in their help.
    func testCLIsTakeKeysFromFileAndEnvironment() async throws {
        let local = daemon.client()
        defer { local.close() }
        let t = ID.random(), u = ID.random()
        _ = try await local.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t)))])
        let (_, checker) = try await createKey(local, t, .checker)
        let (_, operatorKey) = try await createKey(local, nil, .operator)
        let checkerFile = daemon.dir + "/checker.key", operatorFile = daemon.dir + "/operator.key"
        _ = FileManager.default.createFile(atPath: checkerFile, contents: Data((checker + "\n").utf8), attributes: [.posixPermissions: 0o600])
        _ = FileManager.default.createFile(atPath: operatorFile, contents: Data((operatorKey + "\n").utf8), attributes: [.posixPermissions: 0o600])
        let tcp = ["--address", "127.0.0.1:\(daemon.tcpPort!)"]
        let check = ["check"] + tcp + [t.description, u.description, "a.b", "self"]

        // authzctl over TCP: without a key UNAUTHENTICATED; with a key file or the environment a
        // decision (deny: exit 1).
        let (none, noneOut) = try run("authzctl", check)
        XCTAssertEqual(none, 2, noneOut)
        XCTAssertTrue(noneOut.contains("UNAUTHENTICATED"), noneOut)
        let (fromFile, fileOut) = try run("authzctl", check + ["--key-file", checkerFile])
        XCTAssertEqual(fromFile, 1, fileOut)
        XCTAssertTrue(fileOut.contains("warning: the API key goes to") && fileOut.contains("plain text"), fileOut)
        let (fromEnv, envOut) = try run("authzctl", check, environment: ["AUTHZ_API_KEY": checker])
        XCTAssertEqual(fromEnv, 1, envOut)
        let (both, bothOut) = try run("authzctl", check + ["--key", checker, "--key-file", checkerFile])
        XCTAssertEqual(both, 2, bothOut)
        let (missing, missingOut) = try run("authzctl", check + ["--key-file", daemon.dir + "/nope.key"])
        XCTAssertEqual(missing, 2, missingOut)
        XCTAssertTrue(missingOut.contains("nope.key"), missingOut)

        // authzd keys on the Unix socket (as root, a superuser without a key): a presented key
        // replaces that identity, so a checker key is refused key listing and an operator key
        // is not — proving the key was taken from the file or the environment.
        let sock = ["--socket", daemon.socketPath]
        let (asChecker, checkerOut) = try run("authzd", ["keys", "list"] + sock + ["--key-file", checkerFile])
        XCTAssertEqual(asChecker, 2, checkerOut)
        XCTAssertTrue(checkerOut.contains("PERMISSION_DENIED"), checkerOut)
        let (asOperator, operatorOut) = try run("authzd", ["keys", "list"] + sock + ["--key-file", operatorFile])
        XCTAssertEqual(asOperator, 0, operatorOut)
        let (envChecker, envCheckerOut) = try run("authzd", ["keys", "list"] + sock, environment: ["AUTHZ_API_KEY": checker])
        XCTAssertEqual(envChecker, 2, envCheckerOut)
        XCTAssertTrue(envCheckerOut.contains("PERMISSION_DENIED"), envCheckerOut)

        for (tool, args) in [("authzctl", ["check", "--help"]), ("authzd", ["keys", "create", "--help"])] {
            let (_, help) = try run(tool, args)
            XCTAssertTrue(help.contains("--key-file"), "\(tool) \(args): \(help)")
            XCTAssertTrue(help.contains("AUTHZ_API_KEY"), "\(tool) \(args): \(help)")
        }
    }

    /// authzctl's config file (AUTHZCTL_CONFIG, else ~/.config/authzctl/config) stands in for the
    /// connection flags; flags win over it; a bad line, an unknown setting and an API key in it
    /// are refused naming the file and the line.
    func testConfigFileGivesTheConnection() async throws {
        let local = daemon.client()
        defer { local.close() }
        let t = ID.random(), u = ID.random()
        _ = try await local.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: u, tenantId: t)))])
        let (_, checker) = try await createKey(local, t, .checker)
        let keyFile = daemon.dir + "/checker.key"
        _ = FileManager.default.createFile(atPath: keyFile, contents: Data((checker + "\n").utf8), attributes: [.posixPermissions: 0o600])
        let config = daemon.dir + "/authzctl.conf"
        func write(_ text: String) { _ = FileManager.default.createFile(atPath: config, contents: Data(text.utf8)) }
        let check = ["check", t.description, u.description, "a.b", "self"]
        let env = ["AUTHZCTL_CONFIG": config, "HOME": daemon.dir]

        // The TCP address and the key file from the config: a decision (deny, exit 1).
        write("# authzctl\naddress = 127.0.0.1:\(daemon.tcpPort!)\nkey-file = \(keyFile)  # the checker\ntimeout-ms = 5000\n")
        let (viaConfig, out1) = try run("authzctl", check, environment: env)
        XCTAssertEqual(viaConfig, 1, out1)
        // A flag wins: a socket that does not exist fails.
        let (flagWins, out2) = try run("authzctl", check + ["--socket", daemon.dir + "/nowhere.sock"], environment: env)
        XCTAssertEqual(flagWins, 2, out2)
        XCTAssertTrue(out2.contains("UNAVAILABLE"), out2)
        // The default path under HOME, with a socket.
        try FileManager.default.createDirectory(atPath: daemon.dir + "/.config/authzctl", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: daemon.dir + "/.config/authzctl/config", contents: Data("socket = \(daemon.socketPath)\n".utf8))
        let (viaHome, out3) = try run("authzctl", check, environment: ["HOME": daemon.dir, "XDG_CONFIG_HOME": ""])
        XCTAssertEqual(viaHome, 1, out3)

        for (text, expected) in [("socket\n", "authzctl.conf:1: expected `key = value`"),
                                 ("# fine\nsockets = /x\n", "authzctl.conf:2: unknown setting \"sockets\""),
                                 ("key = azk_x\n", "an API key does not go in the config file")] {
            write(text)
            let (status, out) = try run("authzctl", check, environment: env)
            XCTAssertEqual(status, 2, out)
            XCTAssertTrue(out.contains(expected), out)
        }
    }
}
