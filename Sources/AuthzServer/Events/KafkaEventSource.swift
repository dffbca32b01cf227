private import CKafka
import AuthzEngine
import AuthzModel
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// Consumes user events from a Kafka topic as a member of a consumer group (`events-group`),
/// hands each message to the `EventIngestor`, and commits its offset (synchronously, offset + 1)
/// only once its write is durable (applied, a duplicate, or not held here) or its dead letter
/// is stored (produced with acks=all, delivery report received). A message that cannot be
/// written now is retried in place with backoff, so no offset behind it is committed first.
/// One thread; offsets are never committed automatically (`enable.auto.commit=false`,
/// `enable.auto.offset.store=false`), and a group without a committed offset starts at the
/// earliest message.
///
/// The only file that talks to librdkafka: no librdkafka type leaves it.
final class KafkaEventSource: EventSource, @unchecked Sendable {  // `stopped`/`started` under `lock`; the hooks are set before `start`
    let settings: EventSettings
    let ingestor: EventIngestor
    let logger: Logger
    /// See `EventSource.isReady`.
    var isReady: () -> Bool = { true }
    /// See `EventSource.onApplied`.
    var onApplied: ((WriteOp, UInt64) -> Void)?
    private let consumer: KafkaHandle
    private let producer: KafkaHandle
    private let lock = NIOLock()
    private var stopped = false
    private var started = false
    private let finished = Latch()
    private let lag = Gauge(label: "authzd_events_lag")
    private let consumed = Counter(label: "authzd_events_consumed_total")

    /// Creates the group consumer and the dead-letter producer (neither connects yet: librdkafka
    /// connects in the background). Throws `ConfigError` when librdkafka refuses the
    /// configuration (e.g. a session timeout it does not accept).
    init(settings: EventSettings, ingestor: EventIngestor, logger: Logger) throws {
        precondition(settings.transport == .kafka, "KafkaEventSource needs kafka:// settings")
        self.settings = settings
        self.ingestor = ingestor
        self.logger = logger
        let brokers = settings.servers.joined(separator: ",")
        let session = settings.sessionTimeoutMillis
        consumer = try KafkaHandle(consumer: true, logger: logger, config: [
            ("bootstrap.servers", brokers),
            ("client.id", "authzd"),
            ("group.id", settings.group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", String(session)),
            ("heartbeat.interval.ms", String(max(1, session / 4))),
            // librdkafka refuses a poll interval below the session timeout.
            ("max.poll.interval.ms", String(max(300_000, session))),
        ])
        producer = try KafkaHandle(consumer: false, logger: logger, config: [
            ("bootstrap.servers", brokers),
            ("client.id", "authzd-dead-letter"),
            ("acks", "all"),
            ("message.timeout.ms", "10000"),
            ("linger.ms", "0"),
        ])
    }

    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }

    /// Starts the consumer thread (returns at once). Called once; does nothing after `stop()`.
    func start() {
        lock.lock()
        guard !stopped, !started else { lock.unlock(); return }
        started = true
        lock.unlock()
        let t = Thread { [self] in
            run()
            consumer.close()
            producer.close()
            finished.signal()
        }
        t.name = "authzd-events"
        t.start()
    }

    /// Stops consuming and waits (at most 5 s) for the thread to leave the group and destroy
    /// its clients (rd_kafka_consumer_close, rd_kafka_destroy); polls last at most 0.2 s, so
    /// this normally returns within a second. A message in hand is not committed: the group
    /// delivers it again (a duplicate then, if its write was made).
    func stop() {
        lock.lock()
        stopped = true
        let running = started
        lock.unlock()
        if running {
            if !finished.wait(timeout: .seconds(5)) { logger.warning("events: the Kafka consumer did not close within 5 s") }
        } else {
            consumer.close()
            producer.close()
        }
    }

    private func run() {
        var waited = false
        while !isStopped && !isReady() {
            if !waited { logger.info("events: waiting until this replica has caught up with the log") }
            waited = true
            Thread.sleep(forTimeInterval: 0.2)
        }
        if isStopped { return }
        do {
            try consumer.subscribe(topic: settings.subject)
        } catch {
            logger.error("events: cannot subscribe; not consuming", metadata: ["events.topic": "\(settings.subject)", "error": "\(error)"])
            return
        }
        logger.info("events: consuming", metadata: ["events.transport": "kafka", "events.librdkafka": "\(String(cString: rd_kafka_version_str()))",
                                                     "events.brokers": "\(settings.servers.joined(separator: ","))",
                                                     "events.topic": "\(settings.subject)", "events.group": "\(settings.group)"])
        while !isStopped {
            switch consumer.poll(timeoutMillis: 200) {
            case .none:
                break
            case .failure(let e):
                // Transient (a broker down, a rebalance): librdkafka reconnects by itself.
                logger.warning("events: consumer error", metadata: ["error": "\(e)"])
            case .message(let m):
                consumed.increment()
                process(m)
            }
            lag.record(max(0, consumer.lag()))
        }
    }

