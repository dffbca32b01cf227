/// The flow control of one connection, as a state machine that returns actions: when to read
/// the socket, when to hold reading (backpressure), when the frame timer runs, and when a
/// draining connection closes. It performs nothing itself — `ConnectionHandler` carries out
/// each action — so every rule here is tested without a channel (`ConnectionFlowTests`).
///
/// Rules:
/// - At most `maxInFlight` requests are pending. At that bound, or while the channel is not
///   writable (a peer that does not read its answers), a read the channel asks for is held, and
///   done once both clear: nothing is buffered without bound.
/// - A frame started must complete within the frame timeout, counted only while the daemon
///   reads: holding reads stops the timer, a new partial frame restarts it.
/// - Draining (graceful shutdown) reads nothing more; the connection closes when its last
///   pending request is answered, at once when none is.
/// - An idle connection closes only when nothing is pending.
struct ConnectionFlow {
    enum State: Equatable {
        case open
        /// Asked to finish what it has pending, then close.
        case draining
        /// Closing or closed: nothing more is read or answered.
        case closed
    }

    private(set) var state: State = .open
    /// Requests started and not yet answered (inline waits, pool calls, watches).
    private(set) var inFlight = 0
    /// The channel asked to read while the connection could not take more.
    private(set) var readHeld = false
    /// The frame timer runs.
    private(set) var frameTimerArmed = false
    let maxInFlight: Int

    init(maxInFlight: Int) {
        self.maxInFlight = maxInFlight
    }

    /// Another buffered frame may be started now.
    var mayStartRequest: Bool { state != .closed && inFlight < maxInFlight }

    /// What to do when the channel asks to read.
    enum ReadAction: Equatable {
        /// Read; arm the frame timer first when a partial frame waits for its rest.
        case read(armFrameTimer: Bool)
        /// Do not read now (remembered); stop the frame timer when it runs.
        case hold(cancelFrameTimer: Bool)
        /// Do not read (draining or closed).
        case ignore
    }

    /// The channel asks to read; `partialFrameBuffered`: bytes of an incomplete frame wait.
    mutating func readRequested(writable: Bool, partialFrameBuffered: Bool) -> ReadAction {
        guard state == .open else { return .ignore }
        if inFlight >= maxInFlight || !writable {
            // Not reading is the daemon's choice: a half-received frame is not the client's fault.
            readHeld = true
            let cancel = frameTimerArmed
            frameTimerArmed = false
            return .hold(cancelFrameTimer: cancel)
        }
        let arm = partialFrameBuffered && !frameTimerArmed
        if arm { frameTimerArmed = true }
        return .read(armFrameTimer: arm)
    }

    /// What the buffer holds after a pass over its complete frames.
    enum Leftover: Equatable {
        /// Nothing: every byte was a complete frame.
        case nothing
        /// The start of a frame whose rest has not arrived.
        case partialFrame
        /// Complete frames not started (the in-flight bound was reached).
        case completeFrames
    }

    enum TimerAction: Equatable { case none, arm, cancel }

    /// After a pass over the buffered frames that started `started` of them.
    mutating func framesConsumed(started: Int, leftover: Leftover) -> TimerAction {
        switch leftover {
        case .nothing:
            guard frameTimerArmed else { return .none }
            frameTimerArmed = false
            return .cancel
        case .partialFrame:
            // A new partial frame (some frame completed before it) restarts the clock; one
            // still waiting keeps its clock. Held reads keep it stopped.
            guard state == .open, !readHeld, started > 0 || !frameTimerArmed else { return .none }
            frameTimerArmed = true
            return .arm
        case .completeFrames:
            return .none
        }
    }

    /// A request was started (it holds one of the in-flight slots until `requestCompleted`).
    mutating func requestStarted() {
        inFlight += 1
    }

    /// What to do when a request is answered.
    enum CompletionAction: Equatable {
        /// The connection was draining and this was its last request: close it.
        case close
        /// Start buffered frames if `mayStartRequest`, flush, then ask `mayResumeReading`.
        case resume
    }

    mutating func requestCompleted() -> CompletionAction {
        inFlight -= 1
        precondition(inFlight >= 0, "a request completed twice")
        return state == .draining && inFlight == 0 ? .close : .resume
    }

    /// Whether a held read should be done now (and it is no longer held).
    mutating func mayResumeReading(writable: Bool) -> Bool {
        guard state == .open, readHeld, inFlight < maxInFlight, writable else { return false }
        readHeld = false
        return true
    }

    /// Graceful shutdown asks the connection to finish: true when it should close now.
    mutating func quiesce() -> Bool {
        if state == .open { state = .draining }
        return state == .draining && inFlight == 0
    }

    /// The read-idle timeout passed: true when the connection should close (nothing pending).
    func idleTimeoutPassed() -> Bool { state != .closed && inFlight == 0 }

    /// The frame timer fired: true when the connection should close as a slow client.
    mutating func frameTimerFired() -> Bool {
        guard frameTimerArmed else { return false }
        frameTimerArmed = false
        return state != .closed
    }

    /// The connection is closing (an error answered with close) or closed: returns whether
    /// the frame timer must be cancelled.
    mutating func close() -> Bool {
        state = .closed
        let cancel = frameTimerArmed
        frameTimerArmed = false
        return cancel
    }
}
