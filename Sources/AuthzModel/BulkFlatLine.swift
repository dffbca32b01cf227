/// The fields of one bulk line, as the format's field mapping (`BulkFormat.entity(from:)`)
/// reads them: each taken at most once, by name; a null member counts as absent. Every method
/// throws `AuthzError` naming the field (`prefix` + key) when the member is not of its type.
protocol BulkFields {
    /// Put before a key in error fields ("role.").
    var prefix: String { get set }
    /// Takes `key` and ignores it.
    mutating func skip(_ key: String)
    /// A member not taken yet, if any (an unknown field once the mapping is done).
    var leftover: String? { get }
    mutating func string(_ key: String) throws -> String?
    mutating func requiredString(_ key: String) throws -> String
    mutating func bool(_ key: String) throws -> Bool?
    mutating func id(_ key: String) throws -> ID?
    mutating func requiredID(_ key: String) throws -> ID
    mutating func ids(_ key: String) throws -> [ID]
    mutating func strings(_ key: String) throws -> [String]
    mutating func requiredScope(_ key: String) throws -> Scope
    mutating func scopes(_ key: String) throws -> ScopeSet
    mutating func timestamp(_ key: String) throws -> Int64?
    mutating func metadata() throws -> String
}

/// A bulk line of the common shape, read in place: one JSON object whose members are plain
/// strings (printable ASCII, no escape), numbers (`schema_version`), `true`, `false`, `null`,
/// arrays of plain strings, or an empty object; JSON whitespace between tokens. `init` returns nil for any other line;
/// the methods throw `NotFlat` for anything the general reader might answer differently (a
/// member of another type, a value that does not parse): the caller then decodes the line with
/// the general parser, whose answer is the contract. So this reader only ever accepts what the
/// general one accepts, and yields the same values: a plain string's bytes are its text.
struct FlatLine: BulkFields {
    /// Not the common shape, or not a valid record: leave the line to the general parser.
    struct NotFlat: Error {}

    private enum Kind: UInt8 { case string, number, yes, no, null, stringArray, emptyObject }
    private struct Member {
        var key: Range<Int>
        var kind: Kind
        /// The string's bytes (without quotes); an array's bytes between its brackets.
        var value: Range<Int>
        var taken = false
    }

    private let bytes: UnsafeRawBufferPointer
    private var members: [Member] = []
    var prefix = ""

