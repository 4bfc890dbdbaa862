import NIOCore
import Synchronization
import VolumeService

/// A lookup's answers (Get's, Path's), made once from each set of ready lookups (`VolumeLookups.generation`) and
/// kept while that set stands: the engine asks the same few names over and over, and an answer changes only with
/// its volume.
final class KeptAnswers: Sendable {
    private let make: @Sendable (VolumeInfo) -> [UInt8]
    private let made = Mutex<(generation: UInt64, answers: [String: ByteBuffer])>((0, [:]))

    init(_ make: @escaping @Sendable (VolumeInfo) -> [UInt8]) {
        self.make = make
    }

    func answer(_ volume: VolumeInfo, generation: UInt64) -> ByteBuffer {
        if let kept = made.withLock({ $0.generation == generation ? $0.answers[volume.name] : nil }) { return kept }
        let answer = ByteBuffer(bytes: make(volume))
        made.withLock {
            if $0.generation != generation { $0 = (generation, [:]) }
            $0.answers[volume.name] = answer
        }
        return answer
    }
}
