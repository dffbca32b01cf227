import AuthzModel
#if canImport(Glibc)
import Glibc
#endif

/// Where a command-line tool takes its API key from, so that a key need not appear on the
/// command line (where `ps` and shell history show it).
public enum KeySource {
    /// The environment variable both CLIs read when neither `--key` nor `--key-file` is given.
    public static let environmentVariable = "AUTHZ_API_KEY"

    /// The key to present: `flag` (`--key`), else the contents of `file` (`--key-file`, leading and
    /// trailing whitespace and newlines dropped; at most 64 KiB read), else `AUTHZ_API_KEY` from `environment`; nil when none
    /// is set (an empty value counts as unset). Throws INVALID_ARGUMENT when both `--key` and
    /// `--key-file` are given, or the file cannot be read or is empty (naming the path, never
    /// its contents). Does not check the key's form: the daemon does.
    public static func resolve(flag: String?, file: String?, environment: [String: String]) throws -> String? {
        if flag != nil && file != nil {
            throw AuthzError.invalid("--key-file", "cannot be combined with --key")
        }
        if let flag, !flag.isEmpty { return flag }
        if let file {
            let fd = open(file, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw AuthzError.invalid("--key-file", "\(file) cannot be read: \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while bytes.count <= 64 * 1024 {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw AuthzError.invalid("--key-file", "\(file) cannot be read: \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                bytes += chunk[0..<n]
            }
            let text = String(decoding: bytes, as: UTF8.self)
            let trimmed = String(String(text.drop(while: { $0.isWhitespace })).reversed().drop(while: { $0.isWhitespace }).reversed())
            guard !trimmed.isEmpty else { throw AuthzError.invalid("--key-file", "\(file) is empty") }
            return trimmed
        }
        if let env = environment[environmentVariable], !env.isEmpty { return env }
        return nil
    }
}
