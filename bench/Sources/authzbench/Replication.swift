import ArgumentParser
import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOPosix

/// Log mode (docs/scale-out.md) between two running daemons on one stream: replication lag
/// (a write acknowledged by the writer → visible on the replica), write throughput through the
/// log, and the replica's check throughput idle and while it applies writes. bench/replication.sh
/// starts the NATS cluster and the daemons.
struct ReplicationBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "replication",
                                                    abstract: "Replication lag, write throughput through the log, and a replica's checks while it applies writes.")
    @Option(help: "Unix socket of the daemon written to.") var writer: String
    @Option(help: "Unix socket of another daemon of the same stream.") var replica: String
    @Option var size = "small"
    @Option var seed: UInt64 = 1
    @Option(help: "Writes timed one at a time for the lag.") var lagSamples = 1000
    @Option(help: "Seconds per throughput row.") var seconds = 5.0
    @Option(help: "Concurrent writers for the throughput rows.") var writers = 8
    @Option(help: "Check connections on the replica.") var connections = 2
    @Option(help: "Checks in flight per connection.") var inFlight = 16

    func run() throws {
        guard let s = DatasetSize.named(size) else { throw ValidationError("size must be small, reference or ten") }
        let tenants = Dataset.generate(size: s, seed: seed)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { try? group.syncShutdownGracefully() }
        let w = AuthzClient(endpoint: .unix(writer), connections: max(1, writers), group: group)
        let r = AuthzClient(endpoint: .unix(replica), group: group)
        defer { w.close(); r.close() }
        let t = tenants[0]

        // Load through the log, one import a chunk (each tenant's part is one message).
        var started = Date()
        var records = 0
        var revision: UInt64 = 0
        for chunk in Dataset.jsonlChunks(tenants, seed: seed) {
            guard case .importResult(let rev, let n) = try w.send(.importJSONL(chunk), timeout: .seconds(300)).wait() else { throw ValidationError("import failed") }
            revision = rev
            records += Int(n)
        }
        let loadSeconds = Date().timeIntervalSince(started)
        started = Date()
        _ = try r.send(.check(CheckCall(tenantId: t.id, userId: t.users[0], permission: "x", scope: .self, minRevision: revision)), timeout: .seconds(600)).wait()
        let catchUp = Date().timeIntervalSince(started)

        let tenantId = t.id, firstRole = t.roles[0]
        @Sendable func userWrite() -> [WriteOp] {
            let u = ID.random()
            return [.upsert(.user(User(id: u, tenantId: tenantId))),
                    .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: tenantId, userId: u, roleId: firstRole, scope: .tenant)))]
        }

        // Lag: one write at a time; the replica is asked at the write's revision right after the
        // writer acknowledged it, and answers once it has applied it.
        var lag = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var ack = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for _ in 0..<lagSamples {
            let t0 = DispatchTime.now().uptimeNanoseconds
            guard case .write(let rev) = try w.send(.write(userWrite())).wait() else { throw ValidationError("write failed") }
            let t1 = DispatchTime.now().uptimeNanoseconds
            _ = try r.send(.check(CheckCall(tenantId: t.id, userId: t.users[0], permission: "x", scope: .self, minRevision: rev))).wait()
            let t2 = DispatchTime.now().uptimeNanoseconds
            ack.record(t1 - t0)
            lag.record(t2 - t1)
        }

        // Writers for a set time: counts acknowledged writes.
        let writerCount = writers
        @Sendable func writeFor(_ duration: Double) -> (writes: Int, seconds: Double) {
            let stop = Date().addingTimeInterval(duration)
            let count = NIOLockedValueBox(0)
            let begin = Date()
            let threads = (0..<writerCount).map { _ in
                Thread {
                    var mine = 0
                    while Date() < stop {
                        if (try? w.send(.write(userWrite())).wait()) != nil { mine += 1 }
                    }
                    count.withLockedValue { $0 += mine }
                }
            }
            threads.forEach { $0.start() }
            while Date() < stop { Thread.sleep(forTimeInterval: 0.05) }
            Thread.sleep(forTimeInterval: 0.5)  // writes in flight at the stop finish
            return (count.withLockedValue { $0 }, Date().timeIntervalSince(begin))
        }
        let writeOnly = writeFor(seconds)

        let queries = Queries.make(tenants, count: 100_000, skewed: true, allowShare: 0.5, seed: seed)
        let encoded = Encoded(target: .authzd, tenants: tenants, queries: queries)
        func checks() throws -> LoadResult {
            var o = LoadOptions(target: .authzd, endpoint: replica, connections: connections, inFlight: inFlight, batch: 1,
                                duration: seconds, maxRequests: nil)
            o.warmup = 0.3
            return try LoadRunner.run(o, encoded: encoded, group: group)
        }
        let idle = try checks()
        var during = LoadResult(checks: 0, requests: 0, wrong: 0, errors: 0, seconds: 1,
                                histogram: Histogram<UInt64>(highestTrackableValue: 1_000_000, numberOfSignificantValueDigits: .two))
        let writesDuringBox = NIOLockedValueBox((writes: 0, seconds: 1.0))
        let loadSeconds2 = seconds + 0.3
        let loader = Thread { let r = writeFor(loadSeconds2); writesDuringBox.withLockedValue { $0 = r } }
        loader.start()
        during = try checks()
        while writesDuringBox.withLockedValue({ $0.writes }) == 0 && loader.isExecuting { Thread.sleep(forTimeInterval: 0.1) }
        Thread.sleep(forTimeInterval: 1)
        let writesDuring = writesDuringBox.withLockedValue { $0 }

        func ms(_ h: Histogram<UInt64>, _ p: Double) -> String { String(format: "%.2f", Double(h.valueAtPercentile(p)) / 1_000_000) }
        print("| measure | value |")
        print("|---|---|")
        print("| dataset | \(size): \(records) records loaded through the log in \(String(format: "%.1f", loadSeconds)) s (\(Int(Double(records) / loadSeconds)) rec/s); replica caught up \(String(format: "%.2f", catchUp)) s after |")
        print("| write acknowledged (1 writer), p50 / p99 ms | \(ms(ack, 50)) / \(ms(ack, 99)) |")
        print("| replication lag (acked on writer → visible on replica), p50 / p99 ms | \(ms(lag, 50)) / \(ms(lag, 99)) |")
        print("| writes through the log, \(writers) writers | \(Int(Double(writeOnly.writes) / writeOnly.seconds))/s |")
        print("| replica checks/s, idle (batch 1, \(connections)×\(inFlight)) | \(Int(idle.checksPerSecond)) (p99 \(String(format: "%.0f", idle.percentile(99))) µs, wrong \(idle.wrong)) |")
        print("| replica checks/s while applying \(Int(Double(writesDuring.writes) / writesDuring.seconds)) writes/s | \(Int(during.checksPerSecond)) (p99 \(String(format: "%.0f", during.percentile(99))) µs, wrong \(during.wrong)); ratio \(String(format: "%.2f", during.checksPerSecond / max(1, idle.checksPerSecond))) |")
    }
}