    /// Scans `bytes` (valid while the reader is used); nil unless the line has the common shape.
    init?(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        members.reserveCapacity(16)
        var i = FlatLine.skipSpace(bytes, 0)
        guard i < bytes.count, bytes[i] == UInt8(ascii: "{") else { return nil }
        i = FlatLine.skipSpace(bytes, i + 1)
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                guard let key = FlatLine.plainString(bytes, &i) else { return nil }
                i = FlatLine.skipSpace(bytes, i)
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return nil }
                i = FlatLine.skipSpace(bytes, i + 1)
                guard i < bytes.count else { return nil }
                let member: Member
                switch bytes[i] {
                case UInt8(ascii: "\""):
                    guard let v = FlatLine.plainString(bytes, &i) else { return nil }
                    member = Member(key: key, kind: .string, value: v)
                case UInt8(ascii: "t"):
                    guard FlatLine.literal(bytes, &i, "true") else { return nil }
                    member = Member(key: key, kind: .yes, value: i..<i)
                case UInt8(ascii: "f"):
                    guard FlatLine.literal(bytes, &i, "false") else { return nil }
                    member = Member(key: key, kind: .no, value: i..<i)
                case UInt8(ascii: "n"):
                    guard FlatLine.literal(bytes, &i, "null") else { return nil }
                    member = Member(key: key, kind: .null, value: i..<i)
                case UInt8(ascii: "["):
                    let start = i + 1
                    i = FlatLine.skipSpace(bytes, start)
                    if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
                        i += 1
                    } else {
                        while true {
                            guard FlatLine.plainString(bytes, &i) != nil, let more = FlatLine.separator(bytes, &i, close: UInt8(ascii: "]")) else { return nil }
                            if !more { break }
                        }
                    }
                    member = Member(key: key, kind: .stringArray, value: start..<(i - 1))
                case UInt8(ascii: "{"):
                    i = FlatLine.skipSpace(bytes, i + 1)
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "}") else { return nil }
                    i += 1
                    member = Member(key: key, kind: .emptyObject, value: i..<i)
                case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                    let start = i
                    guard FlatLine.number(bytes, &i) else { return nil }
                    member = Member(key: key, kind: .number, value: start..<i)
                default:
                    return nil  // objects with members: the general parser
                }
                members.append(member)
                guard let more = FlatLine.separator(bytes, &i, close: UInt8(ascii: "}")) else { return nil }
                if !more { break }
            }
        }
        guard FlatLine.skipSpace(bytes, i) == bytes.count else { return nil }
    }

    /// After an element of an object or array: true past a comma (another element follows),
    /// false past `close` (the last one), nil for anything else.
    private static func separator(_ b: UnsafeRawBufferPointer, _ i: inout Int, close: UInt8) -> Bool? {
        i = skipSpace(b, i)
        guard i < b.count else { return nil }
        if b[i] == UInt8(ascii: ",") {
            i = skipSpace(b, i + 1)
            return true
        }
        guard b[i] == close else { return nil }
        i += 1
        return false
    }

    private static func skipSpace(_ b: UnsafeRawBufferPointer, _ from: Int) -> Int {
        var i = from
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
        return i
    }

    /// A string at `i` of printable ASCII without escapes: its bytes, `i` moved past its
    /// closing quote; nil for anything else.
    private static func plainString(_ b: UnsafeRawBufferPointer, _ i: inout Int) -> Range<Int>? {
        guard i < b.count, b[i] == UInt8(ascii: "\"") else { return nil }
        let start = i + 1
        var j = start
        while j < b.count {
            let c = b[j]
            if c == UInt8(ascii: "\"") {
                i = j + 1
                return start..<j
            }
            if c < 0x20 || c > 0x7E || c == UInt8(ascii: "\\") { return nil }
            j += 1
        }
        return nil
    }

    /// A JSON number at `i` (RFC 8259's grammar, as the general parser reads it); `i` moved
    /// past it. False for anything else.
    private static func number(_ b: UnsafeRawBufferPointer, _ i: inout Int) -> Bool {
        var j = i
        func digits(_ j: inout Int) -> Int {
            let s = j
            while j < b.count, b[j] >= 0x30, b[j] <= 0x39 { j += 1 }
            return j - s
        }
        if j < b.count, b[j] == UInt8(ascii: "-") { j += 1 }
        guard j < b.count, b[j] >= 0x30, b[j] <= 0x39 else { return false }
        if b[j] == 0x30 { j += 1 } else { _ = digits(&j) }
        if j < b.count, b[j] == UInt8(ascii: ".") {
            j += 1
            guard digits(&j) > 0 else { return false }
        }
        if j < b.count, b[j] == UInt8(ascii: "e") || b[j] == UInt8(ascii: "E") {
            j += 1
            if j < b.count, b[j] == UInt8(ascii: "+") || b[j] == UInt8(ascii: "-") { j += 1 }
            guard digits(&j) > 0 else { return false }
        }
        i = j
        return true
    }

    private static func literal(_ b: UnsafeRawBufferPointer, _ i: inout Int, _ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count else { return false }
        for k in 0..<n where b[i + k] != word.utf8Start[k] { return false }
        i += n
        return true
    }

    /// Takes the member named `key`; nil when absent or null.
    private mutating func take(_ key: String) -> Member? {
        var key = key
        return key.withUTF8 { k -> Member? in
            for n in members.indices where !members[n].taken && bytes[members[n].key].elementsEqual(k) {
                members[n].taken = true
                return members[n].kind == .null ? nil : members[n]
            }
            return nil
        }
    }

    private func text(_ r: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[r]), as: UTF8.self)
    }

    /// The plain strings of an array's contents.
    private func elements(_ r: Range<Int>) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = FlatLine.skipSpace(bytes, r.lowerBound)
        while i < r.upperBound, let s = FlatLine.plainString(bytes, &i) {
            out.append(s)
            i = FlatLine.skipSpace(bytes, i)
            if i < r.upperBound, bytes[i] == UInt8(ascii: ",") { i = FlatLine.skipSpace(bytes, i + 1) }
        }
        return out
    }

    mutating func skip(_ key: String) { _ = take(key) }

    var leftover: String? { members.first(where: { !$0.taken }).map { text($0.key) } }

    mutating func string(_ key: String) throws -> String? {
        guard let m = take(key) else { return nil }
        guard m.kind == .string else { throw NotFlat() }
        return text(m.value)
    }

    mutating func requiredString(_ key: String) throws -> String {
        guard let s = try string(key) else { throw NotFlat() }
        return s
    }

    mutating func bool(_ key: String) throws -> Bool? {
        guard let m = take(key) else { return nil }
        switch m.kind {
        case .yes: return true
        case .no: return false
        default: throw NotFlat()
        }
    }

    mutating func id(_ key: String) throws -> ID? {
        guard let m = take(key) else { return nil }
        guard m.kind == .string, let id = ID(bytes: UnsafeRawBufferPointer(rebasing: bytes[m.value])) else { throw NotFlat() }
        return id
    }

    mutating func requiredID(_ key: String) throws -> ID {
        guard let id = try id(key) else { throw NotFlat() }
        return id
    }

    mutating func ids(_ key: String) throws -> [ID] {
        guard let m = take(key) else { return [] }
        guard m.kind == .stringArray else { throw NotFlat() }
        return try elements(m.value).map { r in
            guard let id = ID(bytes: UnsafeRawBufferPointer(rebasing: bytes[r])) else { throw NotFlat() }
            return id
        }
    }

    mutating func strings(_ key: String) throws -> [String] {
        guard let m = take(key) else { return [] }
        guard m.kind == .stringArray else { throw NotFlat() }
        return elements(m.value).map(text)
    }

    mutating func requiredScope(_ key: String) throws -> Scope {
        guard let s = try string(key), let scope = Scope(name: s) else { throw NotFlat() }
        return scope
    }

    mutating func scopes(_ key: String) throws -> ScopeSet {
        guard let m = take(key) else { return .all }
        guard m.kind == .stringArray else { throw NotFlat() }
        var set = ScopeSet(mask: 0)
        for r in elements(m.value) {
            guard let scope = Scope(name: text(r)) else { throw NotFlat() }
            set.mask |= 1 << scope.rawValue
        }
        if set.isEmpty { throw NotFlat() }
        return set
    }

    mutating func timestamp(_ key: String) throws -> Int64? {
        guard let s = try string(key) else { return nil }
        guard let t = Timestamp.parse(s) else { throw NotFlat() }
        return t
    }

    mutating func metadata() throws -> String {
        guard let m = take("metadata") else { return "" }
        guard m.kind == .emptyObject else { throw NotFlat() }
        return ""
    }
}
