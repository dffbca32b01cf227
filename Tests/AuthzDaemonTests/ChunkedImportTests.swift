import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import XCTest

/// Imports of any size through the daemon: chunked, staged, atomic as a whole; timestamps kept.
final class ChunkedImportTests: XCTestCase {
    var daemon: DaemonProcess!

    override func setUpWithError() throws { daemon = try DaemonProcess(tcp: false) }

    override func tearDown() {
        daemon.stop()
        daemon.remove()
    }

    var authzctl: String { productsDirectory().appendingPathComponent("authzctl").path }

    /// A tenant and `users` users whose display names pad each line to about `lineBytes`.
    func file(users: Int, lineBytes: Int = 120) -> (tenant: ID, ids: [ID], text: String) {
        let t = ID.random()
        var ids: [ID] = []
        var text = BulkFormat.encode(.tenant(Tenant(id: t, name: "bulk-\(t.description.prefix(8))"))) + "\n"
        let pad = String(repeating: "x", count: max(1, lineBytes - 110))
        for i in 0..<users {
            let u = ID.random()
            ids.append(u)
            text += BulkFormat.encode(.user(User(id: u, tenantId: t, displayName: "user \(i) \(pad)"))) + "\n"
        }
        return (t, ids, text)
    }

    func exists(_ c: AuthzClient, _ t: ID, _ u: ID) async -> Bool {
        (try? await c.get(RecordRef(kind: .user, tenantId: t, id: u))) != nil
    }

    func testA100MBFileImportsAtomically() async throws {
        // About 100 MB, generated here: six times what one 16 MiB frame could carry.
        let (t, ids, text) = file(users: 400_000, lineBytes: 262)
        XCTAssertGreaterThan(text.utf8.count, 100_000_000)
        let path = daemon.dir + "/big.jsonl"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        // Through GNU time, for the CLI's peak memory: it reads the file chunk by chunk.
        let (status, out) = try runProcess("/usr/bin/time", ["-f", "maxrss_kb=%M", authzctl, "import", "--socket", daemon.socketPath, path])
        XCTAssertEqual(status, 0, out)
        XCTAssertTrue(out.contains("\"records\":400001"), out)
        XCTAssertLessThan(maxRSSKiB(out), 100 * 1024, "authzctl import holds the file in memory: \(out)")
        let c = daemon.client()
        defer { c.close() }
        let present = await exists(c, t, ids.last!)
        XCTAssertTrue(present)
        // The export of the same 100 MB streams page by page: the CLI's memory stays as small.
        let (exported, exportOut) = try runProcess("/usr/bin/time", ["-f", "maxrss_kb=%M", authzctl, "export", "--socket", daemon.socketPath])
        XCTAssertEqual(exported, 0)
        XCTAssertGreaterThan(exportOut.utf8.count, 100_000_000)
        XCTAssertLessThan(maxRSSKiB(exportOut), 100 * 1024, "authzctl export holds the records in memory")
    }

