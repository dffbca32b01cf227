import AuthzModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Secondary-key tags in the `refs` database.
enum RefTag: UInt8 {
    case userRoleBinding = 0x75        // 'u': user → role binding
    case roleRoleBinding = 0x72        // 'r': role → role binding
    case rolePermissionBinding = 0x70  // 'p': role → permission binding
    case permissionBinding = 0x71      // 'q': permission → permission binding
    case userCredential = 0x63         // 'c': user → platform credential
    case tenant = 0x54                 // 'T': (nil tenant) → tenant
}

extension Store {
    // MARK: keys

    static func recordKey(_ tenant: ID, _ kind: EntityKind, _ id: ID) -> [UInt8] {
        var k: [UInt8] = []
        k.reserveCapacity(33)
        appendID(tenant, to: &k)
        k.append(kind.rawValue)
        appendID(id, to: &k)
        return k
    }

    static func nameKey(_ tenant: ID, _ kind: EntityKind, _ name: String) -> [UInt8] {
        var k: [UInt8] = []
        appendID(kind == .tenant ? .zero : tenant, to: &k)
        k.append(kind.rawValue)
        k.append(contentsOf: name.utf8)
        return k
    }

    static func credentialKey(_ c: PlatformCredential) -> [UInt8] {
        var k: [UInt8] = []
        appendID(c.fields.tenantId, to: &k)
        k.append(EntityKind.platformCredential.rawValue)
        appendID(c.ownerUserId, to: &k)
        k.append(contentsOf: c.platform.utf8)
        k.append(0)
        k.append(contentsOf: c.externalAccountId.utf8)
        return k
    }

    static func refPrefix(_ tenant: ID, _ tag: RefTag, _ parent: ID) -> [UInt8] {
        var k: [UInt8] = []
        k.reserveCapacity(49)
        appendID(tenant, to: &k)
        k.append(tag.rawValue)
        appendID(parent, to: &k)
        return k
    }

    static func idKey(_ id: ID) -> [UInt8] {
        var k: [UInt8] = []
        appendID(id, to: &k)
        return k
    }
}

/// A key of ids and tag bytes (at most 56 bytes: a reference key is 49) built in place, for
/// the per-record paths of bulk writes and look-ups: no array is allocated for it. Its bytes
/// are those of the `Store` key function of the same name.
struct FixedKey: Equatable {
    /// The bytes, from the first; zero past `count`.
    private var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0)
    /// Bytes in use.
    private(set) var count = 0

    /// `Store.idKey(id)`.
    init(id: ID) { append(id) }

    /// `Store.recordKey(tenant, kind, id)`.
    init(record tenant: ID, _ kind: EntityKind, _ id: ID) {
        append(tenant)
        append(kind.rawValue)
        append(id)
    }

    /// A reference key: `Store.refPrefix(tenant, tag, parent)`, then the child's id.
    init(ref tenant: ID, _ tag: RefTag, _ parent: ID, _ child: ID) {
        append(tenant)
        append(tag.rawValue)
        append(parent)
        append(child)
    }

    /// The value of an id in the `ids` database: its tenant, then its kind.
    init(location tenant: ID, _ kind: EntityKind) {
        append(tenant)
        append(kind.rawValue)
    }

    private mutating func append(_ v: ID) {
        precondition(count + 16 <= 56, "FixedKey holds at most 56 bytes")
        let at = count
        Swift.withUnsafeMutableBytes(of: &words) { w in
            w.storeBytes(of: v.hi.bigEndian, toByteOffset: at, as: UInt64.self)
            w.storeBytes(of: v.lo.bigEndian, toByteOffset: at + 8, as: UInt64.self)
        }
        count += 16
    }

    private mutating func append(_ byte: UInt8) {
        precondition(count < 56, "FixedKey holds at most 56 bytes")
        let at = count
        Swift.withUnsafeMutableBytes(of: &words) { $0[at] = byte }
        count += 1
    }

    /// Calls `body` with the key's bytes (valid only inside the call).
    func withUnsafeBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try Swift.withUnsafeBytes(of: words) { try body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
    }

    /// The bytes as an array.
    var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    static func == (a: FixedKey, b: FixedKey) -> Bool {
        a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.elementsEqual(y) } }
    }
}
