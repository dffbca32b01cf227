internal import CAuthzProto
import AuthzModel

/// Import (`ImportRequest`, `ImportResponse`): JSON Lines applied as one write, whole
/// (`Call.importJSONL`) or in chunks under a `session` (`Call.importChunk`, `more` on all but
/// the last). `more` without a session is INVALID_ARGUMENT.
enum ImportWire: WireCall {
    static let kind = CallKind.importJSONL
    static let name = "Import"
    static let field = "import"

    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call {
        let d = m.import.pointee.jsonl
        let bytes = d.len == 0 ? [] : Array(UnsafeBufferPointer(start: d.data, count: d.len))
        if let session = try FieldReader(prefix: "import.").optionalID(m.import.pointee.session, "session") {
            return .importChunk(session: session, jsonl: bytes, firstLine: m.import.pointee.first_line, more: m.import.pointee.more != 0)
        }
        if m.import.pointee.more != 0 { throw AuthzError.invalid("import.more", "needs import.session") }
        return .importJSONL(bytes)
    }

    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena) {
        switch call {
        case .importJSONL(let bytes):
            msg.pointee.import = a.make(Authz__V1__ImportRequest.self) {
                authz__v1__import_request__init($0)
                $0.pointee.jsonl = a.binary(bytes)
            }
        case .importChunk(let session, let bytes, let firstLine, let more):
            msg.pointee.import = a.make(Authz__V1__ImportRequest.self) {
                authz__v1__import_request__init($0)
                $0.pointee.jsonl = a.binary(bytes)
                $0.pointee.session = a.cString(session.description)
                $0.pointee.more = more ? 1 : 0
                $0.pointee.first_line = firstLine
            }
        default:
            preconditionFailure("\(call.name) given to the Import codec")
        }
    }

    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena) {
        guard case .importResult(let revision, let records) = reply else { preconditionFailure("\(reply.kind.name) reply given to the Import codec") }
        msg.pointee.import = a.make(Authz__V1__ImportResponse.self) {
            authz__v1__import_response__init($0)
            $0.pointee.revision = revision
            $0.pointee.records = records
        }
    }

    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply {
        .importResult(revision: m.import.pointee.revision, records: m.import.pointee.records)
    }
}
