@testable import AuthzEngine
import AuthzModel
import Foundation
import XCTest

/// A child process writes in a loop and is SIGKILLed at a random moment: every revision it
/// acknowledged (printed after `write` returned) must be present after reopening. The writer
/// is the test-only `authzd-crash-writer` executable (Tests/CrashWriter).
final class CrashTests: XCTestCase {
    func testAcknowledgedWritesSurviveSIGKILL() throws {
        let cycles = Int(ProcessInfo.processInfo.environment["AUTHZ_CRASH_CYCLES"] ?? "") ?? 5
        let dir = temporaryDirectory("authzd-crash")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tenant = ID.random()
        var acknowledged: [(UInt64, ID)] = []
        var rng = SystemRandomNumberGenerator()
        for cycle in 0..<cycles {
            let p = Process()
            p.executableURL = productsDirectory().appendingPathComponent("authzd-crash-writer")
            p.arguments = ["--data-dir", dir, "--tenant", tenant.description]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            // Let it write for a random while, reading what it acknowledges.
            let deadline = Date().addingTimeInterval(Double.random(in: 0.2...0.8, using: &rng))
            var text = ""
            let h = out.fileHandleForReading
            while Date() < deadline {
                let d = h.availableData
                if d.isEmpty { break }
                text += String(decoding: d, as: UTF8.self)
            }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            text += String(decoding: h.readDataToEndOfFile(), as: UTF8.self)
            // Only complete lines were acknowledged.
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            for line in lines.dropLast() {
                let parts = line.split(separator: " ")
                if parts.count == 2, let rev = UInt64(parts[0]), let id = ID(parts[1]) { acknowledged.append((rev, id)) }
            }
            let engine = try Engine(directory: dir)
            XCTAssertGreaterThanOrEqual(engine.revision, acknowledged.last?.0 ?? 0, "cycle \(cycle): revision went backwards")
            for (rev, id) in acknowledged {
                XCTAssertNotNil(try engine.store.read { try $0.entity(.user, tenant: tenant, id: id) }, "cycle \(cycle): acknowledged revision \(rev) lost")
            }
            XCTAssertEqual(try engine.verifyIndex(), [])
        }
        XCTAssertGreaterThan(acknowledged.count, cycles, "the writer should have acknowledged writes")
    }
}
