import AuthzModel
@preconcurrency import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The keys that encrypt platform-credential secrets at rest: one active key (new ciphertexts)
/// and retired ones (still readable).
///
/// File format, one key a line: `ID BASE64KEY [active]` (`#` comments). IDs are 1...32 bytes of
/// `[A-Za-z0-9._-]`; keys are 32 bytes (AES-256). Exactly one line is marked `active`. The file
/// must be owned by the process's effective uid and not be readable or writable by group or
/// others: `load` refuses it otherwise.
public struct KeyRing: Sendable {
    public let activeId: String
    let keys: [String: SymmetricKey]

    public var ids: [String] { keys.keys.sorted() }

    init(activeId: String, keys: [String: SymmetricKey]) {
        self.activeId = activeId
        self.keys = keys
    }

    /// Loads a key ring file. Throws FAILED_PRECONDITION for a file owned by another uid than
    /// the process's effective uid (whoever owns it could swap the keys) or accessible by group
    /// or others, each naming the path and the fix; INVALID_ARGUMENT (naming the line) for a
    /// malformed one. Key bytes never appear in an error.
    public static func load(path: String) throws -> KeyRing {
        var st = stat()
        do {
            try posix("stat", path) { stat(path, &st) }
        } catch let f as POSIXFailure {
            throw AuthzError(.failedPrecondition, "key ring \(path) cannot be read: \(f.reason)")
        }
        if st.st_uid != geteuid() {
            throw AuthzError(.failedPrecondition, "key ring \(path) is owned by uid \(st.st_uid), not by this process's uid \(geteuid()); refusing to use it (fix: chown \(geteuid()) \(path))")
        }
        if st.st_mode & 0o077 != 0 {
            throw AuthzError(.failedPrecondition, "key ring \(path) has mode \(String(st.st_mode & 0o777, radix: 8)); it must not be accessible by group or others (chmod 600)")
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw AuthzError(.failedPrecondition, "key ring \(path) cannot be read")
        }
        var keys: [String: SymmetricKey] = [:]
        var active: String?
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if parts.isEmpty { continue }
            guard parts.count == 2 || (parts.count == 3 && parts[2] == "active") else {
                throw AuthzError.invalid("keyring line \(n + 1)", "must be `ID BASE64KEY [active]`")
            }
            let id = String(parts[0])
            guard (1...32).contains(id.utf8.count), id.utf8.allSatisfy({ $0 == 0x2D || $0 == 0x2E || $0 == 0x5F || (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) }) else {
                throw AuthzError.invalid("keyring line \(n + 1)", "key id must be 1...32 characters of [A-Za-z0-9._-]")
            }
            guard let bytes = Data(base64Encoded: String(parts[1])), bytes.count == 32 else {
                throw AuthzError.invalid("keyring line \(n + 1)", "key must be 32 bytes in base64")
            }
            if keys[id] != nil { throw AuthzError.invalid("keyring line \(n + 1)", "key id \(id) is repeated") }
            keys[id] = SymmetricKey(data: bytes)
            if parts.count == 3 {
                if active != nil { throw AuthzError.invalid("keyring line \(n + 1)", "only one key may be active") }
                active = id
            }
        }
        guard let active else { throw AuthzError.invalid("keyring", "must mark one key `active`") }
        return KeyRing(activeId: active, keys: keys)
    }

    /// Writes a new key ring file (mode 0600) with one fresh active key named `id`, for a first
    /// start. Fails if the file exists.
    public static func create(path: String, id: String = "k1") throws -> KeyRing {
        let key = SymmetricKey(size: .bits256)
        let b64 = key.withUnsafeBytes { Data($0).base64EncodedString() }
        let fd: Int32
        do {
            fd = try posix("open", path) { open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        } catch let f as POSIXFailure {
            throw AuthzError(.failedPrecondition, "cannot create key ring \(path): \(f.reason)")
        }
        let text = "# authzd key ring: ID BASE64KEY [active]\n\(id) \(b64) active\n"
        let ok = text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) == $0.count - 1 }
        fsync(fd)
        close(fd)
        guard ok else { throw AuthzError(.failedPrecondition, "cannot write key ring \(path)") }
        return try load(path: path)
    }
}

/// Seals and opens platform-credential secrets with AES-256-GCM.
///
/// Each ciphertext is `0x01 ‖ len(key id) ‖ key id ‖ nonce(12) ‖ ciphertext ‖ tag(16)`, with a
/// fresh random nonce, and additional authenticated data binding it to tenant id, owner user
/// id, credential id and field name: moved to another record or field, it fails to open.
public struct SecretSealer: Sendable {
    public let ring: KeyRing

    public init(ring: KeyRing) { self.ring = ring }

