import AuthzIndex
import AuthzModel
import Metrics

/// The daemon's metrics, through swift-metrics (the Prometheus backend when
/// `--metrics-address` is set; no-op handlers otherwise). No label identifies a tenant
/// (cardinality); reasons, codes and call names are bounded sets.
final class ServerMetrics: Sendable {
    /// Checks by reason (the decision follows from it: allow iff granted).
    let checks: [Counter]
    let checkLatency: Timer
    let batchSize: Recorder
    let writes: Counter
    let writeLatency: Timer
    let errors: [Counter]
    let connectionsOpened: Counter
    let connectionsRefused: Counter
    let connectionsOpen: Gauge
    let slowClients: Counter
    /// Audit-trail lines written and fsynced, and lines dropped (queue full, or a failed write).
    let auditLines: Counter
    let auditDropped: Counter
    let revision: Gauge
    let indexBytes: Gauge
    let users: Gauge
    let tenants: Gauge
    /// Requests waiting for a `min_revision` this daemon has not reached (bounded by
    /// `Engine.maxRevisionWaiters`; a closed connection's waits are withdrawn at once).
    let revisionWaiters: Gauge
    let mapSize: Gauge
    let mapUsed: Gauge
    /// Log mode: the last stream sequence applied here, the stream's last as last seen, the
    /// difference, and whether a NATS connection is up (1/0).
    let logApplied: Gauge
    let logStreamLast: Gauge
    let logLag: Gauge
    let logConnected: Gauge
    /// Gateway (HTTP and Envoy gRPC) decisions: [deny, allow].
    let gatewayChecks: [Counter]

    init() {
        // Indexed by reason raw value - 1 (Reason.allCases is in raw-value order).
        checks = Reason.allCases.map { r in
            Counter(label: "authzd_checks_total", dimensions: [("decision", r == .granted ? "allow" : "deny"), ("reason", r.name)])
        }
        checkLatency = Timer(label: "authzd_check_request_duration_seconds", preferredDisplayUnit: .microseconds)
        batchSize = Recorder(label: "authzd_batch_check_size", aggregate: true)
        writes = Counter(label: "authzd_writes_total")
        writeLatency = Timer(label: "authzd_write_duration_seconds", preferredDisplayUnit: .milliseconds)
        errors = AuthzError.Code.allCases.map { Counter(label: "authzd_errors_total", dimensions: [("code", $0.name)]) }
        connectionsOpened = Counter(label: "authzd_connections_opened_total")
        connectionsRefused = Counter(label: "authzd_connections_refused_total")
        connectionsOpen = Gauge(label: "authzd_connections_open")
        slowClients = Counter(label: "authzd_slow_clients_closed_total")
        auditLines = Counter(label: "authzd_audit_lines_total")
        auditDropped = Counter(label: "authzd_audit_dropped_total")
        revision = Gauge(label: "authzd_revision")
        indexBytes = Gauge(label: "authzd_index_bytes")
        users = Gauge(label: "authzd_index_users")
        tenants = Gauge(label: "authzd_index_tenants")
        revisionWaiters = Gauge(label: "authzd_revision_waiters")
        mapSize = Gauge(label: "authzd_lmdb_map_size_bytes")
        mapUsed = Gauge(label: "authzd_lmdb_map_used_bytes")
        logApplied = Gauge(label: "authzd_log_applied_sequence")
        logStreamLast = Gauge(label: "authzd_log_stream_last_sequence")
        logLag = Gauge(label: "authzd_log_lag")
        logConnected = Gauge(label: "authzd_log_connected")
        gatewayChecks = ["deny", "allow"].map { Counter(label: "authzd_gateway_checks_total", dimensions: [("decision", $0)]) }
    }

    @inline(__always) func check(_ reason: Reason) {
        checks[Int(reason.rawValue) - 1].increment()
    }

    /// Counts one gateway decision.
    @inline(__always) func gatewayDecisions(allowed: Bool) {
        gatewayChecks[allowed ? 1 : 0].increment()
    }

    func error(_ code: AuthzError.Code) {
        if let i = AuthzError.Code.allCases.firstIndex(of: code) { errors[i].increment() }
    }
}