    /// One message, until its offset is committed (or the daemon stops: then the group
    /// delivers it again later).
    private func process(_ m: KafkaMessage) {
        var delay = 0.1
        while !isStopped {
            let outcome = ingestor.handle(m.payload)
            ingestor.count(outcome)
            switch outcome {
            case .applied(let revision, let op):
                onApplied?(op, revision)
                commit(m)
                return
            case .duplicate, .notHeld:
                commit(m)
                return
            case .deadLetter(let reason, let eventId):
                logger.warning("events: dead-lettered", metadata: ["events.partition": "\(m.partition)", "events.offset": "\(m.offset)", "reason": "\(reason)"])
                var headers = [("Authz-Dead-Letter-Reason", String(reason.prefix(1000))), ("Authz-Source-Topic", m.topic),
                               ("Authz-Source-Partition", String(m.partition)), ("Authz-Source-Offset", String(m.offset))]
                if let id = eventId { headers.append(("Authz-Event-Id", id.description)) }
                if deadLetter(m, headers: headers) { commit(m) }
                return
            case .retry(let why):
                logger.warning("events: cannot apply now; retrying the same event", metadata: ["events.partition": "\(m.partition)", "events.offset": "\(m.offset)", "error": "\(why)"])
                pause(delay)
                delay = min(delay * 2, 5)
            }
        }
    }

    /// Produces the dead letter until the broker has stored it (true), retrying with backoff;
    /// false when the daemon stops first.
    private func deadLetter(_ m: KafkaMessage, headers: [(String, String)]) -> Bool {
        var delay = 0.1
        while !isStopped {
            do {
                try producer.produce(topic: settings.deadLetterSubject, key: m.key, payload: m.payload, headers: headers, timeoutMillis: 15_000)
                return true
            } catch {
                logger.warning("events: cannot store the dead letter; retrying", metadata: ["events.dead_letter": "\(settings.deadLetterSubject)", "error": "\(error)"])
                pause(delay)
                delay = min(delay * 2, 5)
            }
        }
        return false
    }

    /// Commits offset + 1 of `m`'s partition, a few tries. When it cannot (the partition went
    /// to another member in a rebalance), the message will be delivered again: its write is
    /// already durable, so it is then a duplicate (a dead letter may be stored twice).
    private func commit(_ m: KafkaMessage) {
        var delay = 0.1
        for attempt in 1...5 {
            do {
                try consumer.commit(topic: m.topic, partition: m.partition, offset: m.offset + 1)
                return
            } catch {
                if attempt == 5 || isStopped {
                    logger.warning("events: cannot commit; the event will be delivered again", metadata: ["events.partition": "\(m.partition)", "events.offset": "\(m.offset)", "error": "\(error)"])
                    return
                }
                pause(delay)
                delay *= 2
            }
        }
    }

    /// Sleeps `seconds`, waking early when the source stops.
    private func pause(_ seconds: Double) {
        let until = Date().addingTimeInterval(seconds)
        while !isStopped && Date() < until { Thread.sleep(forTimeInterval: min(0.1, max(0, until.timeIntervalSinceNow))) }
    }
}

/// A librdkafka error: its code (`rd_kafka_resp_err_t`, with its name, e.g.
/// `_TRANSPORT`) and what was being done. The one place this file turns codes into errors.
private struct KafkaError: Error, CustomStringConvertible {
    let code: Int32
    let name: String
    let message: String
    var description: String { "\(message) [\(name)]" }

    /// The NUL-terminated text librdkafka wrote into `buffer`.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    fileprivate init(_ code: rd_kafka_resp_err_t, _ message: String) {
        self.code = code.rawValue
        name = String(cString: rd_kafka_err2name(code))
        self.message = message
    }
}

/// One consumed message, copied out of librdkafka's (which is destroyed at once: librdkafka's
/// rd_kafka_destroy waits for every message still held).
private struct KafkaMessage {
    let topic: String
    let partition: Int32
    let offset: Int64
    let key: [UInt8]
    let payload: [UInt8]
}

private enum Polled {
    case none
    case message(KafkaMessage)
    case failure(KafkaError)
}

/// Owns one librdkafka client (`rd_kafka_t`): a group consumer or a producer. Closed (consumer:
/// leaves the group) and destroyed by `close()` or at deinit, once. Used from one thread at a
/// time (the source's), except `close()` before `start()`.
private final class KafkaHandle {
    private let rk: OpaquePointer
    private let isConsumer: Bool
    private var closed = false
    private var errorBuffer = [CChar](repeating: 0, count: 512)
    /// The `KafkaLog` librdkafka's threads log through, retained until the client is destroyed.
    private let log: Unmanaged<KafkaLog>

