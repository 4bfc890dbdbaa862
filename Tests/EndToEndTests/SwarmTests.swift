import DOSimulator
import DigitalOcean
import Foundation
import Testing

/// A real two-node swarm: two dockerd, each in a network namespace of the lab's own, joined over a veth pair.
@Suite(.serialized, .timeLimit(.minutes(10)), .enabled(if: EngineE2E.available, "needs root, udev, dockerd and plugin/build; CI sets DO_STORAGE_E2E=1"))
struct SwarmTests {
    /// Two droplets in one swarm, the plugin enabled on both.
    func withSwarm(_ body: (EngineLab, Engine, Engine) async throws -> Void) async throws {
        try await EngineLab.withLab { lab in
            let hosts = try await lab.makeTestHosts(2)
            let manager = try await lab.startDroplet(1001, namespace: hosts[0])
            let worker = try await lab.startDroplet(1002, namespace: hosts[1])
            try await lab.configureAndEnableInTestHost(manager, droplet: 1001)
            try await lab.configureAndEnableInTestHost(worker, droplet: 1002)
            try await manager.must("swarm", "init", "--advertise-addr", "192.168.77.1")
            let token = try await manager.must("swarm", "join-token", "-q", "worker")
            try await worker.must("swarm", "join", "--token", token, "--advertise-addr", "192.168.77.2", "192.168.77.1:2377")
            try await waitFor("both nodes to be ready", timeout: .seconds(60)) {
                let nodes = try await manager.must("node", "ls", "--format", "{{.Status}}")
                return nodes.split(separator: "\n").filter { $0 == "Ready" }.count == 2
            }
            try await body(lab, manager, worker)
        }
    }

