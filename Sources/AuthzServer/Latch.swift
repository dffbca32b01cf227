import Foundation
import NIOCore

/// A one-shot signal threads wait for, with or without a timeout (an `NSCondition`: the code
/// base's one primitive for a thread waiting on a state change; see docs/architecture.md).
public final class Latch: @unchecked Sendable {  // `signalled` is only touched under `condition`
    private let condition = NSCondition()
    private var signalled = false

    /// A latch not yet signalled.
    public init() {}

    /// Wakes every waiter (now or when they come); later signals change nothing.
    public func signal() {
        condition.lock()
        signalled = true
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until `signal` was called.
    public func wait() {
        condition.lock()
        while !signalled { condition.wait() }
        condition.unlock()
    }

    /// Waits until `signal` was called or `timeout` passed; true when signalled.
    public func wait(timeout: TimeAmount) -> Bool {
        let until = Date(timeIntervalSinceNow: Double(max(0, timeout.nanoseconds)) / 1e9)
        condition.lock()
        defer { condition.unlock() }
        while !signalled {
            if !condition.wait(until: until) { return signalled }
        }
        return true
    }
}
