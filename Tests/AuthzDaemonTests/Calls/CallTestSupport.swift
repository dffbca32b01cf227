import AuthzIndex
import AuthzModel
@testable import AuthzServer
@testable import AuthzWire
import XCTest

/// Helpers of the per-call tests: one test file per call in this directory, covering that
/// call's codec (`AuthzWire/Calls/`) and its command (`AuthzServer/Commands/`).
enum CallTest {
    /// The tenant the test keys belong to, and another.
    static let tenant = ID(hi: 0x7d0c_0000_0000_4000, lo: 0x8000_0000_0000_0001)
    static let other = ID(hi: 0x7d0c_0000_0000_4000, lo: 0x8000_0000_0000_0002)
    static let user = ID(hi: 0x7d0c_0000_0000_4000, lo: 0x8000_0000_0000_0003)
    static let key = ID(hi: 0x7d0c_0000_0000_4000, lo: 0x8000_0000_0000_0009)

    /// Encodes `call`, decodes it with protobuf-c, and checks that encoding the result gives
    /// the same bytes (the typed values are not all `Equatable`).
    static func assertRoundTrips(_ call: Call, file: StaticString = #filePath, line: UInt = #line) {
        let request = WireRequest(requestId: 7, deadlineMs: 9, call: .success(call))
        let bytes = WireCodec.encodeRequest(request)
        let back = bytes.withUnsafeBytes { WireCodec.decodeRequestWithProtobufC($0) }
        switch back.call {
        case .success(let decoded):
            XCTAssertEqual(decoded.kind, call.kind, file: file, line: line)
            XCTAssertEqual(WireCodec.encodeRequest(back), bytes, "\(call.name) does not round-trip", file: file, line: line)
        case .failure(let e):
            XCTFail("\(call.name) decodes as \(e)", file: file, line: line)
        }
    }

    /// Encodes `reply`, decodes it (client side), and checks that encoding the result gives
    /// the same bytes.
    static func assertRoundTrips(_ reply: Reply, file: StaticString = #filePath, line: UInt = #line) {
        let response = WireResponse(requestId: 7, result: .success(reply))
        let bytes = WireCodec.encodeResponseWithProtobufC(response)
        do {
            let back = try bytes.withUnsafeBytes { try WireCodec.decodeResponse($0) }
            XCTAssertEqual(try back.result.get().kind, reply.kind, file: file, line: line)
            XCTAssertEqual(WireCodec.encodeResponseWithProtobufC(back), bytes, "\(reply.kind.name) reply does not round-trip", file: file, line: line)
        } catch {
            XCTFail("\(reply.kind.name) reply decodes as \(error)", file: file, line: line)
        }
    }

    /// A protobuf field: key and length-delimited bytes.
    static func field(_ number: UInt64, _ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        FastPath.varint(number << 3 | 2, &out)
        FastPath.varint(UInt64(bytes.count), &out)
        return out + bytes
    }

    /// A protobuf string field.
    static func field(_ number: UInt64, _ s: String) -> [UInt8] { field(number, Array(s.utf8)) }

    /// A protobuf varint field.
    static func varint(_ number: UInt64, _ v: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        FastPath.varint(number << 3, &out)
        FastPath.varint(v, &out)
        return out
    }

    /// The error a `Request` carrying `message` as the call of `kind` decodes to (nil when it
    /// decodes), through protobuf-c.
    static func decodeError(_ kind: CallKind, _ message: [UInt8]) -> AuthzError? {
        let bytes = varint(1, 1) + field(UInt64(kind.rawValue), message)
        guard case .failure(let e) = bytes.withUnsafeBytes({ WireCodec.decodeRequestWithProtobufC($0) }).call else { return nil }
        return e
    }

    /// What `authorize` says to a key of `role` bound to `tenant` (`.zero` for operator and
    /// gateway keys) making `call`: nil when allowed.
    static func refusal(_ role: KeyRole, _ call: Call, tenant: ID? = nil) -> AuthzError? {
        let t = tenant ?? (role == .operator || role == .gateway ? .zero : CallTest.tenant)
        return authorize(.key(id: key, role: role, tenant: t), call)
    }

    /// Checks the refusals every command shares: the superuser may make `call`, an
    /// unauthenticated caller may not (unless `open`).
    static func assertSharedRules(_ call: Call, open: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNil(authorize(.superuser, call), file: file, line: line)
        XCTAssertEqual(authorize(.unauthenticated, call)?.code, open ? nil : .unauthenticated, file: file, line: line)
        XCTAssertEqual(Commands.command(for: call).kind, call.kind, file: file, line: line)
    }
}

/// The tables themselves: every call has exactly one codec and one command.
final class CallTableTests: XCTestCase {
    func testEveryCallHasACodecAndACommand() {
        XCTAssertEqual(WireCalls.all.count, CallKind.allCases.count)
        XCTAssertEqual(Commands.all.count, CallKind.allCases.count)
        for kind in CallKind.allCases {
            XCTAssertEqual(WireCalls.codec(kind).kind, kind)
            XCTAssertEqual(Commands.command(kind).kind, kind)
            XCTAssertEqual(WireCalls.codec(field: kind.rawValue)?.kind, kind)
        }
        XCTAssertNil(WireCalls.codec(field: 0))
        XCTAssertNil(WireCalls.codec(field: 28))
    }

    func testARequestWithNoCallListsEveryCall() {
        let e = ([0x08, 0x05] as [UInt8]).withUnsafeBytes { WireCodec.decodeRequestWithProtobufC($0) }.call
        guard case .failure(let error) = e else { return XCTFail() }
        XCTAssertEqual(error.message, "request.call must set one of check, batch_check, explain, list_user_permissions, list_permission_users, write, get, list, import, export, server_info, health, hello, create_key, list_keys, revoke_key, rotate_secrets, watch")
    }
}
