import AuthzModel
@testable import AuthzStore
import Foundation
import XCTest

/// Holds `docs/data-models/*.md` to the code: every entity table's fields, types, requiredness,
/// export behaviour, wire numbers, limits and formats, which fields are sealed at rest, the
/// limit constants, the Mermaid diagram and the example lines.
///
/// The code is the truth. Fields are compared with what `BulkFormat.encode` writes and
/// `BulkFormat.decode` accepts, limits with what `Entity.validate` (through the decoder) accepts
/// and refuses, wire names with `proto/authz.proto`, sealing with `RecordCodec.encode`. Every
/// failure names the page, the entity and the field.
final class DataModelDocsTests: XCTestCase {

    // MARK: the documents

    static let columns = ["field", "type", "required", "export", "proto", "limit / format", "notes"]
    static let types: Set<String> = ["uuid", "string", "bool", "integer", "timestamp", "object", "scope", "uuid[]", "string[]", "scope[]"]

    struct ProtoField: Equatable, CustomStringConvertible {
        var repeated: Bool
        var type: String
        var number: Int
        var description: String { (repeated ? "repeated " : "") + "\(type) = \(number)" }
    }

    enum Clause: Equatable {
        case bytes(Int, Int), eachBytes(Int, Int), maxItems(Int), nonEmpty, notNil, equals(String)
        case excludesID, distinct, noControlChars, identifier, dotted, containsAt, jsonObject
        case defaultValue(JSONValue), sealed
    }

    struct FieldDoc {
        var page: String
        var line: Int
        var entity: String
        var name: String
        var type: String
        var required: String
        var export: String
        var proto: ProtoField?
        var clauses: [Clause]
        var clauseText: [String]

        func has(_ c: Clause) -> Bool { clauses.contains(c) }
        var bytes: (Int, Int)? { for case .bytes(let a, let b) in clauses { return (a, b) }; return nil }
        var defaultValue: JSONValue? { for case .defaultValue(let v) in clauses { return v }; return nil }
        var equalsField: String? { for case .equals(let f) in clauses { return f }; return nil }
    }

    struct Docs {
        var common: [FieldDoc] = []
        /// Own rows of each entity, by kind name.
        var entities: [String: [FieldDoc]] = [:]
        var entityPages: [String: [String]] = [:]
        var constants: [(page: String, line: Int, name: String, value: String)] = []
        var mermaid: [(page: String, line: Int, text: String)] = []
        var examples: [(page: String, line: Int, text: String)] = []
        var problems: [String] = []

        /// Common fields with the entity's own rows (an own row replaces a common one of the
        /// same name), in document order.
        func fields(of entity: String) -> [FieldDoc] {
            let own = entities[entity] ?? []
            let ownNames = Set(own.map(\.name))
            return common.filter { !ownNames.contains($0.name) }.map { var f = $0; f.entity = entity; return f } + own
        }
    }

    static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let docs: Docs = loadDocs()

