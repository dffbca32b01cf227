internal import CAuthzProto
import AuthzModel

/// Export (`ExportRequest`, `ExportResponse`): one tenant or all as JSON Lines, whole
/// (`Call.export`) or paged (`Call.exportPage`: `page_size` > 0 or a `page_token`; a page size
/// of 0 with a token means 10,000, and any size is capped at 100,000). A response with a
/// `next_page_token` decodes as `Reply.exportPage`, one without as `Reply.export`.
enum ExportWire: WireCall {
    static let kind = CallKind.export
    static let name = "Export"
    static let field = "export"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let r = FieldReader(prefix: "export.")
        let x = m.export.pointee
        let tenant = try r.optionalID(x.tenant_id, "tenant_id")
        let token = try r.string(x.page_token, "page_token")
        if x.page_size > 0 || !token.isEmpty {
            return .exportPage(tenantId: tenant, includeSecrets: x.include_secrets != 0, pageSize: Int(min(x.page_size == 0 ? 10_000 : x.page_size, 100_000)), pageToken: token)
        }
        return .export(tenantId: tenant, includeSecrets: x.include_secrets != 0)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        switch call {
        case .export(let t, let secrets):
            msg.pointee.export = a.make(Authz__V1__ExportRequest.self) {
                authz__v1__export_request__init($0)
                $0.pointee.tenant_id = a.cString(t?.description ?? "")
                $0.pointee.include_secrets = secrets ? 1 : 0
            }
        case .exportPage(let t, let secrets, let size, let token):
            msg.pointee.export = a.make(Authz__V1__ExportRequest.self) {
                authz__v1__export_request__init($0)
                $0.pointee.tenant_id = a.cString(t?.description ?? "")
                $0.pointee.include_secrets = secrets ? 1 : 0
                $0.pointee.page_size = UInt32(clamping: size)
                $0.pointee.page_token = a.cString(token)
            }
        default:
            preconditionFailure("\(call.name) given to the Export codec")
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        switch reply {
        case .export(let bytes, let revision):
            msg.pointee.export = a.make(Authz__V1__ExportResponse.self) {
                authz__v1__export_response__init($0)
                $0.pointee.jsonl = a.binary(bytes)
                $0.pointee.revision = revision
            }
        case .exportPage(let bytes, let revision, let next):
            msg.pointee.export = a.make(Authz__V1__ExportResponse.self) {
                authz__v1__export_response__init($0)
                $0.pointee.jsonl = a.binary(bytes)
                $0.pointee.revision = revision
                $0.pointee.next_page_token = a.cString(next)
            }
        default:
            preconditionFailure("\(reply.kind.name) reply given to the Export codec")
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        let d = m.export.pointee.jsonl
        let bytes = d.len == 0 ? [] : Array(UnsafeBufferPointer(start: d.data, count: d.len))
        let next = swiftString(m.export.pointee.next_page_token) ?? ""
        return next.isEmpty ? .export(bytes, revision: m.export.pointee.revision) : .exportPage(bytes, revision: m.export.pointee.revision, nextPageToken: next)
    }
}
