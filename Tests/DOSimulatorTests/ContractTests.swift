import CurlTransport
import DOSimulator
import DigitalOcean
import Foundation
import HTTPTypes
import Logging
import Subprocess
import Testing

/// Every request the client sends and every answer the simulator gives, checked against DigitalOcean's official
/// OpenAPI document by openapi-core: the project's copy (`Tests/contract/do-openapi/`, see its SOURCE.md), or
/// `DO_OPENAPI_SPEC`.
@Suite(.timeLimit(.minutes(3))) struct ContractTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let vendoredSpec = packageRoot.appendingPathComponent("Tests/contract/do-openapi/block-storage.openapi.json").path
    static var specPath: String { ProcessInfo.processInfo.environment["DO_OPENAPI_SPEC"] ?? vendoredSpec }
    /// The shared reference copy, where a checkout keeps one beside the repository.
    static let sharedSpec = packageRoot.deletingLastPathComponent()
        .appendingPathComponent("shared/do-openapi/block-storage.openapi.json").path

    @Test(.enabled(if: FileManager.default.fileExists(atPath: sharedSpec), "no ../shared/do-openapi beside this checkout"))
    func theProjectsCopyMatchesTheSharedDocument() throws {
        let copy = try Data(contentsOf: URL(fileURLWithPath: Self.vendoredSpec))
        let shared = try Data(contentsOf: URL(fileURLWithPath: Self.sharedSpec))
        #expect(copy == shared, "Tests/contract/do-openapi/block-storage.openapi.json differs from \(Self.sharedSpec): copy it again")
    }

    @Test func clientRequestsAndSimulatorResponsesMatchTheOpenAPIDocument() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("contract-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let world = SimulatorWorld(
            options: SimulatorOptions(
                token: "contract-token", actionLatency: .milliseconds(20), snapshotInterval: .zero,
                scopedTokens: ["read-only": ["block_storage:read"]]),
            devices: FileDeviceBackend(dataDirectory: root + "/data"))
        try await world.addDroplet(id: 1001, deviceDirectory: root + "/d1")
        let server = SimulatorServer(world: world)
        let running = try await server.start()
        let transport = CurlTransport()
        let client = DOClient(
            baseURL: running.apiURL, token: "contract-token", transport: transport,
            retry: RetryPolicy(maxRetries: 2, initialBackoff: .milliseconds(1)), logger: Logger(label: "contract"))

        // Every call the plugin makes, and the errors it meets.
        let volume = try await client.createVolume(
            VolumeCreateRequest(name: "pgdata", sizeGigabytes: 10, region: "nyc1", description: "db", filesystemType: "ext4",
                                filesystemLabel: "pg", tags: ["db"]))
        _ = try await client.createVolume(VolumeCreateRequest(name: "plain", sizeGigabytes: 1, region: "nyc1"))
        try await expectError(.conflict) { try await client.createVolume(VolumeCreateRequest(name: "pgdata", sizeGigabytes: 1, region: "nyc1")) }
        _ = try await client.volumes(named: "pgdata", region: "nyc1")
        _ = try await client.volumes(region: "nyc1")
        _ = try await client.volume(id: volume.id)
        try await expectError(.notFound) { try await client.volume(id: "00000000-0000-0000-0000-000000000000") }
        try await expectError(.unprocessable) { try await client.detach(volumeID: volume.id, dropletID: 1001, region: "nyc1") }
        let attach = try await client.attach(volumeID: volume.id, dropletID: 1001, region: "nyc1")
        try await expectError(.unprocessable) { try await client.attach(volumeID: volume.id, dropletID: 1001, region: "nyc1") }
        try await poll("the attach to complete") { try await client.action(volumeID: volume.id, actionID: attach.id).status != .inProgress }
        // Snapshots: taken, refused under a name the volume's snapshots use, listed, read both ways, restored as a
        // new volume, deleted.
        let snapshot = try await client.createSnapshot(volumeID: volume.id, name: "pgdata-before", tags: ["do-storage"])
        try await expectError(.conflict) { try await client.createSnapshot(volumeID: volume.id, name: "pgdata-before", tags: []) }
        #expect(try await client.snapshots(volumeID: volume.id).map(\.id) == [snapshot.id])
        _ = try await client.snapshot(id: snapshot.id)
        _ = try await raw(transport, running, .get, "/v2/snapshots/\(snapshot.id)", nil)
        let restored = try await client.createVolume(
            VolumeCreateRequest(name: "restored", sizeGigabytes: 1, region: "nyc1", snapshotID: snapshot.id))
        #expect(restored.sizeGigabytes == 10, "a volume from a snapshot is as large as the snapshot's volume")
        try await client.deleteSnapshot(id: snapshot.id)
        try await expectError(.notFound) { try await client.snapshot(id: snapshot.id) }
        let second = try await client.createSnapshot(volumeID: volume.id, name: "pgdata-2", tags: [])
        _ = try await raw(transport, running, .delete, "/v2/snapshots/\(second.id)", nil)
        // History: a commit (a snapshot with its tags); a volume's head tag put on and taken off. (The account's
        // listing of volume snapshots, GET /v2/snapshots?resource_type=volume, is not in the document's block-storage
        // paths, so it is left out here; the real-engine tests read commits through it.)
        let commit = try await client.createSnapshot(
            volumeID: volume.id, name: "import base schema", tags: ["do-storage-commit", "do-storage-name:pgdata", "do-storage-branch:main"])
        #expect(try await client.snapshot(id: commit.id).tags.contains("do-storage-commit"))
        try await client.createTag(name: "do-storage-head:2")
        try await client.tagVolume(id: volume.id, with: "do-storage-head:2")
        #expect(try await client.volume(id: volume.id).tags.contains("do-storage-head:2"))
        try await client.untagVolume(id: volume.id, from: "do-storage-head:2")
        #expect(try await !client.volume(id: volume.id).tags.contains("do-storage-head:2"))
        try await client.deleteSnapshot(id: commit.id)
        // The heartbeat: a tag made, put on the droplet, seen in the droplet object, deleted.
        try await client.createTag(name: "do-storage-lease-1001-1795000000")
        try await client.tag(dropletID: 1001, with: "do-storage-lease-1001-1795000000")
        #expect(try await client.droplet(id: 1001).tags == ["do-storage-lease-1001-1795000000"])
        _ = try await raw(transport, running, .delete, "/v2/tags/do-storage-lease-1001-1795000000/resources",
                          #"{"resources":[{"resource_id":"1001","resource_type":"droplet"}]}"#)
        try await client.deleteTag(name: "do-storage-lease-1001-1795000000")
        try await expectError(.notFound) { try await client.deleteTag(name: "do-storage-lease-1001-1795000000") }
        try await expectError(.notFound) { try await client.tag(dropletID: 1001, with: "never-made") }
        try await expectError(.conflict) { try await client.deleteVolume(id: volume.id) }
        let detach = try await client.detach(volumeID: volume.id, dropletID: 1001, region: "nyc1")
        try await poll("the detach to complete") { try await client.action(volumeID: volume.id, actionID: detach.id).status != .inProgress }
        server.inject(Fault(.tooManyRequests(retryAfter: 0)))
        server.inject(Fault(.status(500)))
        _ = try await client.volumes(named: "plain", region: "nyc1")
        // A custom-scoped token without the scope the call needs.
        try await expectError(.forbidden) {
            try await DOClient(baseURL: running.apiURL, token: "read-only", transport: transport, logger: Logger(label: "c"))
                .createVolume(VolumeCreateRequest(name: "refused", sizeGigabytes: 1, region: "nyc1"))
        }
        try await expectError(.unauthorized) {
            try await DOClient(baseURL: running.apiURL, token: "wrong", transport: transport, logger: Logger(label: "c"))
                .volumes(named: "x", region: "nyc1")
        }
        // The endpoints the client does not use but the simulator serves: by-name actions, /v2/actions, delete by name.
        let byName = try await raw(transport, running, .post, "/v2/volumes/actions",
                                   #"{"type":"attach","volume_name":"plain","droplet_id":1001,"region":"nyc1"}"#)
        let actionID = try #require(
            (try JSONSerialization.jsonObject(with: Data(byName.body)) as? [String: [String: Any]])?["action"]?["id"] as? Int)
        _ = try await raw(transport, running, .get, "/v2/actions/\(actionID)", nil)
        let resize = try await raw(transport, running, .post, "/v2/volumes/\(volume.id)/actions",
                          #"{"type":"resize","size_gigabytes":20,"region":"nyc1"}"#)
        #expect(resize.status == 202)
        try await poll("the resize to complete") { try await client.volume(id: volume.id).sizeGigabytes == 20 }
        try await client.deleteVolume(id: volume.id)
        let plain = try #require(try await client.volumes(named: "plain", region: "nyc1").first)
        try await poll("the attach by name to complete") { try await !client.volume(id: plain.id).dropletIDs.isEmpty }
        let detachPlain = try await raw(transport, running, .post, "/v2/volumes/actions",
                                        #"{"type":"detach","volume_name":"plain","droplet_id":1001,"region":"nyc1"}"#)
        #expect(detachPlain.status == 202)
        try await poll("the detach by name to complete") { try await client.volume(id: plain.id).dropletIDs.isEmpty }
        _ = try await raw(transport, running, .delete, "/v2/volumes?name=plain&region=nyc1", nil)
        await running.stop()

        let exchanges = server.recorded
        let statuses = Set(exchanges.map(\.status))
        #expect(statuses.isSuperset(of: [200, 201, 202, 204, 401, 403, 404, 409, 422, 429, 500]))
        let file = root + "/exchanges.jsonl"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let lines = try exchanges.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)

        let validator = Self.packageRoot.appendingPathComponent("Tests/contract/validate_openapi.py").path
        // scripts/test gives the Python of the virtual environment that holds openapi-core.
        let python = ProcessInfo.processInfo.environment["DO_STORAGE_PYTHON"].map { Executable.path(.init($0)) } ?? .name("python3")
        let result = try await Subprocess.run(
            python, arguments: [validator, Self.specPath, file], output: .string(limit: 1 << 20),
            error: .string(limit: 1 << 20))
        let report = result.standardOutput + result.standardError
        #expect(result.terminationStatus == .exited(0), "\(report)")
        #expect(report.contains("contract: \(exchanges.count) valid exchanges, 0 invalid"), "\(report)")
    }

    /// The call fails with a `DOError` of `code`; anything else fails the test.
    func expectError<T>(_ code: DOError.Code, _ body: () async throws -> T) async throws {
        do {
            _ = try await body()
            Issue.record("expected a \(code) error, the call succeeded")
        } catch let error as DOError {
            #expect(error.code == code, "\(error)")
        }
    }

    /// Asks until `condition` holds, every 10 ms, for at most 60 s (a guard against a hang, not a margin).
    func poll(_ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while try await !condition() {
            try #require(ContinuousClock.now < deadline, "\(what) did not happen within 60 s")
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    func raw(
        _ transport: CurlTransport, _ running: RunningSimulator, _ method: HTTPRequest.Method, _ path: String, _ body: String?
    ) async throws -> TransportResponse {
        var headers: HTTPFields = [.authorization: "Bearer contract-token"]
        if body != nil { headers[.contentType] = "application/json" }
        return try await transport.send(
            TransportRequest(method: method, url: running.apiURL + path, headers: headers, body: body.map { Array($0.utf8) }))
    }
}