    static func loadDocs() -> Docs {
        var d = Docs()
        let dir = root.appendingPathComponent("docs/data-models")
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else {
            d.problems.append("docs/data-models/ is missing (looked in \(dir.path))")
            return d
        }
        for name in names.sorted() where name.hasSuffix(".md") {
            let page = "docs/data-models/" + name
            guard let text = try? String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8) else {
                d.problems.append("\(page) cannot be read")
                continue
            }
            parse(page: page, text: text, into: &d)
        }
        return d
    }

    static func cells(_ line: String) -> [String] {
        var s = line.trimmingCharacters(in: .whitespaces)
        if s.hasPrefix("|") { s.removeFirst() }
        if s.hasSuffix("|") { s.removeLast() }
        return s.components(separatedBy: "|").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    static func unquote(_ s: String) -> String { s.replacingOccurrences(of: "`", with: "") }

    static func parse(page: String, text: String, into d: inout Docs) {
        let lines = text.components(separatedBy: "\n")
        var heading = ""
        var header: [String]? = nil
        var fence: (lang: String, start: Int, body: [String])? = nil
        for (i, raw) in lines.enumerated() {
            let n = i + 1
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("```") {
                if let f = fence {
                    if f.lang == "mermaid" { d.mermaid.append((page, f.start, f.body.joined(separator: "\n"))) }
                    if f.lang == "jsonl" {
                        for (k, l) in f.body.enumerated() where !l.trimmingCharacters(in: .whitespaces).isEmpty {
                            d.examples.append((page, f.start + 1 + k, l))
                        }
                    }
                    fence = nil
                } else {
                    fence = (String(line.dropFirst(3)), n, [])
                }
                continue
            }
            if fence != nil { fence!.body.append(raw); continue }
            if line.hasPrefix("## ") {
                heading = String(line.dropFirst(3)).trimmingCharacters(in: .whitespaces)
                header = nil
                if heading.hasPrefix("Entity: ") {
                    d.entityPages[String(heading.dropFirst(8)), default: []].append(page)
                }
                continue
            }
            guard line.hasPrefix("|") else { header = nil; continue }
            let c = cells(line)
            guard let h = header else { header = c; continue }
            if c.allSatisfy({ $0.allSatisfy { $0 == "-" || $0 == ":" } }) { continue }
            let isEntityTable = heading.hasPrefix("Entity: ") || (heading == "Common fields" && page.hasSuffix("/README.md"))
            if isEntityTable && h.first == "field" {
                guard h == columns else {
                    d.problems.append("\(page):\(n) (\(heading)): the table's columns are \(h), expected \(columns)")
                    header = ["?"]
                    continue
                }
                let entity = heading.hasPrefix("Entity: ") ? String(heading.dropFirst(8)) : "common"
                guard c.count == columns.count else {
                    d.problems.append("\(page):\(n) (entity \(entity)): a row has \(c.count) cells, expected \(columns.count)")
                    continue
                }
                var f = FieldDoc(page: page, line: n, entity: entity, name: unquote(c[0]), type: c[1], required: c[2],
                                 export: c[3], proto: nil, clauses: [], clauseText: [])
                let at = "\(page):\(n), entity \(entity), field `\(f.name)`"
                if !types.contains(f.type) { d.problems.append("\(at): unknown type \"\(f.type)\"") }
                if !["yes", "no", "server"].contains(f.required) { d.problems.append("\(at): required must be yes, no or server, not \"\(f.required)\"") }
                if !["always", "optional", "never"].contains(f.export) { d.problems.append("\(at): export must be always, optional or never, not \"\(f.export)\"") }
                let proto = unquote(c[4])
                if proto != "—" {
                    let parts = proto.components(separatedBy: " = ")
                    var typeWords = parts.first.map { $0.split(separator: " ").map(String.init) } ?? []
                    let repeated = typeWords.first == "repeated"
                    if repeated { typeWords.removeFirst() }
                    if parts.count == 2, typeWords.count == 1, let number = Int(parts[1]) {
                        f.proto = ProtoField(repeated: repeated, type: typeWords[0], number: number)
                    } else {
                        d.problems.append("\(at): proto cell \"\(c[4])\" is not `[repeated] TYPE = NUMBER` or —")
                    }
                }
                let pieces = c[5].components(separatedBy: "`")
                for k in stride(from: 1, to: pieces.count, by: 2) {
                    let t = pieces[k]
                    if let clause = parseClause(t) {
                        f.clauses.append(clause)
                        f.clauseText.append(t)
                    } else {
                        d.problems.append("\(at): unknown rule `\(t)` in the limit / format column (README.md lists the rules)")
                    }
                }
                if entity == "common" { d.common.append(f) } else { d.entities[entity, default: []].append(f) }
            } else if h == ["constant", "value", "what it bounds"] {
                d.constants.append((page, n, unquote(c[0]), c[1]))
            }
        }
    }

    static func parseClause(_ t: String) -> Clause? {
        func range(_ s: Substring) -> (Int, Int)? {
            let p = s.components(separatedBy: "..")
            guard p.count == 2, let a = Int(p[0]), let b = Int(p[1]) else { return nil }
            return (a, b)
        }
        if t.hasPrefix("each "), t.hasSuffix(" bytes"), let r = range(t.dropFirst(5).dropLast(6)) { return .eachBytes(r.0, r.1) }
        if t.hasSuffix(" bytes"), let r = range(t.dropLast(6)) { return .bytes(r.0, r.1) }
        if t.hasPrefix("≤ "), t.hasSuffix(" items"), let n = Int(t.dropFirst(2).dropLast(6)) { return .maxItems(n) }
        if t.hasPrefix("equals ") { return .equals(String(t.dropFirst(7))) }
        if t.hasPrefix("default ") {
            guard let v = try? JSONParser.parse(Array(t.dropFirst(8).utf8)) else { return nil }
            return .defaultValue(v)
        }
        switch t {
        case "non-empty": return .nonEmpty
        case "not nil": return .notNil
        case "excludes id": return .excludesID
        case "distinct": return .distinct
        case "no control chars": return .noControlChars
        case "identifier": return .identifier
        case "dotted lowercase": return .dotted
        case "contains @": return .containsAt
        case "json object": return .jsonObject
        case "sealed at rest": return .sealed
        default: return nil
        }
    }

    // MARK: helpers

    var docs: Docs { Self.docs }

    func fail(_ f: FieldDoc, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTFail("\(f.page):\(f.line), entity \(f.entity), field `\(f.name)`: \(message)", file: file, line: line)
    }

    func requireDocs(file: StaticString = #filePath, line: UInt = #line) -> Bool {
        for p in docs.problems { XCTFail(p, file: file, line: line) }
        if docs.common.isEmpty { XCTFail("docs/data-models/README.md has no `## Common fields` table", file: file, line: line) }
        return docs.problems.isEmpty && !docs.common.isEmpty
    }

    var kinds: [String] { EntityKind.allCases.map(\.name) }

    typealias Members = [(String, JSONValue)]

    func line(_ m: Members) -> [UInt8] { Array(JSONWriter.serialize(.object(m)).utf8) }

    func decode(_ m: Members) -> Result<Entity, Error> { Result { try BulkFormat.decode(line: line(m)) } }

    func members(of encoded: String) -> Members {
        guard case .object(let m)? = try? JSONParser.parse(Array(encoded.utf8)) else { return [] }
        return m
    }

    func replacing(_ m: Members, _ name: String, with v: JSONValue?) -> Members {
        var out = m.filter { $0.0 != name }
        if let v { out.append((name, v)) }
        return out
    }

    /// `replacing`, and the same value for every field documented `equals` this one (a tenant's
    /// `tenant_id` follows its `id`, a role binding's `owner_user_id` its `user_id`), so that a
    /// line tests the rule meant and not the equality.
    func setting(_ m: Members, _ f: FieldDoc, to v: JSONValue) -> Members {
        var out = replacing(m, f.name, with: v)
        for g in docs.fields(of: f.entity) where g.equalsField == f.name { out = replacing(out, g.name, with: v) }
        return out
    }

    /// True when `e` is an INVALID_ARGUMENT naming `entity.field` (or an item of it).
    func names(_ e: Error, _ f: FieldDoc) -> Bool {
        guard let a = e as? AuthzError else { return false }
        let path = "\(f.entity).\(f.name)"
        return a.field == path || a.field.hasPrefix(path + "[") || a.field == f.name
    }

    /// Expects a line to decode; fails naming the field and why otherwise.
    func expectAccepted(_ m: Members, _ f: FieldDoc, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        if case .failure(let e) = decode(m) { fail(f, "\(what) should be accepted, but the code refuses it: \(e)", file: file, line: line) }
    }

    /// Expects a line to be refused with an error naming the field.
    func expectRefused(_ m: Members, _ f: FieldDoc, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        switch decode(m) {
        case .success: fail(f, "\(what) should be refused, but the code accepts it", file: file, line: line)
        case .failure(let e):
            if !names(e, f) { fail(f, "\(what) is refused, but the error does not name \(f.entity).\(f.name): \(e)", file: file, line: line) }
        }
    }

    /// A string of exactly `n` bytes that meets the field's format rules (when `n` allows).
    func text(_ n: Int, for f: FieldDoc) -> String {
        if n <= 0 { return "" }
        if f.has(.dotted) && n >= 3 { return "a." + String(repeating: "a", count: n - 2) }
        if f.has(.containsAt) && n >= 2 { return String(repeating: "a", count: n - 2) + "@x" }
        return String(repeating: "a", count: n)
    }

    /// A JSON object whose compact text is exactly `n` bytes (n ≥ 8).
    func object(_ n: Int) -> JSONValue { .object([("k", .string(String(repeating: "a", count: n - 8)))]) }

    func freshID() -> JSONValue { .string(ID.random().description) }

    /// A valid value for a field, distinctive enough to be found in a record's bytes.
    func sample(_ f: FieldDoc) -> JSONValue {
        if f.name == "kind" { return .string(f.entity) }
        if let d = f.defaultValue, f.type == "bool" { return d }
        switch f.type {
        case "uuid": return freshID()
        case "string":
            if f.has(.identifier) { return .string("v_" + f.name) }
            if f.has(.dotted) { return .string("gmail.messages.read") }
            if f.has(.containsAt) { return .string("ana-\(f.name)@acme.test") }
            return .string("value of \(f.entity).\(f.name)")
        case "bool": return .bool(false)
        case "integer": return .number("1")
        case "timestamp": return .string("2026-01-02T03:04:05.123456Z")
        case "object": return .object([("source", .string("metadata of \(f.entity)"))])
        case "scope": return .string("tenant")
        case "scope[]": return .array([.string("tenant"), .string("global")])
        case "uuid[]": return .array([freshID(), freshID()])
        case "string[]": return .array([.string("first item of \(f.entity).\(f.name)"), .string("second item of \(f.entity).\(f.name)")])
        default: return .null
        }
    }

    /// A line holding every documented field of `entity`, each with a valid value.
    func fullLine(_ entity: String) -> Members {
        let fields = docs.fields(of: entity)
        var m: Members = fields.map { ($0.name, sample($0)) }
        for f in fields {
            if let other = f.equalsField, let v = m.first(where: { $0.0 == other })?.1 {
                m = m.map { $0.0 == f.name ? ($0.0, v) : $0 }
            }
        }
        return m
    }

    /// A line with only the fields documented as required.
    func minimalLine(_ entity: String) -> Members {
        let required = Set(docs.fields(of: entity).filter { $0.required == "yes" }.map(\.name))
        return fullLine(entity).filter { required.contains($0.0) }
    }

    /// Stamps the server-owned times as a write would.
    func stamped(_ e: Entity) -> Entity {
        var e = e
        if e.fields.createdAt == 0 { e.fields.createdAt = 1_780_000_000_000_000 }
        if e.fields.updatedAt == 0 { e.fields.updatedAt = 1_780_000_000_000_001 }
        return e
    }

    /// The lines the code writes for an entity: minimal and full, with and without secrets, and
    /// with every flag (documented `bool` other than `is_active`) set.
    func encodedVariants(_ entity: String) -> [(String, Members)]? {
        let fields = docs.fields(of: entity)
        var flagged = fullLine(entity)
        for f in fields where f.type == "bool" && f.name != "is_active" { flagged = replacing(flagged, f.name, with: .bool(true)) }
        var out: [(String, Members)] = []
        for (label, m) in [("the minimal line", minimalLine(entity)), ("the full line", fullLine(entity)), ("the line with every flag set", flagged)] {
            switch decode(m) {
            case .failure(let e):
                XCTFail("entity \(entity) (\(docs.entityPages[entity]?.first ?? "?")): \(label) built from the docs does not decode: \(e)\n\(String(decoding: line(m), as: UTF8.self))")
                return nil
            case .success(let e):
                for secrets in [false, true] {
                    out.append(("\(label), \(secrets ? "with" : "without") secrets", members(of: BulkFormat.encode(stamped(e), includeSecrets: secrets))))
                }
            }
        }
        return out
    }

    // MARK: tests

    func testEveryEntityIsDocumentedOnce() {
        guard requireDocs() else { return }
        for k in kinds {
            let pages = docs.entityPages[k] ?? []
            if pages.count != 1 { XCTFail("entity \(k): documented under `## Entity: \(k)` \(pages.count) times (\(pages)); expected once in docs/data-models/") }
            if (docs.entities[k] ?? []).isEmpty { XCTFail("entity \(k) (\(pages.first ?? "no page")): no field table under `## Entity: \(k)`") }
        }
        for (k, pages) in docs.entityPages where !kinds.contains(k) {
            XCTFail("\(pages.joined(separator: ", ")): `## Entity: \(k)` is not an entity kind of the code (\(kinds.joined(separator: ", ")))")
        }
        for k in kinds {
            var seen = Set<String>()
            for f in docs.entities[k] ?? [] where !seen.insert(f.name).inserted { fail(f, "documented twice") }
        }
    }

    /// The documented field names are the names the bulk encoder writes (plus `never` rows,
    /// which the decoder must accept), and the export column says when each is written.
    func testFieldNamesAndExportMatchTheBulkEncoder() {
        guard requireDocs() else { return }
        for k in kinds {
            let fields = docs.fields(of: k)
            guard !fields.isEmpty, let variants = encodedVariants(k) else { continue }
            let page = docs.entityPages[k]?.first ?? "docs/data-models"
            let documented = Set(fields.map(\.name))
            for (label, m) in variants {
                for (key, _) in m where !documented.contains(key) {
                    XCTFail("\(page), entity \(k), field `\(key)`: the code writes it (\(label)) but the docs do not list it")
                }
            }
            for f in fields {
                let present = variants.filter { v in v.1.contains { $0.0 == f.name } }
                switch f.export {
                case "always" where present.count != variants.count:
                    let missing = variants.filter { v in !v.1.contains { $0.0 == f.name } }.map(\.0)
                    fail(f, "documented as exported always, but the code leaves it out of \(missing.joined(separator: "; "))")
                case "optional" where present.isEmpty:
                    fail(f, "documented as exported (optional), but the code never writes it")
                case "optional" where present.count == variants.count:
                    fail(f, "documented as optional in exports, but the code always writes it: document `always`")
                case "never" where !present.isEmpty:
                    fail(f, "documented as never exported, but the code writes it (\(present.map(\.0).joined(separator: "; ")))")
                default: break
                }
            }
        }
    }

    /// Types: what the encoder writes has the documented JSON type, and the decoder refuses a
    /// value of another type, naming the field.
    func testTypesMatchTheCode() {
        guard requireDocs() else { return }
        func matches(_ v: JSONValue, _ type: String) -> Bool {
            func scope(_ v: JSONValue) -> Bool { if case .string(let s) = v { return Scope(name: s) != nil }; return false }
            func uuid(_ v: JSONValue) -> Bool { if case .string(let s) = v { return ID(s)?.description == s }; return false }
            func string(_ v: JSONValue) -> Bool { if case .string = v { return true }; return false }
            func array(_ v: JSONValue, _ item: (JSONValue) -> Bool) -> Bool { if case .array(let a) = v { return a.allSatisfy(item) }; return false }
            switch (type, v) {
            case ("uuid", _): return uuid(v)
            case ("string", .string): return true
            case ("bool", .bool): return true
            case ("integer", .number(let n)): return Int(n) != nil
            case ("timestamp", .string(let s)): return Timestamp.parse(s) != nil
            case ("object", .object): return true
            case ("scope", _): return scope(v)
            case ("scope[]", _): return array(v, scope)
            case ("uuid[]", _): return array(v, uuid)
            case ("string[]", _): return array(v, string)
            default: return false
            }
        }
        let wrong: [String: JSONValue] = [
            "uuid": .string("not-a-uuid"), "string": .number("5"), "bool": .string("yes"), "timestamp": .string("yesterday"),
            "object": .array([]), "scope": .string("owner"), "scope[]": .string("tenant"), "uuid[]": .array([.string("not-a-uuid")]),
            "string[]": .array([.number("5")]),
        ]
        for k in kinds {
            guard let variants = encodedVariants(k) else { continue }
            let full = fullLine(k)
            for f in docs.fields(of: k) {
                for (label, m) in variants {
                    if let v = m.first(where: { $0.0 == f.name })?.1, !matches(v, f.type) {
                        fail(f, "documented as \(f.type), but the code writes \(JSONWriter.serialize(v)) (\(label))")
                    }
                }
                // `schema_version` is accepted and ignored whatever its type: nothing to refuse.
                if let w = wrong[f.type] { expectRefused(replacing(full, f.name, with: w), f, "a \(f.type) field holding \(JSONWriter.serialize(w))") }
            }
        }
    }

    /// `yes`: a line without the field is refused naming it; `no` and `server`: accepted.
    func testRequiredMatchesTheDecoder() {
        guard requireDocs() else { return }
        for k in kinds {
            let full = fullLine(k)
            for f in docs.fields(of: k) {
                let without = replacing(full, f.name, with: nil)
                if f.required == "yes" {
                    expectRefused(without, f, "a line without it (documented as required)")
                } else {
                    expectAccepted(without, f, "a line without it (documented as required: \(f.required))")
                }
            }
        }
    }

    /// Every rule of the limit / format column, by behaviour at its bounds.
    func testLimitsAndFormatsMatchValidation() {
        guard requireDocs() else { return }
        for k in kinds {
            let full = fullLine(k)
            let ownID = full.first { $0.0 == "id" }?.1 ?? .null
            for f in docs.fields(of: k) {
                func with(_ v: JSONValue) -> Members { setting(full, f, to: v) }
                for (clause, t) in zip(f.clauses, f.clauseText) {
                    let rule = "`\(t)`"
                    switch clause {
                    case .bytes(let lo, let hi):
                        if f.type == "object" {
                            expectAccepted(with(object(hi)), f, "\(rule): an object of \(hi) bytes")
                            expectRefused(with(object(hi + 1)), f, "\(rule): an object of \(hi + 1) bytes")
                            if lo == 0 { expectAccepted(with(.object([])), f, "\(rule): {}") }
                        } else if f.type == "string" {
                            expectAccepted(with(.string(text(hi, for: f))), f, "\(rule): a value of \(hi) bytes")
                            expectRefused(with(.string(text(hi + 1, for: f))), f, "\(rule): a value of \(hi + 1) bytes")
                            if lo > 0 {
                                expectRefused(with(.string(text(lo - 1, for: f))), f, "\(rule): a value of \(lo - 1) bytes")
                                if !f.has(.dotted) && !f.has(.containsAt) {  // no shorter value meets those formats
                                    expectAccepted(with(.string(text(lo, for: f))), f, "\(rule): a value of \(lo) bytes")
                                }
                            } else {
                                expectAccepted(with(.string("")), f, "\(rule): an empty value")
                            }
                        } else {
                            fail(f, "\(rule) applies to string or object fields, not \(f.type)")
                        }
                    case .eachBytes(let lo, let hi):
                        expectAccepted(with(.array([.string(text(hi, for: f))])), f, "\(rule): an item of \(hi) bytes")
                        expectRefused(with(.array([.string(text(hi + 1, for: f))])), f, "\(rule): an item of \(hi + 1) bytes")
                        if lo > 0 { expectRefused(with(.array([.string(text(lo - 1, for: f))])), f, "\(rule): an item of \(lo - 1) bytes") }
                    case .maxItems(let n):
                        func items(_ c: Int) -> JSONValue {
                            .array((0..<c).map { i in f.type == "uuid[]" ? freshID() : .string("item\(i)") })
                        }
                        expectAccepted(with(items(n)), f, "\(rule): \(n) items")
                        expectRefused(with(items(n + 1)), f, "\(rule): \(n + 1) items")
                    case .nonEmpty:
                        expectRefused(with(.array([])), f, "\(rule): an empty array")
                    case .notNil:
                        expectRefused(with(.string(ID.zero.description)), f, "\(rule): the nil UUID")
                    case .equals(let other):
                        guard full.contains(where: { $0.0 == other }) else { fail(f, "\(rule) names a field the entity does not document"); continue }
                        expectAccepted(full, f, "\(rule): the value of \(other)")
                        expectRefused(with(freshID()), f, "\(rule): a UUID other than \(other)'s")
                    case .excludesID:
                        expectRefused(with(.array([ownID])), f, "\(rule): the record's own id")
                    case .distinct:
                        let u = freshID()
                        expectRefused(with(.array([u, u])), f, "\(rule): a repeated item")
                    case .noControlChars:
                        for c in ["\u{0}", "\u{1}", "\u{1F}", "\u{7F}", "\n"] {
                            let v = "a\(c)b"
                            expectRefused(with(f.type == "string[]" ? .array([.string(v)]) : .string(v)), f, "\(rule): a value holding U+\(String(c.unicodeScalars.first!.value, radix: 16))")
                        }
                    case .identifier:
                        expectAccepted(with(.string("g-mail_2")), f, "\(rule): \"g-mail_2\"")
                        for bad in ["Gmail", "2gmail", "_gmail", "g.mail", "g mail"] { expectRefused(with(.string(bad)), f, "\(rule): \"\(bad)\"") }
                    case .dotted:
                        expectAccepted(with(.string("gmail.messages_2.read-all")), f, "\(rule): \"gmail.messages_2.read-all\"")
                        for bad in ["gmail", "Gmail.read", "gmail..read", "gmail.read.", ".gmail.read", "gmail.2read", "gmail read.x"] {
                            expectRefused(with(.string(bad)), f, "\(rule): \"\(bad)\"")
                        }
                    case .containsAt:
                        expectRefused(with(.string("ana.acme.test")), f, "\(rule): a value without @")
                    case .jsonObject:
                        expectAccepted(with(.object([("a", .array([.number("1"), .object([("b", .null)])]))])), f, "\(rule): a nested object")
                        for bad: JSONValue in [.array([]), .string("{}"), .number("1")] { expectRefused(with(bad), f, "\(rule): \(JSONWriter.serialize(bad))") }
                        expectRefused(with(.object([("a", .number("1")), ("a", .number("2"))])), f, "\(rule): an object repeating a member name")
                    case .defaultValue(let d):
                        guard case .success(let e) = decode(replacing(full, f.name, with: nil)) else {
                            fail(f, "\(rule): a line without the field does not decode"); continue
                        }
                        let written = members(of: BulkFormat.encode(stamped(e), includeSecrets: true)).first { $0.0 == f.name }?.1
                        if let written {
                            if written != d { fail(f, "\(rule): left out, it becomes \(JSONWriter.serialize(written))") }
                        } else if d != .string("") && d != .array([]) {
                            fail(f, "\(rule): left out, the code writes nothing back, not the documented default")
                        }
                    case .sealed:
                        break  // testSealedFieldsMatchTheRecordCodec
                    }
                }
            }
        }
    }

    /// The proto column names the field of the entity's message in proto/authz.proto, with its
    /// type and number; every field of that message is documented.
    func testProtoColumnMatchesAuthzProto() throws {
        guard requireDocs() else { return }
        let protoPath = Self.root.appendingPathComponent("proto/authz.proto")
        let text = try String(contentsOf: protoPath, encoding: .utf8)
        let messages = Self.protoMessages(text)
        let compatible: [String: Set<String>] = [
            "uuid": ["string"], "string": ["string"], "bool": ["bool", "BoolValue"], "integer": ["uint32"], "timestamp": ["int64"],
            "object": ["string"], "scope": ["Scope"], "scope[]": ["repeated Scope"], "uuid[]": ["repeated string"], "string[]": ["repeated string"],
        ]
        for k in kinds {
            let message = k.split(separator: "_").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
            guard let wire = messages[message] else { XCTFail("proto/authz.proto has no message \(message) for entity \(k)"); continue }
            let fields = docs.fields(of: k)
            for f in fields {
                if let p = f.proto {
                    guard let actual = wire[f.name] else { fail(f, "documented on the wire as `\(p)`, but message \(message) has no field \(f.name)"); continue }
                    if actual != p { fail(f, "documented on the wire as `\(p)`, but message \(message) has `\(actual) \(f.name)`") }
                    let shape = (p.repeated ? "repeated " : "") + p.type
                    if !(compatible[f.type] ?? []).contains(shape) { fail(f, "type \(f.type) cannot be carried by proto `\(shape)`") }
                } else if let actual = wire[f.name] {
                    fail(f, "documented as not on the wire (—), but message \(message) has `\(actual) \(f.name)`")
                }
            }
            let documented = Set(fields.map(\.name))
            for (name, p) in wire where !documented.contains(name) {
                XCTFail("\(docs.entityPages[k]?.first ?? "docs/data-models"), entity \(k), field `\(name)`: message \(message) has `\(p) \(name)`, which the docs do not list")
            }
        }
    }

    /// `message NAME { [repeated] TYPE name = N; … }`, fields at any depth of the message.
    static func protoMessages(_ text: String) -> [String: [String: ProtoField]] {
        var out: [String: [String: ProtoField]] = [:]
        var current: String? = nil
        var depth = 0
        for raw in text.components(separatedBy: "\n") {
            let line = (raw.components(separatedBy: "//").first ?? "").trimmingCharacters(in: .whitespaces)
            if current == nil {
                let w = line.split(separator: " ")
                if w.count >= 2, w[0] == "message" {
                    current = String(w[1]).replacingOccurrences(of: "{", with: "")
                    out[current!] = [:]
                    depth = line.filter { $0 == "{" }.count - line.filter { $0 == "}" }.count
                    if depth <= 0 && line.contains("}") { current = nil }
                }
                continue
            }
            let parts = line.replacingOccurrences(of: ";", with: "").components(separatedBy: " = ")
            if parts.count == 2, let n = Int(parts[1].trimmingCharacters(in: .whitespaces)) {
                var w = parts[0].split(separator: " ").map(String.init)
                let repeated = w.first == "repeated"
                if repeated { w.removeFirst() }
                if w.count == 2 { out[current!]![w[1]] = ProtoField(repeated: repeated, type: w[0], number: n) }
            }
            depth += line.filter { $0 == "{" }.count - line.filter { $0 == "}" }.count
            if depth <= 0 { current = nil }
        }
        return out
    }

    /// The fields marked `sealed at rest` are exactly the string fields whose text is not in the
    /// record bytes LMDB keeps; the others are stored in clear.
    func testSealedFieldsMatchTheRecordCodec() throws {
        guard requireDocs() else { return }
        let dir = temporaryDirectory("authzd-datamodel-docs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sealer = SecretSealer(ring: try KeyRing.create(path: dir + "/keyring"))
        for k in kinds {
            let full = fullLine(k)
            guard case .success(let entity) = decode(full) else { XCTFail("entity \(k): the full line built from the docs does not decode"); continue }
            let stored = try RecordCodec.encode(stamped(entity), sealer: sealer)
            func inRecord(_ s: String) -> Bool {
                let needle = Array(s.utf8)
                guard !needle.isEmpty, stored.count >= needle.count else { return false }
                return (0...(stored.count - needle.count)).contains { stored[$0..<($0 + needle.count)].elementsEqual(needle) }
            }
            for f in docs.fields(of: k) where f.name != "kind" {
                guard let v = full.first(where: { $0.0 == f.name })?.1 else { continue }
                let texts: [String]
                switch (f.type, v) {
                case ("string", .string(let s)): texts = [s]
                case ("string[]", .array(let items)): texts = items.compactMap { if case .string(let s) = $0 { return s }; return nil }
                case ("object", _): texts = [JSONWriter.serialize(v)]
                default:
                    if f.has(.sealed) { fail(f, "`sealed at rest` can be checked on string, string[] and object fields only, not \(f.type)") }
                    continue
                }
                let clear = texts.contains(where: inRecord)
                if f.has(.sealed) && clear { fail(f, "documented as sealed at rest, but its text is in the stored record in clear") }
                if !f.has(.sealed) && !clear { fail(f, "its text is not in the stored record (the code seals or drops it), but the docs do not say `sealed at rest`") }
            }
            // The sealed fields still round-trip through the key ring.
            let back = try stored.withUnsafeBytes { try RecordCodec.decode($0, sealer: sealer) }
            XCTAssertEqual(back.redacted(), stamped(entity).redacted(), "entity \(k): a stored record does not read back as written")
            if case .platformCredential(let a) = back, case .platformCredential(let b) = entity {
                XCTAssertEqual([a.accessToken, a.refreshToken], [b.accessToken, b.refreshToken], "platform_credential: sealed tokens do not open to what was written")
            }
        }
    }

    /// The README's limit table holds every constant with the code's value.
    func testLimitConstantsMatchTheCode() {
        guard requireDocs() else { return }
        let t = TenantLimits()
        let actual: [String: Int] = [
            "FieldLimits.maxMetadataBytes": FieldLimits.maxMetadataBytes,
            "FieldLimits.maxNameBytes": FieldLimits.maxNameBytes,
            "FieldLimits.maxTextBytes": FieldLimits.maxTextBytes,
            "FieldLimits.maxTokenBytes": FieldLimits.maxTokenBytes,
            "FieldLimits.maxListItems": FieldLimits.maxListItems,
            "FieldLimits.maxJSONDepth": FieldLimits.maxJSONDepth,
            "TenantLimits.maxInheritanceDepth": t.maxInheritanceDepth,
            "TenantLimits.maxRoles": t.maxRoles,
            "TenantLimits.maxPermissions": t.maxPermissions,
            "TenantLimits.maxPermissionBindings": t.maxPermissionBindings,
            "TenantLimits.maxRoleBindings": t.maxRoleBindings,
            "RecordFields.currentSchemaVersion": Int(RecordFields.currentSchemaVersion),
        ]
        var seen = Set<String>()
        for c in docs.constants {
            seen.insert(c.name)
            guard let value = actual[c.name] else { XCTFail("\(c.page):\(c.line): constant \(c.name) is not one the test knows (\(actual.keys.sorted()))"); continue }
            let documented = Int(c.value.replacingOccurrences(of: ",", with: "").replacingOccurrences(of: "_", with: ""))
            if documented != value { XCTFail("\(c.page):\(c.line): \(c.name) is documented as \(c.value), but the code has \(value)") }
        }
        for name in actual.keys.sorted() where !seen.contains(name) {
            XCTFail("docs/data-models/README.md: the `## Limits` table does not list \(name) (\(actual[name]!))")
        }
    }

    /// The Mermaid diagram shows every entity, and only documented fields.
    func testDiagramShowsEveryEntityWithDocumentedFields() {
        guard requireDocs() else { return }
        guard let diagram = docs.mermaid.first(where: { $0.text.contains("erDiagram") }) else {
            XCTFail("docs/data-models/README.md: no ```mermaid erDiagram block"); return
        }
        var drawn = Set<String>()
        var entity: String? = nil
        for (i, raw) in diagram.text.components(separatedBy: "\n").enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            let at = "\(diagram.page):\(diagram.line + 1 + i)"
            let w = line.split(separator: " ").map(String.init)
            if line.hasSuffix("{"), w.count == 2 {
                entity = w[0].lowercased()
                drawn.insert(entity!)
                if !kinds.contains(entity!) { XCTFail("\(at): the diagram draws \(w[0]), which is not an entity kind") }
            } else if line == "}" {
                entity = nil
            } else if let e = entity, w.count >= 2 {
                if !docs.fields(of: e).contains(where: { $0.name == w[1] }) {
                    XCTFail("\(at): the diagram gives \(e.uppercased()) an attribute \(w[1]), which its table does not document")
                }
            } else if w.count >= 3, w[1].contains("--") {
                for end in [w[0], w[2]] where !kinds.contains(end.lowercased()) {
                    XCTFail("\(at): the diagram relates \(end), which is not an entity kind")
                }
            }
        }
        for k in kinds where !drawn.contains(k) { XCTFail("\(diagram.page): the diagram does not draw entity \(k.uppercased()) with its fields") }
    }

    /// Every line of a ```jsonl example decodes and validates.
    func testExampleLinesAreValid() {
        guard requireDocs() else { return }
        XCTAssertFalse(docs.examples.isEmpty, "docs/data-models/: no ```jsonl examples")
        for x in docs.examples {
            do { _ = try BulkFormat.decode(line: Array(x.text.utf8)) } catch {
                XCTFail("\(x.page):\(x.line): the example line is refused by the bulk decoder: \(error)")
            }
        }
    }
}
