import AuthzFraming
import AuthzModel
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What a load run talks to. The same client code (NIO channels, one handler type, the same
/// request scheduling and latency recording) drives all three; only encoding and parsing differ.
enum TargetKind: String {
    /// authzd's protocol: Check (batch 1) or BatchCheck (batch > 1).
    case authzd
    /// Redis RESP `GETBIT key offset`, `batch` of them pipelined as one request.
    case redis
    /// A minimal length-prefixed echo server, sent the same frames as authzd: the floor.
    case echo
}

struct LoadOptions {
    var target: TargetKind
    var endpoint: String  // unix path or host:port
    var connections: Int
    var inFlight: Int
    var batch: Int
    var duration: Double
    var maxRequests: Int?
    var warmup: Double = 0.5
    /// authzd: a key presented in a Hello as each connection's first frame.
    var apiKey: String?
}

struct LoadResult {
    var checks: UInt64
    var requests: UInt64
    var wrong: UInt64
    var errors: UInt64
    var seconds: Double
    var histogram: Histogram<UInt64>

    var checksPerSecond: Double { Double(checks) / seconds }
    func percentile(_ p: Double) -> Double { Double(histogram.valueAtPercentile(p)) / 1000 }  // µs
}

/// Pre-encoded requests: every query's bytes in the target's format.
final class Encoded: @unchecked Sendable {
    let queries: [Query]
    /// authzd/echo: the encoded `CheckRequest` message of each query. redis: the `GETBIT` command.
    let pieces: [[UInt8]]

    init(target: TargetKind, tenants: [TenantData], queries: [Query]) {
        self.queries = queries
        pieces = queries.map { q in
            let t = tenants[Int(q.tenant)]
            switch target {
            case .authzd, .echo:
                var m: [UInt8] = []
                func str(_ field: UInt8, _ s: String) {
                    let b = Array(s.utf8)
                    m.append(field << 3 | 2)
                    appendVarint(UInt64(b.count), &m)
                    m += b
                }
                str(1, t.id.description)
                str(2, t.users[Int(q.user)].description)
                str(3, t.permissionNames[Int(q.permission)])
                m.append(4 << 3)
                m.append(q.scope.rawValue + 1)
                return m
            case .redis:
                let key = Array(Dataset.redisKey(tenant: Int(q.tenant), user: t.users[Int(q.user)], scope: q.scope).utf8)
                let off = Array(String(q.permission).utf8)
                return Array("*3\r\n$6\r\nGETBIT\r\n$\(key.count)\r\n".utf8) + key + Array("\r\n$\(off.count)\r\n".utf8) + off + [13, 10]
            }
        }
    }
}

/// Calls `emit` with each byte of `v` as a protobuf varint, least significant group first.
@inline(__always) func forEachVarintByte(_ v: UInt64, _ emit: (UInt8) -> Void) {
    var v = v
    while v >= 0x80 {
        emit(UInt8(v & 0x7F) | 0x80)
        v >>= 7
    }
    emit(UInt8(v))
}

@inline(__always) func appendVarint(_ v: UInt64, _ out: inout [UInt8]) {
    forEachVarintByte(v) { out.append($0) }
}

@inline(__always) func writeVarint(_ v: UInt64, _ out: inout ByteBuffer) {
    forEachVarintByte(v) { out.writeInteger($0) }
}

@inline(__always) func varintSize(_ v: UInt64) -> Int {
    var n = 1
    var v = v
    while v >= 0x80 { v >>= 7; n += 1 }
    return n
}

/// Shared counters of one run.
final class RunState: @unchecked Sendable {
    let lock = NIOLock()
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    var checks: UInt64 = 0
    var requests: UInt64 = 0
    var wrong: UInt64 = 0
    var errors: UInt64 = 0
    var firstWrong: String?
    var recording = false
    var stopped = false
    var issued = 0
    let maxRequests: Int?

    init(maxRequests: Int?) { self.maxRequests = maxRequests }

    /// Whether another request may be issued.
    func mayIssue() -> Bool {
        lock.withLock {
            if stopped { return false }
            if let m = maxRequests {
                if issued >= m { return false }
                issued += 1
            }
            return true
        }
    }
}

/// One load connection: keeps `inFlight` requests outstanding, each of `batch` checks.
final class LoadHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let options: LoadOptions
    let encoded: Encoded
    let state: RunState
    var cursor: Int
    var nextId: UInt64 = 1
    /// authzd: by request id, in a ring indexed by the id's low bits (ids are sequential), with
    /// a dictionary for the rare id whose slot is still taken. redis/echo: FIFO. Neither path
    /// allocates or hashes per request, so that the client costs the same for every server.
    var ring = [(id: UInt64, start: UInt64, first: Int)](repeating: (0, 0, 0), count: LoadHandler.ringSize)
    var overflow: [UInt64: (UInt64, Int)] = [:]
    static let ringSize = 4096
    /// The answers of the response being read (reused).
    var answers: [Bool] = []
    var fifo: [(UInt64, Int, UInt64)] = []
    var fifoHead = 0
    var buffer: ByteBuffer?
    var localHist = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    var localChecks: UInt64 = 0, localRequests: UInt64 = 0, localWrong: UInt64 = 0, localErrors: UInt64 = 0
    let done: EventLoopPromise<Void>
    var outstanding = 0

    init(options: LoadOptions, encoded: Encoded, state: RunState, start: Int, done: EventLoopPromise<Void>) {
        self.options = options
        self.encoded = encoded
        self.state = state
        cursor = start
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        if options.target == .authzd, let key = options.apiKey {
            // Request{request_id=0, hello=22{protocol_version=1, api_key=2}}; its answer is skipped.
            var hello: [UInt8] = [0x08, 1, 0x12]
            let k = Array(key.utf8)
            appendVarint(UInt64(k.count), &hello)
            hello += k
            var body: [UInt8] = [0xB2, 0x01]
            appendVarint(UInt64(hello.count), &body)
            body += hello
            var out = context.channel.allocator.buffer(capacity: body.count + 4)
            out.writeInteger(UInt32(body.count))
            out.writeBytes(body)
            context.write(wrapOutboundOut(out), promise: nil)
        }
        for _ in 0..<options.inFlight { issue(context: context, flush: false) }
        context.flush()
        if outstanding == 0 { done.succeed(()) }
    }

    func issue(context: ChannelHandlerContext, flush: Bool) {
        guard state.mayIssue() else { return }
        let first = cursor
        let n = options.batch
        cursor = (cursor + n) % (encoded.queries.count - n)
        let id = nextId
        nextId &+= 1
        var out = context.channel.allocator.buffer(capacity: 96 * n + 16)
        switch options.target {
        case .redis:
            for i in first..<first + n { out.writeBytes(encoded.pieces[i]) }
            fifo.append((id, first, DispatchTime.now().uptimeNanoseconds))
        case .authzd, .echo:
            // Request{request_id=1, check=10 | batch_check=11{checks=1}}, written in place.
            let lengthAt = out.writerIndex
            out.writeInteger(UInt32(0))
            out.writeInteger(UInt8(0x08))
            writeVarint(id, &out)
            if n == 1 {
                let c = encoded.pieces[first]
                out.writeInteger(UInt8(10 << 3 | 2))
                writeVarint(UInt64(c.count), &out)
                out.writeBytes(c)
            } else {
                var inner = 0
                for i in first..<first + n { inner += 1 + varintSize(UInt64(encoded.pieces[i].count)) + encoded.pieces[i].count }
                out.writeInteger(UInt8(11 << 3 | 2))
                writeVarint(UInt64(inner), &out)
                for i in first..<first + n {
                    out.writeInteger(UInt8(0x0A))
                    writeVarint(UInt64(encoded.pieces[i].count), &out)
                    out.writeBytes(encoded.pieces[i])
                }
            }
            out.setInteger(UInt32(out.writerIndex - lengthAt - 4), at: lengthAt)
            let now = DispatchTime.now().uptimeNanoseconds
            if options.target == .echo {
                fifo.append((id, first, now))
            } else {
                let slot = Int(id % UInt64(LoadHandler.ringSize))
                if ring[slot].id == 0 { ring[slot] = (id, now, first) } else { overflow[id] = (now, first) }
            }
        }
        outstanding += 1
        if flush { context.writeAndFlush(wrapOutboundOut(out), promise: nil) } else { context.write(wrapOutboundOut(out), promise: nil) }
    }

    func complete(context: ChannelHandlerContext, start: UInt64, first: Int, answers: [Bool]?) {
        let now = DispatchTime.now().uptimeNanoseconds
        outstanding -= 1
        localRequests += 1
        localChecks += UInt64(options.batch)
        _ = localHist.record(now - start)
        if let answers {
            for (k, a) in answers.enumerated() where encoded.queries[first + k].allowed != a {
                localWrong += 1
                if state.firstWrong == nil {
                    let q = encoded.queries[first + k]
                    state.lock.withLock { state.firstWrong = "query \(first + k) (tenant \(q.tenant) user \(q.user) permission \(q.permission) scope \(q.scope)): expected \(q.allowed), got \(a)" }
                }
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        var completed = 0
        parse: while true {
            switch options.target {
            case .redis:
                guard fifoHead < fifo.count else { break parse }
                let (_, first, start) = fifo[fifoHead]
                // `batch` integer replies ":0\r\n" / ":1\r\n".
                let need = 4 * options.batch
                guard buffer!.readableBytes >= need else { break parse }
                answers.removeAll(keepingCapacity: true)
                var ok = true
                let at = buffer!.readerIndex
                for k in 0..<options.batch {
                    if buffer!.getInteger(at: at + 4 * k, as: UInt8.self) != UInt8(ascii: ":") { ok = false }
                    answers.append(buffer!.getInteger(at: at + 4 * k + 1, as: UInt8.self) == UInt8(ascii: "1"))
                }
                buffer!.moveReaderIndex(forwardBy: need)
                if !ok { localErrors += 1 }
                fifoHead += 1
                complete(context: context, start: start, first: first, answers: answers)
                completed += 1
            case .authzd:
                // One pass over the frame, in place (as the Redis case reads its replies).
                let read = buffer!.withUnsafeReadableBytes { b -> (length: Int, id: UInt64?)? in
                    guard b.count >= 4 else { return nil }
                    let n = Int(b[0]) << 24 | Int(b[1]) << 16 | Int(b[2]) << 8 | Int(b[3])
                    guard b.count >= 4 + n else { return nil }
                    return (4 + n, ResponseParser.parse(UnsafeRawBufferPointer(rebasing: b[4..<4 + n]), batch: options.batch, into: &answers))
                }
                guard let read else { break parse }
                buffer!.moveReaderIndex(forwardBy: read.length)
                if read.id == 0 { continue }  // the Hello's answer
                guard let id = read.id, let (start, first) = takePending(id) else {
                    localErrors += 1
                    outstanding -= 1
                    continue
                }
                complete(context: context, start: start, first: first, answers: answers)
                completed += 1
            case .echo:
                guard case .frame(let len) = Framing.next(in: buffer!, maxFrameSize: .max) else { break parse }
                buffer!.moveReaderIndex(forwardBy: 4 + len)
                let (_, first, start) = fifo[fifoHead]
                fifoHead += 1
                complete(context: context, start: start, first: first, answers: nil)
                completed += 1
            }
        }
        if fifoHead > 4096 {
            fifo.removeFirst(fifoHead)
            fifoHead = 0
        }
        for _ in 0..<completed { issue(context: context, flush: false) }
        context.flush()
        if outstanding == 0 { flushStats(); done.succeed(()) }
    }

    /// The start time and first query of request `id`, removed from the pending requests.
    func takePending(_ id: UInt64) -> (UInt64, Int)? {
        let slot = Int(id % UInt64(LoadHandler.ringSize))
        if ring[slot].id == id {
            defer { ring[slot] = (0, 0, 0) }
            return (ring[slot].start, ring[slot].first)
        }
        return overflow.removeValue(forKey: id)
    }

    func flushStats() {
        state.lock.withLock {
            if state.recording {
                state.histogram.add(localHist)
                state.checks += localChecks
                state.requests += localRequests
            }
            state.wrong += localWrong
            state.errors += localErrors
        }
        localHist.reset()
        localChecks = 0; localRequests = 0; localWrong = 0; localErrors = 0
    }

    func channelInactive(context: ChannelHandlerContext) {
        flushStats()
        if outstanding > 0 { state.lock.withLock { state.errors += UInt64(outstanding) } }
        done.succeed(())
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// Just enough protobuf to read `Response{request_id=1, status=2, check=10{decision=1}, batch_check=11{results=1{decision=1}}}`.
enum ResponseParser {
    static func varint(_ b: UnsafeRawBufferPointer, _ i: inout Int) -> UInt64? {
        var v: UInt64 = 0, shift: UInt64 = 0
        while i < b.count {
            let x = b[i]
            i += 1
            v |= UInt64(x & 0x7F) << shift
            if x < 0x80 { return v }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    static func decision(_ b: UnsafeRawBufferPointer) -> Bool? {
        var i = 0
        var d: UInt64 = 0
        while i < b.count {
            guard let key = varint(b, &i) else { return nil }
            switch key & 7 {
            case 0:
                guard let v = varint(b, &i) else { return nil }
                if key >> 3 == 1 { d = v }
            case 2:
                guard let n = varint(b, &i) else { return nil }
                i += Int(n)
            default: return nil
            }
        }
        return d == 1 ? true : d == 2 ? false : nil
    }

    /// The request id of a response frame holding `batch` decisions, which land in `answers`;
    /// 0 for a response without a request id (the Hello's answer); nil for anything else.
    static func parse(_ b: UnsafeRawBufferPointer, batch: Int, into answers: inout [Bool]) -> UInt64? {
        answers.removeAll(keepingCapacity: true)
        do {
            var i = 0
            var id: UInt64 = 0
            while i < b.count {
                guard let key = varint(b, &i) else { return nil }
                let field = key >> 3
                switch key & 7 {
                case 0:
                    guard let v = varint(b, &i) else { return nil }
                    if field == 1 { id = v }
                case 2:
                    guard let n = varint(b, &i), i + Int(n) <= b.count else { return nil }
                    let sub = UnsafeRawBufferPointer(rebasing: b[i..<i + Int(n)])
                    i += Int(n)
                    if field == 2 { return nil }  // an error status
                    if field == 10 {
                        guard let d = decision(sub) else { return nil }
                        answers.append(d)
                    } else if field == 11 {
                        var j = 0
                        while j < sub.count {
                            guard let k = varint(sub, &j) else { return nil }
                            if k & 7 == 0 { _ = varint(sub, &j); continue }
                            guard let m = varint(sub, &j), j + Int(m) <= sub.count else { return nil }
                            if k >> 3 == 1 {
                                guard let d = decision(UnsafeRawBufferPointer(rebasing: sub[j..<j + Int(m)])) else { return nil }
                                answers.append(d)
                            }
                            j += Int(m)
                        }
                    }
                default: return nil
                }
            }
            return id == 0 ? 0 : answers.count == batch ? id : nil
        }
    }
}

enum LoadRunner {
    /// Runs one load configuration: connects, warms up, records for `duration` seconds, drains.
    static func run(_ o: LoadOptions, encoded: Encoded, group: EventLoopGroup) throws -> LoadResult {
        let state = RunState(maxRequests: o.maxRequests)
        var channels: [Channel] = []
        var futures: [EventLoopFuture<Void>] = []
        for c in 0..<o.connections {
            let loop = group.next()
            let done = loop.makePromise(of: Void.self)
            futures.append(done.futureResult)
            let start = (c * 7919 * o.batch) % max(1, encoded.queries.count - o.batch)
            let bootstrap = ClientBootstrap(group: loop).channelInitializer { ch in
                ch.pipeline.addHandler(LoadHandler(options: o, encoded: encoded, state: state, start: start, done: done))
            }
            let ch: Channel
            if o.endpoint.hasPrefix("/") || o.endpoint.hasPrefix(".") {
                ch = try bootstrap.connect(unixDomainSocketPath: o.endpoint).wait()
            } else {
                let parts = o.endpoint.split(separator: ":")
                ch = try bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: String(parts[0]), port: Int(parts[1])!).wait()
            }
            channels.append(ch)
        }
        let began = Date()
        if o.maxRequests == nil {
            Thread.sleep(forTimeInterval: o.warmup)
            state.lock.withLock { state.recording = true }
            // Discard warm-up samples: handlers flush into `state` only while recording; reset their locals now.
            let resets = channels.map { ch in ch.eventLoop.submit { try? ch.pipeline.syncOperations.handler(type: LoadHandler.self).flushStats() } }
            for r in resets { _ = try? r.wait() }
            state.lock.withLock {
                state.histogram.reset(); state.checks = 0; state.requests = 0
            }
            let t0 = Date()
            Thread.sleep(forTimeInterval: o.duration)
            let stats = channels.map { ch in ch.eventLoop.submit { try? ch.pipeline.syncOperations.handler(type: LoadHandler.self).flushStats() } }
            for s in stats { _ = try? s.wait() }
            let elapsed = Date().timeIntervalSince(t0)
            state.lock.withLock { state.stopped = true; state.recording = false }
            for f in futures { _ = try? f.wait() }
            for ch in channels { try? ch.close().wait() }
            return state.lock.withLock {
                LoadResult(checks: state.checks, requests: state.requests, wrong: state.wrong, errors: state.errors, seconds: elapsed, histogram: state.histogram)
            }
        } else {
            state.lock.withLock { state.recording = true }
            for f in futures { _ = try? f.wait() }
            let elapsed = Date().timeIntervalSince(began)
            for ch in channels { try? ch.close().wait() }
            if let w = state.firstWrong { FileHandle.standardError.write(Data("first wrong answer: \(w)\n".utf8)) }
            return state.lock.withLock {
                LoadResult(checks: state.checks, requests: state.requests, wrong: state.wrong, errors: state.errors, seconds: elapsed, histogram: state.histogram)
            }
        }
    }
}
