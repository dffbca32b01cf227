import AuthzModel
import AuthzServer
import XCTest

/// `--tls-identity` exact mappings: tenant-bound roles need a tenant, the others have none.
/// (Until this table, a `case .checker, .admin where …` pattern refused every checker mapping,
/// with or without a tenant, and every gateway mapping.)
final class CertificateIdentityMapTests: XCTestCase {
    func testExactMappingsFollowTheTenantRuleForEveryRole() {
        let t = ID.random()
        let table: [(pattern: String, accepted: Bool)] = [
            ("spiffe://a/x=checker:\(t)", true),
            ("spiffe://a/x=checker", false),
            ("spiffe://a/x=admin:\(t)", true),
            ("spiffe://a/x=admin", false),
            ("spiffe://a/x=gateway", true),
            ("spiffe://a/x=gateway:\(t)", false),
            ("spiffe://a/x=operator", true),
            ("spiffe://a/x=operator:\(t)", false),
        ]
        for row in table {
            let result = Result { try CertificateIdentityMap([row.pattern]) }
            switch (result, row.accepted) {
            case (.success, true): break
            case (.failure(let e), false):
                XCTAssertTrue("\(e)".contains("tls-identity spiffe://a/x="), "\(row.pattern): \(e)")
            case (.success, false): XCTFail("\(row.pattern) was accepted")
            case (.failure(let e), true): XCTFail("\(row.pattern) was refused: \(e)")
            }
        }
    }
}