    static func aad(tenant: ID, owner: ID, credential: ID, field: String) -> [UInt8] {
        var a: [UInt8] = Array("authzd.credential.v1".utf8)
        appendID(tenant, to: &a)
        appendID(owner, to: &a)
        appendID(credential, to: &a)
        a += Array(field.utf8)
        return a
    }

    /// Empty secrets stay empty (nothing to hide, and "no token" stays visible).
    public func seal(_ plaintext: String, tenant: ID, owner: ID, credential: ID, field: String) throws -> [UInt8] {
        if plaintext.isEmpty { return [] }
        return try sealBytes(Array(plaintext.utf8), aad: SecretSealer.aad(tenant: tenant, owner: owner, credential: credential, field: field))
    }

    /// AES-GCM with the active key: `1 ‖ id length ‖ key id ‖ nonce ‖ ciphertext ‖ tag`.
    private func sealBytes(_ plaintext: [UInt8], aad: [UInt8]) throws -> [UInt8] {
        guard let key = ring.keys[ring.activeId] else {
            // KeyRing.load refuses a ring without its active key; this is never reached.
            throw AuthzError.internalError("the key ring has no key \(ring.activeId)")
        }
        let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(), authenticating: aad)
        var out: [UInt8] = [1, UInt8(ring.activeId.utf8.count)]
        out += Array(ring.activeId.utf8)
        out += Array(box.nonce)
        out += Array(box.ciphertext)
        out += Array(box.tag)
        return out
    }

    /// Opens `sealBytes`' output with the key it names. Throws `unknownKey(id)` when the ring
    /// lacks that key, `failure` when the bytes are malformed or fail authentication.
    private func openBytes(_ sealed: [UInt8], aad: [UInt8], failure: AuthzError, unknownKey: (String) -> AuthzError) throws -> [UInt8] {
        guard let id = SecretSealer.keyId(of: sealed) else { throw failure }
        guard let key = ring.keys[id] else { throw unknownKey(id) }
        let start = 2 + id.utf8.count
        guard sealed.count >= start + 12 + 16 else { throw failure }
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: sealed[start..<(start + 12)]),
                                            ciphertext: sealed[(start + 12)..<(sealed.count - 16)],
                                            tag: sealed[(sealed.count - 16)...])
            return Array(try AES.GCM.open(box, using: key, authenticating: aad))
        } catch {
            throw failure
        }
    }

    /// Seals a replicated-log message body (AES-GCM with the active key; `context` — the
    /// subject and message id — authenticated with it), so that the log's servers never hold
    /// a record or a token in clear. Every replica needs the same key ring to open it.
    public func sealMessage(_ plaintext: [UInt8], context: String) throws -> [UInt8] {
        try sealBytes(plaintext, aad: Array(("authzd.log.v1" + context).utf8))
    }

    /// Opens `sealMessage`'s output. DATA_LOSS naming the key when it is not in the ring, or
    /// when the message was altered or moved to another subject or id.
    public func openMessage(_ sealed: [UInt8], context: String) throws -> [UInt8] {
        try openBytes(sealed, aad: Array(("authzd.log.v1" + context).utf8),
                      failure: AuthzError(.dataLoss, "log message \(context) cannot be decrypted (altered, or sealed with another key ring)", field: "log"),
                      unknownKey: { AuthzError(.dataLoss, "log message \(context) was sealed with key \"\($0)\", which is not in this daemon's key ring (every replica needs the same ring)", field: "log") })
    }

    /// The key id a ciphertext was made with, or nil for an empty or malformed one.
    public static func keyId(of sealed: [UInt8]) -> String? {
        guard sealed.count > 2, sealed[0] == 1, sealed.count >= 2 + Int(sealed[1]) else { return nil }
        return String(decoding: sealed[2..<(2 + Int(sealed[1]))], as: UTF8.self)
    }

    /// Opens a ciphertext. Throws DATA_LOSS (naming the field and record, never the content)
    /// when the key is unknown or authentication fails.
    public func open(_ sealed: [UInt8], tenant: ID, owner: ID, credential: ID, field: String) throws -> String {
        if sealed.isEmpty { return "" }
        let failure = AuthzError(.dataLoss, "platform_credential.\(field) of \(credential) cannot be decrypted (wrong key, or the ciphertext was moved or altered)", field: "platform_credential.\(field)")
        let plain = try openBytes(sealed, aad: SecretSealer.aad(tenant: tenant, owner: owner, credential: credential, field: field), failure: failure,
                                  unknownKey: { AuthzError(.dataLoss, "platform_credential.\(field) of \(credential) was sealed with key \"\($0)\", which is not in the key ring", field: "platform_credential.\(field)") })
        guard let s = String(validating: plain, as: UTF8.self) else { throw failure }
        return s
    }
}
