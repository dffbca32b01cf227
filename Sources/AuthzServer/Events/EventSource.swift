import AuthzEngine
import AuthzModel

/// A consumer of user lifecycle events from a broker (`--events`, docs/events.md): it hands
/// each message to an `EventIngestor` and acknowledges (NATS) or commits (Kafka) it only once
/// its write is durable or its dead letter stored, so a daemon killed at any point loses no
/// event (a redelivered one is a duplicate by its time and writes nothing).
///
/// Implementations run one thread of their own; none of their calls block an event loop.
protocol EventSource: AnyObject, Sendable {
    /// Whether events may be applied yet, polled before consuming starts: in log mode, not
    /// before this replica has caught up with the log (an event for a tenant it has not
    /// applied yet would be dead-lettered). Set before `start()`.
    var isReady: () -> Bool { get set }
    /// Called on the consumer's thread after each applied event, with its operation and
    /// revision (the audit trail). Set before `start()`.
    var onApplied: ((WriteOp, UInt64) -> Void)? { get set }
    /// Starts consuming on the source's own thread and returns at once. Called once.
    func start()
    /// Stops consuming; returns within about a second. Events in hand but not acknowledged or
    /// committed are delivered again later (to this group). Not restartable.
    func stop()
}
