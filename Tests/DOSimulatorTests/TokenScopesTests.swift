import CurlTransport
import DOSimulator
import DigitalOcean
import Foundation
import Logging
import Testing

/// Least privilege: the scopes the plugin asks users for are the ones DigitalOcean's OpenAPI document gives each
/// call, the simulator refuses a call its token has no scope for as DigitalOcean does, and the plugin's error names
/// the scope.
@Suite(.timeLimit(.minutes(5))) struct TokenScopesTests {
    /// The OpenAPI document's scopes per operation (`GET /v2/volumes/{}`), the legacy read/write scopes left out.
    static func documentScopes() throws -> [String: Set<String>] {
        let path = ContractTests.vendoredSpec
        let document = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        var result: [String: Set<String>] = [:]
        for (path, operations) in paths {
            let template = "/" + path.split(separator: "/").map { $0.hasPrefix("{") ? "{}" : String($0) }.joined(separator: "/")
            for (method, operation) in operations {
                guard let operation = operation as? [String: Any], let security = operation["security"] as? [[String: [String]]]
                else { continue }
                let scopes = Set(security.flatMap { $0.values.flatMap { $0 } }).subtracting(["api:read", "api:write"])
                result["\(method.uppercased()) \(template)"] = scopes
            }
        }
        return result
    }

    @Test func theSimulatorAsksForTheDocumentsScopes() throws {
        let document = try Self.documentScopes()
        #expect(document.count >= 20, "the document's operations were read")
        for (operation, scopes) in SimulatorServer.operationScopes {
            // GET /v2/snapshots (every snapshot of the account) is outside the block-storage document.
            guard let documented = document[operation] else {
                #expect(operation == "GET /v2/snapshots", "\(operation) is not in the OpenAPI document")
                continue
            }
            #expect(scopes == documented, "\(operation)")
        }
    }

    @Test func eachCallOfThePluginNeedsAScopeDigitalOceanAccepts() throws {
        let document = try Self.documentScopes()
        for call in TokenScopes.calls {
            let operation = "\(call.method) \(call.path)"
            let accepted = try #require(SimulatorServer.operationScopes[operation], "\(operation)")
            #expect(accepted.contains(call.scope), "\(operation): \(call.scope)")
            if let documented = document[operation] { #expect(documented.contains(call.scope), "\(operation)") }
        }
        #expect(TokenScopes.call(for: "GET /v2/volumes/0b1c2d3e-aaaa-bbbb-cccc-000000000001")?.scope == "block_storage:read")
        #expect(TokenScopes.call(for: "DELETE /v2/volumes/snapshots/abc")?.scope == "block_storage_snapshot:delete")
        #expect(TokenScopes.call(for: "GET /v2/volumes/abc/snapshots")?.scope == "block_storage_snapshot:read")
        #expect(TokenScopes.call(for: "GET /v2/volumes?name=x&region=nyc1")?.scope == "block_storage:read")
        #expect(TokenScopes.call(for: "GET /v2/account") == nil)
    }

    /// A token with every scope of the plugin's calls but one: that call gets 403, and the error names the scope
    /// and where the list is, never the token; the calls it has scopes for work.
    @Test(arguments: ["block_storage:create", "block_storage_action:create", "tag:create", "block_storage_snapshot:create"])
    func aMissingScopeIsNamed(missing: String) async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("scopes-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let token = "dop_v1_scoped_secret"
        let scopes = Set(TokenScopes.calls.map(\.scope)).subtracting([missing])
        let world = SimulatorWorld(
            options: SimulatorOptions(token: "full", actionLatency: .milliseconds(1), scopedTokens: [token: scopes]),
            devices: FileDeviceBackend(dataDirectory: root + "/data"))
        try await world.addDroplet(id: 1, deviceDirectory: root + "/d1")
        let volume = try await world.createVolume(VolumeCreateRequest(name: "existing", sizeGigabytes: 1, region: "nyc1"))
        let server = SimulatorServer(world: world)
        let running = try await server.start()
        let client = DOClient(
            baseURL: running.apiURL, token: token, transport: CurlTransport(),
            retry: RetryPolicy(maxRetries: 0, initialBackoff: .milliseconds(1)), logger: Logger(label: "scopes"))

        #expect(try await client.volumes(named: "existing", region: "nyc1").count == 1, "block_storage:read is there")
        do {
            switch missing {
            case "block_storage:create": _ = try await client.createVolume(VolumeCreateRequest(name: "new", sizeGigabytes: 1, region: "nyc1"))
            case "block_storage_action:create": _ = try await client.attach(volumeID: volume.id, dropletID: 1, region: "nyc1")
            case "tag:create": try await client.createTag(name: "do-storage-every:1h")
            default: _ = try await client.createSnapshot(volumeID: volume.id, name: "s", tags: [])
            }
            Issue.record("the call without \(missing) succeeded")
        } catch let error as DOError {
            #expect(error.code == .forbidden && error.status == 403)
            #expect(error.message == "You are not authorized to perform this operation.")
            let text = error.description
            #expect(text.contains("The token lacks the scope \(missing), which "), "\(text)")
            #expect(text.contains("README.md lists under \"Token scopes\""))
            #expect(!text.contains(token))
        }
        await running.stop()
    }

    @Test func anAccountLimitIsNotTakenForAScope() {
        let error = DOError(
            code: .forbidden, status: 403, message: "failed to create volume: capacity limit exceeded", operation: "POST /v2/volumes")
        #expect(error.advice?.hasPrefix("An account limit was reached") == true)
    }
}
