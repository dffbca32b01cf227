import AuthzLog
import AuthzModel
import Foundation
import Logging
import Metrics

/// Where user events come from (`--events`, docs/events.md).
public struct EventSettings: Sendable, Equatable {
    /// `nats://H:P,...` servers and the subject events are published on.
    public var servers: [String]
    public var subject: String
    /// The durable consumer's name: daemons sharing it share the events (one applies each).
    public var group = "authzd"
    /// Where undecodable or inapplicable events go, with the reason in a header.
    public var deadLetterSubject: String
    /// Seconds before an event fetched but not acknowledged (the daemon died holding it) is
    /// delivered again.
    public var ackWaitSeconds = 10

    /// Parses `nats://H1:P1[,H2:P2...]/SUBJECT`. INVALID_ARGUMENT naming `events`; `kafka://`
    /// is refused with what to use instead (not in this release).
    public static func parse(_ text: String) throws -> EventSettings {
        if text.hasPrefix("kafka://") {
            throw AuthzError.invalid("events", "kafka:// is not supported by this release yet (docs/events.md): publish the events on a NATS subject and use nats://HOST:PORT/SUBJECT")
        }
        guard text.hasPrefix("nats://") else { throw AuthzError.invalid("events", "must be nats://HOST:PORT[,HOST:PORT...]/SUBJECT (got \"\(text)\")") }
        let rest = text.dropFirst("nats://".count)
        guard let slash = rest.firstIndex(of: "/") else { throw AuthzError.invalid("events", "names no subject: nats://HOST:PORT/SUBJECT") }
        let subject = String(rest[rest.index(after: slash)...])
        guard !subject.isEmpty, !subject.contains(" "), !subject.contains(">"), !subject.contains("*"),
              !subject.hasPrefix("."), !subject.hasSuffix("."), !subject.contains("..") else {
            throw AuthzError.invalid("events", "\"\(subject)\" is not a NATS subject without wildcards")
        }
        let servers = try LogSettings.parseServers(String(rest[..<slash]), field: "events")
        return EventSettings(servers: servers, subject: subject, deadLetterSubject: "dead-letter." + subject)
    }
}

/// Consumes user events from a NATS JetStream subject through a durable pull consumer, hands
/// each to the `EventIngestor`, and acknowledges it only once its write is durable (applied,
/// or dead-lettered and the dead letter stored). A message that cannot be written now is
/// retried in place, so nothing behind it is acknowledged first. One thread.
final class NATSEventSource: @unchecked Sendable {
    let settings: EventSettings
    let ingestor: EventIngestor
    let logger: Logger
    private let log: JetStreamLog
    private let lock = NSLock()
    private var stopped = false
    /// Whether events may be applied yet: in log mode, not before this replica has caught up
    /// with the log (an event for a tenant it has not applied yet would be dead-lettered).
    var isReady: () -> Bool = { true }
    /// Called after each applied event (the audit trail).
    var onApplied: ((WriteOp, UInt64) -> Void)?
    private let lag = Gauge(label: "authzd_events_lag")
    private let consumed = Counter(label: "authzd_events_consumed_total")

    init(settings: EventSettings, ingestor: EventIngestor, replicas: Int, logger: Logger) throws {
        self.settings = settings
        self.ingestor = ingestor
        self.logger = logger
        var l = LogSettings(servers: settings.servers)
        l.replicas = replicas
        log = try JetStreamLog(settings: l, name: "authzd-events")
    }

    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }

    func start() {
        let t = Thread { [self] in run() }
        t.name = "authzd-events"
        t.start()
    }

    func stop() {
        lock.lock(); stopped = true; lock.unlock()
    }

    private func run() {
        var waited = false
        while !isStopped && !isReady() {
            if !waited { logger.info("events: waiting until this replica has caught up with the log") }
            waited = true
            Thread.sleep(forTimeInterval: 0.2)
        }
        while !isStopped {
            do {
                let consumer = try log.pullConsumer(subject: settings.subject, durable: settings.group,
                                                    ackWaitMillis: Int64(settings.ackWaitSeconds) * 1000, createStream: "authzd-events")
                defer { consumer.close() }
                logger.info("events: consuming", metadata: ["events.subject": "\(settings.subject)", "events.group": "\(settings.group)"])
                while !isStopped {
                    let batch = try consumer.fetch(max: 16, timeoutMillis: 500)
                    for m in batch {
                        consumed.increment()
                        try process(m)
                        lag.record(Int64(m.pending))
                    }
                    if batch.isEmpty { lag.record(0) }
                }
            } catch {
                if !isStopped {
                    logger.warning("events: consumer failed; retrying", metadata: ["error": "\(error)"])
                    Thread.sleep(forTimeInterval: 1)
                }
            }
        }
        log.close()
    }

    /// One message, until it is acknowledged (or the daemon stops: then the server delivers it
    /// again later).
    private func process(_ m: PulledMessage) throws {
        var delay = 0.1
        while !isStopped {
            let outcome = ingestor.handle(m.payload)
            ingestor.count(outcome)
            switch outcome {
            case .applied(let revision, let op):
                onApplied?(op, revision)
                try m.ack()
                return
            case .duplicate, .notHeld:
                try m.ack()
                return
            case .deadLetter(let reason, let eventId):
                logger.warning("events: dead-lettered", metadata: ["events.sequence": "\(m.sequence)", "reason": "\(reason)"])
                var headers = [("Authz-Dead-Letter-Reason", String(reason.prefix(1000))), ("Authz-Source-Subject", m.subject),
                               ("Authz-Source-Sequence", String(m.sequence))]
                if let id = eventId { headers.append(("Authz-Event-Id", id.description)) }
                _ = try log.publishCreatingStream(subject: settings.deadLetterSubject, id: "dl-\(m.subject)-\(m.sequence)", headers: headers,
                                                  payload: m.payload, timeoutMillis: 5000, createStream: "authzd-dead-letter")
                try m.ack()
                return
            case .retry(let why):
                logger.warning("events: cannot apply now; retrying the same event", metadata: ["events.sequence": "\(m.sequence)", "error": "\(why)"])
                Thread.sleep(forTimeInterval: delay)
                delay = min(delay * 2, 5)
            }
        }
    }
}
