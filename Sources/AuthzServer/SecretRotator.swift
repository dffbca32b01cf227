import AuthzEngine
import AuthzWire
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers

/// Re-encrypts credential secrets to the key ring's active key while the daemon serves
/// (the RotateSecrets call, `authzd keys rotate-data`): one background thread at a time,
/// batch by batch under the store's write lock, so writes interleave. A rotation the daemon
/// did not finish (killed, or stopped by an error) is recorded in the store and resumed at
/// the next start. Progress is in `/metrics` (`authzd_secret_rotation_remaining`,
/// `authzd_secrets_reencrypted_total`) and in the call's answer.
final class SecretRotator: Sendable {
    struct State {
        var running = false
        var remaining: UInt64 = 0
        var reencrypted: UInt64 = 0
    }

    let secrets: SecretKeys
    let logger: Logger
    let batchSize: Int
    /// Pause between two batches, to spread a rotation's disk writes on a busy daemon.
    let pause: TimeInterval
    private let state = NIOLockedValueBox(State())
    private let remainingGauge = Gauge(label: "authzd_secret_rotation_remaining")
    private let runningGauge = Gauge(label: "authzd_secret_rotation_running")
    private let done = Counter(label: "authzd_secrets_reencrypted_total")

    /// A rotator of `store`'s secrets, `batchSize` records per write transaction, `pause`
    /// seconds between transactions.
    init(secrets: SecretKeys, logger: Logger, batchSize: Int = 256, pause: TimeInterval = 0) {
        self.secrets = secrets
        self.logger = logger
        self.batchSize = batchSize
        self.pause = pause
    }

    /// The call: re-reads the key ring (FAILED_PRECONDITION, old ring kept, when it lacks a
    /// key still in use), then starts a background rotation unless one runs. Returns the state.
    func rotate() throws -> SecretRotationStatus {
        let ring = try secrets.reload()
        logger.notice("key ring reloaded", metadata: ["keyring.active": "\(ring.activeKeyId)", "keyring.keys": "\(ring.keyIds)"])
        try start()
        return status()
    }

    /// Resumes a rotation recorded in the store (daemon start).
    func resumeIfRecorded() {
        guard let target = try? secrets.rotationTarget() else { return }
        logger.notice("resuming an unfinished secret rotation", metadata: ["keyring.target": "\(target)"])
        try? start()
    }

    /// The state now, with the ring's keys.
    func status() -> SecretRotationStatus {
        let s = state.withLockedValue { $0 }
        return SecretRotationStatus(activeKeyId: secrets.activeKeyId ?? "", keyIds: secrets.keyIds, running: s.running,
                                    remaining: s.remaining, reencrypted: s.reencrypted)
    }

    private func start() throws {
        let begin = state.withLockedValue { s -> Bool in
            if s.running { return false }
            s.running = true
            s.reencrypted = 0
            return true
        }
        guard begin else { return }
        do {
            let stale = try secrets.staleCount()
            state.withLockedValue { $0.remaining = UInt64(stale) }
            remainingGauge.record(stale)
            if stale == 0 {
                // Nothing sealed with another key: nothing to run (and nothing to resume).
                try secrets.setRotationTarget(nil)
                state.withLockedValue { $0.running = false }
                return
            }
            runningGauge.record(1)
            try secrets.setRotationTarget(secrets.activeKeyId)
        } catch {
            state.withLockedValue { $0.running = false }
            runningGauge.record(0)
            throw error
        }
        let thread = Thread { [self] in run() }
        thread.name = "authzd-secret-rotation"
        thread.start()
    }

    private func run() {
        do {
            while true {
                let n = try secrets.rotateBatch(batchSize: batchSize)
                if n == 0 { break }
                let remaining = state.withLockedValue { s -> UInt64 in
                    s.reencrypted += UInt64(n)
                    s.remaining = s.remaining > UInt64(n) ? s.remaining - UInt64(n) : 0
                    return s.remaining
                }
                done.increment(by: n)
                remainingGauge.record(remaining)
                if pause > 0 { Thread.sleep(forTimeInterval: pause) }
            }
            try secrets.setRotationTarget(nil)
            state.withLockedValue { $0.remaining = 0 }
            remainingGauge.record(0)
            logger.notice("secret rotation finished", metadata: ["keyring.active": "\(secrets.activeKeyId ?? "")", "rotation.reencrypted": "\(status().reencrypted)"])
        } catch {
            // The rotation stays recorded: the next RotateSecrets call or start resumes it.
            logger.error("secret rotation stopped", metadata: ["error": "\(error)"])
        }
        state.withLockedValue { $0.running = false }
        runningGauge.record(0)
    }
}
