/// A growable array of `UInt32` that readers of older snapshots can keep reading while the
/// single writer appends.
///
/// Readers only read below the count their snapshot was published with; the writer only
/// writes above it. When capacity runs out the writer gets a new, larger buffer (a copy);
/// snapshots holding the old one keep it alive. Publication order (append, then publish the
/// snapshot through an atomic with release ordering) is the caller's duty.
final class AppendOnlyBuffer: @unchecked Sendable {
    let base: UnsafeMutablePointer<UInt32>
    let capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    /// Appends `values` at `count`; returns the buffer to use from now on (self, or a larger
    /// copy holding the first `count` elements and the new ones).
    func appending(_ values: UnsafeBufferPointer<UInt32>, at count: Int) -> AppendOnlyBuffer {
        var target = self
        if count + values.count > capacity {
            target = AppendOnlyBuffer(capacity: max(capacity * 2, count + values.count))
            target.base.update(from: base, count: count)
        }
        (target.base + count).update(from: values.baseAddress!, count: values.count)
        return target
    }
}
