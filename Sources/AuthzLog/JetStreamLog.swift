import AuthzModel
import CNATS
import Foundation
import NIOConcurrencyHelpers

/// Where the replicated log lives and how its stream is made (`authzd serve --log`, docs/scale-out.md).
public struct LogSettings: Sendable, Equatable {
    /// `nats://host:port` URLs of the cluster's servers (any may be down).
    public var servers: [String]
    /// The JetStream stream; its subjects are `<stream>.>`.
    public var stream = "authzd"
    /// Replication factor used when this daemon creates the stream (an existing stream is kept).
    public var replicas = 3
    /// Stream limits, applied when this daemon creates the stream; 0 = unlimited.
    public var maxAgeSeconds: Int64 = 0
    public var maxBytes: Int64 = 0
    public var maxMessages: Int64 = 0
    /// Largest message the stream accepts (a write or import chunk, sealed); 0 = the server's.
    public var maxMessageBytes: Int32 = 0
    /// Window in which a re-sent message id is recognised as a duplicate.
    public var duplicateWindowSeconds: Int64 = 120
    /// How long a publish waits for the stream's acknowledgement.
    public var publishTimeoutMillis: Int64 = 5000
    /// How long a connection attempt to one server may take.
    public var connectTimeoutMillis: Int64 = 2000

    /// Settings for `servers`, everything else at its default.
    public init(servers: [String]) { self.servers = servers }

    /// Parses `nats://H1:P1,nats://H2:P2` (the scheme may be omitted). INVALID_ARGUMENT for an
    /// empty list or a URL that is not `nats://host:port`.
    public static func parseServers(_ text: String, field: String = "log") throws -> [String] {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw AuthzError.invalid(field, "must name at least one NATS server (nats://HOST:PORT)") }
        return try parts.map { p in
            let url = p.contains("://") ? p : "nats://" + p
            guard url.hasPrefix("nats://") || url.hasPrefix("tls://"),
                  let colon = url.lastIndex(of: ":"), url.distance(from: url.startIndex, to: colon) > 6,
                  let port = Int(url[url.index(after: colon)...]), (1...65535).contains(port) else {
                throw AuthzError.invalid(field, "\"\(p)\" is not a NATS server URL (nats://HOST:PORT)")
            }
            return url
        }
    }
}

/// One message of the stream, as the consumer delivered it.
public struct LogMessage: Sendable {
    /// Its stream sequence (the revision it makes).
    public let sequence: UInt64
    /// Messages of the stream after this one, as the server counted at delivery.
    public let pending: UInt64
    /// When the stream stored it, microseconds since the epoch (the server's clock).
    public let storedAt: Int64
    public let subject: String
    /// The headers asked for in `LogSubscription.next`, by name (absent ones left out).
    public let headers: [String: String]
    public let payload: [UInt8]
}

/// The stream's extent.
public struct LogState: Sendable, Equatable {
    /// First and last sequence the stream still holds (first > last when it is empty).
    public let first: UInt64
    public let last: UInt64
    public let messages: UInt64
    /// The stream leader's server name ("" when unknown or not clustered).
    public let leader: String
}

/// A connection to a NATS JetStream cluster, for one stream: the only code that talks to NATS.
///
/// Connecting never fails for an unreachable cluster: the client keeps trying in the background
/// and every call until then fails with UNAVAILABLE. Thread-safe (libnats is).
public final class JetStreamLog: @unchecked Sendable {
    public let settings: LogSettings
    private let nc: OpaquePointer?
    private let js: OpaquePointer?
    private let lock = NIOLock()

    /// Connects (or starts trying to) to `settings.servers`.
    public init(settings: LogSettings, name: String) throws {
        self.settings = settings
        var ncp: OpaquePointer?
        var jsp: OpaquePointer?
        var err = [CChar](repeating: 0, count: 512)
        let cstrings = settings.servers.map { strdup($0) }
        defer { cstrings.forEach { free($0) } }
        var ptrs: [UnsafePointer<CChar>?] = cstrings.map { UnsafePointer($0) }
        let s = ptrs.withUnsafeMutableBufferPointer { buf in
            cnats_connect(&ncp, &jsp, buf.baseAddress, Int32(settings.servers.count), settings.connectTimeoutMillis, 250,
                          name, nil, nil, &err, Int32(err.count))
        }
        guard s == NATS_OK || s == NATS_NOT_YET_CONNECTED, let c = ncp, let j = jsp else {
            throw AuthzError(.unavailable, "cannot start a NATS connection to \(settings.servers.joined(separator: ",")): \(cText(err))", field: "log")
        }
        nc = c
        js = j
    }

