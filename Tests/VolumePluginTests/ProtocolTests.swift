import Foundation
import Logging
import Testing
import TestSupport
import VolumePlugin
import VolumeService

/// Docker's VolumeDriver protocol as the engine uses it, against the real orchestration over simulated DigitalOcean.
@Suite(.timeLimit(.minutes(5))) struct ProtocolTests {
    /// The plugin's server (on loopback TCP) serving a fresh harness with one droplet (1001) and one formatted volume
    /// ("data"), and a connection to it.
    func withPlugin(_ body: @escaping @Sendable (RawConnection, ServiceHarness, ServiceHarness.Node) async throws -> Void) async throws {
        let harness = try ServiceHarness()
        try await harness.createVolume("data")
        let node = try await harness.node(droplet: 1001)
        let controller = VolumeDriverController(driver: node.service, logger: Logger(label: "test"))
        try await Self.withConnection(controller) { client in try await body(client, harness, node) }
    }

    static func withConnection(
        _ controller: VolumeDriverController, _ body: @escaping @Sendable (RawConnection) async throws -> Void
    ) async throws {
        try await withLiveServer(controller) { port in
            let connection = try RawConnection(port: port)
            defer { connection.close() }
            try await body(connection)
        }
    }

    /// One request as the engine sends it (no Content-Type; no body at all where `body` is nil), and its answer.
    func call(_ client: RawConnection, _ method: String, _ body: String?) async throws -> (Int, [String: Any]) {
        let request = "POST /\(method) HTTP/1.1\r\nHost: plugin\r\nContent-Length: \(body?.utf8.count ?? 0)\r\n\r\n" + (body ?? "")
        let answer = try await client.blocking { connection in
            try connection.send(request)
            return try connection.receiveAnswer()
        }
        let object = try answer.object()
        #expect(answer.head.lowercased().contains("content-type: \(VolumeDriverController.contentType)"))
        return (answer.status, object)
    }

    /// Each request after `docker volume create data`, and the keys its answer has: `Err` empty on success, set on
    /// failure (status 500). Removing a volume the plugin does not know succeeds, as Docker expects.
    static let everyMethod: [(method: String, body: String?, keys: Set<String>, fails: Bool)] = [
        ("Plugin.Activate", nil, ["Implements"], false), ("VolumeDriver.Capabilities", nil, ["Capabilities"], false),
        ("VolumeDriver.List", "{}", ["Volumes", "Err"], false), ("VolumeDriver.Get", #"{"Name":"data"}"#, ["Volume", "Err"], false),
        ("VolumeDriver.Get", #"{"Name":"nope"}"#, ["Err"], true), ("VolumeDriver.Path", #"{"Name":"data"}"#, ["Mountpoint", "Err"], false),
        ("VolumeDriver.Create", #"{"Name":"data","Opts":null}"#, ["Err"], false), ("VolumeDriver.Remove", #"{"Name":"nope"}"#, ["Err"], false),
        ("VolumeDriver.Unmount", #"{"Name":"data","ID":"x"}"#, ["Err"], false), ("VolumeDriver.Get", nil, ["Err"], true),
        ("VolumeDriver.List", nil, ["Volumes", "Err"], false),
    ]

    @Test("every method answers its JSON object, even to an empty body", arguments: everyMethod.indices)
    func alwaysJSON(index: Int) async throws {
        let expected = Self.everyMethod[index]
        try await withPlugin { client, _, _ in
            _ = try await call(client, "VolumeDriver.Create", #"{"Name":"data"}"#)
            let (status, object) = try await call(client, expected.method, expected.body)
            #expect(Set(object.keys) == expected.keys, "\(expected.method): \(object)")
            #expect(status == (expected.fails ? 500 : 200), "\(expected.method): \(object)")
            if expected.keys.contains("Err") {
                #expect((object["Err"] as? String)?.isEmpty == !expected.fails, "\(expected.method): \(object)")
            }
        }
    }

    @Test func activateAnnouncesVolumeDriver() async throws {
        try await withPlugin { client, _, _ in
            let (status, object) = try await call(client, "Plugin.Activate", nil)
            #expect(status == 200)
            #expect(object["Implements"] as? [String] == ["VolumeDriver"])
        }
    }

    @Test func capabilitiesScopeIsGlobal() async throws {
        try await withPlugin { client, _, _ in
            let (_, object) = try await call(client, "VolumeDriver.Capabilities", "{}")
            #expect((object["Capabilities"] as? [String: Any])?["Scope"] as? String == "global")
        }
    }

    @Test func getEchoesNameWithRFC3339CreatedAt() async throws {
        try await withPlugin { client, _, _ in
            _ = try await call(client, "VolumeDriver.Create", #"{"Name":"data"}"#)
            let (status, object) = try await call(client, "VolumeDriver.Get", #"{"Name":"data"}"#)
            #expect(status == 200)
            #expect(object["Err"] as? String == "")
            let volume = try #require(object["Volume"] as? [String: Any])
            #expect(volume["Name"] as? String == "data")
            let created = try #require(volume["CreatedAt"] as? String)
            #expect(try Date(created, strategy: .iso8601) <= Date())
            #expect(created.hasSuffix("Z"))
            #expect(volume["Status"] is [String: Any])
        }
    }

    @Test func unknownVolumeIsAnError() async throws {
        try await withPlugin { client, _, _ in
            for name in ["nope", "Has_Upper", ""] {
                let (status, object) = try await call(client, "VolumeDriver.Get", "{\"Name\":\"\(name)\"}")
                #expect(status == 500)
                #expect((object["Err"] as? String)?.contains("no such volume") == true)
            }
            let (_, path) = try await call(client, "VolumeDriver.Path", #"{"Name":"nope"}"#)
            #expect((path["Err"] as? String)?.isEmpty == false)
        }
    }

    @Test func createIsIdempotentAndUnknownVolumesAreExplained() async throws {
        try await withPlugin { client, harness, node in
            for _ in 0..<3 {
                let (status, object) = try await call(client, "VolumeDriver.Create", #"{"Name":"data","Opts":{}}"#)
                #expect(status == 200)
                #expect(object["Err"] as? String == "")
            }
            #expect(await node.service.records.count == 1)
            // A volume DigitalOcean lacks is created with the options (AUTO_CREATE defaults to true).
            let (_, created) = try await call(client, "VolumeDriver.Create", #"{"Name":"absent","Opts":{"size":"2GiB"}}"#)
            #expect(created["Err"] as? String == "")
            #expect(await harness.world.listVolumes(name: "absent", region: "nyc1").first?.sizeGigabytes == 2)
            let (_, option) = try await call(client, "VolumeDriver.Create", #"{"Name":"data2","Opts":{"sise":"10"}}"#)
            #expect((option["Err"] as? String)?.contains("unknown volume option \"sise\"; do_storage accepts size") == true)
            let (_, badName) = try await call(client, "VolumeDriver.Create", #"{"Name":"../etc"}"#)
            #expect((badName["Err"] as? String)?.contains("is not a volume name") == true)
        }
    }

    @Test func listShowsKnownVolumes() async throws {
        try await withPlugin { client, _, _ in
            _ = try await call(client, "VolumeDriver.Create", #"{"Name":"data"}"#)
            let (_, object) = try await call(client, "VolumeDriver.List", "{}")
            let volumes = try #require(object["Volumes"] as? [[String: Any]])
            #expect(volumes.map { $0["Name"] as? String } == ["data"])
        }
    }

    @Test func mountIsIdempotentAndCountsPerID() async throws {
        try await withPlugin { client, harness, node in
            let (_, first) = try await call(client, "VolumeDriver.Mount", #"{"Name":"data","ID":"a"}"#)
            let mountpoint = try #require(first["Mountpoint"] as? String)
            #expect(mountpoint == node.configuration.mountRoot + "/data")
            // The engine retries Mount and reuses IDs (docker cp): same answer, one mount, one attach.
            let (_, again) = try await call(client, "VolumeDriver.Mount", #"{"Name":"data","ID":"a"}"#)
            #expect(again["Mountpoint"] as? String == mountpoint)
            _ = try await call(client, "VolumeDriver.Mount", #"{"Name":"data","ID":"b"}"#)
            #expect(await node.service.records["data"]?.references == ["a": 2, "b": 1])
            #expect(node.filesystem.mounted.count == 1)
            #expect(await harness.world.actionLog.filter { $0.type == "attach" }.count == 1)
            let (_, path) = try await call(client, "VolumeDriver.Path", #"{"Name":"data"}"#)
            #expect(path["Mountpoint"] as? String == mountpoint)

            _ = try await call(client, "VolumeDriver.Unmount", #"{"Name":"data","ID":"a"}"#)
            _ = try await call(client, "VolumeDriver.Unmount", #"{"Name":"data","ID":"b"}"#)
            #expect(node.filesystem.mounted.count == 1, "ID a still holds one reference")
            let (_, busy) = try await call(client, "VolumeDriver.Remove", #"{"Name":"data"}"#)
            #expect((busy["Err"] as? String)?.contains("in use") == true)
            _ = try await call(client, "VolumeDriver.Unmount", #"{"Name":"data","ID":"a"}"#)
            #expect(node.filesystem.mounted.isEmpty)
            #expect(await harness.attachments("data").isEmpty, "the last unmount released the volume")
            let (_, path2) = try await call(client, "VolumeDriver.Path", #"{"Name":"data"}"#)
            #expect(path2["Mountpoint"] as? String == "")
            let (_, removed) = try await call(client, "VolumeDriver.Remove", #"{"Name":"data"}"#)
            #expect(removed["Err"] as? String == "")
            #expect(await node.service.records.isEmpty)
        }
    }

    @Test func missingTokenAnswersEveryCallWithHowToSetIt() async throws {
        let driver = UnconfiguredDriver(error: VolumeError(.notConfigured, "set ACCESS_TOKEN with docker plugin set"))
        let controller = VolumeDriverController(driver: driver, logger: Logger(label: "test"))
        try await Self.withConnection(controller) { client in
            for method in ["VolumeDriver.Create", "VolumeDriver.Get", "VolumeDriver.List", "VolumeDriver.Mount"] {
                let (status, object) = try await call(client, method, #"{"Name":"data","ID":"x"}"#)
                #expect(status == 500)
                #expect((object["Err"] as? String)?.contains("ACCESS_TOKEN") == true)
            }
            let (_, caps) = try await call(client, "VolumeDriver.Capabilities", nil)
            #expect(caps["Capabilities"] != nil)
        }
    }
}
