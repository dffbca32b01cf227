import Foundation
import XCTest

/// Golden-text tests of the CLIs' help (issue 17): a change to a flag, its wording or the
/// layout shows up as a diff against `Tests/AuthzDaemonTests/golden/*.txt`. Regenerate with
/// `AUTHZ_UPDATE_GOLDEN=1 swift test --filter HelpGoldenTests` and review the diff.
final class HelpGoldenTests: XCTestCase {
    static let cases: [(file: String, tool: String, args: [String])] = [
        ("authzctl-help", "authzctl", ["--help"]),
        ("authzctl-import-help", "authzctl", ["import", "--help"]),
        ("authzctl-export-help", "authzctl", ["export", "--help"]),
        ("authzctl-check-help", "authzctl", ["check", "--help"]),
        ("authzctl-audit-help", "authzctl", ["audit", "--help"]),
        ("authzd-keys-rotate-data-help", "authzd", ["keys", "rotate-data", "--help"]),
    ]

    var goldenDir: String { URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("golden").path }

    func help(_ tool: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = productsDirectory().appendingPathComponent(tool)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["COLUMNS"] = "100"  // argument-parser wraps to the terminal's width
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, text)
        return text
    }

    func testHelpMatchesTheGoldenFiles() throws {
        let update = ProcessInfo.processInfo.environment["AUTHZ_UPDATE_GOLDEN"] == "1"
        for c in HelpGoldenTests.cases {
            let text = try help(c.tool, c.args)
            let path = "\(goldenDir)/\(c.file).txt"
            if update {
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                continue
            }
            let golden = try String(contentsOfFile: path, encoding: .utf8)
            if text != golden {
                let a = golden.split(separator: "\n", omittingEmptySubsequences: false), b = text.split(separator: "\n", omittingEmptySubsequences: false)
                let first = zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }
                XCTFail("\(c.tool) \(c.args.joined(separator: " ")) differs from golden/\(c.file).txt at line \((first?.offset ?? min(a.count, b.count)) + 1):\n- \(first?.element.0 ?? "")\n+ \(first?.element.1 ?? "")\n(AUTHZ_UPDATE_GOLDEN=1 regenerates)")
            }
        }
    }
}
