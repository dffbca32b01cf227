import NIOConcurrencyHelpers

/// A value published once and awaited by any number of tasks: `value()` suspends until
/// `publish` and then returns the published value, at once for callers that come later.
/// Waiters are not cancellable: the publisher must publish on every path (the server
/// publishes its start's outcome, success or failure).
final class Published<Value: Sendable>: Sendable {
    private enum State {
        case waiting([CheckedContinuation<Value, Never>])
        case published(Value)
    }

    private let state = NIOLockedValueBox(State.waiting([]))

    init() {}

    /// Publishes `value` and resumes every waiter; a second publication is ignored.
    func publish(_ value: Value) {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Value, Never>] in
            guard case .waiting(let w) = s else { return [] }
            s = .published(value)
            return w
        }
        for w in waiters { w.resume(returning: value) }
    }

    /// The published value, waiting for it if need be.
    func value() async -> Value {
        await withCheckedContinuation { (c: CheckedContinuation<Value, Never>) in
            let now = state.withLockedValue { s -> Value? in
                switch s {
                case .published(let v): return v
                case .waiting(var w):
                    w.append(c)
                    s = .waiting(w)
                    return nil
                }
            }
            if let now { c.resume(returning: now) }
        }
    }
}
