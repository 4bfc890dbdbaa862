import DigitalOcean
import VolumeService

/// The production client is the orchestration's DigitalOcean: its methods are `VolumeAPI`'s, one for one.
extension DOClient: VolumeAPI {}
