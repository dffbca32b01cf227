import AuthzLog
import AuthzModel
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers

/// Consumes user events from a NATS JetStream subject through a durable pull consumer, hands
/// each to the `EventIngestor`, and acknowledges it only once its write is durable (applied,
/// or dead-lettered and the dead letter stored). A message that cannot be written now is
/// retried in place, so nothing behind it is acknowledged first. One thread.
final class NATSEventSource: EventSource, @unchecked Sendable {  // `stopped` under `lock`; the hooks are set before `start`
    let settings: EventSettings
    let ingestor: EventIngestor
    let logger: Logger
    private let log: JetStreamLog
    private let lock = NIOLock()
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

    /// Starts the consumer thread (returns at once).
    func start() {
        let t = Thread { [self] in run() }
        t.name = "authzd-events"
        t.start()
    }

    /// Asks the consumer thread to stop after its current fetch (at most about 0.5 s); an
    /// event in hand but not acknowledged is delivered again later.
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
