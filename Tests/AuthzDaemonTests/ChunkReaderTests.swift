import AuthzClient
import Foundation
import XCTest

/// `JSONLChunkReader` (authzctl import's constant-memory reading) cuts a file exactly as
/// `AuthzClient.chunks(of:)` cuts the same bytes in memory, for any chunk size and skip.
final class ChunkReaderTests: XCTestCase {
    func testReaderCutsLikeTheInMemorySplitter() throws {
        var rng = SystemRandomNumberGenerator()
        let path = temporaryDirectory("authzd-chunks") + "/f.jsonl"
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        for round in 0..<40 {
            // Lines of 0 to 300 bytes, sometimes one very long; with or without a final newline.
            var bytes: [UInt8] = []
            for _ in 0..<Int.random(in: 0...200, using: &rng) {
                let n = Int.random(in: 0...10, using: &rng) == 0 ? Int.random(in: 300...3000, using: &rng) : Int.random(in: 0...300, using: &rng)
                bytes += [UInt8](repeating: UInt8(ascii: "a"), count: n) + [0x0A]
            }
            if round % 3 == 0 { bytes += Array("{\"tail\":1}".utf8) }
            _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
            let chunkBytes = [1, 7, 64, 512, 4096, 1 << 20][round % 6]
            let skip = round % 4 == 0 ? Int.random(in: 0...20, using: &rng) : 0
            // The expected cut: skip whole lines, then split in memory, line numbers shifted.
            var start = 0, skipped = 0
            while skipped < skip, start < bytes.count {
                start = (bytes[start...].firstIndex(of: 0x0A).map { $0 + 1 }) ?? bytes.count
                skipped += 1
            }
            let rest = Array(bytes[start...])
            let expected = AuthzClient.chunks(of: rest, chunkBytes: chunkBytes).map { (Array(rest[$0.range]), $0.firstLine + skipped) }
            let reader = try JSONLChunkReader(path: path, chunkBytes: chunkBytes, skipLines: skip)
            var got: [([UInt8], Int)] = []
            while let c = try reader.next() { got.append((c.bytes, c.firstLine)) }
            XCTAssertEqual(got.map(\.0), expected.map(\.0), "round \(round), chunk \(chunkBytes), skip \(skip)")
            XCTAssertEqual(got.map(\.1), expected.map(\.1), "round \(round), chunk \(chunkBytes), skip \(skip)")
            XCTAssertEqual(reader.consumed, bytes.count)
        }
    }
}
