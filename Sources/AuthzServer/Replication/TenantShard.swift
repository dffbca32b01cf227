import AuthzModel
import Foundation

/// The tenants a daemon holds in log mode (`--log-tenants`, `--log-shard`; docs/scale-out.md).
/// Every daemon reads the whole stream; it applies only its tenants' messages (and keys) and
/// steps its revision over the others, so that revisions stay stream sequences everywhere.
public enum TenantShard: Sendable, Equatable, CustomStringConvertible {
    /// Every tenant.
    case all
    /// Exactly these tenants.
    case tenants(Set<ID>)
    /// Shard `index` of `count`: the tenants whose `stableHash % count == index`.
    case hash(index: Int, count: Int)

    /// Whether this daemon holds `tenant`.
    public func holds(_ tenant: ID) -> Bool {
        switch self {
        case .all: return true
        case .tenants(let set): return set.contains(tenant)
        case .hash(let index, let count): return Int(TenantShard.stableHash(tenant) % UInt64(count)) == index
        }
    }

    /// FNV-1a (64-bit) over the tenant id's 16 bytes: the same on every machine and release,
    /// so a fleet's shards never move under it.
    public static func stableHash(_ tenant: ID) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in tenant.bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }

    /// `all`, `shard K/N` or `tenants ID,ID,...` (sorted): also how the data directory records
    /// which shard built it.
    public var description: String {
        switch self {
        case .all: return "all"
        case .tenants(let set): return "tenants " + set.map(\.description).sorted().joined(separator: ",")
        case .hash(let index, let count): return "shard \(index)/\(count)"
        }
    }

    /// Parses `--log-tenants` (comma-separated ids) or `--log-shard K/N` (0 ≤ K < N); at most
    /// one of them. INVALID_ARGUMENT naming the flag and the rule.
    public static func parse(tenants: String?, shard: String?) throws -> TenantShard {
        if tenants != nil && shard != nil { throw AuthzError.invalid("log-shard", "cannot be combined with --log-tenants") }
        if let t = tenants {
            var set = Set<ID>()
            for part in t.split(separator: ",") {
                let s = part.trimmingCharacters(in: .whitespaces)
                guard let id = ID(s) else { throw AuthzError.invalid("log-tenants", "\"\(s)\" is not a tenant id (a UUID)") }
                set.insert(id)
            }
            guard !set.isEmpty else { throw AuthzError.invalid("log-tenants", "must name at least one tenant id") }
            return .tenants(set)
        }
        if let s = shard {
            let parts = s.split(separator: "/")
            guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), n >= 1, n <= 4096, k >= 0, k < n else {
                throw AuthzError.invalid("log-shard", "must be K/N with 0 <= K < N <= 4096 (got \"\(s)\")")
            }
            return n == 1 ? .all : .hash(index: k, count: n)
        }
        return .all
    }
}
