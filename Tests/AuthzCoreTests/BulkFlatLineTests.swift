@testable import AuthzModel
import XCTest

/// `BulkFormat.decode(line:)` reads lines of the common shape in place (`FlatLine`) and leaves
/// every other line to the general parser. The general parser is the contract: for every line
/// the answer (record, or error with its code, field and message) must be the general parser's.
final class BulkFlatLineTests: XCTestCase {
    /// The general parser alone.
    private func general(_ line: [UInt8]) -> Result<Entity, AuthzError> {
        Result {
            var r = BulkFormat.Reader(members: try BulkFormat.object(line, field: "line"))
            return try BulkFormat.entity(from: &r)
        }.mapError { $0 as! AuthzError }
    }

    private func decoded(_ line: [UInt8]) -> Result<Entity, AuthzError> {
        Result { try BulkFormat.decode(line: line) }.mapError { $0 as! AuthzError }
    }

    private func assertSameAnswer(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        let bytes = Array(text.utf8)
        XCTAssertEqual(decoded(bytes), general(bytes), text, file: file, line: line)
    }

    private static let t = ID("910a2dec-8902-4cc1-beeb-8da1658eec67")!
    private static let u = ID("71bb54d8-d101-45b9-834d-0bff90150280")!
    private static let r = ID("f893a2ee-fb32-455e-b1c1-8690ee42c90b")!

    /// One record of every kind, as export writes them.
    private var exported: [String] {
        let t = Self.t, u = Self.u, r = Self.r
        let records: [Entity] = [
            .tenant(Tenant(id: t, name: "tenant0")),
            .user(User(id: u, tenantId: t, email: "a@example.com", displayName: "Ann", externalId: "ext-1")),
            .role(Role(id: r, tenantId: t, name: "admin", description: "admins", scopes: [.tenant, .global], inherits: [.random(), .random()])),
            .permission(Permission(id: .random(), tenantId: t, name: "gmail.read", service: "gmail", scopes: [.self])),
            .roleBinding(RoleBinding(id: .random(), tenantId: t, userId: u, roleId: r, scope: .tenant, isActive: false)),
            .permissionBinding(PermissionBinding(id: .random(), tenantId: t, roleId: r, permissionId: .random(), scope: .global)),
            .platformCredential(PlatformCredential(id: .random(), tenantId: t, ownerUserId: u, platform: "gmail", externalAccountId: "acct-9",
                                                   accessToken: "tok", refreshToken: "ref", tokenExpiresAt: 1_700_000_000_000_000, oauthScopes: ["mail.read", "mail.send"])),
        ]
        return records.map { BulkFormat.encode($0, includeSecrets: true) }
    }

    func testExportedLinesTakeTheFlatPathAndDecodeAsTheGeneralParser() throws {
        for text in exported {
            let bytes = Array(text.utf8)
            XCTAssertNotNil(bytes.withUnsafeBytes { BulkFormat.decodeFlat($0) }, "an exported line has the common shape: \(text)")
            XCTAssertEqual(decoded(bytes), general(bytes), text)
            XCTAssertEqual(try decoded(bytes).get(), try general(bytes).get())
        }
    }

