// The server's request bodies under libFuzzer: each input is parsed as a chat and as a text
// completion request (`CompletionRequest`, what POST /v1/chat/completions and /v1/completions
// read). Bad input must end in a thrown APIError, never a trap, a hang or an unbounded allocation.
import Foundation
import FuzzSupport
import LowRAAPI

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = Data(bytes: data, count: size)
    for kind in [CompletionRequest.Kind.chat, .text] {
        if let r = try? CompletionRequest(json: body, kind: kind) { _ = r.sampling }
    }
    return 0
}

@_cdecl("FuzzRequest_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { fuzzRequest($0, $1) }
}
