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

    static func refKey(_ tenant: ID, _ tag: RefTag, _ parent: ID, _ child: ID) -> [UInt8] {
        var k = refPrefix(tenant, tag, parent)
        appendID(child, to: &k)
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
