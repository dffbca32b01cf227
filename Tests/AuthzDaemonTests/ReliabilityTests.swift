import AuthzClient
import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire
import Foundation
import NIOConcurrencyHelpers
import XCTest

/// Garbage, slow clients, too many connections, and SIGKILL under load.
final class ReliabilityTests: XCTestCase {
    struct Known {
        let t = ID.random(), u = ID.random(), r = ID.random(), p = ID.random()
        var ops: [WriteOp] {
            [.upsert(.tenant(Tenant(id: t, name: "known"))), .upsert(.user(User(id: u, tenantId: t))), .upsert(.role(Role(id: r, tenantId: t, name: "r"))),
             .upsert(.permission(Permission(id: p, tenantId: t, name: "core.known.check", service: "core"))),
             .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .global))),
             .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .tenant)))]
        }
    }

    /// The daemon still answers the known check correctly, on a fresh connection.
    func assertHealthy(_ daemon: DaemonProcess, _ k: Known, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(daemon.process.isRunning, "daemon died after \(context)", file: file, line: line)
        guard let raw = try? RawConnection(unixPath: daemon.socketPath) else { return XCTFail("cannot connect after \(context)", file: file, line: line) }
        raw.sendFrame(WireCodec.encodeRequest(WireRequest(requestId: 77, call: .success(.check(CheckCall(tenantId: k.t, userId: k.u, permission: "core.known.check", scope: .tenant))))))
        guard let f = raw.receiveFrame(), let r = try? f.withUnsafeBytes({ try WireCodec.decodeResponse($0) }), case .success(.check(let d)) = r.result else {
            return XCTFail("no answer to the known check after \(context)", file: file, line: line)
        }
        XCTAssertEqual(d.reason, .granted, "after \(context)", file: file, line: line)
        XCTAssertEqual(r.requestId, 77, file: file, line: line)
    }

    func setUpKnown(_ daemon: DaemonProcess) throws -> Known {
        let k = Known()
        let c = daemon.client()
        defer { c.close() }
        _ = try c.send(.write(k.ops)).wait()
        return k
    }

    func testRandomizedBadInputNeverHurts() throws {
        let daemon = try DaemonProcess(tcp: false, extra: ["--max-frame-size", "65536"])
        defer { daemon.stop(); daemon.remove() }
        let k = try setUpKnown(daemon)
        var rng = SystemRandomNumberGenerator()
        let validCheck = WireCodec.encodeRequest(WireRequest(requestId: 5, call: .success(.check(CheckCall(tenantId: k.t, userId: k.u, permission: "core.known.check", scope: .tenant)))))
        let validWrite = WireCodec.encodeRequest(WireRequest(requestId: 6, call: .success(.write([.upsert(.user(User(id: .random(), tenantId: k.t, email: "a@b.c", metadata: "{\"a\":1}")))]))))
        func header(_ n: UInt32) -> [UInt8] { [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] }
        func str(_ field: UInt8, _ bytes: [UInt8]) -> [UInt8] {
            var m: [UInt8] = [field << 3 | 2]
            var n = bytes.count
            while n >= 0x80 { m.append(UInt8(n & 0x7F) | 0x80); n >>= 7 }
            m.append(UInt8(n))
            return m + bytes
        }
        let bursts = Int(ProcessInfo.processInfo.environment["AUTHZ_BADINPUT_BURSTS"] ?? "") ?? 120
        for burst in 0..<bursts {
            let raw = try RawConnection(unixPath: daemon.socketPath)
            let kind = burst % 12
            var label = ""
            switch kind {
            case 0:
                label = "truncated frame"
                raw.send(header(100) + (0..<Int.random(in: 0..<99, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            case 1:
                let n: UInt32 = [65537, UInt32(Int32.max), UInt32.max].randomElement(using: &rng)!
                label = "oversized length \(n)"
                raw.send(header(n))
                _ = raw.receiveFrame()
                XCTAssertTrue(raw.isClosedByPeer(), "connection stays open after \(label)")
            case 2:
                label = "random bytes"
                raw.send((0..<Int.random(in: 1...4096, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            case 3:
                label = "random payload in a valid frame"
                raw.sendFrame((0..<Int.random(in: 0...512, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
                _ = raw.receiveFrame()
            case 4:
                label = "mutated valid requests"
                for base in [validCheck, validWrite] {
                    var m = base
                    for _ in 0..<Int.random(in: 1...6, using: &rng) { m[Int.random(in: 0..<m.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
                    raw.sendFrame(m)
                    _ = raw.receiveFrame()
                }
            case 5:
                label = "huge strings"
                let big = [UInt8](repeating: 0x61, count: 60_000)
                raw.sendFrame([0x08, 0x01] + str(10, str(1, big) + str(2, big.prefix(36).map { $0 }) + str(3, [0x61])))
                _ = raw.receiveFrame()
            case 6:
                label = "invalid UTF-8 and bad UUIDs"
                raw.sendFrame([0x08, 0x02] + str(10, str(1, [0xFF, 0xFE, 0xFD]) + str(2, Array("not-a-uuid".utf8)) + str(3, [0xC3, 0x28]) + [0x20, 0x02]))
                let r = raw.receiveFrame().flatMap { f in try? f.withUnsafeBytes { try WireCodec.decodeResponse($0) } }
                if case .failure(let e)? = r?.result { XCTAssertEqual(e.code, .invalidArgument) } else { XCTFail("no INVALID_ARGUMENT for \(label)") }
            case 7:
                label = "unknown enum values"
                raw.sendFrame([0x08, 0x03] + str(10, str(1, Array(k.t.description.utf8)) + str(2, Array(k.u.description.utf8)) + str(3, Array("core.known.check".utf8)) + [0x20, 0x7F]))
                let r = raw.receiveFrame().flatMap { f in try? f.withUnsafeBytes { try WireCodec.decodeResponse($0) } }
                if case .failure(let e)? = r?.result { XCTAssertEqual(e.field, "check.scope") } else { XCTFail("no error for \(label)") }
            case 8:
                label = "deep nesting"
                let deep = String(repeating: "{\"a\":", count: 5000) + "1" + String(repeating: "}", count: 5000)
                let w = WireCodec.encodeRequest(WireRequest(requestId: 9, call: .success(.write([.upsert(.user(User(id: .random(), tenantId: k.t, metadata: String(deep.prefix(20_000)))))]))))
                raw.sendFrame(w)
                let r = raw.receiveFrame().flatMap { f in try? f.withUnsafeBytes { try WireCodec.decodeResponse($0) } }
                if case .failure(let e)? = r?.result { XCTAssertEqual(e.code, .invalidArgument) } else { XCTFail("no error for \(label)") }
                // Nested protobuf messages too.
                var nested: [UInt8] = []
                for _ in 0..<200 { nested = str(1, nested) }
                raw.sendFrame([0x08, 0x04] + str(15, nested))
                _ = raw.receiveFrame()
            case 9:
                label = "empty everything"
                raw.sendFrame([])
                _ = raw.receiveFrame()
                raw.sendFrame([0x52, 0x00])
                _ = raw.receiveFrame()
                raw.sendFrame([0x5A, 0x00])
                _ = raw.receiveFrame()
                raw.sendFrame([0x7A, 0x00])
                _ = raw.receiveFrame()
            case 10:
                label = "a huge batch"
                let items = (0..<20_000).map { _ in Result<CheckCall, AuthzError>.success(CheckCall(tenantId: k.t, userId: k.u, permission: "a.b", scope: .self)) }
                let w = WireCodec.encodeRequest(WireRequest(requestId: 10, call: .success(.batchCheck(items, minRevision: 0))))
                raw.sendFrame(w)
                _ = raw.receiveFrame()
            default:
                label = "close mid-header"
                raw.send([0x00, 0x00])
            }
            assertHealthy(daemon, k, "burst \(burst): \(label)")
        }
    }

    func testSlowClientIsCutOff() throws {
        let daemon = try DaemonProcess(tcp: false, extra: ["--frame-timeout", "1"])
        defer { daemon.stop(); daemon.remove() }
        let k = try setUpKnown(daemon)
        let raw = try RawConnection(unixPath: daemon.socketPath)
        let started = Date()
        raw.send([0x00, 0x00, 0x00, 0x40])
        var closed = false
        for _ in 0..<20 {
            Thread.sleep(forTimeInterval: 0.25)
            raw.send([0x01])
            var b: UInt8 = 0
            var tv = timeval(tv_sec: 0, tv_usec: 1000)
            setsockopt(raw.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            if recv(raw.fd, &b, 1, 0) == 0 { closed = true; break }
        }
        XCTAssertTrue(closed, "a client trickling one byte at a time was not cut off")
        XCTAssertLessThan(Date().timeIntervalSince(started), 4)
        assertHealthy(daemon, k, "slow client")
    }

    func testConnectionsBeyondTheLimitAreRefusedCleanly() throws {
        let daemon = try DaemonProcess(tcp: false, extra: ["--set", "max-unix-connections=3"])
        defer { daemon.stop(); daemon.remove() }
        let k = Known()
        let held = try (0..<3).map { _ in try RawConnection(unixPath: daemon.socketPath) }
        for c in held {
            c.sendFrame(WireCodec.encodeRequest(WireRequest(requestId: 1, call: .success(.health))))
            XCTAssertNotNil(c.receiveFrame())
        }
        let extra = try RawConnection(unixPath: daemon.socketPath)
        XCTAssertTrue(extra.isClosedByPeer(), "the fourth connection should be closed")
        _ = k
        for c in held {
            c.sendFrame(WireCodec.encodeRequest(WireRequest(requestId: 2, call: .success(.health))))
            XCTAssertNotNil(c.receiveFrame(), "held connections keep working")
        }
    }

    /// Writers and checkers against the daemon; SIGKILL at random moments; after each cycle every
    /// acknowledged write is present, the revision never goes backwards, the index equals one
    /// rebuilt from LMDB, and checks answer.
    func testSIGKILLUnderLoadLosesNoAcknowledgedWrite() throws {
        let cycles = Int(ProcessInfo.processInfo.environment["AUTHZ_CRASH_LOAD_CYCLES"] ?? "") ?? 20
        let dir = temporaryDirectory("authzd-kill")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let k = Known()
        let acknowledged = NIOLockedValueBox<[(UInt64, ID)]>([])
        var lastRevision: UInt64 = 0
        for cycle in 0..<cycles {
            let daemon = try DaemonProcess(dir: dir, tcp: false)
            let client = daemon.client(connections: 3)
            if cycle == 0 { _ = try client.send(.write(k.ops)).wait() }
            assertHealthy(daemon, k, "restart \(cycle)")
            let stop = DispatchTime.now() + .milliseconds(Int.random(in: 150...500))
            let group = DispatchGroup()
            for _ in 0..<3 {
                DispatchQueue.global().async(group: group) {
                    while DispatchTime.now() < stop {
                        let u = ID.random()
                        guard case .write(let rev)? = try? client.send(.write([.upsert(.user(User(id: u, tenantId: k.t))),
                                                                             .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: k.t, userId: u, roleId: k.r, scope: .self)))])).wait() else { return }
                        acknowledged.withLockedValue { $0.append((rev, u)) }
                    }
                }
            }
            DispatchQueue.global().async(group: group) {
                while DispatchTime.now() < stop {
                    _ = try? client.send(.check(CheckCall(tenantId: k.t, userId: k.u, permission: "core.known.check", scope: .tenant))).wait()
                }
            }
            // Kill while the load runs.
            Thread.sleep(forTimeInterval: Double.random(in: 0.05...0.4))
            daemon.kill9()
            group.wait()
            client.close()
            // Verify offline.
            let engine = try Engine(directory: dir + "/data")
            let acked = acknowledged.withLockedValue { $0 }
            let maxAcked = acked.map(\.0).max() ?? 0
            XCTAssertGreaterThanOrEqual(engine.revision, maxAcked, "cycle \(cycle): an acknowledged revision is missing")
            XCTAssertGreaterThanOrEqual(engine.revision, lastRevision, "cycle \(cycle): the revision went backwards")
            lastRevision = engine.revision
            for (rev, u) in acked {
                let d = try engine.check(tenant: k.t, user: u, permission: "core.known.check", scope: .self)
                XCTAssertEqual(d.reason, .granted, "cycle \(cycle): acknowledged write at revision \(rev) lost")
            }
            XCTAssertEqual(try engine.verifyIndex(), [], "cycle \(cycle)")
        }
        XCTAssertGreaterThan(acknowledged.withLockedValue { $0.count }, cycles, "writers should have been acknowledged")
    }
}
