import DOSimulator
import DigitalOcean
import Foundation
import Testing

/// The managed plugin in real dockerd engines (one per simulated droplet), driven with the docker CLI.
@Suite(.serialized, .enabled(if: EngineE2E.available, "needs root, udev, dockerd and plugin/build; CI sets DO_STORAGE_E2E=1"))
struct EngineTests {
    @Test func installFlowAndTheMissingTokenMessage() async throws {
        try await EngineLab.withLab { lab in
            try await lab.lab.createVolume("pgdata")
            let engine = try await lab.startDroplet(1001)
            // Enabled without a token: every use explains how to set it.
            try await lab.configureAndEnable(engine, droplet: 1001, token: nil)
            let listed = try await engine.must("plugin", "ls", "--filter", "capability=volumedriver", "--format", "{{.Name}} {{.Enabled}}")
            #expect(listed == "\(lab.pluginName) true")
            let create = try await engine.docker("volume", "create", "--driver", lab.pluginName, "pgdata")
            #expect(create.status != 0)
            #expect(create.error.contains("docker plugin set <plugin> ACCESS_TOKEN=<token>"), "\(create)")
            let run = try await engine.docker("run", "--rm", "--network", "none", "-v", "pgdata:/data", "--volume-driver", lab.pluginName, "bb", "true")
            #expect(run.status != 0)
            #expect(run.error.contains("ACCESS_TOKEN"), "\(run)")

            // The install flow: disable, set the token (and the lab's endpoints), enable; then it works.
            try await engine.must("plugin", "disable", lab.pluginName)
            try await engine.must("plugin", "set", lab.pluginName, "ACCESS_TOKEN=\(Lab.token)")
            try await engine.must("plugin", "enable", lab.pluginName)
            try await engine.must("volume", "create", "--driver", lab.pluginName, "pgdata")
            let output = try await engine.must(
                "run", "--rm", "--network", "none", "-v", "pgdata:/data", "bb", "sh", "-c", "echo hello > /data/f && cat /data/f")
            #expect(output == "hello")
            #expect(!engine.log.contains(Lab.token), "the token appears in no log line")
        }
    }

    @Test func theOldReadmeStoryAcrossTwoDroplets() async throws {
        try await EngineLab.withLab { lab in
            try await lab.lab.createVolume("pgdata")
            let one = try await lab.startDroplet(1001)
            let two = try await lab.startDroplet(1002)
            try await lab.configureAndEnable(one, droplet: 1001)
            try await lab.configureAndEnable(two, droplet: 1002)
            try await one.must("volume", "create", "--driver", lab.pluginName, "pgdata")
            try await one.must(
                "run", "--name", "writer", "--network", "none", "-v", "pgdata:/data", "bb", "sh", "-c",
                "echo 'written on droplet 1' > /data/PG_VERSION")
            let stopped = ContinuousClock.now
            try await one.must("rm", "writer")
            // Droplet 2 has never heard of the volume: Get finds it on DigitalOcean.
            let read = try await two.must("run", "--rm", "--network", "none", "-v", "pgdata:/data", "--volume-driver", lab.pluginName, "bb", "cat", "/data/PG_VERSION")
            #expect(read == "written on droplet 1")
            let log = await lab.lab.world.actionLog
            #expect(log.map { "\($0.type)@\($0.dropletID)" } == ["attach@1001", "detach@1001", "attach@1002", "detach@1002"])
            // The detach from droplet 1 came when its container stopped (before the rm), and ended before droplet 2 attached.
            #expect(log[1].started <= stopped)
            #expect(try #require(log[1].completed) <= log[2].started)
        }
    }
}