    func testEveryOtherShapeAndEveryMistakeAnswersAsTheGeneralParser() {
        let t = Self.t.description, u = Self.u.description, r = Self.r.description
        let lines = [
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)"}"#,
            #"  { "kind" : "user" , "id":"\#(u)",\#t"tenant_id" : "\#(t)" }  "#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","email":null,"display_name":null}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","email":"a\u0040b.com"}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","display_name":"Zoë"}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","id":"\#(u)"}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","colour":"red"}"#,
            #"{"kind":"user","id":"\#(u.uppercased())","tenant_id":"\#(t)"}"#,
            #"{"kind":"user","id":"\#(u.dropLast())","tenant_id":"\#(t)"}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","is_active":"true"}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","is_active":null}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","metadata":{"a":1}}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","metadata":null}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","metadata":[]}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","schema_version":-1.5e+3}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","schema_version":01}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","schema_version":1.}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","created_at":"2026-11-30T12:00:00Z"}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)","created_at":"yesterday"}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)",}"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)""#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)"} x"#,
            #"{"kind":"user","id":"\#(u)","tenant_id":"\#(t)"}{}"#,
            #"{"kind":"usr","id":"\#(u)","tenant_id":"\#(t)"}"#,
            #"{"kind":7}"#, #"{}"#, #"[]"#, #""user""#, "", "{", #"{"kind"}"#, #"{"kind":}"#, #"{,}"#,
            #"{"kind":"role","id":"\#(r)","tenant_id":"\#(t)","name":"a","scopes":[]}"#,
            #"{"kind":"role","id":"\#(r)","tenant_id":"\#(t)","name":"a","scopes":["tenant","planet"]}"#,
            #"{"kind":"role","id":"\#(r)","tenant_id":"\#(t)","name":"a","scopes":[ "tenant" , "self" ]}"#,
            #"{"kind":"role","id":"\#(r)","tenant_id":"\#(t)","name":"a","scopes":"tenant"}"#,
            #"{"kind":"role","id":"\#(r)","tenant_id":"\#(t)","name":"a","scopes":["tenant",]}"#,
            #"{"kind":"role","id":"\#(r)","tenant_id":"\#(t)","name":"a","inherits":["\#(u)","nope"]}"#,
            #"{"kind":"role","id":"\#(r)","tenant_id":"\#(t)","name":"a","inherits":["\#(r)"]}"#,
            #"{"kind":"role","id":"\#(r)","tenant_id":"\#(t)","name":"a","inherits":[1]}"#,
            #"{"kind":"role","id":"\#(r)","tenant_id":"\#(t)","name":"","scopes":null}"#,
            #"{"kind":"role_binding","id":"\#(r)","tenant_id":"\#(t)","user_id":"\#(u)","role_id":"\#(r)","scope":"planet"}"#,
            #"{"kind":"role_binding","id":"\#(r)","tenant_id":"\#(t)","user_id":"\#(u)","role_id":"\#(r)","scope":"self","owner_user_id":"\#(r)"}"#,
            #"{"kind":"platform_credential","id":"\#(r)","tenant_id":"\#(t)","owner_user_id":"\#(u)","platform":"gmail","external_account_id":"x","oauth_scopes":["a",2]}"#,
            #"{"kind":"tenant","id":"\#(t)","name":"t","tenant_id":"\#(u)"}"#,
            #"{"kind":"tenant","id":"\#(t)","name":"t\"quoted\""}"#,
            #"{"kind":"tenant","id":"\#(t)","name":"tab\#there"}"#,
            "{\"kind\":\"tenant\",\"id\":\"\(t)\",\"name\":\"nul\u{0}here\"}",
            "{\"kind\":\"tenant\",\"id\":\"\(t)\",\"name\":\"del\u{7F}here\"}",
        ]
        for text in lines { assertSameAnswer(text) }
    }

    /// Exported lines with bytes replaced, inserted or removed at random: whatever the damage,
    /// the answer is the general parser's.
    func testDamagedLinesAnswerAsTheGeneralParser() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array(#"{}[]":,\ ntf0123456789-.eE"#.utf8) + [0x09, 0x7F, 0xC3, 0x00, UInt8(ascii: "a")]
        for text in exported {
            let original = Array(text.utf8)
            for _ in 0..<400 {
                var bytes = original
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    let at = Int.random(in: 0..<bytes.count, using: &rng)
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: bytes[at] = alphabet.randomElement(using: &rng)!
                    case 1: bytes.insert(alphabet.randomElement(using: &rng)!, at: at)
                    default: if bytes.count > 1 { bytes.remove(at: at) }
                    }
                }
                XCTAssertEqual(decoded(bytes), general(bytes), String(decoding: bytes, as: UTF8.self))
            }
        }
    }
}