    /// The `maxrss_kb=N` line GNU time appended to a command's output.
    func maxRSSKiB(_ out: String) -> Int {
        guard let r = out.range(of: #"maxrss_kb=(\d+)"#, options: .regularExpression) else { return .max }
        return Int(out[r].dropFirst("maxrss_kb=".count)) ?? .max
    }

    func testABadLineNearTheEndAppliesNothingAndIsNumberedFromTheStart() async throws {
        let (t, ids, text) = file(users: 3000)
        let lines = text.split(separator: "\n").count
        let path = daemon.dir + "/bad.jsonl"
        try (text + "{\"kind\":\"user\",\"id\":\"nope\"}\n").write(toFile: path, atomically: true, encoding: .utf8)
        let (status, out) = try runProcess(authzctl, ["import", "--socket", daemon.socketPath, "--chunk-bytes", "65536", path])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(out.contains("line \(lines + 1):"), out)
        let c = daemon.client()
        defer { c.close() }
        let first = await exists(c, t, ids[0])
        XCTAssertFalse(first, "a chunk of a failed import was applied")
    }

    /// first_line is required on every chunk: unset (0), a chunk of a discarded session would
    /// start a new one and commit a partial import alone.
    func testAChunkWithoutFirstLineIsRefused() async throws {
        let (_, _, text) = file(users: 10)
        let c = daemon.client()
        defer { c.close() }
        for more in [true, false] {
            do {
                _ = try await c.importChunk(session: .random(), jsonl: Array(text.utf8), firstLine: 0, more: more)
                XCTFail("a chunk without first_line was taken (more: \(more))")
            } catch let e as AuthzError {
                XCTAssertEqual(e.code, .invalidArgument)
                XCTAssertEqual(e.field, "import.first_line")
            }
        }
        let revision = try await c.serverInfo().revision
        XCTAssertEqual(revision, 0, "nothing was applied")
    }

    func testADisconnectMidImportAppliesNothing() async throws {
        let (t, ids, text) = file(users: 2000)
        let bytes = Array(text.utf8)
        let parts = AuthzClient.chunks(of: bytes, chunkBytes: 32 << 10)
        XCTAssertGreaterThan(parts.count, 2)
        let session = ID.random()
        let first = daemon.client()
        _ = try await first.importChunk(session: session, jsonl: Array(bytes[parts[0].range]), firstLine: 1, more: true)
        first.close()
        try await Task.sleep(nanoseconds: 200_000_000)
        let c = daemon.client()
        defer { c.close() }
        // The session died with its connection: continuing it elsewhere is refused, nothing applied.
        do {
            _ = try await c.importChunk(session: session, jsonl: Array(bytes[parts[1].range]), firstLine: UInt64(parts[1].firstLine), more: false)
            XCTFail("a discarded session was continued")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .failedPrecondition)
        }
        let applied = await exists(c, t, ids[0])
        XCTAssertFalse(applied)
        // The whole file, chunked, in one go.
        let r = try await c.importChunked(bytes, chunkBytes: 32 << 10)
        XCTAssertEqual(r.records, UInt64(ids.count + 1))
        let all = await exists(c, t, ids.last!)
        XCTAssertTrue(all)
    }

