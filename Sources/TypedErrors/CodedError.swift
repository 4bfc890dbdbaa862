/// An error that says which of a small set of things went wrong (`code`, for callers and tests to match) and, in
/// words a user can act on, what happened and what to do (`message`, what the error prints).
///
/// The plugin's simple errors are this type with a code of their own:
/// `typealias DeviceError = CodedError<DeviceErrorCode>`, thrown as `DeviceError(.mount, "...")` and matched as
/// `error.code == .mount`.
public struct CodedError<Code: Sendable & Equatable>: Error, CustomStringConvertible, Sendable {
    public var code: Code
    public var message: String

    /// - Parameters:
    ///   - code: Which kind of failure it is.
    ///   - message: What happened and what to do, without secrets (it is logged and shown to users).
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
