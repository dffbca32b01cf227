import AuthzLog
import AuthzModel

/// Where user events come from (`--events`, docs/events.md).
public struct EventSettings: Sendable, Equatable {
    /// The broker protocol events arrive by.
    public enum Transport: String, Sendable, Equatable {
        /// A NATS JetStream subject, consumed by a durable pull consumer (`NATSEventSource`).
        case nats
        /// A Kafka topic, consumed by a consumer group (`KafkaEventSource`).
        case kafka
    }

    /// Which broker protocol `servers` speak; decides the source `AuthzServer` starts.
    public var transport: Transport = .nats
    /// NATS: `nats://H:P` server URLs. Kafka: `HOST:PORT` bootstrap brokers (`[v6]:PORT`).
    public var servers: [String]
    /// The NATS subject or the Kafka topic events are published on.
    public var subject: String
    /// The consumer group (NATS: the durable consumer's name): daemons sharing it share the
    /// events (one applies each).
    public var group = "authzd"
    /// Where undecodable or inapplicable events go (a NATS subject or a Kafka topic), with the
    /// reason in a header.
    public var deadLetterSubject: String
    /// NATS only: seconds before an event fetched but not acknowledged (the daemon died
    /// holding it) is delivered again.
    public var ackWaitSeconds = 10
    /// Kafka only: the consumer's `session.timeout.ms` (its heartbeat is a quarter of it): how
    /// long a dead daemon holds its partitions, and about twice how long a group join takes.
    /// Brokers refuse values outside their group.min/max.session.timeout.ms (Kafka's default
    /// minimum is 6000).
    public var sessionTimeoutMillis = 10_000

    /// Settings as given, unvalidated (`parse` validates text); the rest at their defaults.
    public init(transport: Transport = .nats, servers: [String], subject: String, deadLetterSubject: String) {
        self.transport = transport
        self.servers = servers
        self.subject = subject
        self.deadLetterSubject = deadLetterSubject
    }

    /// Parses `nats://H1:P1[,H2:P2...]/SUBJECT` or `kafka://BROKER1:PORT[,BROKER2:PORT...]/TOPIC`
    /// (brokers `HOST:PORT`, an IPv6 host in brackets; a topic of 1 to 249 letters, digits,
    /// `.`, `_` and `-`, neither `.` nor `..`). The dead-letter destination defaults to
    /// `dead-letter.<SUBJECT or TOPIC>`. Throws INVALID_ARGUMENT naming `events` and the rule
    /// the text breaks; never connects to anything.
    public static func parse(_ text: String) throws -> EventSettings {
        if text.hasPrefix("kafka://") { return try parseKafka(text) }
        guard text.hasPrefix("nats://") else {
            throw AuthzError.invalid("events", "must be nats://HOST:PORT[,HOST:PORT...]/SUBJECT or kafka://HOST:PORT[,HOST:PORT...]/TOPIC (got \"\(text)\")")
        }
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

    /// `kafka://BROKER1:PORT[,BROKER2:PORT...]/TOPIC`.
    private static func parseKafka(_ text: String) throws -> EventSettings {
        let rest = text.dropFirst("kafka://".count)
        guard let slash = rest.firstIndex(of: "/") else { throw AuthzError.invalid("events", "names no topic: kafka://HOST:PORT[,HOST:PORT...]/TOPIC (got \"\(text)\")") }
        let topic = String(rest[rest.index(after: slash)...])
        if let why = kafkaTopicProblem(topic) { throw AuthzError.invalid("events", "topic \"\(topic)\" \(why)") }
        let list = rest[..<slash].split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !list.contains(where: \.isEmpty) else {
            throw AuthzError.invalid("events", "must name at least one Kafka broker, comma-separated, as HOST:PORT (got \"\(rest[..<slash])\")")
        }
        for broker in list {
            if let why = kafkaBrokerProblem(broker) { throw AuthzError.invalid("events", "broker \"\(broker)\" \(why)") }
        }
        return EventSettings(transport: .kafka, servers: list, subject: topic, deadLetterSubject: "dead-letter." + topic)
    }

    /// Why `name` is not a Kafka topic name (1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`),
    /// or nil when it is one.
    static func kafkaTopicProblem(_ name: String) -> String? {
        guard (1...249).contains(name.utf8.count) else { return "must be 1 to 249 characters long" }
        guard name.utf8.allSatisfy(isKafkaNameByte) else { return "may hold only letters, digits, '.', '_' and '-'" }
        guard name != "." && name != ".." else { return "must not be \".\" or \"..\"" }
        return nil
    }

    /// Bytes of Kafka topic names (and of the group ids authzd accepts): `[a-zA-Z0-9._-]`.
    static func isKafkaNameByte(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == 0x2E || b == 0x5F || b == 0x2D
    }

    /// Why `broker` is not `HOST:PORT` (a host name or IPv4 address of letters, digits, `.`,
    /// `-` and `_`, or an IPv6 address in brackets; a port in 1...65535), or nil.
    static func kafkaBrokerProblem(_ broker: String) -> String? {
        let host: Substring, port: Substring
        if broker.hasPrefix("[") {
            guard let close = broker.firstIndex(of: "]") else { return "must close its IPv6 address with ]: [ADDRESS]:PORT" }
            host = broker[broker.index(after: broker.startIndex)..<close]
            let after = broker[broker.index(after: close)...]
            guard after.hasPrefix(":") else { return "must be [IPV6]:PORT" }
            port = after.dropFirst()
            guard !host.isEmpty, host.contains(":"), host.utf8.allSatisfy({ $0 == 0x3A || $0 == 0x2E || ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || ($0 >= 0x41 && $0 <= 0x46) }) else {
                return "must hold an IPv6 address (hex digits and colons) between the brackets"
            }
        } else {
            guard let colon = broker.lastIndex(of: ":") else { return "must be HOST:PORT" }
            host = broker[..<colon]
            port = broker[broker.index(after: colon)...]
            guard !host.contains(":") else { return "is an IPv6 address: write it in brackets, [ADDRESS]:PORT" }
            guard !host.isEmpty, host.utf8.allSatisfy(isKafkaNameByte) else {
                return "must have a host of letters, digits, '.', '-' and '_' before :PORT"
            }
        }
        guard let p = Int(port), (1...65535).contains(p), port.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return "must end with a port between 1 and 65535" }
        return nil
    }
}