    func testChunkCommitReportsWhereToResume() async throws {
        let (t, ids, text) = file(users: 1500)
        var lines = text.split(separator: "\n").map(String.init)
        let broken = lines.count - 10
        let good = lines[broken]
        lines[broken] = "{\"kind\":\"user\"}"
        let path = daemon.dir + "/resume.jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let (status, out) = try runProcess(authzctl, ["import", "--socket", daemon.socketPath, "--chunk-bytes", "16384", "--chunk-commit", path])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(out.contains("line \(broken + 1):"), out)
        guard let r = out.range(of: #"--skip-lines (\d+)"#, options: .regularExpression), let skip = Int(out[r].split(separator: " ").last!) else { return XCTFail(out) }
        XCTAssertLessThanOrEqual(skip, broken)
        lines[broken] = good
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let (again, out2) = try runProcess(authzctl, ["import", "--socket", daemon.socketPath, "--chunk-bytes", "16384", "--chunk-commit", "--skip-lines", "\(skip)", path])
        XCTAssertEqual(again, 0, out2)
        let c = daemon.client()
        defer { c.close() }
        for u in [ids[0], ids[broken - 1], ids.last!] {
            let present = await exists(c, t, u)
            XCTAssertTrue(present)
        }
    }

    func testExportImportExportIsExactIncludingTimestamps() async throws {
        let c = daemon.client()
        defer { c.close() }
        let t = ID.random(), u = ID.random(), r = ID.random()
        try await c.write([.upsert(.tenant(Tenant(id: t, name: "rt"))), .upsert(.user(User(id: u, tenantId: t, email: "a@b.c")))])
        try await Task.sleep(nanoseconds: 20_000_000)
        try await c.write([.upsert(.role(Role(id: r, tenantId: t, name: "viewer", metadata: "{\"b\": [1, 2], \"a\": \"x\\ny\"}")))])
        try await c.write([.upsert(.user(User(id: u, tenantId: t, email: "a@b.c", displayName: "later")))])  // updated_at moves
        let (first, _) = try await c.export(tenant: nil, includeSecrets: true)
        let fresh = try DaemonProcess(tcp: false)
        defer { fresh.stop(); fresh.remove() }
        let f = fresh.client()
        defer { f.close() }
        _ = try await f.importChunked(first, chunkBytes: 64)
        let (second, _) = try await f.export(tenant: nil, includeSecrets: true)
        func sorted(_ b: [UInt8]) -> [String] { String(decoding: b, as: UTF8.self).split(separator: "\n").map(String.init).sorted() }
        XCTAssertEqual(sorted(first), sorted(second))
        XCTAssertTrue(String(decoding: first, as: UTF8.self).contains("created_at"))
    }

    func testDataDirectoryParentsAreCreated() throws {
        let root = temporaryDirectory("parents")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let d = try DaemonProcess(dir: root, tcp: false, extra: ["--data-dir", root + "/a/b/data"])
        defer { d.stop() }
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/a/b/data/data.mdb"))
    }

    func testOfflineImportLoadsAStoppedDataDirectoryAndRefusesALiveOne() async throws {
        let (t, ids, text) = file(users: 2000)
        let path = daemon.dir + "/offline.jsonl"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let authzd = productsDirectory().appendingPathComponent("authzd").path
        // The running daemon's directory is locked.
        let (busy, busyOut) = try runProcess(authzd, ["import", "--data-dir", daemon.dir + "/data", path])
        XCTAssertNotEqual(busy, 0, busyOut)
        let root = temporaryDirectory("offline")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (status, out) = try runProcess(authzd, ["import", "--data-dir", root + "/data", "--quiet", path], mergeStderr: false)
        XCTAssertEqual(status, 0, out)
        XCTAssertTrue(out.contains("\"records\":2001"), out)
        let d = try DaemonProcess(dir: root, tcp: false)
        defer { d.stop() }
        let c = d.client()
        defer { c.close() }
        let present = await exists(c, t, ids.last!)
        XCTAssertTrue(present)
    }

    func testPagedExportReadsOneSnapshotWhateverIsWrittenMeanwhile() async throws {
        let (t, _, text) = file(users: 1200)
        let c = daemon.client()
        defer { c.close() }
        _ = try await c.importChunked(Array(text.utf8))
        let (whole, revision) = try await c.export(tenant: nil)
        var pages: [[UInt8]] = []
        var token = ""
        var revisions: Set<UInt64> = []
        repeat {
            let (b, r, next) = try await c.exportPage(tenant: nil, pageSize: 100, pageToken: token)
            pages.append(b)
            revisions.insert(r)
            token = next
            // Writes between pages must not show up in this export.
            try await c.write([.upsert(.user(User(id: .random(), tenantId: t)))])
        } while !token.isEmpty
        XCTAssertGreaterThan(pages.count, 10)
        XCTAssertEqual(revisions, [revision])
        XCTAssertEqual(pages.flatMap { $0 }, whole, "the paged export differs from the export at the same revision")
        // A token cannot be replayed or skipped.
        do {
            _ = try await c.exportPage(tenant: nil, pageSize: 100, pageToken: "\(ID.random()).3")
            XCTFail("an unknown token was accepted")
        } catch let e as AuthzError {
            XCTAssertEqual(e.code, .failedPrecondition)
        }
        // authzctl export streams the same way.
        let (status, out) = try runProcess(authzctl, ["export", "--socket", daemon.socketPath, "--page-size", "250"], mergeStderr: false)
        XCTAssertEqual(status, 0)
        XCTAssertEqual(out.split(separator: "\n").count, 1201 + pages.count)  // the users written between pages are in it now
    }

    func testADaemonKilledMidImportRestartsCleanWithNothingApplied() async throws {
        let (t, ids, text) = file(users: 2000)
        let bytes = Array(text.utf8)
        let parts = AuthzClient.chunks(of: bytes, chunkBytes: 32 << 10)
        let c = daemon.client()
        _ = try await c.importChunk(session: .random(), jsonl: Array(bytes[parts[0].range]), firstLine: 1, more: true)
        daemon.kill9()
        c.close()
        let again = try DaemonProcess(dir: daemon.dir, tcp: false)
        defer { again.stop() }
        let c2 = again.client()
        defer { c2.close() }
        let applied = await exists(c2, t, ids[0])
        XCTAssertFalse(applied, "a staged chunk survived the daemon")
        let r = try await c2.importChunked(bytes, chunkBytes: 32 << 10)
        XCTAssertEqual(r.records, UInt64(ids.count + 1))
    }
}
