import TypedErrors

/// A host device operation that failed: which kind, and the system's words.
public typealias DeviceError = CodedError<DeviceErrorCode>

/// What kind of `DeviceError` it is.
public struct DeviceErrorCode: Hashable, Sendable, CustomStringConvertible {
    private enum Base: String, Hashable, Sendable {
        case udev, mount, freeze, io, probe, program, unsupported
    }
    private let base: Base
    private init(_ base: Base) { self.base = base }

    /// libudev could not be set up (monitor, netlink socket, wake-up pipe).
    public static let udev = Self(.udev)
    /// mount(2) or umount2(2) failed.
    public static let mount = Self(.mount)
    /// FIFREEZE or FITHAW failed.
    public static let freeze = Self(.freeze)
    /// A device or file could not be opened, sized or read.
    public static let io = Self(.io)
    /// libblkid could not probe the device, or found what the plugin must not touch.
    public static let probe = Self(.probe)
    /// A filesystem tool could not run, or failed.
    public static let program = Self(.program)
    /// The operation does not apply (xfs grows only while mounted).
    public static let unsupported = Self(.unsupported)

    public var description: String { base.rawValue }
}
