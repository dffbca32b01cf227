import ArgumentParser
import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import NIOConcurrencyHelpers
import NIOPosix

/// Mixed checks and writes for a set time; every interval prints check throughput, p99, write
/// rate and the daemon's resident memory, so that drift in memory or latency shows.
struct Soak: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mixed checks and writes for a set time; reports throughput, p99 and resident memory every interval.")
    @Option var size = "reference"
    @Option var seed: UInt64 = 1
    @Option(help: "Total minutes.") var minutes = 10.0
    @Option(help: "Seconds per report line.") var interval = 10.0
    @Option(help: "Load connections.") var connections = 4
    @Option(help: "In flight per connection.") var inFlight = 8

    func run() throws {
        guard let s = DatasetSize.named(size) else { throw ValidationError("size must be small, reference or ten") }
        let tenants = Dataset.generate(size: s, seed: seed)
        let queries = Queries.make(tenants, count: 200_000, skewed: true, allowShare: 0.5, seed: seed)
        let h = Harness()
        defer { h.stop() }
        try h.load(tenants, seed: seed, withRedis: false)
        let encoded = Encoded(target: .authzd, tenants: tenants, queries: queries)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        // Writer: role bindings added and soft-deleted in turn, as fast as they commit. Users
        // touched by writes are not among the checked answers' expectations (they only gain
        // and lose an extra binding to a role with no grants).
        let t = tenants[0]
        let writer = AuthzClient(endpoint: .unix(h.authzdSocket), group: group)
        let idleRole = ID.random()
        _ = try writer.send(.write([.upsert(.role(Role(id: idleRole, tenantId: t.id, name: "soak-idle")))])).wait()
        let stop = Date().addingTimeInterval(minutes * 60)
        let writes = NIOLockedValueBox(0)
        let users = t.users, tenantId = t.id
        let writerThread = Thread {
            var i = 0
            while Date() < stop {
                let rb = ID.random()
                let u = users[i % users.count]
                _ = try? writer.send(.write([.upsert(.roleBinding(RoleBinding(id: rb, tenantId: tenantId, userId: u, roleId: idleRole, scope: .self)))])).wait()
                _ = try? writer.send(.write([.deactivate(RecordRef(kind: .roleBinding, tenantId: tenantId, id: rb))])).wait()
                i += 1
                writes.withLockedValue { $0 += 2 }
            }
        }
        writerThread.start()
        print("| minute | checks/s | p50 µs | p99 µs | writes/s | authzd RSS MiB | anon MiB | wrong |")
        print("|---|---|---|---|---|---|---|---|")
        let began = Date()
        while Date() < stop {
            let w0 = writes.withLockedValue { $0 }
            var o = LoadOptions(target: .authzd, endpoint: h.authzdSocket, connections: connections, inFlight: inFlight, batch: 1,
                                duration: min(interval, max(1, stop.timeIntervalSinceNow)), maxRequests: nil)
            o.warmup = 0.2
            o.apiKey = h.checkerKey
            let r = try LoadRunner.run(o, encoded: encoded, group: group)
            let w1 = writes.withLockedValue { $0 }
            print(String(format: "| %.1f | %.0f | %.1f | %.1f | %.0f | %.1f | %.1f | %llu |", Date().timeIntervalSince(began) / 60, r.checksPerSecond, r.percentile(50),
                         r.percentile(99), Double(w1 - w0) / r.seconds, Double(h.authzd!.residentKiB()) / 1024, Double(h.authzd!.anonymousKiB()) / 1024, r.wrong))
            fflush(nil)  // every output stream: the line shows as soon as it is printed
        }
        writerThread.cancel()
        writer.close()
    }
}
