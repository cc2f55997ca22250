import Foundation

/// Every error LowRA throws. The message is one line that tells the user what is wrong and,
/// where possible, what to do about it.
public struct LowRAError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        case malformedFile, unsupported, missingTensor, shapeMismatch, invalidArgument, io
        /// Training produced a non-finite loss or gradient.
        case diverged
    }
    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// The exit status of a `lowra` process that stops on this error: `divergedExitStatus` when
    /// training diverged (so a caller such as `lowra experiment` tells it from other failures
    /// without reading the message), else 1.
    public var exitStatus: Int32 { kind == .diverged ? Self.divergedExitStatus : 1 }
    public static let divergedExitStatus: Int32 = 3

    public static func malformed(_ file: String, _ detail: String) -> LowRAError {
        LowRAError(.malformedFile, "\(file): \(detail)")
    }
}

extension LowRAError: LocalizedError {
    public var errorDescription: String? { message }
}
