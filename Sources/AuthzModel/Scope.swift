/// The three scopes of a grant, ordered `self < tenant < global`. A grant at a scope covers
/// every lower scope.
public enum Scope: UInt8, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    case `self` = 0
    case tenant = 1
    case global = 2

    /// Parses `"self" | "tenant" | "global"`; nil for anything else.
    public init?(name: some StringProtocol) {
        switch name {
        case "self": self = .self
        case "tenant": self = .tenant
        case "global": self = .global
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .self: return "self"
        case .tenant: return "tenant"
        case .global: return "global"
        }
    }

    public var description: String { name }

    public static func < (a: Scope, b: Scope) -> Bool { a.rawValue < b.rawValue }
}

/// A set of scopes, as a 3-bit mask. The default for roles and permissions is all three.
public struct ScopeSet: Hashable, Sendable, CustomStringConvertible {
    public var mask: UInt8

    public init(mask: UInt8) { self.mask = mask & 0b111 }

    public init(_ scopes: some Sequence<Scope>) {
        var m: UInt8 = 0
        for s in scopes { m |= 1 << s.rawValue }
        mask = m
    }

    public static let all = ScopeSet(mask: 0b111)

    public func contains(_ scope: Scope) -> Bool { mask & (1 << scope.rawValue) != 0 }

    public var isEmpty: Bool { mask == 0 }

    /// The scopes in ascending order.
    public var scopes: [Scope] { Scope.allCases.filter(contains) }

    public var description: String { "[" + scopes.map(\.name).joined(separator: ", ") + "]" }
}

extension ScopeSet: ExpressibleByArrayLiteral {
    public init(arrayLiteral elements: Scope...) { self.init(elements) }
}
