import AuthzModel
import Foundation

/// Reads a JSON Lines file in chunks that end at line boundaries, at most `chunkBytes` each (a
/// single longer line is a chunk of its own), holding one chunk and one read block in memory:
/// a file of any size imports at constant memory in the client. Not Sendable: one task reads it.
public final class JSONLChunkReader {
    private let handle: FileHandle
    private let chunkBytes: Int
    private var pending: [UInt8] = []
    private var eof = false
    private var nextLine = 1
    /// The file's size in bytes when it was opened (0 when it cannot be told).
    public let totalBytes: Int
    /// The bytes handed out by `next()` or skipped by `skipLines` so far.
    public private(set) var consumed = 0

    /// Opens `path`; skips its first `skipLines` lines. Throws INVALID_ARGUMENT naming the
    /// path when it cannot be read.
    public init(path: String, chunkBytes: Int, skipLines: Int = 0) throws {
        guard let h = FileHandle(forReadingAtPath: path) else { throw AuthzError.invalid("file", "cannot read \(path)") }
        handle = h
        self.chunkBytes = max(1, chunkBytes)
        totalBytes = Int((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)??.intValue ?? 0)
        // Skip whole lines by an offset into the buffer, dropping what was passed once a block.
        var skipped = 0, at = 0
        while skipped < skipLines {
            if at >= pending.count {
                consumed += at
                pending.removeAll(keepingCapacity: true)
                at = 0
                try fill(atLeast: 1)
                if pending.isEmpty { break }
            }
            if let nl = pending[at...].firstIndex(of: 0x0A) {
                at = nl + 1
                skipped += 1
            } else if eof {
                at = pending.count
            } else {
                consumed += at
                pending.removeFirst(at)
                at = 0
                try fill(atLeast: pending.count + 1)
            }
        }
        consumed += at
        pending.removeFirst(at)
        nextLine = skipped + 1
    }

    deinit { try? handle.close() }

    private func fill(atLeast n: Int) throws {
        while pending.count < n && !eof {
            guard let block = try handle.read(upToCount: max(chunkBytes, 1 << 16)), !block.isEmpty else {
                eof = true
                return
            }
            pending.append(contentsOf: block)
        }
    }

    /// The next chunk and the number (from the file's start) of its first line; nil at the end.
    /// Throws the file system's error when the file cannot be read further.
    public func next() throws -> (bytes: [UInt8], firstLine: Int)? {
        try fill(atLeast: chunkBytes + 1)
        if pending.isEmpty { return nil }
        var end = min(pending.count, chunkBytes)
        if end < pending.count || !eof {
            // Back to just after the last newline in the window, or on to the next one.
            if let nl = pending[..<end].lastIndex(of: 0x0A) {
                end = nl + 1
            } else {
                while true {
                    if let nl = pending[end...].firstIndex(of: 0x0A) { end = nl + 1; break }
                    if eof { end = pending.count; break }
                    let had = pending.count
                    try fill(atLeast: had + 1)
                    if pending.count == had { end = pending.count; break }
                }
            }
        }
        let chunk = Array(pending[..<end])
        pending.removeFirst(end)
        consumed += end
        let first = nextLine
        nextLine += chunk.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        return (chunk, first)
    }
}