    /// The corresponding C functions are rd_kafka_conf_set and rd_kafka_new (through
    /// `ckafka_new`); librdkafka's own log lines go to `logger`. Throws `ConfigError` naming the
    /// refused property.
    init(consumer: Bool, logger: Logger, config: [(String, String)]) throws {
        isConsumer = consumer
        let log = Unmanaged.passRetained(KafkaLog(logger: logger, client: consumer ? "consumer" : "dead-letter producer"))
        var buffer = [CChar](repeating: 0, count: 512)
        let made = withCStrings(config.map(\.0)) { keys in
            withCStrings(config.map(\.1)) { values in
                ckafka_new(consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, keys, values, Int32(config.count),
                           { closure, level, facility, text in
                               guard let closure, let text else { return }
                               Unmanaged<KafkaLog>.fromOpaque(closure).takeUnretainedValue()
                                   .write(level: level, facility: facility.map { String(cString: $0) } ?? "", text: String(cString: text))
                           },
                           log.toOpaque(), &buffer, Int32(buffer.count))
            }
        }
        guard let made else {
            log.release()
            throw ConfigError("events: librdkafka refused the \(consumer ? "consumer" : "producer"): \(KafkaError.text(buffer))")
        }
        rk = made
        self.log = log
    }

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        ckafka_destroy(rk, isConsumer ? 1 : 0)  // joins librdkafka's threads: no log line after it
        log.release()
    }

    /// The corresponding C function is rd_kafka_subscribe.
    func subscribe(topic: String) throws {
        let e = ckafka_subscribe(rk, topic, &errorBuffer, Int32(errorBuffer.count))
        try check(e)
    }

    /// The next message or consumer error, waiting up to `timeoutMillis`. The corresponding C
    /// function is rd_kafka_consumer_poll; the message is copied and destroyed here.
    func poll(timeoutMillis: Int32) -> Polled {
        guard let mp = rd_kafka_consumer_poll(rk, timeoutMillis) else { return .none }
        defer { rd_kafka_message_destroy(mp) }
        let m = mp.pointee
        if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            return .failure(KafkaError(m.err, String(cString: rd_kafka_message_errstr(mp))))
        }
        func bytes(_ p: UnsafeMutableRawPointer?, _ n: Int) -> [UInt8] {
            guard let p, n > 0 else { return [] }
            return Array(UnsafeRawBufferPointer(start: p, count: n))
        }
        let topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        return .message(KafkaMessage(topic: topic, partition: m.partition, offset: m.offset,
                                     key: bytes(m.key, m.key_len), payload: bytes(m.payload, m.len)))
    }

    /// Synchronous commit of `offset` (the next to consume). The corresponding C function is
    /// rd_kafka_commit (through `ckafka_commit`).
    func commit(topic: String, partition: Int32, offset: Int64) throws {
        try check(ckafka_commit(rk, topic, partition, offset, &errorBuffer, Int32(errorBuffer.count)))
    }

    /// Produces one message and waits for its delivery report. The corresponding C functions
    /// are rd_kafka_producev and rd_kafka_poll (through `ckafka_produce_sync`).
    func produce(topic: String, key: [UInt8], payload: [UInt8], headers: [(String, String)], timeoutMillis: Int32) throws {
        let e = withCStrings(headers.map(\.0)) { hkeys in
            withCStrings(headers.map(\.1)) { hvalues in
                key.withUnsafeBytes { k in
                    payload.withUnsafeBytes { p in
                        ckafka_produce_sync(rk, topic, k.baseAddress, k.count, p.baseAddress, p.count, hkeys, hvalues, Int32(headers.count),
                                            timeoutMillis, &errorBuffer, Int32(errorBuffer.count))
                    }
                }
            }
        }
        try check(e)
    }

    /// Messages of the assigned partitions not consumed yet (high watermark − position, summed),
    /// or -1 when nothing is assigned.
    func lag() -> Int64 { ckafka_lag(rk) }

    private func check(_ e: rd_kafka_resp_err_t) throws {
        guard e != RD_KAFKA_RESP_ERR_NO_ERROR else { return }
        throw KafkaError(e, KafkaError.text(errorBuffer))
    }
}

/// librdkafka's log lines (syslog levels) in the daemon's log, at error (0-3), warning (4),
/// info (5-6) or debug (7). Called from librdkafka's threads; `Logger` is thread-safe.
private final class KafkaLog: Sendable {
    let logger: Logger
    let client: String

    init(logger: Logger, client: String) {
        self.logger = logger
        self.client = client
    }

    func write(level: Int32, facility: String, text: String) {
        let l: Logger.Level = level <= 3 ? .error : level == 4 ? .warning : level <= 6 ? .info : .debug
        logger.log(level: l, "librdkafka: \(text)", metadata: ["kafka.client": "\(client)", "kafka.facility": "\(facility)"])
    }
}

/// Calls `body` with NUL-terminated copies of `strings` (valid only inside it).
private func withCStrings<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { for c in copies { free(c) } }
    var array = copies.map { UnsafePointer<CChar>($0) } + [nil]  // never empty; NULL-terminated
    return array.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
}
