internal import CAuthzProto
#if canImport(Glibc)
import Glibc
#endif

/// Owns every C allocation made while building one message tree for packing; frees them all
/// in `deinit`. Nothing it hands out may outlive it.
final class Arena {
    private var blocks: [UnsafeMutableRawPointer] = []
    /// Set when a string given to `cString` held a NUL byte: C would have cut it there, so
    /// what was built does not say what the caller asked and must not be sent.
    private(set) var sawNUL = false

    deinit { for b in blocks { free(b) } }

    /// A zeroed C struct of type `T`, initialised by `initialize` (the generated `…__init`).
    func make<T>(_ type: T.Type, _ initialize: (UnsafeMutablePointer<T>) -> Void) -> UnsafeMutablePointer<T> {
        let raw = calloc(1, MemoryLayout<T>.stride)!
        blocks.append(raw)
        let p = raw.bindMemory(to: T.self, capacity: 1)
        initialize(p)
        return p
    }

    /// A NUL-terminated copy of `s`.
    func cString(_ s: String) -> UnsafeMutablePointer<CChar> {
        if s.utf8.contains(0) { sawNUL = true }
        let p = strdup(s)!
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    /// A C array of `count` elements of `T`, zeroed.
    func array<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = calloc(max(count, 1), MemoryLayout<T>.stride)!
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    /// A C array of C strings.
    func cStrings(_ items: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        let a = array(UnsafeMutablePointer<CChar>?.self, count: items.count)
        for (i, s) in items.enumerated() { a[i] = cString(s) }
        return a
    }

    /// A copy of `bytes` for a `ProtobufCBinaryData`.
    func binary(_ bytes: [UInt8]) -> ProtobufCBinaryData {
        let p = array(UInt8.self, count: bytes.count)
        bytes.withUnsafeBufferPointer { if let b = $0.baseAddress { p.update(from: b, count: bytes.count) } }
        return ProtobufCBinaryData(len: bytes.count, data: p)
    }
}

/// Reads a C string field. Nil when it is not valid UTF-8.
@inline(__always) func swiftString(_ p: UnsafeMutablePointer<CChar>?) -> String? {
    guard let p else { return "" }
    if p.pointee == 0 { return "" }
    return String(validatingCString: p)
}
