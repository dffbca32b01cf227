import AuthzModel
import XCTest

/// The check path's id parser (`ID(bytes:)`, eight digits a word) accepts exactly what the
/// String parser accepts and gives the same id: every byte value at every position of valid
/// ids of either case, and random near-misses.
final class IDParsingTests: XCTestCase {
    func parse(_ bytes: [UInt8]) -> ID? { bytes.withUnsafeBytes { ID(bytes: $0) } }
    func reference(_ bytes: [UInt8]) -> ID? { ID(String(decoding: bytes, as: UTF8.self)) }

    func testEveryByteAtEveryPositionAgreesWithTheStringParser() {
        var rng = SplitMix(seed: 11)
        for round in 0..<40 {
            let id = ID.random(using: &rng)
            var text = Array(id.description.utf8)
            if round % 2 == 1 { text = Array(id.description.uppercased().utf8) }
            if round % 4 == 2 { text = text.map { $0 >= 0x61 && Bool.random(using: &rng) ? $0 - 0x20 : $0 } }
            XCTAssertEqual(parse(text), id)
            XCTAssertEqual(reference(text), id)
            for position in 0..<36 {
                for value in 0...255 {
                    var bad = text
                    bad[position] = UInt8(value)
                    // Multi-byte UTF-8 cannot be a String of 36 bytes decoding to the same: only compare
                    // where the reference sees the same bytes.
                    guard String(decoding: bad, as: UTF8.self).utf8.count == 36 else {
                        XCTAssertNil(parse(bad), "\(bad)")
                        continue
                    }
                    XCTAssertEqual(parse(bad), reference(bad), "byte \(value) at \(position) of \(id)")
                }
            }
        }
    }

    func testWrongLengthsAndHyphensAreRefused() {
        let text = Array(ID.random().description.utf8)
        XCTAssertNil(parse(Array(text.dropLast())))
        XCTAssertNil(parse(text + [0x30]))
        XCTAssertNil(parse([]))
        for h in [8, 13, 18, 23] {
            var t = text
            t[h] = 0x30
            XCTAssertNil(parse(t))
        }
    }
}

/// `BindAddress`: the one parser of listener and client addresses.
final class BindAddressTests: XCTestCase {
    func testTextFormsParseAndPrintBack() {
        let cases: [(String, BindAddress?)] = [
            ("unix:/run/authzd.sock", .unix("/run/authzd.sock")),
            ("./authzd.sock", .unix("./authzd.sock")),
            ("authzd.sock", .unix("authzd.sock")),
            ("127.0.0.1:7000", .tcp(host: "127.0.0.1", port: 7000)),
            ("localhost:0", .tcp(host: "localhost", port: 0)),
            ("[::1]:7000", .tcp(host: "::1", port: 7000)),
            ("[fe80::1%eth0]:443", .tcp(host: "fe80::1%eth0", port: 443)),
            (":7000", .tcp(host: "", port: 7000)),
            ("::1:7000", nil),  // IPv6 without brackets is ambiguous
            ("[::1]7000", nil),
            ("[]:7000", nil),
            ("host:65536", nil),
            ("host:-1", nil),
            ("host", nil),
            ("", nil),
            ("unix:", nil),
        ]
        for (text, want) in cases {
            XCTAssertEqual(BindAddress(text), want, text)
            if let a = want, case .tcp(let h, _) = a, !h.isEmpty {
                XCTAssertEqual(BindAddress(a.description), a, "\(a) prints back")
            }
        }
        XCTAssertEqual(BindAddress(":7000")?.tcpHost(default: "0.0.0.0"), "0.0.0.0")
        XCTAssertNil(BindAddress("unix:/x")?.tcpHost(default: "0.0.0.0"))
    }
}
