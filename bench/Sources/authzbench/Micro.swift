import ArgumentParser
import AuthzEngine
import AuthzIndex
import AuthzModel
import CMallocCounter
import Foundation

/// In-process engine micro-benchmarks with allocation counts.
struct Micro: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "In-process engine benchmarks: check, explain, list, compile, incremental writes, import.")
    @Option var size = "reference"
    @Option var seed: UInt64 = 1
    @Option(help: "Repeat the check loop this many rounds (for profiling).") var rounds = 40
    @Flag(help: "Stop after the check benchmark.") var checksOnly = false

    /// Imports `chunks` as `authzd import` and a chunked Import session apply a file: each
    /// chunk staged (parsed and checked), then one commit (fsynced); a new write wherever the
    /// next chunk would stage more than 200 MB (the `ten` dataset). Returns the records written.
    func importAtomically(_ chunks: [[UInt8]], into engine: Engine) throws -> Int {
        var records = 0
        var staging = ImportStaging(onlyTenant: nil)
        var staged = 0
        for c in chunks {
            if staged > 0 && staged + c.count > 200 << 20 {
                records += try engine.commit(staging).records
                staging = ImportStaging(onlyTenant: nil)
                staged = 0
            }
            try engine.stage(c, into: &staging)
            staged += c.count
        }
        return records + (try engine.commit(staging).records)
    }

    func run() throws {
        guard let s = DatasetSize.named(size) else { throw ValidationError("size must be small, reference or ten") }
        let tenants = Dataset.generate(size: s, seed: seed)
        let chunks = Dataset.jsonlChunks(tenants, seed: seed, chunk: 1 << 30)
        let dir = "/tmp/authzbench-micro-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var report: [(String, String)] = []
        do {
            // The change log's cost (docs/watch.md): the same import without it, first.
            let bare = dir + "-nolog"
            defer { try? FileManager.default.removeItem(atPath: bare) }
            var options = EngineOptions()
            options.store.changeRetention = 0
            let plain = try Engine(directory: bare, options: options)
            let t = Date()
            let n = try importAtomically(chunks, into: plain)
            let secs = Date().timeIntervalSince(t)
            report.append(("bulk import, no change log", String(format: "%d records in %.2f s = %.0f records/s", n, secs, Double(n) / secs)))
        }
        do {
            let engine = try Engine(directory: dir)
            // Bulk import (the whole dataset as one atomic write, fsync at commit).
            let t0 = Date()
            let records = try importAtomically(chunks, into: engine)
            let importSecs = Date().timeIntervalSince(t0)
            report.append(("bulk import", String(format: "%d records in %.2f s = %.0f records/s (with the change log)", records, importSecs, Double(records) / importSecs)))
        }
        // Open + compile from LMDB.
        let t1 = Date()
        let engine = try Engine(directory: dir)
        let openSecs = Date().timeIntervalSince(t1)
        let users = tenants.reduce(0) { $0 + $1.users.count }
        report.append(("open and compile", String(format: "%d tenant(s), %d users in %.3f s", tenants.count, users, openSecs)))
        let indexBytes = engine.snapshot.allTenants.reduce(0) { $0 + $1.approximateBytes }
        report.append(("index memory", String(format: "%.1f MB = %.1f bytes per user (hash tables at capacity, role bitsets, role-set pool)", Double(indexBytes) / 1e6, Double(indexBytes) / Double(users))))
        let rss0 = rssKiB()
        report.append(("process RSS after open", "\(rss0 / 1024) MiB"))
        // Check by permission name.
        let queries = Queries.make(tenants, count: 1 << 16, skewed: false, allowShare: 0.5, seed: seed)
        let prepared: [(ID, ID, String, Scope, Bool)] = queries.map { q in
            let t = tenants[Int(q.tenant)]
            return (t.id, t.users[Int(q.user)], t.permissionNames[Int(q.permission)], q.scope, q.allowed)
        }
        var wrong = 0
        for p in prepared where (try engine.check(tenant: p.0, user: p.1, permission: p.2, scope: p.3)).allowed != p.4 { wrong += 1 }
        report.append(("check answers vs dataset", wrong == 0 ? "all \(prepared.count) correct" : "\(wrong) WRONG"))
        var samples: [Double] = []
        let perRound = prepared.count
        var allowed = 0
        let tenantIds = prepared.map(\.0), userIds = prepared.map(\.1), names = prepared.map(\.2), scopes = prepared.map(\.3)
        let a0 = malloc_counter_allocations()
        for _ in 0..<rounds {
            let start = DispatchTime.now().uptimeNanoseconds
            for i in 0..<perRound where (try? engine.check(tenant: tenantIds[i], user: userIds[i], permission: names[i], scope: scopes[i]))?.allowed == true { allowed += 1 }
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / Double(perRound))
        }
        let allocs = malloc_counter_allocations() - a0
        samples.sort()
        report.append(("check by name", String(format: "median %.1f ns per check (rounds of %d; min %.1f, max %.1f); %.4f allocations per check", samples[rounds / 2], perRound, samples[0], samples[rounds - 1], Double(allocs) / Double(rounds * perRound))))
        if checksOnly {
            for (k, v) in report { print("- \(k): \(v)") }
            return
        }
        // Explain.
        var t = Date()
        for p in prepared.prefix(2000) { _ = try engine.explain(tenant: p.0, user: p.1, permission: p.2, scope: p.3) }
        report.append(("explain", String(format: "%.1f µs each", Date().timeIntervalSince(t) / 2000 * 1e6)))
        // List a user's permissions.
        t = Date()
        for p in prepared.prefix(2000) { _ = try engine.permissions(tenant: p.0, user: p.1) }
        report.append(("list user permissions", String(format: "%.1f µs each", Date().timeIntervalSince(t) / 2000 * 1e6)))
        t = Date()
        _ = try engine.users(tenant: tenants[0].id, permission: tenants[0].permissionNames[0], scope: .self, limit: 1000)
        report.append(("list users of a permission", String(format: "%.1f ms (scans %d users)", Date().timeIntervalSince(t) * 1000, tenants[0].users.count)))
        // One role binding written and visible.
        let td = tenants[0]
        var lat: [Double] = []
        for i in 0..<200 {
            let rb = RoleBinding(id: .random(), tenantId: td.id, userId: td.users[i], roleId: td.roles[(i * 7) % td.roles.count], scope: .self)
            let s0 = DispatchTime.now().uptimeNanoseconds
            try engine.write([.upsert(.roleBinding(rb))])
            _ = try engine.check(tenant: td.id, user: td.users[i], permission: td.permissionNames[0], scope: .self)
            lat.append(Double(DispatchTime.now().uptimeNanoseconds - s0) / 1e6)
        }
        lat.sort()
        report.append(("role binding written + visible (fsync)", String(format: "median %.3f ms, p99 %.3f ms", lat[lat.count / 2], lat[lat.count * 99 / 100])))
        // Change one role's grants where many users hold it.
        let holders = td.userProfile.indices.filter { td.profiles[Int(td.userProfile[$0])].contains { $0.0 == 0 } }.count
        lat = []
        for i in 0..<50 {
            let pb = PermissionBinding(id: .random(), tenantId: td.id, roleId: td.roles[0], permissionId: td.permissionIDs[(i * 13) % td.permissionIDs.count], scope: .tenant)
            let s0 = DispatchTime.now().uptimeNanoseconds
            try engine.write([.upsert(.permissionBinding(pb))])
            lat.append(Double(DispatchTime.now().uptimeNanoseconds - s0) / 1e6)
        }
        lat.sort()
        report.append(("role grant changed (role held by \(holders) users directly, more through inheritance)", String(format: "median %.3f ms, p99 %.3f ms", lat[lat.count / 2], lat[lat.count * 99 / 100])))
        for (k, v) in report { print("- \(k): \(v)") }
    }

    func rssKiB() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") { return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0 }
        return 0
    }
}