    deinit { close() }

    private var closed = false
    /// Closes the connection; later calls fail with UNAVAILABLE.
    public func close() {
        lock.lock()
        let first = !closed
        closed = true
        lock.unlock()
        if first { cnats_close(nc, js) }
    }

    /// Whether a server connection is up right now.
    public var isConnected: Bool {
        lock.lock(); defer { lock.unlock() }
        return !closed && cnats_connected(nc)
    }

    func handles() throws -> (OpaquePointer, OpaquePointer) {
        lock.lock(); defer { lock.unlock() }
        guard !closed, let c = nc, let j = js else { throw AuthzError(.unavailable, "the log connection is closed", field: "log") }
        guard cnats_connected(c) else {
            throw AuthzError(.unavailable, "the log (NATS JetStream) is unreachable: no connection to any of \(settings.servers.joined(separator: ","))", field: "log")
        }
        return (c, j)
    }

    static func failure(_ s: natsStatus, _ err: [CChar], _ what: String) -> AuthzError {
        let text = cText(err)
        switch s {
        case NATS_TIMEOUT, NATS_NO_RESPONDERS, NATS_NOT_YET_CONNECTED, NATS_CONNECTION_CLOSED, NATS_CONNECTION_DISCONNECTED,
             NATS_NO_SERVER, NATS_STALE_CONNECTION, NATS_IO_ERROR:
            return AuthzError(.unavailable, "the log (NATS JetStream) is unreachable: \(what): \(text)", field: "log")
        case NATS_MAX_PAYLOAD:
            return AuthzError(.resourceExhausted, "\(what): the message exceeds the NATS server's max_payload: \(text)", field: "log")
        default:
            return AuthzError(.unavailable, "the log (NATS JetStream) refused \(what): \(text)", field: "log")
        }
    }

    /// Creates the stream when missing (subjects `<stream>.>`, file storage, the configured
    /// replicas and limits). Returns the replicas of the stream as it stands. UNAVAILABLE when
    /// the cluster cannot answer (no JetStream leader yet, unreachable).
    @discardableResult
    public func ensureStream() throws -> Int {
        let (_, j) = try handles()
        var err = [CChar](repeating: 0, count: 512)
        var replicas: Int64 = 0
        let s = cnats_ensure_stream(j, settings.stream, settings.stream + ".>", Int64(settings.replicas),
                                    settings.maxAgeSeconds * 1_000_000_000, settings.maxBytes, settings.maxMessages,
                                    settings.duplicateWindowSeconds * 1_000_000_000, settings.maxMessageBytes,
                                    &replicas, &err, Int32(err.count))
        guard s == NATS_OK else { throw JetStreamLog.failure(s, err, "creating stream \(settings.stream)") }
        return Int(replicas)
    }

    /// The stream's extent and leader. UNAVAILABLE when the cluster cannot answer.
    public func state() throws -> LogState {
        let (_, j) = try handles()
        var err = [CChar](repeating: 0, count: 512)
        var leader = [CChar](repeating: 0, count: 256)
        var first: UInt64 = 0, last: UInt64 = 0, msgs: UInt64 = 0
        let s = cnats_stream_state(j, settings.stream, &first, &last, &msgs, &leader, Int32(leader.count), &err, Int32(err.count))
        guard s == NATS_OK else { throw JetStreamLog.failure(s, err, "reading stream \(settings.stream)") }
        return LogState(first: first, last: last, messages: msgs, leader: cText(leader))
    }

