/// The volumes a driver knows, as Get and List show them.
public struct VolumeLookups: Sendable {
    private var byName: [String: VolumeInfo] = [:]
    /// By name, as List answers them.
    public private(set) var volumes: [VolumeInfo] = []
    /// Different for each set of lookups a driver makes: what is kept made from one set is good while it is the same.
    public private(set) var generation: UInt64 = 0

    /// The lookups of `volumes`.
    ///
    /// - Parameters:
    ///   - volumes: Every volume the driver knows.
    ///   - generation: Distinct from the last set the driver made.
    public init(_ volumes: [VolumeInfo] = [], generation: UInt64 = 0) {
        self.generation = generation
        self.volumes = volumes.sorted { $0.name < $1.name }
        byName = Dictionary(volumes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// One volume as Get shows it.
    ///
    /// - Parameter name: A Docker volume name.
    /// - Returns: The volume, or nil when the driver does not know the name.
    public func volume(named name: String) -> VolumeInfo? { byName[name] }
}
