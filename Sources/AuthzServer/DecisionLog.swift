import AuthzIndex
import AuthzModel
import Foundation
import Metrics
import NIOConcurrencyHelpers
import ServiceLifecycle

/// Optional decision log: sampled checks as JSON Lines in a file, written off the check path.
///
/// A check that is sampled appends a small record to a bounded queue under a lock (no I/O,
/// no formatting); the service's `run()` formats and writes the queue every 100 ms. When the
/// queue is full the record is dropped and counted (`authzd_decision_log_dropped_total`)
/// rather than slowing checks. Never holds a secret: ids, names, scope, decision, reason,
/// revision, latency.
///
/// A `Service`: nothing is written unless `run()` runs. In authzd's `ServiceGroup` it comes
/// before the server, so it is shut down after it: the checks the server drains are still
/// written, then the file is synced and closed.
public final class DecisionLog: Service, Sendable {
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
    /// Touched only by `run()` (one task at a time).
    private let handle: FileHandle
    /// `authzd_decision_log_dropped_total`: made at init, so after the metrics bootstrap.
    private let dropped = Counter(label: "authzd_decision_log_dropped_total")
    private let closed = NIOLockedValueBox(false)

    /// The path the log appends to.
    public let path: String
    /// The share of checks logged, as given.
    public let sampleRate: Double

    /// Opens (appending, creating 0600) `path`; `sampleRate` in (0, 1] (1 in `1 / sampleRate`
    /// checks is logged, rounded). At most `capacity` entries wait for the writer; more are
    /// dropped and counted. Throws `ConfigError` when the file cannot be opened for writing.
    /// Starts no thread: `run()` writes.
    public init(path: String, sampleRate: Double, capacity: Int = 65_536) throws {
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])  // opening below reports a failure
        }
        guard let h = FileHandle(forWritingAtPath: path) else { throw ConfigError("cannot open decision log \(path)") }
        h.seekToEndOfFile()
        handle = h
        self.path = path
        self.sampleRate = sampleRate
        self.capacity = capacity
        every = UInt64(max(1, (1 / max(sampleRate, 1e-9)).rounded()))
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
        if !accepted { dropped.increment() }
    }

    /// Writes the queue to the file every 100 ms until graceful shutdown or cancellation
    /// (noticed within 100 ms), then writes what is left, syncs and closes the file. Entries
    /// recorded after it returned are never written. The writes are plain blocking `write(2)`s
    /// of what 100 ms of checks queued, on the task's thread. Run it once; never throws.
    public func run() async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: .milliseconds(100))
            flush()
        }
        close()
    }

    /// Formats and appends every queued entry. Called by `run()` only.
    private func flush() {
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

    /// Writes what is queued, then syncs and closes the file; later calls do nothing.
    private func close() {
        guard closed.withLockedValue({ c in defer { c = true }; return !c }) else { return }
        flush()
        try? handle.synchronize()
        try? handle.close()
    }
}
