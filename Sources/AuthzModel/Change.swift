import Foundation

/// One committed change (the store's change log, the Watch call): a record as the write at `revision` left it.
public struct Change: Sendable, Equatable {
    /// The revision of the write that made the change.
    public var revision: UInt64
    /// The record after the change (a deactivation is a record with `is_active` false).
    /// Platform-credential secrets are never in the change log: their tokens are empty and
    /// `secretsRedacted` is set.
    public var entity: Entity

    public init(revision: UInt64, entity: Entity) {
        self.revision = revision
        self.entity = entity
    }
}