    /// Publishes `payload` on `subject` with message id `id` (a re-send with the same id within
    /// the duplicate window is not stored twice: the original's sequence comes back) and
    /// `headers`, waiting up to `timeoutMillis` for the stream's acknowledgement. Returns the
    /// stream sequence. UNAVAILABLE when not acknowledged in time (the message may still have
    /// been stored: re-send with the same id to learn its sequence).
    public func publish(subject: String, id: String, headers: [(String, String)], payload: [UInt8],
                        timeoutMillis: Int64) throws -> (sequence: UInt64, duplicate: Bool) {
        let (_, j) = try handles()
        var err = [CChar](repeating: 0, count: 512)
        var seq: UInt64 = 0
        var dup = false
        let keys = headers.map { strdup($0.0) }, values = headers.map { strdup($0.1) }
        defer { keys.forEach { free($0) }; values.forEach { free($0) } }
        var kp: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) }
        var vp: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) }
        let s = kp.withUnsafeMutableBufferPointer { k in
            vp.withUnsafeMutableBufferPointer { v in
                payload.withUnsafeBytes { p in
                    cnats_publish(j, subject, id, k.baseAddress, v.baseAddress, Int32(headers.count),
                                  p.baseAddress, Int32(p.count), timeoutMillis, &seq, &dup, &err, Int32(err.count))
                }
            }
        }
        guard s == NATS_OK else { throw JetStreamLog.failure(s, err, "publish on \(subject)") }
        return (seq, dup)
    }

    /// An ordered consumer over the whole stream from sequence `start` (1 = the beginning).
    public func subscribe(from start: UInt64) throws -> LogSubscription {
        let (_, j) = try handles()
        var err = [CChar](repeating: 0, count: 512)
        var sub: OpaquePointer?
        let s = cnats_subscribe_ordered(&sub, j, settings.stream, settings.stream + ".>", start, &err, Int32(err.count))
        guard s == NATS_OK, let sp = sub else { throw JetStreamLog.failure(s, err, "subscribing to \(settings.stream) from \(start)") }
        return LogSubscription(sub: sp)
    }
}

/// An ordered consumer: messages in stream order, each once. Used by one thread.
public final class LogSubscription: @unchecked Sendable {
    private var sub: OpaquePointer?

    init(sub: OpaquePointer) { self.sub = sub }
    deinit { close() }

    /// The next message, or nil when none came within `timeoutMillis`. Only the headers named in
    /// `headers` are read. UNAVAILABLE when the subscription broke (resubscribe).
    public func next(timeoutMillis: Int64, headers: [String]) throws -> LogMessage? {
        guard let s = sub else { throw AuthzError(.unavailable, "the log subscription is closed", field: "log") }
        var msg: OpaquePointer?
        var seq: UInt64 = 0, pending: UInt64 = 0
        var stamp: Int64 = 0
        let st = cnats_next(s, max(1, timeoutMillis), &msg, &seq, &pending, &stamp)
        if st == NATS_TIMEOUT { return nil }
        guard st == NATS_OK, let m = msg else {
            throw AuthzError(.unavailable, "the log subscription failed: \(String(cString: natsStatus_GetText(st)))", field: "log")
        }
        defer { natsMsg_Destroy(m) }
        var found: [String: String] = [:]
        for h in headers {
            if let v = cnats_header(m, h) { found[h] = String(cString: v) }
        }
        let n = Int(natsMsg_GetDataLength(m))
        let payload: [UInt8] = n == 0 ? [] : Array(UnsafeRawBufferPointer(start: natsMsg_GetData(m), count: n))
        return LogMessage(sequence: seq, pending: pending, storedAt: stamp / 1000, subject: String(cString: natsMsg_GetSubject(m)), headers: found, payload: payload)
    }

    /// Stops the consumer.
    public func close() {
        if let s = sub {
            natsSubscription_Unsubscribe(s)
            natsSubscription_Destroy(s)
            sub = nil
        }
    }
}

extension JetStreamLog {
    /// A durable pull consumer `durable` on `subject` (explicit acks; a message not acked within
    /// `ackWaitMillis` is delivered again). When no stream holds `subject`, stream
    /// `createStream` is created over it. Consumers sharing a durable name share the messages.
    public func pullConsumer(subject: String, durable: String, ackWaitMillis: Int64 = 30_000, createStream: String) throws -> PullConsumer {
        let (_, j) = try handles()
        var err = [CChar](repeating: 0, count: 512)
        var sub: OpaquePointer?
        let s = cnats_subscribe_durable(&sub, j, subject, durable, ackWaitMillis, createStream, Int64(settings.replicas), &err, Int32(err.count))
        guard s == NATS_OK, let sp = sub else { throw JetStreamLog.failure(s, err, "consuming \(subject) as \(durable)") }
        return PullConsumer(sub: sp)
    }

