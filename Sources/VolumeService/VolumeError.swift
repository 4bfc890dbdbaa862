/// A failed volume operation, with a sentence that tells the Docker user what to do next.
/// Compare codes (`error.code == .notFound`); the set can grow without breaking callers.
public struct VolumeError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case notConfigured, notFound, invalidName, invalidOption, inUse, attachedElsewhere, blankDevice
            case deviceTimeout, notBlockDevice, actionFailed, mountFailed, unmountFailed, cloud, state
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The plugin has no ACCESS_TOKEN.
        public static let notConfigured = Code(.notConfigured)
        /// No such volume: Docker treats this as "no such volume".
        public static let notFound = Code(.notFound)
        public static let invalidName = Code(.invalidName)
        public static let invalidOption = Code(.invalidOption)
        /// Remove while mounted.
        public static let inUse = Code(.inUse)
        /// Attached to another droplet that did not release it in time.
        public static let attachedElsewhere = Code(.attachedElsewhere)
        /// The device has no filesystem.
        public static let blankDevice = Code(.blankDevice)
        /// The device did not appear after the attach completed.
        public static let deviceTimeout = Code(.deviceTimeout)
        public static let notBlockDevice = Code(.notBlockDevice)
        /// An attach or detach action failed or did not finish in time.
        public static let actionFailed = Code(.actionFailed)
        public static let mountFailed = Code(.mountFailed)
        public static let unmountFailed = Code(.unmountFailed)
        /// DigitalOcean refused or could not be reached.
        public static let cloud = Code(.cloud)
        /// The state file could not be written.
        public static let state = Code(.state)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
