import XCTest
@testable import AuthzServer

/// `ConnectionFlow`'s rules, action by action, without a channel: backpressure, partial
/// frames and the frame timer, drain, idle.
final class ConnectionFlowTests: XCTestCase {
    func testReadsAreHeldAtTheInFlightBoundAndResumedWhenASlotFrees() {
        var f = ConnectionFlow(maxInFlight: 2)
        XCTAssertEqual(f.readRequested(writable: true, partialFrameBuffered: false), .read(armFrameTimer: false))
        f.requestStarted()
        XCTAssertTrue(f.mayStartRequest)
        f.requestStarted()
        XCTAssertFalse(f.mayStartRequest, "the bound stops the read loop")
        XCTAssertEqual(f.readRequested(writable: true, partialFrameBuffered: false), .hold(cancelFrameTimer: false))
        XCTAssertTrue(f.readHeld)
        XCTAssertFalse(f.mayResumeReading(writable: true), "still at the bound")
        XCTAssertEqual(f.requestCompleted(), .resume)
        XCTAssertTrue(f.mayResumeReading(writable: true))
        XCTAssertFalse(f.readHeld)
        XCTAssertFalse(f.mayResumeReading(writable: true), "a held read is done once")
    }

    func testAPeerThatDoesNotReadStopsTheReadingUntilWritable() {
        var f = ConnectionFlow(maxInFlight: 8)
        XCTAssertEqual(f.readRequested(writable: false, partialFrameBuffered: false), .hold(cancelFrameTimer: false))
        XCTAssertFalse(f.mayResumeReading(writable: false))
        XCTAssertTrue(f.mayResumeReading(writable: true), "writability back: read")
    }

    func testAPartialFrameArmsTheTimerOnlyWhileTheDaemonReads() {
        var f = ConnectionFlow(maxInFlight: 1)
        // Half a frame arrives: the clock starts.
        XCTAssertEqual(f.framesConsumed(started: 0, leftover: .partialFrame), .arm)
        XCTAssertTrue(f.frameTimerArmed)
        // More of the same frame, still partial: the clock keeps running (not restarted).
        XCTAssertEqual(f.framesConsumed(started: 0, leftover: .partialFrame), .none)
        // A frame completes and a new one starts: the clock restarts for the new frame.
        XCTAssertEqual(f.framesConsumed(started: 1, leftover: .partialFrame), .arm)
        // The daemon stops reading (its own bound): the clock stops.
        f.requestStarted()
        XCTAssertEqual(f.readRequested(writable: true, partialFrameBuffered: true), .hold(cancelFrameTimer: true))
        XCTAssertFalse(f.frameTimerArmed)
        XCTAssertEqual(f.framesConsumed(started: 0, leftover: .partialFrame), .none, "held reads keep the clock stopped")
        // Reading again with the partial frame still buffered: the clock runs again.
        XCTAssertEqual(f.requestCompleted(), .resume)
        XCTAssertTrue(f.mayResumeReading(writable: true))
        XCTAssertEqual(f.readRequested(writable: true, partialFrameBuffered: true), .read(armFrameTimer: true))
        // The frame completes with nothing after it: the clock stops.
        XCTAssertEqual(f.framesConsumed(started: 1, leftover: .nothing), .cancel)
        XCTAssertEqual(f.framesConsumed(started: 1, leftover: .nothing), .none)
    }

    func testTheFrameTimerClosesOnlyWhenItIsArmedAndTheConnectionOpen() {
        var f = ConnectionFlow(maxInFlight: 1)
        XCTAssertFalse(f.frameTimerFired(), "a cancelled timer that fires anyway does nothing")
        _ = f.framesConsumed(started: 0, leftover: .partialFrame)
        XCTAssertTrue(f.frameTimerFired())
        XCTAssertFalse(f.frameTimerArmed)
        _ = f.framesConsumed(started: 0, leftover: .partialFrame)
        XCTAssertTrue(f.close(), "closing cancels a running timer")
        XCTAssertFalse(f.frameTimerFired())
    }

    func testCompleteFramesLeftAtTheBoundWaitWithoutTheTimer() {
        var f = ConnectionFlow(maxInFlight: 1)
        f.requestStarted()
        XCTAssertEqual(f.framesConsumed(started: 1, leftover: .completeFrames), .none)
        XCTAssertFalse(f.frameTimerArmed)
    }

    func testDrainingClosesWhenTheLastRequestIsAnswered() {
        var f = ConnectionFlow(maxInFlight: 4)
        f.requestStarted()
        f.requestStarted()
        XCTAssertFalse(f.quiesce(), "requests pending: not yet")
        XCTAssertEqual(f.state, .draining)
        XCTAssertEqual(f.readRequested(writable: true, partialFrameBuffered: false), .ignore, "a draining connection reads nothing more")
        XCTAssertEqual(f.requestCompleted(), .resume)
        XCTAssertFalse(f.mayResumeReading(writable: true))
        XCTAssertEqual(f.requestCompleted(), .close)
        // Nothing pending: at once.
        var idle = ConnectionFlow(maxInFlight: 4)
        XCTAssertTrue(idle.quiesce())
        XCTAssertTrue(idle.quiesce(), "asking twice changes nothing")
    }

    func testIdleClosesOnlyWithNothingPending() {
        var f = ConnectionFlow(maxInFlight: 4)
        XCTAssertTrue(f.idleTimeoutPassed())
        f.requestStarted()
        XCTAssertFalse(f.idleTimeoutPassed(), "a long request (a watch, a revision wait) is not idleness")
        XCTAssertEqual(f.requestCompleted(), .resume)
        _ = f.close()
        XCTAssertFalse(f.idleTimeoutPassed())
        XCTAssertFalse(f.mayStartRequest)
    }
}
