import AuthzIndex
import AuthzModel
import Foundation
import NIOConcurrencyHelpers

/// Optional decision log: sampled checks as JSON Lines in a file, written off the check path.
///
/// A check that is sampled appends a small record to a bounded queue under a lock (no I/O,
/// no formatting); a background thread formats and writes the queue every 100 ms. When the
/// queue is full the record is dropped and counted (`authzd_decision_log_dropped_total`)
/// rather than slowing checks. Never holds a secret: ids, names, scope, decision, reason,
/// revision, latency.
final class DecisionLog: @unchecked Sendable {
    struct Entry {
        var time: Int64
        var tenant: ID
        var user: ID
        var permission: String
        var scope: Scope
        var reason: Reason
        var revision: UInt64
        var latencyNanos: UInt64
    }

    private let queue = NIOLockedValueBox<[Entry]>([])
    private let capacity: Int
    /// Sample one check in `every` (1 = all).
    private let every: UInt64
    private let counter = NIOLockedValueBox<UInt64>(0)
    private let handle: FileHandle
    private let onDrop: () -> Void
    private var thread: Thread?
    private let stopped = NIOLockedValueBox(false)

    /// Opens (appending, creating 0600) `path`. `sampleRate` in (0, 1].
    init(path: String, sampleRate: Double, capacity: Int = 65_536, onDrop: @escaping () -> Void) throws {
        if !FileManager.default.fileExists(atPath: path) {
            FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        guard let h = FileHandle(forWritingAtPath: path) else { throw ConfigError("cannot open decision log \(path)") }
        h.seekToEndOfFile()
        handle = h
        self.capacity = capacity
        every = UInt64(max(1, (1 / max(sampleRate, 1e-9)).rounded()))
        self.onDrop = onDrop
        let t = Thread { [weak self] in self?.drainLoop() }
        t.name = "authzd-decision-log"
        thread = t
        t.start()
    }

    /// Whether this check should be logged (cheap: one counter under a lock).
    @inline(__always) func sample() -> Bool {
        if every == 1 { return true }
        return counter.withLockedValue { c in
            c &+= 1
            return c % every == 0
        }
    }

    /// Which of `n` consecutive checks (a batch) are sampled: one lock for the whole batch.
    func sample(batch n: Int) -> [Int] {
        if every == 1 { return Array(0..<n) }
        let start = counter.withLockedValue { c -> UInt64 in
            let s = c
            c &+= UInt64(n)
            return s
        }
        var out: [Int] = []
        var i = Int((every - (start + 1) % every) % every)
        while i < n {
            out.append(i)
            i += Int(every)
        }
        return out
    }

    /// Queues an entry; drops (and counts) it when the queue is full.
    func record(_ e: Entry) {
        let accepted = queue.withLockedValue { q -> Bool in
            if q.count >= capacity { return false }
            q.append(e)
            return true
        }
        if !accepted { onDrop() }
    }

    private func drainLoop() {
        while !stopped.withLockedValue({ $0 }) {
            Thread.sleep(forTimeInterval: 0.1)
            flush()
        }
        flush()
    }

    func flush() {
        let batch = queue.withLockedValue { q -> [Entry] in
            let b = q
            q.removeAll(keepingCapacity: true)
            return b
        }
        if batch.isEmpty { return }
        var out = ""
        for e in batch {
            out += "{\"decision_id\":\"\(ID.random())\",\"time\":\"\(Timestamp.format(e.time))\",\"tenant_id\":\"\(e.tenant)\",\"user_id\":\"\(e.user)\",\"permission\":"
            JSONWriter.writeString(e.permission, into: &out)
            out += ",\"scope\":\"\(e.scope.name)\",\"decision\":\"\(e.reason == .granted ? "allow" : "deny")\",\"reason\":\"\(e.reason.name)\",\"revision\":\(e.revision),\"latency_us\":\(Double(e.latencyNanos) / 1000)}\n"
        }
        handle.write(Data(out.utf8))
    }

    func close() {
        stopped.withLockedValue { $0 = true }
        while thread?.isFinished == false { Thread.sleep(forTimeInterval: 0.01) }
        try? handle.synchronize()
        try? handle.close()
    }
}