    /// Publishes `payload` on `subject` through JetStream (a stream must hold the subject) and
    /// waits for its acknowledgement; creates stream `createStream` over `streamSubjects`
    /// (default: `subject`) first when none holds it.
    public func publishCreatingStream(subject: String, id: String, headers: [(String, String)], payload: [UInt8],
                                      timeoutMillis: Int64, createStream: String, streamSubjects: String? = nil) throws -> UInt64 {
        do {
            return try publish(subject: subject, id: id, headers: headers, payload: payload, timeoutMillis: timeoutMillis).sequence
        } catch let e as AuthzError where e.code == .unavailable && isConnected {
            let (_, j) = try handles()
            var err = [CChar](repeating: 0, count: 512)
            var replicas: Int64 = 0
            let s = cnats_ensure_stream(j, createStream, streamSubjects ?? subject, Int64(settings.replicas), 0, 0, 0, 120_000_000_000, 0, &replicas, &err, Int32(err.count))
            guard s == NATS_OK else { throw e }
            return try publish(subject: subject, id: id, headers: headers, payload: payload, timeoutMillis: timeoutMillis).sequence
        }
    }
}

/// One message from a pull consumer, held until it is acknowledged (or dropped, which lets the
/// server deliver it again after the ack wait).
public final class PulledMessage: @unchecked Sendable {
    private var msg: OpaquePointer?
    public let subject: String
    public let payload: [UInt8]
    /// The stream sequence, the messages still pending for the consumer, and how many times
    /// this one was delivered (1 the first time).
    public let sequence: UInt64, pending: UInt64, delivered: UInt64

    init(_ m: OpaquePointer) {
        msg = m
        subject = String(cString: natsMsg_GetSubject(m))
        let n = Int(natsMsg_GetDataLength(m))
        payload = n == 0 ? [] : Array(UnsafeRawBufferPointer(start: natsMsg_GetData(m), count: n))
        var seq: UInt64 = 0, pending: UInt64 = 0, delivered: UInt64 = 0
        _ = cnats_meta(m, &seq, &pending, &delivered)
        (sequence, self.pending, self.delivered) = (seq, pending, delivered)
    }

    deinit { if let m = msg { natsMsg_Destroy(m) } }

    /// Acknowledges the message (waits for the server); UNAVAILABLE when it cannot.
    public func ack() throws {
        guard let m = msg else { return }
        let s = cnats_ack(m)
        guard s == NATS_OK else { throw AuthzError(.unavailable, "ack failed: \(String(cString: natsStatus_GetText(s)))", field: "events") }
    }

    /// The value of header `key`, or nil.
    public func header(_ key: String) -> String? {
        guard let m = msg, let v = cnats_header(m, key) else { return nil }
        return String(cString: v)
    }
}

/// A durable pull consumer. Used by one thread.
public final class PullConsumer: @unchecked Sendable {
    private var sub: OpaquePointer?

    init(sub: OpaquePointer) { self.sub = sub }
    deinit { close() }

    /// Up to `max` messages, waiting up to `timeoutMillis`; empty when none came. UNAVAILABLE
    /// when the consumer broke (subscribe again).
    public func fetch(max: Int, timeoutMillis: Int64) throws -> [PulledMessage] {
        guard let s = sub else { throw AuthzError(.unavailable, "the consumer is closed", field: "events") }
        var list = natsMsgList()
        let st = cnats_fetch(s, Int32(max), timeoutMillis, &list)
        if st == NATS_TIMEOUT { return [] }
        guard st == NATS_OK else {
            throw AuthzError(.unavailable, "fetching events failed: \(String(cString: natsStatus_GetText(st)))", field: "events")
        }
        var out: [PulledMessage] = []
        for i in 0..<Int(list.Count) {
            if let m = list.Msgs[i] {
                out.append(PulledMessage(m))
                list.Msgs[i] = nil  // now owned by the PulledMessage
            }
        }
        natsMsgList_Destroy(&list)
        return out
    }

    /// Stops fetching; the durable consumer stays on the server (its position is kept).
    public func close() {
        if let s = sub {
            natsSubscription_Destroy(s)
            sub = nil
        }
    }
}

/// The NUL-terminated text a C library wrote into `buffer`.
private func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
