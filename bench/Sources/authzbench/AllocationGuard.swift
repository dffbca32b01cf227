import AuthzEngine
import AuthzModel
import AuthzWire
import CMallocCounter
import Foundation

/// Asserts, in process, that the check path allocates nothing: `Engine.check` by name, and the
/// daemon's in-place path (`CheckFrame.parse` of a request frame, the decision by the
/// permission's bytes, the answer written into a buffer). Counts, never times: safe in CI.
enum AllocationGuard {
    static func run(seed: UInt64 = 42) throws {
        let tenants = Dataset.generate(size: DatasetSize.named("small")!, seed: seed)
        let dir = "/tmp/authzbench-alloc-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let engine = try Engine(directory: dir)
        for c in Dataset.jsonlChunks(tenants, seed: seed, chunk: 1 << 30) { _ = try engine.importJSONL(c) }
        let queries = Queries.make(tenants, count: 4096, skewed: false, allowShare: 0.5, seed: seed)
        let prepared = queries.map { q -> CheckCall in
            let t = tenants[Int(q.tenant)]
            return CheckCall(tenantId: t.id, userId: t.users[Int(q.user)], permission: t.permissionNames[Int(q.permission)], scope: q.scope, minRevision: 0)
        }
        let frames = prepared.map { WireCodec.encodeRequest(WireRequest(requestId: 7, call: .success(.check($0)))) }
        var items: [CheckQuery] = []
        items.reserveCapacity(16)
        var out = [UInt8](repeating: 0, count: 256)
        var allowed = 0
        // Warm up (thread snapshot cache, lazy tables), then count.
        for c in prepared where try engine.check(tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope).allowed { allowed += 1 }
        let a0 = malloc_counter_allocations()
        for _ in 0..<4 {
            for c in prepared where try engine.check(tenant: c.tenantId, user: c.userId, permission: c.permission, scope: c.scope).allowed { allowed += 1 }
        }
        let byName = malloc_counter_allocations() - a0
        let a1 = malloc_counter_allocations()
        for f in frames {
            f.withUnsafeBytes { raw in
                guard let parsed = CheckFrame.parse(raw, maxItems: 100, into: &items) else { return }
                let q = items[0]
                let d = engine.withSnapshot { $0.decide(tenant: q.tenant, user: q.user, permissionBytes: UnsafeRawBufferPointer(rebasing: raw[q.permissionStart..<q.permissionEnd]), scope: q.scope) }
                if d.allowed { allowed += 1 }
                _ = out.withUnsafeMutableBytes { CheckFrame.writeCheckResponse(requestId: parsed.requestId, d, to: $0) }
            }
        }
        let inPlace = malloc_counter_allocations() - a1
        print("allocation guard: \(byName) allocations in \(4 * prepared.count) checks by name, \(inPlace) in \(frames.count) in-place frame checks (\(allowed) allowed)")
        if byName != 0 || inPlace != 0 { throw HarnessError("the check path allocates (by name: \(byName), in place: \(inPlace)); it must allocate nothing") }
    }
}
