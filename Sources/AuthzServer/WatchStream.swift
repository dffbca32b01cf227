import AuthzEngine
import AuthzModel
import AuthzWire
import Logging
import Metrics
import NIOCore
import NIOPosix

/// One Watch call on one connection (docs/watch.md): reads the store's change log from the
/// watcher's position, a page at a time, and sends each page as a Response frame; once it has
/// reached the daemon's revision it waits for the engine to publish a new one.
///
/// Flow control without a queue: a page is read only while the connection is writable, so a
/// watcher that does not read holds at most one page in memory; one that stays unwritable for
/// `watch-stall-timeout` is cut (it resumes from the last revision it received). Everything
/// runs on the connection's event loop, except the LMDB reads (on the reader pool).
final class WatchStream {
    /// Changes per frame.
    static let pageSize = 64

    private let engine: Engine
    private let readers: NIOThreadPool
    private let loop: EventLoop
    private let logger: Logger
    private let matches: @Sendable (ID, EntityKind) -> Bool
    private let stallTimeout: TimeAmount
    private let progressInterval: TimeAmount
    /// Sends one frame of the stream (a reply, or the error that ends it).
    private let send: (Result<Reply, AuthzError>) -> Void
    private let isWritable: () -> Bool
    /// Why the watcher may no longer watch (its key revoked or expired since it started), or nil.
    private let refusal: () -> AuthzError?
    /// Called once when the stream ends (to release the connection's slot; then closes it when
    /// `close` is true).
    private let finished: (_ close: Bool) -> Void

    private var position: ChangePosition
    /// Every matching change through this revision has been sent.
    private var complete: UInt64
    private var reading = false
    private var again = false
    private var ended = false
    private var announcedCaughtUp = false
    private var waiter: UInt64?
    private var stallTimer: Scheduled<Void>?
    private var progressTask: RepeatedTask?
    private var lastSent = NIODeadline.now()

    static let cut = Counter(label: "authzd_watch_cut_total")
    static let sent = Counter(label: "authzd_watch_changes_sent_total")

    init(from revision: UInt64, engine: Engine, readers: NIOThreadPool, loop: EventLoop, logger: Logger,
         matches: @escaping @Sendable (ID, EntityKind) -> Bool, stallTimeout: TimeAmount, progressInterval: TimeAmount,
         send: @escaping (Result<Reply, AuthzError>) -> Void, isWritable: @escaping () -> Bool,
         refusal: @escaping () -> AuthzError? = { nil }, finished: @escaping (Bool) -> Void) {
        self.engine = engine
        self.readers = readers
        self.loop = loop
        self.logger = logger
        self.matches = matches
        self.stallTimeout = stallTimeout
        self.progressInterval = progressInterval
        self.send = send
        self.isWritable = isWritable
        self.refusal = refusal
        self.finished = finished
        position = .after(revision: revision)
        complete = revision
    }

    /// Starts reading. On the event loop.
    func start() {
        // Cancelled by `end`, which every way out of the stream goes through.
        let bound = NIOLoopBound(self, eventLoop: loop)
        progressTask = loop.scheduleRepeatedTask(initialDelay: progressInterval, delay: progressInterval) { _ in
            bound.value.progress()
        }
        pump()
    }

    /// The connection became writable again: go on reading.
    func writable() {
        stallTimer?.cancel()
        stallTimer = nil
        pump()
    }

    /// Ends the stream with `error` as its last frame (the daemon stopping), or silently (the
    /// connection closed: `error` nil).
    func end(_ error: AuthzError?, close: Bool = false) {
        guard !ended else { return }
        ended = true
        if let w = waiter { engine.cancelRevisionWait(w) }
        waiter = nil
        stallTimer?.cancel()
        progressTask?.cancel()
        if let error { send(.failure(error)) }
        finished(close)
    }

    /// Ends the stream because the daemon is stopping, naming where to resume.
    func stopping() {
        end(AuthzError(.unavailable, "the daemon is stopping: resume from revision \(complete)"))
    }

    private func pump() {
        guard !ended else { return }
        if reading {
            again = true
            return
        }
        // A key revoked (or expired) while it watches ends the stream, as it would any request.
        if let refused = refusal() { return end(refused, close: true) }
        guard isWritable() else {
            if stallTimer == nil {
                stallTimer = loop.assumeIsolated().scheduleTask(in: stallTimeout) { [weak self] in self?.stalled() }
            }
            return
        }
        // Registered before the read, so a revision published while it runs wakes us again.
        if waiter == nil {
            // The engine calls back on the writer's thread: hop to the loop (this stream is
            // confined to it; the waiter is withdrawn by `end`, so the stream is not kept alive).
            let bound = NIOLoopBound(self, eventLoop: loop)
            waiter = engine.whenRevisionAdvances { [loop] in
                loop.execute {
                    bound.value.waiter = nil
                    bound.value.pump()
                }
            }
            if waiter == nil {
                // Every waiter slot is taken: look again shortly instead.
                loop.assumeIsolated().scheduleTask(in: .milliseconds(100)) { [weak self] in self?.pump() }
            }
        }
        reading = true
        again = false
        let engine = self.engine, from = position, matches = self.matches
        readers.runIfActive(eventLoop: loop) {
            try engine.changes(after: from, limit: WatchStream.pageSize, where: matches)
        }.assumeIsolated().whenComplete { [weak self] result in
            guard let self else { return }
            self.reading = false
            guard !self.ended else { return }
            switch result {
            case .failure(let e as AuthzError):
                self.end(e)
            case .failure(let e):
                self.end(AuthzError(.unavailable, "the watch stopped: \(e); resume from revision \(self.complete)"))
            case .success(let page):
                self.deliver(page)
            }
        }
    }

    private func deliver(_ page: ChangePage) {
        position = page.position
        complete = max(complete, page.complete)
        if !page.changes.isEmpty || (page.atEnd && !announcedCaughtUp) {
            send(.success(.watch(WatchBatch(changes: page.changes, revision: complete, caughtUp: page.atEnd))))
            WatchStream.sent.increment(by: page.changes.count)
            lastSent = .now()
        }
        if page.atEnd { announcedCaughtUp = true }
        if !page.atEnd || again { pump() }
    }

    /// A progress frame when nothing was sent for a while: the watcher's resume point moves on
    /// and idle proxies see traffic.
    private func progress() {
        if !ended, let refused = refusal() { return end(refused, close: true) }
        guard !ended, announcedCaughtUp, !reading, isWritable(), NIODeadline.now() - lastSent >= progressInterval else { return }
        send(.success(.watch(WatchBatch(changes: [], revision: complete, caughtUp: true))))
        lastSent = .now()
    }

    private func stalled() {
        stallTimer = nil
        guard !ended, !isWritable() else { return }
        WatchStream.cut.increment()
        logger.notice("watch cut: the watcher did not read for watch-stall-timeout", metadata: ["watch.revision": "\(complete)"])
        end(AuthzError(.resourceExhausted, "the watcher read too slowly (its connection stayed full for \(stallTimeout.nanoseconds / 1_000_000_000) s): resume from revision \(complete)", field: "watch"),
            close: true)
    }
}
