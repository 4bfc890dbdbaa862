import TypedErrors

/// A host device operation that failed: which kind, and the system's words.
public typealias DeviceError = CodedError<DeviceErrorCode>

/// What kind of `DeviceError` it is.
public enum DeviceErrorCode: Sendable, Equatable {
    /// libudev could not be set up (monitor, netlink socket, wake-up pipe).
    case udev
    /// mount(2) or umount2(2) failed.
    case mount
    /// FIFREEZE or FITHAW failed.
    case freeze
    /// A device or file could not be opened, sized or read.
    case io
    /// libblkid could not probe the device, or found what the plugin must not touch.
    case probe
    /// A filesystem tool could not run, or failed.
    case program
    /// The operation does not apply (xfs grows only while mounted).
    case unsupported
}
