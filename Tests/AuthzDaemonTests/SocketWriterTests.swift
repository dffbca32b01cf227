import AuthzClient
import AuthzModel
import AuthzWire
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import XCTest
@testable import AuthzServer

/// Direct writes (`SocketWriter`): the descriptor lookup on real swift-nio socket channels, and
/// a real daemon whose answers outgrow the socket buffer mid-stream, so that NIO takes over the
/// writes and hands them back, with every answer intact and in order.
final class SocketWriterTests: XCTestCase {
    /// Reports what `SocketWriter.find` found for the accepted channel, then writes `greeting`
    /// with it.
    final class Probe: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let found: EventLoopPromise<SocketWriter?>
        init(found: EventLoopPromise<SocketWriter?>) { self.found = found }

        func channelActive(context: ChannelHandlerContext) {
            SocketWriter.find(context.channel).assumeIsolated().whenComplete { result in
                let writer = (try? result.get()) ?? nil
                if let writer { _ = Array("hello".utf8).withUnsafeBytes { writer.write($0) } }
                self.found.succeed(writer)
            }
        }
    }

    /// Accepts one connection on `bind`'s channel; returns the writer found for it and the
    /// bytes the client then read.
    func probe(_ bind: (ServerBootstrap) throws -> Channel, connect: (Channel) throws -> RawConnection) throws -> (SocketWriter?, [UInt8]?) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let found = group.next().makePromise(of: SocketWriter?.self)
        let server = try bind(ServerBootstrap(group: group).childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Probe(found: found)) }
        })
        defer { try? server.close().wait() }
        let client = try connect(server)
        let writer = try found.futureResult.wait()
        return (writer, writer == nil ? nil : client.receive(5))
    }

    func testFindsAndProvesTheDescriptorOfATCPChannel() throws {
        let (writer, read) = try probe({ try $0.bind(host: "127.0.0.1", port: 0).wait() },
                                       connect: { try RawConnection(tcpPort: $0.localAddress!.port!) })
        XCTAssertNotNil(writer, "SocketWriter no longer finds a swift-nio channel's descriptor: direct writes are off")
        XCTAssertEqual(read, Array("hello".utf8))
    }

    func testFindsAndProvesTheDescriptorOfAUnixChannel() throws {
        let path = temporaryDirectory("socketwriter") + "/s.sock"
        let (writer, read) = try probe({ try $0.bind(unixDomainSocketPath: path).wait() },
                                       connect: { _ in try RawConnection(unixPath: path) })
        XCTAssertNotNil(writer, "SocketWriter no longer finds a swift-nio channel's descriptor: direct writes are off")
        XCTAssertEqual(read, Array("hello".utf8))
    }

    func testAChannelWithoutASocketHasNoWriter() throws {
        let channel = EmbeddedChannel()
        XCTAssertNil(try SocketWriter.find(channel).wait())
        XCTAssertNil(SocketWriter.cookie(of: -1))
    }

    /// Answers pile up while the client reads nothing: the daemon's direct `send` fills the
    /// socket, NIO queues the rest (and, past the high-water mark, the daemon stops reading),
    /// then the client reads. Every answer arrives once, in request order, and right.
    func testAnswersStayWholeAndInOrderWhenTheSocketFills() async throws {
        // NIO's write path alone (direct-writes=false) must give the same bytes.
        for (transport, direct) in [("unix", true), ("tcp", true), ("unix", false)] {
            let daemon = try DaemonProcess(extra: ["--set", "write-buffer-high-water=262144", "--set", "insecure-no-auth=true", "--set", "direct-writes=\(direct)"])
            defer { daemon.stop(); daemon.remove() }
            let t = ID.random(), allowed = ID.random(), denied = ID.random(), r = ID.random(), p = ID.random()
            let c = daemon.client()
            try await c.write([.upsert(.tenant(Tenant(id: t, name: "acme"))), .upsert(.user(User(id: allowed, tenantId: t))),
                               .upsert(.user(User(id: denied, tenantId: t))), .upsert(.role(Role(id: r, tenantId: t, name: "reader"))),
                               .upsert(.permission(Permission(id: p, tenantId: t, name: "gmail.messages.read", service: "gmail"))),
                               .upsert(.permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: p, scope: .global))),
                               .upsert(.roleBinding(RoleBinding(id: .random(), tenantId: t, userId: allowed, roleId: r, scope: .global)))])
            c.close()
            let raw = transport == "unix" ? try RawConnection(unixPath: daemon.socketPath) : try RawConnection(tcpPort: daemon.tcpPort!)
            // 3,000 BatchChecks of 100 (every third item for the user without the role): about
            // 2 MB of answers, several socket buffers.
            let requests = 3_000
            var batch: [UInt8] = []
            for i in 0..<100 {
                let user = i % 3 == 2 ? denied : allowed
                batch += PB.field(1, PB.check(tenant: Array(t.description.utf8), user: Array(user.description.utf8), permission: Array("gmail.messages.read".utf8)))
            }
            // One thread sends while this one reads: a socket is safe to use that way.
            nonisolated(unsafe) let sendSide = raw
            let items = batch
            let sender = Thread {
                for id in 1...requests { sendSide.sendFrame(PB.request(id: UInt64(id), call: 11, items)) }
            }
            sender.start()
            try await Task.sleep(nanoseconds: 500_000_000)  // let the answers fill the socket
            for id in 1...requests {
                guard let f = raw.receiveFrame() else { return XCTFail("\(transport): no answer to request \(id)") }
                let response = try f.withUnsafeBytes { try WireCodec.decodeResponse($0) }
                XCTAssertEqual(response.requestId, UInt64(id), "\(transport): answers out of order")
                guard case .success(.batchCheck(let items, _)) = response.result, items.count == 100 else {
                    return XCTFail("\(transport): request \(id) answered \(response.result)")
                }
                for (i, item) in items.enumerated() {
                    guard case .success(let d) = item else { return XCTFail("\(transport): item \(i) of request \(id) failed") }
                    if d.allowed != (i % 3 != 2) { return XCTFail("\(transport): item \(i) of request \(id) decided \(d)") }
                }
            }
        }
    }
}
