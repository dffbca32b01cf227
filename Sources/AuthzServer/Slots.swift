import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// A bounded number of things held at once: the connections of a listener, the daemon's Watch
/// streams. Thread-safe.
final class Slots: Sendable {
    /// Most held at once.
    let limit: Int
    private let held = NIOLockedValueBox(0)

    init(limit: Int) {
        self.limit = limit
    }

    /// How many are held now.
    var count: Int { held.withLockedValue { $0 } }

    /// Takes a slot; false (nothing taken) when all `limit` are held.
    func take() -> Bool {
        held.withLockedValue { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
    }

    /// Gives back a slot taken by `take`.
    func release() {
        held.withLockedValue { $0 -= 1 }
    }

    /// Takes a slot for an accepted `channel`, given back when it closes. When all are held,
    /// counts the refusal in `refused` and returns false: the caller closes the channel.
    func admit(_ channel: Channel, refused: Counter) -> Bool {
        guard take() else {
            refused.increment()
            return false
        }
        channel.closeFuture.whenComplete { _ in self.release() }
        return true
    }
}
