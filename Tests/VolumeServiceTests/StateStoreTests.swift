import Foundation
import Testing
import VolumeService

/// The registry's file: saves issued while others are still writing (the service's actor re-enters at each save)
/// never tear the file or fail, and the file ends as the last snapshot issued.
@Suite(.timeLimit(.minutes(5))) struct StateStoreTests {
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

    /// The state directory is the plugin's own (0700), and a link planted where the temporary file goes is replaced,
    /// never followed: the file it points to is untouched.
    @Test func theStateIsPrivateAndAPlantedLinkIsNotFollowed() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("state-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let directory = root + "/state"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        try Data("precious".utf8).write(to: URL(fileURLWithPath: root + "/victim"))
        try FileManager.default.createSymbolicLink(atPath: directory + "/state.json.tmp", withDestinationPath: root + "/victim")
        let store = StateStore(directory: directory)
        var state = PersistedState()
        state.volumes["v"] = VolumeRecord(name: "v", doName: "v", createdAt: Date(timeIntervalSince1970: 0))
        try await store.save(state)
        #expect(try String(contentsOfFile: root + "/victim", encoding: .utf8) == "precious")
        #expect(try store.load() == state)
        var status = stat()
        #expect(stat(directory, &status) == 0 && status.st_mode & 0o777 == 0o700, "mode \(String(status.st_mode & 0o777, radix: 8))")
        #expect(stat(directory + "/state.json", &status) == 0 && status.st_mode & 0o777 == 0o600)
    }
}
