import TypedErrors

/// A failed volume operation, with a sentence that tells the Docker user what to do next.
/// Compare codes (`error.code == .notFound`); the set can grow without breaking callers.
public typealias VolumeError = CodedError<VolumeErrorCode>

/// What kind of `VolumeError` it is.
public struct VolumeErrorCode: Hashable, Sendable, CustomStringConvertible {
    private enum Base: String, Hashable, Sendable {
        case notConfigured, notFound, invalidName, invalidOption, inUse, attachedElsewhere, blankDevice
        case deviceTimeout, notBlockDevice, actionFailed, mountFailed, unmountFailed, cloud, state, malformedRequest
        case busy
    }
    private let base: Base
    private init(_ base: Base) { self.base = base }

    /// The plugin has no ACCESS_TOKEN.
    public static let notConfigured = Self(.notConfigured)
    /// No such volume: Docker treats this as "no such volume".
    public static let notFound = Self(.notFound)
    public static let invalidName = Self(.invalidName)
    public static let invalidOption = Self(.invalidOption)
    /// Remove while mounted.
    public static let inUse = Self(.inUse)
    /// Attached to another droplet that did not release it in time.
    public static let attachedElsewhere = Self(.attachedElsewhere)
    /// The device has no filesystem.
    public static let blankDevice = Self(.blankDevice)
    /// The device did not appear after the attach completed.
    public static let deviceTimeout = Self(.deviceTimeout)
    public static let notBlockDevice = Self(.notBlockDevice)
    /// An attach or detach action failed or did not finish in time.
    public static let actionFailed = Self(.actionFailed)
    public static let mountFailed = Self(.mountFailed)
    public static let unmountFailed = Self(.unmountFailed)
    /// DigitalOcean refused or could not be reached.
    public static let cloud = Self(.cloud)
    /// The state file could not be written.
    public static let state = Self(.state)
    /// Another operation on the same volume did not finish before this request's deadline.
    public static let busy = Self(.busy)
    /// A request whose body is not the protocol's JSON.
    public static let malformedRequest = Self(.malformedRequest)

    public var description: String { base.rawValue }
}
