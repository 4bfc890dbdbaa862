import Foundation
import Testing
import VolumeService

/// The registry's file: saves issued while others are still writing (the service's actor re-enters at each save)
/// never tear the file or fail, and the file ends as the last snapshot issued.
@Suite(.timeLimit(.minutes(1))) struct StateStoreTests {
    /// Stands for `VolumeService`: changes its state, then awaits the save, so calls overlap at the await.
    actor Owner {
        let store: StateStore
        var state = PersistedState()
        init(store: StateStore) { self.store = store }

        func change(_ index: Int) async throws {
            state.volumes["v\(index % 7)"] = VolumeRecord(
                name: "v\(index % 7)", doName: "v\(index % 7)", volumeID: "id-\(index)",
                createdAt: Date(timeIntervalSince1970: 1_700_000_000), references: ["c\(index)": 1])
            try await store.save(state)
        }
    }

    @Test func overlappingSavesEndAsTheLastSnapshotAndNeverFail() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("state-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = StateStore(directory: directory)
        let owner = Owner(store: store)
        for round in 0..<5 {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<100 { group.addTask { try await owner.change(round * 100 + index) } }
                try await group.waitForAll()
            }
            let expected = await owner.state
            #expect(try store.load() == expected, "round \(round): the file holds the last snapshot issued")
        }
        #expect(!FileManager.default.fileExists(atPath: store.path + ".tmp"), "no temporary file is left behind")
    }
}
