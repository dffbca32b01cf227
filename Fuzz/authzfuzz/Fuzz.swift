// libFuzzer target for the frame decoder and message decoding.
//
// Build and run (see docs/operations.md, "Fuzzing"): `bash scripts/fuzz.sh SECONDS`, which runs
//   swift build --package-path Fuzz --scratch-path Fuzz/.build-fuzz \
//     -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
//   Fuzz/.build-fuzz/debug/authzfuzz -max_total_time=60 Fuzz/corpus
// Without the two flags (`swift build` in Fuzz/), the same target replays the files it is given.
//
// Each input is split into chunks (its first byte seeds the chunk sizes) and fed to the
// daemon's FrameDecoder on an EmbeddedChannel; every frame is decoded by both the fast path and
// the generated protobuf-c decoder, which must agree, and by the daemon's in-place check path
// (`CheckFrame`), which may take only frames protobuf-c decodes to the same checks. Every call's
// codec (`AuthzWire/Calls/`, found through the call table, so a new call is fuzzed without
// touching this file) must reach a fixpoint after one round: a request or response it decodes,
// encoded, decodes and encodes to the same bytes. Any crash, sanitizer report or disagreement
// is a finding.
import AuthzFraming
import AuthzModel
import AuthzWire
import NIOCore
import NIOEmbedded

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // Message decoding, directly.
    bytes.withUnsafeBytes { raw in
        let reference = WireCodec.decodeRequestWithProtobufC(raw)
        if let fast = WireCodec.decodeRequestFastPathOnly(raw) {
            if describe(fast) != describe(reference) {
                fatalError("fast path and protobuf-c disagree:\n\(describe(fast))\n\(describe(reference))")
            }
        }
        // Every call's request codec: decode → encode is a fixpoint after one round.
        if case .success = reference.call {
            let once = WireCodec.encodeRequest(reference)
            let again = once.withUnsafeBytes { WireCodec.decodeRequestWithProtobufC($0) }
            precondition(WireCodec.encodeRequest(again) == once, "request codec is not stable on \(describe(reference)): \(describe(again))")
        }
        // And every call's response codec.
        if let response = try? WireCodec.decodeResponse(raw) {
            let once = WireCodec.encodeResponseWithProtobufC(response)
            let again = once.withUnsafeBytes { try? WireCodec.decodeResponse($0) }
            precondition(again.map(WireCodec.encodeResponseWithProtobufC) == once, "response codec is not stable on a \(response.result.map(\.kind.name)) response")
        }
        // The daemon's in-place check path must take only what protobuf-c decodes the same way.
        var items: [CheckQuery] = []
        if let parsed = CheckFrame.parse(raw, maxItems: 10_000, into: &items) {
            guard case .success(let call) = reference.call else { fatalError("the check path took a frame protobuf-c refuses: \(describe(reference))") }
            var expected: [CheckCall] = []
            switch call {
            case .check(let c): expected = [c]
            case .batchCheck(let xs, let min):
                precondition(min == 0, "the check path took a batch with min_revision")
                for x in xs {
                    guard case .success(let c) = x else { fatalError("the check path took a malformed item: \(describe(reference))") }
                    expected.append(c)
                }
            default: fatalError("the check path took another call: \(describe(reference))")
            }
            precondition(parsed.requestId == reference.requestId && items.count == expected.count, "check path and protobuf-c disagree on \(describe(reference))")
            for (q, c) in zip(items, expected) {
                let name = String(decoding: UnsafeRawBufferPointer(rebasing: raw[q.permissionStart..<q.permissionEnd]), as: UTF8.self)
                precondition(q.tenant == c.tenantId && q.user == c.userId && q.scope == c.scope && name == c.permission && c.minRevision == 0,
                             "check path and protobuf-c disagree on \(describe(reference))")
            }
        }
    }
    // Framing.
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrameSize: 4096)))
    var offset = 0
    var chunk = Int(bytes.first ?? 7) % 64 + 1
    while offset < bytes.count {
        let end = min(bytes.count, offset + chunk)
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes[offset..<end]))
        } catch {
            break  // an oversized length: the daemon closes the connection
        }
        while let frame = try? channel.readInbound(as: ByteBuffer.self) {
            precondition(frame.readableBytes <= 4096, "a frame above the maximum got through")
            _ = frame.withUnsafeReadableBytes { WireCodec.decodeRequest($0) }
        }
        offset = end
        chunk = chunk * 7 % 61 + 1
    }
    _ = try? channel.finish()
    return 0
}

func describe(_ r: WireRequest) -> String {
    switch r.call {
    case .failure(let e): return "\(r.requestId) \(r.deadlineMs) \(r.apiKey ?? "-") error \(e.code) \(e.field) \(e.message)"
    case .success(.check(let c)): return "\(r.requestId) \(r.deadlineMs) \(r.apiKey ?? "-") check \(c)"
    case .success(.batchCheck(let items, let min)):
        return "\(r.requestId) \(r.deadlineMs) \(r.apiKey ?? "-") batch \(min) " + items.map { i -> String in
            switch i {
            case .success(let c): return "\(c)"
            case .failure(let e): return "error \(e.code) \(e.field) \(e.message)"
            }
        }.joined(separator: ";")
    case .success(let other): return "other \(other.name)"
    }
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

/// SwiftPM names an executable's entry point `<product>_main`; hand control to libFuzzer.
@_cdecl("authzfuzz_main")
public func authzfuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v) { data, size in fuzzOneInput(data, size) }
}
#else
import Foundation

/// Without libFuzzer (a normal build): replays the files given as arguments, e.g. a corpus or a
/// finding, through the same target.
@main
struct Replay {
    static func main() {
        for path in CommandLine.arguments.dropFirst() {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: path)).map { $0.map { path + "/" + $0 } } ?? [path]
            for f in files {
                guard let d = FileManager.default.contents(atPath: f) else { continue }
                let bytes = [UInt8](d)
                bytes.withUnsafeBufferPointer { _ = fuzzOneInput($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
                print("ok \(f)")
            }
        }
    }
}
#endif
