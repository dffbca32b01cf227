internal import CAuthzProto
import AuthzModel

/// Which call of the protocol a request makes: one case per field of `Request.call`, the raw
/// value being that field's number, which is also the number of its answer in
/// `Response.result` and the value of the generated `…__CALL_…`/`…__RESULT_…` case constants
/// (proto/authz.proto, docs/protocol.md).
///
/// The key of both per-call tables: `WireCalls` (the codec of each call, in `Calls/`) and the
/// server's `Commands` (its lane, who may call it and what it runs, in
/// `AuthzServer/Commands/`).
public enum CallKind: UInt32, CaseIterable, Sendable {
    case check = 10
    case batchCheck = 11
    case explain = 12
    case listUserPermissions = 13
    case listPermissionUsers = 14
    case write = 15
    case get = 16
    case list = 17
    case importJSONL = 18
    case export = 19
    case serverInfo = 20
    case health = 21
    case hello = 22
    case createKey = 23
    case listKeys = 24
    case revokeKey = 25
    case rotateSecrets = 26
    case watch = 27

    /// The call's name as in the proto service (`"Check"`), for logs, metrics and refusals.
    public var name: String { WireCalls.codec(self).name }

    /// The call's field name in `Request.call` (`"batch_check"`): the prefix of the field
    /// paths its decoding errors name.
    public var field: String { WireCalls.codec(self).field }
}

/// The codec of one call: its request message and its response message, between the C
/// structs protobuf-c packs and the typed `Call`/`Reply`. One conformer per call, one file per
/// conformer in `Calls/`; the envelope (`WireCodec`) finds it in `WireCalls` by `CallKind`.
///
/// Conformers never set `call_case`/`result_case` (the envelope sets them from `kind`), never
/// see the envelope's fields, and allocate C memory only from the `Arena` they are given.
protocol WireCall {
    /// The call this codec is for.
    static var kind: CallKind { get }
    /// The call's name in the proto service (`"BatchCheck"`).
    static var name: String { get }
    /// The call's field name in `Request.call` and `Response.result` (`"batch_check"`).
    static var field: String { get }

    /// Decodes the call from a request whose `call_case` is `kind` (so its message pointer is
    /// set). Throws an `AuthzError` (INVALID_ARGUMENT) naming the field and the rule; never
    /// anything else.
    static func decodeRequest(_ m: Authz__V1__Request) throws -> Call

    /// Sets the call's message pointer in `msg` from `call`, whose `kind` is this codec's.
    /// Precondition: `call.kind == kind`.
    static func encodeRequest(_ call: Call, into msg: UnsafeMutablePointer<Authz__V1__Request>, _ a: Arena)

    /// Sets the result's message pointer in `msg` from `reply`, whose `kind` is this codec's.
    /// Precondition: `reply.kind == kind`.
    static func encodeReply(_ reply: Reply, into msg: UnsafeMutablePointer<Authz__V1__Response>, _ a: Arena)

    /// Decodes the reply from a response whose `result_case` is `kind` (client side). Throws
    /// INTERNAL for a result the daemon could not have sent.
    static func decodeReply(_ m: Authz__V1__Response) throws -> Reply
}

/// The table of every call's codec, indexed by `CallKind`. Adding a call adds its codec to
/// `all`; `CallKind.allCases` must each have exactly one (checked when the table is built).
enum WireCalls {
    /// Every call's codec, in any order. (`nonisolated(unsafe)`: a constant table of stateless
    /// codec types, which Swift 6 does not count as Sendable.)
    nonisolated(unsafe) static let all: [any WireCall.Type] = [
        CheckWire.self, BatchCheckWire.self, ExplainWire.self, ListUserPermissionsWire.self, ListPermissionUsersWire.self,
        WriteWire.self, GetWire.self, ListWire.self, ImportWire.self, ExportWire.self, ServerInfoWire.self, HealthWire.self,
        HelloWire.self, CreateKeyWire.self, ListKeysWire.self, RevokeKeyWire.self, RotateSecretsWire.self, WatchWire.self,
    ]

    /// `all`, at index `kind.rawValue - first`.
    nonisolated(unsafe) private static let byKind: [any WireCall.Type] = {
        let table = CallKind.allCases.map { kind -> any WireCall.Type in
            let codecs = all.filter { $0.kind == kind }
            precondition(codecs.count == 1, "WireCalls.all must hold exactly one codec for \(kind) (it holds \(codecs.count))")
            return codecs[0]
        }
        precondition(table.count == all.count, "WireCalls.all holds a codec twice")
        return table
    }()

    private static let first = CallKind.allCases.map(\.rawValue).min()!

    /// The codec of `kind`. One array index; allocates nothing.
    static func codec(_ kind: CallKind) -> any WireCall.Type { byKind[Int(kind.rawValue - first)] }

    /// The codec of the call in field `number` of `Request.call` (or `Response.result`); nil
    /// when no call has that number (a request with no call, or one from a newer protocol).
    static func codec(field number: UInt32) -> (any WireCall.Type)? { CallKind(rawValue: number).map(codec) }

    /// Every call's field name in field-number order, as the error for a request with no call
    /// lists them.
    static let fieldList: String = CallKind.allCases.map { codec($0).field }.joined(separator: ", ")
}
