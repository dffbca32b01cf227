import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire
import Foundation
import Logging
import Metrics

/// Turns user lifecycle events (proto/events.proto, docs/events.md) into user writes through
/// the normal validated write path (and, in log mode, through the log). Source-agnostic: a
/// consumer (an `EventSource`: `NATSEventSource`, `KafkaEventSource`) hands it each message
/// and acts on the outcome.
final class EventIngestor: Sendable {
    /// What became of one message.
    enum Outcome: Equatable {
        /// Written at this revision, by this operation.
        case applied(UInt64, WriteOp)
        /// The user is already at this event's time or later (a redelivery, a duplicate, an
        /// older event): nothing written.
        case duplicate
        /// A tenant of another shard (log mode): that shard's daemons take it.
        case notHeld
        /// Never applicable (undecodable, unknown tenant, invalid field): goes to the dead
        /// letters with this reason, and the stream moves on.
        case deadLetter(reason: String, eventId: ID?)
        /// Not now (the log unreachable, the disk full): try the same message again.
        case retry(String)
    }

    let engine: Engine
    let holds: @Sendable (ID) -> Bool
    let refusing: @Sendable () -> AuthzError?
    private let counters: [String: Counter]

    /// `holds` says whether this daemon holds a tenant (always true outside log shards);
    /// `refusing` names why this replica refuses reads and writes now (log mode: behind its
    /// stream's retention, or ahead of a recreated stream), nil when it serves.
    init(engine: Engine, holds: @escaping @Sendable (ID) -> Bool = { _ in true }, refusing: @escaping @Sendable () -> AuthzError? = { nil }) {
        self.engine = engine
        self.holds = holds
        self.refusing = refusing
        var c: [String: Counter] = [:]
        for o in ["applied", "duplicate", "not_held", "dead_lettered", "retried"] {
            c[o] = Counter(label: "authzd_events_total", dimensions: [("outcome", o)])
        }
        counters = c
    }

    func count(_ outcome: Outcome) {
        switch outcome {
        case .applied: counters["applied"]?.increment()
        case .duplicate: counters["duplicate"]?.increment()
        case .notHeld: counters["not_held"]?.increment()
        case .deadLetter: counters["dead_lettered"]?.increment()
        case .retry: counters["retried"]?.increment()
        }
    }

    /// Handles one message. Blocks for the write (call off event loops).
    func handle(_ payload: [UInt8]) -> Outcome {
        let event: UserEvent
        do {
            event = try EventCodec.decode(payload)
        } catch let e as AuthzError {
            return .deadLetter(reason: "\(e.code.name): \(e.message)", eventId: nil)
        } catch {
            return .deadLetter(reason: "undecodable: \(error)", eventId: nil)
        }
        guard holds(event.tenantId) else { return .notHeld }
        // A replica that refuses reads cannot judge the event (its copy of the user may be
        // stale), and its writes are refused: the event waits instead of going to the dead
        // letters, which are for events that can never apply.
        if let refused = refusing() { return .retry("\(refused.code.name): \(refused.message)") }
        // A time far ahead would freeze the user against every later event (its own clock wins).
        let maxSkew: Int64 = 3600 * 1_000_000
        if event.occurredAt > Timestamp.now() + maxSkew {
            return .deadLetter(reason: "INVALID_ARGUMENT: event.occurred_at \(Timestamp.format(event.occurredAt)) is more than an hour in the future", eventId: event.eventId)
        }
        let known = engine.withSnapshot { $0.tenant(event.tenantId) != nil }
        guard known else {
            return .deadLetter(reason: "NOT_FOUND: event.tenant_id \(event.tenantId) does not exist", eventId: event.eventId)
        }
        var stored: User?
        do {
            if case .user(let u) = try engine.get(RecordRef(kind: .user, tenantId: event.tenantId, id: event.userId)) { stored = u }
        } catch let e as AuthzError where e.code == .notFound {
            stored = nil
        } catch let e as AuthzError where e.code == .alreadyExists || e.code == .invalidArgument {
            return .deadLetter(reason: "\(e.code.name): \(e.message)", eventId: event.eventId)
        } catch {
            return .retry("\(error)")
        }
        if let s = stored, s.fields.updatedAt >= event.occurredAt { return .duplicate }
        do {
            let op = try event.writeOp(stored: stored)
            return .applied(try engine.write([op]), op)
        } catch let e as AuthzError {
            switch e.code {
            case .invalidArgument, .notFound, .alreadyExists, .failedPrecondition, .permissionDenied:
                return .deadLetter(reason: "\(e.code.name): \(e.message)", eventId: event.eventId)
            default:
                return .retry("\(e.code.name): \(e.message)")
            }
        } catch {
            return .retry("\(error)")
        }
    }
}
