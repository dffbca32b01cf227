import Foundation
import XCTest

/// A Python client built from proto/authz.proto with protoc --python_out and the official
/// protobuf runtime talks to a real daemon: the protocol is what docs/protocol.md says, not
/// what our own codec happens to do.
final class CrossLanguageTests: XCTestCase {
    func run(_ tool: String, _ args: [String]) throws -> (Int32, String) {
        try runProcess("/usr/bin/env", [tool] + args)
    }

    func testPythonClientAgainstRealDaemon() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let gen = temporaryDirectory("authzd-py")
        defer { try? FileManager.default.removeItem(atPath: gen) }
        let (rc, out) = try run("protoc", ["--python_out=\(gen)", "-I", root + "/proto", root + "/proto/authz.proto"])
        XCTAssertEqual(rc, 0, "protoc failed (install protobuf-compiler): \(out)")
        guard rc == 0 else { return }
        let daemon = try DaemonProcess(tcp: false)
        defer { daemon.stop(); daemon.remove() }
        // Debian's python3 carries python3-protobuf; a pyenv python3 on PATH may not.
        let python = FileManager.default.fileExists(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"
        let (prc, pout) = try run(python, [root + "/Tests/AuthzDaemonTests/python/client.py", gen, daemon.socketPath])
        XCTAssertEqual(prc, 0, pout)
        XCTAssertTrue(pout.contains("ok"), pout)
    }
}
