import DOSimulator
import DigitalOcean
import Foundation
import Testing
import VolumeService

/// A volume do_storage makes behaves like a Docker local volume from its first use: empty, filled with the image's
/// files by Docker, writable by a non-root container given its owner; one made elsewhere is shown as it is.
@Suite(.serialized, .timeLimit(.minutes(10)), .enabled(if: EngineE2E.available, "needs root, udev, dockerd and plugin/build; CI sets DO_STORAGE_E2E=1"))
struct FirstUseTests {
    @Test func aNewVolumeIsEmptyOwnedAsAskedAndFilledFromTheImage() async throws {
        try await EngineLab.withLab { lab in
            try await lab.lab.createVolume("legacy")  // made elsewhere: DigitalOcean's ext4, with its lost+found
            let engine = try await lab.startDroplet(1001)
            try await lab.configureAndEnable(engine, droplet: 1001)
            let driver = lab.pluginName
            func run(_ arguments: String...) async throws -> String {
                try await engine.must(["run", "--rm", "--network", "none"] + arguments)
            }

            // Empty at first use, as initdb and mysqld --initialize want it.
            try await engine.must("volume", "create", "-d", driver, "-o", "size=1", "fresh")
            #expect(try await run("-v", "fresh:/data", "bb", "ls", "-A", "/data") == "")
            #expect(try await run("-v", "fresh:/data", "bb", "stat", "-c", "%u:%g %a", "/data") == "0:0 755", "a local volume's owner and mode")
            let container = try await engine.docker(["run", "--rm", "--network", "none", "--user", "1000", "-v", "fresh:/data", "bb", "touch", "/data/x"])
            #expect(container.status != 0, "like a local volume, root's directory is not another user's to write")
            let status = try await engine.must("volume", "inspect", "fresh", "--format", #"{{index .Status "container_sees"}}"#)
            #expect(status == "data directory (data/ of the filesystem, owner:group mode -:- -)")

            // Docker copies an image's files (and their owner) into an empty volume, as into a local volume.
            try await engine.must(
                "run", "--name", "seeder", "--network", "none", "bb", "sh", "-c",
                "mkdir -p /seed && echo from-image > /seed/file && chown -R 1000:1000 /seed")
            try await engine.must("commit", "seeder", "seeded:latest")
            try await engine.must("rm", "seeder")
            try await engine.must("volume", "create", "-d", driver, "-o", "size=1", "seeded")
            #expect(try await run("-v", "seeded:/seed", "seeded:latest", "cat", "/seed/file") == "from-image")
            #expect(try await run("-v", "seeded:/seed", "seeded:latest", "stat", "-c", "%u", "/seed", "/seed/file") == "1000\n1000")
            #expect(try await run("-v", "seeded:/data", "bb", "cat", "/data/file") == "from-image", "kept on the volume")

            // A container running as uid 1000 writes to a volume made with -o uid=1000.
            try await engine.must("volume", "create", "-d", driver, "-o", "size=1", "-o", "uid=1000", "-o", "gid=1000", "-o", "mode=0700", "owned")
            let written = try await run(
                "--user", "1000:1000", "-v", "owned:/data", "bb", "sh", "-c", "echo mine > /data/f && stat -c '%u:%g %a' /data && cat /data/f")
            #expect(written == "1000:1000 700\nmine")
            let owned = try #require(await lab.lab.world.listVolumes(name: "owned", region: "nyc1").first)
            #expect(DataDirectory(tags: owned.tags) == DataDirectory(uid: 1000, gid: 1000, mode: 0o700), "kept on DigitalOcean")

            // An offline growth: e2fsck -p puts lost+found back at the filesystem's root, out of the container's sight.
            let fresh = try #require(await lab.lab.world.listVolumes(name: "fresh", region: "nyc1").first)
            _ = try await lab.lab.world.startAction(
                volumeID: fresh.id, request: VolumeActionRequest(type: "resize", region: "nyc1", sizeGigabytes: 2))
            try await waitFor("the resize to complete") {
                try await lab.lab.world.volume(id: fresh.id).sizeGigabytes == 2
            }
            let grown = try await run("-v", "fresh:/data", "bb", "sh", "-c", "ls -A /data; df -k /data | tail -1")
            let lines = grown.split(separator: "\n")
            #expect(lines.count == 1, "nothing but df's line: \(grown)")
            let kib = Int(lines.last?.split(separator: " ").dropFirst().first ?? "") ?? 0
            #expect(kib > 3 << 19, "grown past 1.5 GiB: \(grown)")
            for volume in [fresh, owned] {
                let check = try await runCommand("e2fsck", ["-f", "-n", lab.lab.root + "/data/\(volume.id).img"])
                #expect(check.status == 0, "\(volume.name)'s filesystem is clean: \(check)")
            }

            // A volume made elsewhere: its root, exactly as it is; the ownership options are refused for it.
            #expect(try await run("-v", "legacy:/data", "--volume-driver", driver, "bb", "ls", "-A", "/data") == "lost+found")
            #expect(try await engine.must("volume", "inspect", "legacy", "--format", #"{{index .Status "container_sees"}}"#)
                == "filesystem root (volume not made by do_storage)")
            try await engine.must("volume", "rm", "legacy")
            let refused = try await engine.docker("volume", "create", "-d", driver, "-o", "uid=1000", "legacy")
            #expect(refused.status != 0 && refused.error.contains("shows its filesystem's root as it holds it"), "\(refused)")

            // A bad value names the option, and nothing is made.
            for (option, message) in [("mode=999", "mode=999 is not a permission mode"), ("uid=www-data", "uid=www-data is not a user id")] {
                let bad = try await engine.docker("volume", "create", "-d", driver, "-o", option, "badopt")
                #expect(bad.status != 0 && bad.error.contains(message), "\(bad)")
            }
            #expect(await lab.lab.world.listVolumes(name: "badopt", region: "nyc1").isEmpty)
        }
    }
}