    /// The hostname of the node running the service's task, once it runs.
    /// The node the service's task runs on; `notOn`: a node it is leaving (a drain takes a moment to show in
    /// `service ps`), so the task that replaced it is the one awaited.
    func runningNode(_ manager: Engine, service: String, notOn leaving: String? = nil) async throws -> String {
        var node = ""
        try await waitFor("the task of \(service) to run", timeout: .seconds(90)) {
            let tasks = try await manager.must(
                "service", "ps", service, "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
            guard let line = tasks.split(separator: "\n").first, line.contains("Running") else { return false }
            node = String(line.split(separator: " ")[0])
            return node != leaving
        }
        return node
    }

    func engine(_ node: String, _ manager: Engine, _ worker: Engine) -> Engine {
        node == "droplet-1001" ? manager : worker
    }

    /// The service container's /data/log on a node (trimmed).
    func dataLog(_ engine: Engine, service: String) async throws -> String {
        let id = try await engine.must("ps", "-q", "--filter", "label=com.docker.swarm.service.name=\(service)")
        guard !id.isEmpty else { return "" }
        return (try? await engine.must("exec", id, "cat", "/data/log")) ?? ""
    }

    @Test func drainingTheNodeMovesTheServiceWithItsData() async throws {
        try await withSwarm { lab, manager, worker in
            try await lab.lab.createVolume("pgdata")
            try await manager.must(
                "service", "create", "--name", "db", "--replicas", "1", "--no-resolve-image",
                "--env", "NODE={{.Node.Hostname}}",
                "--mount", "type=volume,source=pgdata,destination=/data,volume-driver=\(lab.pluginName)",
                "bb:latest", "sh", "-c", "echo $NODE >> /data/log; sleep 100000")
            let first = try await runningNode(manager, service: "db")
            let firstEngine = engine(first, manager, worker)
            try await waitFor("the first task to write") { try await dataLog(firstEngine, service: "db") == first }

            let nodeID = try await manager.must("node", "ls", "--filter", "name=\(first)", "--format", "{{.ID}}")
            try await manager.must("node", "update", "--availability", "drain", nodeID)
            let second = try await runningNode(manager, service: "db", notOn: first)
            let secondEngine = engine(second, manager, worker)
            try await waitFor("the moved task to append", timeout: .seconds(90)) {
                try await dataLog(secondEngine, service: "db") == "\(first)\n\(second)"
            }
            let log = await lab.lab.world.actionLog.map { "\($0.type)@\($0.dropletID)" }
            let firstID = first == "droplet-1001" ? 1001 : 1002
            let secondID = firstID == 1001 ? 1002 : 1001
            #expect(log == ["attach@\(firstID)", "detach@\(firstID)", "attach@\(secondID)"], "never two attachments")
            // The detach was the old node's own release after its container stopped, not a takeover.
            #expect(firstEngine.log.contains("Volume detached"))
            #expect(!secondEngine.log.contains("Taking the volume"))
            // Both plugins heard of their devices through udev events, not the slow re-check.
            for engine in [firstEngine, secondEngine] {
                #expect(engine.log.contains("udev event"), "\(engine.name)")
                #expect(!engine.log.contains("found by re-check"), "\(engine.name)")
            }
            try await manager.must("service", "rm", "db")
        }
    }

    /// One volume per replica: `source=data-{{.Task.Slot}}` gives each task a DigitalOcean volume of its own, made at
    /// its first use with the service's volume options; draining a node moves each task with its own volume.
    @Test func eachReplicaHasItsOwnVolumeAndTakesItAlong() async throws {
        try await withSwarm { lab, manager, worker in
            try await manager.must(
                "service", "create", "--name", "web", "--replicas", "2", "--no-resolve-image", "--user", "1000",
                "--env", "SLOT={{.Task.Slot}}", "--env", "NODE={{.Node.Hostname}}",
                "--mount", "type=volume,source=data-{{.Task.Slot}},destination=/data,volume-driver=\(lab.pluginName),"
                    + "volume-opt=size=1,volume-opt=uid=1000",
                "bb:latest", "sh", "-c", "echo $SLOT $NODE >> /data/log; sleep 100000")
            /// Each slot's node, once both tasks run and have written.
            func placement(leaving: String? = nil) async throws -> [Int: String] {
                var nodes: [Int: String] = [:]
                try await waitFor("both tasks of web to run and write", timeout: .seconds(120)) {
                    let tasks = try await manager.must(
                        "service", "ps", "web", "--filter", "desired-state=running", "--format", "{{.Name}} {{.Node}} {{.CurrentState}}")
                    nodes = [:]
                    for line in tasks.split(separator: "\n") where line.contains("Running") {
                        let fields = line.split(separator: " ")
                        if let slot = Int(fields[0].split(separator: ".").last ?? "") { nodes[slot] = String(fields[1]) }
                    }
                    guard nodes.count == 2, !nodes.values.contains(where: { $0 == leaving }) else { return false }
                    for (slot, node) in nodes where try await !slotLog(engine(node, manager, worker), slot).hasSuffix("\(slot) \(node)") {
                        return false
                    }
                    return true
                }
                return nodes
            }
            func slotLog(_ engine: Engine, _ slot: Int) async throws -> String {
                let id = try await engine.must("ps", "-q", "--filter", "name=web.\(slot).")
                guard !id.isEmpty else { return "" }
                return (try? await engine.must("exec", id, "cat", "/data/log")) ?? ""
            }

            let before = try await placement()
            for slot in [1, 2] {
                let volume = try #require(await lab.lab.world.listVolumes(name: "data-\(slot)", region: "nyc1").first)
                #expect(volume.sizeGigabytes == 1 && volume.tags.contains("do-storage-uid:1000"), "data-\(slot): \(volume.tags)")
            }
            #expect(await lab.lab.world.listVolumes(name: nil, region: nil).count == 2, "one volume per slot, no other")

            let leaving = try #require(before[1])
            let nodeID = try await manager.must("node", "ls", "--filter", "name=\(leaving)", "--format", "{{.ID}}")
            try await manager.must("node", "update", "--availability", "drain", nodeID)
            let after = try await placement(leaving: leaving)
            for slot in [1, 2] {
                let node = try #require(after[slot])
                let log = try await slotLog(engine(node, manager, worker), slot)
                let expected = before[slot] == node ? "\(slot) \(node)" : "\(slot) \(before[slot] ?? "")\n\(slot) \(node)"
                #expect(log == expected, "slot \(slot) kept its own data and no other's")
                let dropletID = node == "droplet-1001" ? 1001 : 1002
                #expect(await lab.lab.attachments("data-\(slot)") == [dropletID])
            }
            try await manager.must("service", "rm", "web")
        }
    }

    @Test func theComposeFileWorksWithStackDeploy() async throws {
        try await withSwarm { lab, manager, worker in
            try await lab.lab.createVolume("pgdata")
            let file = EngineE2E.repositoryRoot + "/docker-compose.yml"
            let deploy = try await runCommand(
                "docker", ["-H", "unix://" + manager.socket, "stack", "deploy", "--resolve-image", "never", "-c", file, "app"],
                environment: [
                    "APP_IMAGE": "bb:latest", "DO_STORAGE_DRIVER": lab.pluginName,
                    "APP_COMMAND": "sh -c 'echo stacked >> /var/lib/postgresql/data/log; sleep 100000'",
                    "DOCKER_CONFIG": manager.dataRoot + "/client",
                ])
            #expect(deploy.status == 0, "\(deploy)")
            let node = try await runningNode(manager, service: "app_db")
            let engine = engine(node, manager, worker)
            try await waitFor("the stack's task to write") {
                let id = try await engine.must("ps", "-q", "--filter", "label=com.docker.swarm.service.name=app_db")
                guard !id.isEmpty else { return false }
                let content = try? await engine.must("exec", id, "cat", "/var/lib/postgresql/data/log")
                return content == "stacked"
            }
            // The volume is the DigitalOcean volume named in the file, not app_pgdata.
            #expect(try await engine.must("volume", "inspect", "pgdata", "--format", "{{.Driver}}") == lab.pluginName)
            #expect(await lab.lab.attachments("pgdata") == [node == "droplet-1001" ? 1001 : 1002])
            try await manager.must("stack", "rm", "app")
        }
    }

    /// A service's `volume-opt=` and a stack's `driver_opts` reach DigitalOcean; a stack's volume `pgdata` in stack
    /// `mystack` is `mystack_pgdata` to Docker and `mystack-pgdata` on DigitalOcean.
    @Test func serviceVolumeOptsAndAStacksVolume() async throws {
        try await withSwarm { lab, manager, worker in
            try await manager.must(
                "service", "create", "--name", "svc", "--replicas", "1", "--no-resolve-image",
                "--mount", "type=volume,source=svcdata,destination=/data,volume-driver=\(lab.pluginName),"
                    + "volume-opt=size=3,volume-opt=fstype=xfs,volume-opt=fslabel=svc,volume-opt=description=served,"
                    + "volume-opt=tags=svc,volume-opt=mountopts=nodev,volume-opt=onremove=delete",
                "bb:latest", "sh", "-c", "cat /proc/mounts > /data/mounts; sleep 100000")
            let svcNode = try await runningNode(manager, service: "svc")
            let post = lab.lab.server.recorded.first { $0.method == "POST" && $0.path == "/v2/volumes" }?.requestBody ?? ""
            for field in [#""name":"svcdata""#, #""size_gigabytes":3"#, #""filesystem_type":"xfs""#,
                          #""filesystem_label":"svc""#, #""description":"served""#] {
                #expect(post.contains(field), "\(field) in \(post)")
            }
            let served = try #require(await lab.lab.world.listVolumes(name: "svcdata", region: "nyc1").first)
            #expect(served.sizeGigabytes == 3 && served.filesystemType == "xfs")
            #expect(served.tags == ["svc", "do-storage", "do-storage-name:svcdata", "do-storage-data"])
            let host = engine(svcNode, manager, worker)
            var mounts = ""
            try await waitFor("the task to record its mounts") {
                let id = try await host.must("ps", "-q", "--filter", "label=com.docker.swarm.service.name=svc")
                guard !id.isEmpty else { return false }
                mounts = (try? await host.must("exec", id, "cat", "/data/mounts")) ?? ""
                return !mounts.isEmpty
            }
            let line = mounts.split(separator: "\n").first { $0.contains(" /data ") } ?? ""
            #expect(line.contains(" xfs ") && line.contains("nodev"), "mountopts: \(line)")
            try await manager.must("service", "rm", "svc")
            // onremove=delete: removing the volume on the node that used it deletes it on DigitalOcean.
            try await waitFor("the task's container to be gone") {
                try await host.must("ps", "-aq", "--filter", "label=com.docker.swarm.service.name=svc").isEmpty
            }
            try await host.must("volume", "rm", "svcdata")
            #expect(await lab.lab.world.listVolumes(name: "svcdata", region: "nyc1").isEmpty)

            let file = lab.lab.root + "/stack.yml"
            try """
                version: "3.8"
                services:
                  db:
                    image: bb:latest
                    command: sh -c 'echo stacked >> /data/log; sleep 100000'
                    volumes:
                      - pgdata:/data
                volumes:
                  pgdata:
                    driver: \(lab.pluginName)
                    driver_opts:
                      size: "2"
                """.write(toFile: file, atomically: true, encoding: .utf8)
            let deploy = try await runCommand(
                "docker", ["-H", "unix://" + manager.socket, "stack", "deploy", "--resolve-image", "never", "-c", file, "mystack"],
                environment: ["DOCKER_CONFIG": manager.dataRoot + "/client"])
            #expect(deploy.status == 0, "\(deploy)")
            let node = try await runningNode(manager, service: "mystack_db")
            let engine = engine(node, manager, worker)
            let stacked = try #require(await lab.lab.world.listVolumes(name: "mystack-pgdata", region: "nyc1").first)
            #expect(stacked.sizeGigabytes == 2)
            #expect(stacked.tags.contains("do-storage-name:mystack_pgdata"))
            #expect(try await engine.must("volume", "inspect", "mystack_pgdata", "--format", "{{index .Status \"do_name\"}}") == "mystack-pgdata")
            try await manager.must("stack", "rm", "mystack")
        }
    }
}
