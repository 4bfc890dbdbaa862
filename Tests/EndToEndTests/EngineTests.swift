import DOSimulator
import DigitalOcean
import Foundation
import Testing

/// The managed plugin in real dockerd engines (one per simulated droplet), driven with the docker CLI.
@Suite(.serialized, .timeLimit(.minutes(10)), .enabled(if: EngineE2E.available, "needs root, udev, dockerd and plugin/build; CI sets DO_STORAGE_E2E=1"))
struct EngineTests {
    /// Droplets 1001 and 1002 with the plugin enabled, and the formatted volume "pgdata".
    func withTwoDroplets(_ body: (EngineLab, Engine, Engine) async throws -> Void) async throws {
        try await EngineLab.withLab { lab in
            try await lab.lab.createVolume("pgdata")
            let one = try await lab.startDroplet(1001)
            let two = try await lab.startDroplet(1002)
            try await lab.configureAndEnable(one, droplet: 1001)
            try await lab.configureAndEnable(two, droplet: 1002)
            try await body(lab, one, two)
        }
    }

    @Test func installFlowAndTheMissingTokenMessage() async throws {
        try await EngineLab.withLab { lab in
            try await lab.lab.createVolume("pgdata")
            let engine = try await lab.startDroplet(1001)
            // Enabled without a token: every use explains how to set it.
            try await lab.configureAndEnable(engine, droplet: 1001, token: nil)
            let listed = try await engine.must("plugin", "ls", "--filter", "capability=volumedriver", "--format", "{{.Name}} {{.Enabled}}")
            #expect(listed == "\(lab.pluginName) true")
            // Enabled although the droplet's device link folder does not exist yet (a droplet that never had a
            // volume): the plugin needs no mount whose source may be missing.
            #expect(!FileManager.default.fileExists(atPath: lab.diskDirectory(1001)))
            let mounts = try await engine.must(
                "plugin", "inspect", "--format", "{{range .Settings.Mounts}}{{.Source}} {{end}}", lab.pluginName)
            #expect(mounts.split(separator: " ").sorted() == ["/dev", "/run/udev"], "\(mounts)")
            let env = try await engine.must("plugin", "inspect", "--format", "{{json .Settings.Env}}", lab.pluginName)
            #expect(env.contains("DO_API_URL=\(lab.lab.running.apiURL)") && env.contains("DO_METADATA_URL="), "\(env)")
            #expect(env.contains("DEVICE_DIR=\(lab.diskDirectory(1001))/by-id"), "\(env)")
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

    /// The README's install command: the plugin pushed to a registry from one engine is installed on another droplet
    /// with `docker plugin install --alias do_storage --grant-all-permissions <ref> ACCESS_TOKEN=…` and works at once.
    @Test func theReadmesInstallCommandFromARegistry() async throws {
        try await EngineLab.withLab { lab in
            try await lab.lab.createVolume("pgdata")
            let reference = try await lab.startRegistry() + "/do_storage:test"
            let publisher = try await lab.startDroplet(1001, createPlugin: false)
            try await publisher.must("plugin", "create", reference, lab.pluginDirectory)
            try await publisher.must("plugin", "push", reference)

            let droplet = try await lab.startDroplet(1002, createPlugin: false)
            try await droplet.must(
                ["plugin", "install", "--alias", "do_storage", "--grant-all-permissions", reference]
                    + lab.settings(droplet: 1002))
            let listed = try await droplet.must(
                "plugin", "ls", "--filter", "capability=volumedriver", "--format", "{{.Name}} {{.Enabled}} {{.PluginReference}}")
            #expect(listed == "do_storage:latest true \(reference)")
            try await droplet.must("volume", "create", "--driver", "do_storage", "pgdata")
            let output = try await droplet.must(
                "run", "--rm", "--network", "none", "-v", "pgdata:/data", "bb", "sh", "-c", "echo installed > /data/f && cat /data/f")
            #expect(output == "installed")
            #expect(await lab.lab.world.actionLog.map { "\($0.type)@\($0.dropletID)" } == ["attach@1002", "detach@1002"])
        }
    }

    /// Migration from the old plugin: the old README's compose file, verbatim, on two droplets that install this
    /// plugin under the old name (`--alias cjbottaro/do_storage:latest`), on a volume the old plugin used (made and
    /// formatted ext4 by hand). The image the file names is stood in for by the lab's busybox (no registry here).
    @Test func theOldPluginsComposeFileWorksAfterInstallingUnderItsName() async throws {
        try await EngineLab.withLab { lab in
            try await lab.lab.createVolume("pgdata")
            let oldName = "cjbottaro/do_storage:latest"
            let reference = try await lab.startRegistry() + "/do_storage:migrate"
            let publisher = try await lab.startDroplet(1001, createPlugin: false)
            try await publisher.must("plugin", "create", reference, lab.pluginDirectory)
            try await publisher.must("plugin", "push", reference)
            let file = lab.lab.root + "/old-readme/docker-compose.yml"
            try FileManager.default.createDirectory(atPath: lab.lab.root + "/old-readme", withIntermediateDirectories: true)
            try """
                version: "3.4"

                services:
                  postgres:
                    image: postgres:alpine
                    volumes:
                      - pgdata:/var/lib/postgresql/data
                    environment:
                      PGDATA: /var/lib/postgresql/data/data # Workaround for quirk in image.

                volumes:
                  pgdata:
                    name: pgdata
                    driver: cjbottaro/do_storage:latest

                """.write(toFile: file, atomically: true, encoding: .utf8)
            var droplets: [Engine] = []
            for droplet in [1002, 1003] {
                let engine = try await lab.startDroplet(droplet, createPlugin: false)
                try await engine.must(
                    ["plugin", "install", "--alias", oldName, "--grant-all-permissions", reference] + lab.settings(droplet: droplet))
                try await engine.must(
                    "import", "--change", #"CMD ["sh", "-c", "mkdir -p $PGDATA && hostname >> $PGDATA/log && sleep 100000"]"#,
                    lab.busyboxTarball, "postgres:alpine")
                droplets.append(engine)
            }
            func compose(_ engine: Engine, _ arguments: String...) async throws -> CommandResult {
                try await runCommand(
                    "docker-compose", ["-f", file] + arguments,
                    environment: ["DOCKER_HOST": "unix://" + engine.socket, "COMPOSE_INTERACTIVE_NO_CLI": "1"])
            }
            // node1$ docker-compose up -d; ...; docker-compose stop
            let up = try await compose(droplets[0], "up", "-d")
            #expect(up.status == 0, "\(up)")
            let container = try await compose(droplets[0], "ps", "-q").output.trimmingCharacters(in: .whitespacesAndNewlines)
            try await waitFor("the container on droplet 1002 to write") {
                (try? await droplets[0].docker("exec", container, "cat", "/var/lib/postgresql/data/data/log"))?.status == 0
            }
            #expect(try await compose(droplets[0], "stop").status == 0)
            // node2$ docker-compose up -d: the volume followed, with droplet 1's data.
            #expect(try await compose(droplets[1], "up", "-d").status == 0)
            let second = try await compose(droplets[1], "ps", "-q").output.trimmingCharacters(in: .whitespacesAndNewlines)
            var lines: [Substring] = []
            try await waitFor("the container on droplet 1003 to write") {
                let log = try? await droplets[1].docker("exec", second, "cat", "/var/lib/postgresql/data/data/log")
                lines = log?.output.split(separator: "\n") ?? []
                return lines.count == 2
            }
            #expect(lines.count == 2, "both droplets' lines are on the one volume: \(lines)")
            #expect(try await droplets[1].must("volume", "inspect", "pgdata", "--format", "{{.Driver}}") == oldName)
            #expect(await lab.lab.world.listVolumes(name: nil, region: nil).count == 1, "no volume was created")
            _ = try await compose(droplets[1], "down")
            _ = try await compose(droplets[0], "down")
        }
    }

    @Test func theOldReadmeStoryAcrossTwoDroplets() async throws {
        try await withTwoDroplets { lab, one, two in
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

    @Test func dockersOwnVolumeDriverScenarios() async throws {
        try await EngineLab.withLab { lab in
            try await lab.lab.createVolume("named")
            try await lab.lab.createVolume("shared")
            try await lab.lab.createVolume("copied")
            try await lab.lab.createVolume("blank", filesystem: nil)
            let engine = try await lab.startDroplet(1001)
            try await lab.configureAndEnable(engine, droplet: 1001)
            let driver = lab.pluginName

            // Named volume with run --rm: Mount 1, Unmount 1. (Get finds the DigitalOcean volume, so the engine needs
            // no Create; Docker does not remove named volumes on --rm.)
            try await engine.must("run", "--rm", "--network", "none", "-v", "named:/data", "--volume-driver", driver, "bb", "touch", "/data/x")
            #expect(engine.requests("Create", volume: "named") <= 1)
            #expect(engine.requests("Mount", volume: "named") == 1)
            #expect(engine.requests("Unmount", volume: "named") == 1)

            // inspect shows the driver and the plugin's Status; ls lists it; a missing volume is "no such volume".
            let inspect = try await engine.must("volume", "inspect", "named", "--format", "{{.Driver}} {{index .Status \"do_name\"}}")
            #expect(inspect == "\(driver) named")
            let listed = try await engine.must("volume", "ls", "--filter", "driver=\(driver)", "--format", "{{.Name}}")
            #expect(listed.split(separator: "\n").contains("named"))
            let missing = try await engine.docker("volume", "inspect", "ghost")
            #expect(missing.status != 0)
            #expect(missing.error.lowercased().contains("no such volume"), "\(missing)")

            // Two containers share a volume (--volumes-from): two Mounts, two Unmounts, one attachment.
            try await engine.must("run", "-d", "--name", "first", "--network", "none", "-v", "shared:/data", "--volume-driver", driver, "bb", "sleep", "300")
            try await engine.must("run", "-d", "--name", "second", "--network", "none", "--volumes-from", "first", "bb", "sleep", "300")
            #expect(engine.requests("Mount", volume: "shared") == 2)
            #expect(await lab.lab.attachments("shared") == [1001])
            try await engine.must("rm", "-f", "second")
            #expect(await lab.lab.attachments("shared") == [1001], "first still uses it")
            try await engine.must("rm", "-f", "first")
            #expect(engine.requests("Unmount", volume: "shared") == 2)
            #expect(await lab.lab.attachments("shared").isEmpty)

            // docker cp on a running container mounts the volume again with the same ID, then unmounts once.
            try await engine.must("run", "-d", "--name", "busy", "--network", "none", "-v", "copied:/data", "--volume-driver", driver, "bb", "sh", "-c", "echo copied > /data/f; sleep 300")
            try await waitFor("the container to write") {
                (try? await engine.docker("exec", "busy", "cat", "/data/f"))?.output == "copied\n"
            }
            try await engine.must("cp", "busy:/data/f", lab.lab.root + "/copied-out")
            #expect(try String(contentsOfFile: lab.lab.root + "/copied-out", encoding: .utf8) == "copied\n")
            #expect(engine.requests("Mount", volume: "copied") == 2)
            #expect(engine.requests("Unmount", volume: "copied") == 1)
            #expect(await lab.lab.attachments("copied") == [1001])
            try await engine.must("rm", "-f", "busy")
            #expect(engine.requests("Unmount", volume: "copied") == 2)

            // A failed Mount (a blank volume) sends no Unmount, and leaves nothing attached.
            let blank = try await engine.docker("run", "--rm", "--network", "none", "-v", "blank:/data", "--volume-driver", driver, "bb", "true")
            #expect(blank.status != 0)
            #expect(blank.error.contains("has no filesystem"), "\(blank)")
            #expect(engine.requests("Mount", volume: "blank", outcome: "error") == 1)
            #expect(engine.requests("Unmount", volume: "blank") == 0)
            #expect(await lab.lab.attachments("blank").isEmpty)

            // The plugin cannot be disabled while a volume uses it.
            let disable = try await engine.docker("plugin", "disable", driver)
            #expect(disable.status != 0)
            #expect(disable.error.contains("in use"), "\(disable)")
            #expect(!engine.log.contains(Lab.token))
        }
    }

    /// A volume's life from Docker's own commands: create with options (they reach DigitalOcean as asked), use,
    /// inspect, bad options refused, and remove deleting it under `onremove=delete`.
    @Test func volumesMadeAndRemovedWithDockersOwnCommands() async throws {
        try await EngineLab.withLab { lab in
            let engine = try await lab.startDroplet(1001)
            try await lab.configureAndEnable(engine, droplet: 1001)
            let driver = lab.pluginName
            try await engine.must(
                "volume", "create", "-d", driver, "-o", "size=2GiB", "-o", "fstype=xfs", "-o", "fslabel=pg",
                "-o", "description=the db", "-o", "tags=db,prod", "-o", "mountopts=nodev,nosuid", "-o", "onremove=delete",
                "pgdata")
            let volume = try #require(await lab.lab.world.listVolumes(name: "pgdata", region: "nyc1").first)
            #expect(volume.sizeGigabytes == 2 && volume.filesystemType == "xfs" && volume.filesystemLabel == "pg")
            #expect(volume.description == "the db")
            #expect(volume.tags == ["db", "prod", "do-storage", "do-storage-name:pgdata", "do-storage-data"])
            let post = lab.lab.server.recorded.first { $0.method == "POST" && $0.path == "/v2/volumes" }
            #expect(post?.requestBody?.contains(#""filesystem_type":"xfs""#) == true, "\(String(describing: post))")

            let output = try await engine.must(
                "run", "--rm", "--network", "none", "-v", "pgdata:/data", "bb", "sh", "-c",
                "echo kept > /data/f && cat /data/f && cat /proc/mounts")
            let line = output.split(separator: "\n").first { $0.contains(" /data ") } ?? ""
            #expect(output.hasPrefix("kept"))
            #expect(line.contains(" xfs ") && line.contains("nodev") && line.contains("nosuid"), "\(line)")

            let json = try await engine.must("volume", "inspect", "pgdata", "--format", "{{json .Status}}")
            let status = try JSONDecoder().decode([String: String].self, from: Data(json.utf8))
            #expect(status == [
                "do_id": volume.id, "do_name": "pgdata", "region": "nyc1", "size_gib": "2", "fstype": "xfs",
                "attached_to": "", "device": "", "mounts": "0", "created_by_plugin": "true", "last_error": "",
                "snapshots": "", "last_snapshot": "", "snapshot_every": "", "snapshot_keep": "",
                "branch": "main", "head": "",
                "container_sees": "data directory (data/ of the filesystem, owner:group mode -:- -)",
            ])

            let bad = try await engine.docker("volume", "create", "-d", driver, "-o", "size=20MB", "other")
            #expect(bad.status != 0 && bad.error.contains("size=20MB is not a volume size"), "\(bad)")
            let unknown = try await engine.docker("volume", "create", "-d", driver, "-o", "sise=2", "other")
            #expect(unknown.status != 0 && unknown.error.contains("do_storage accepts size, fstype"), "\(unknown)")
            #expect(await lab.lab.world.listVolumes(name: "other", region: "nyc1").isEmpty)

            try await engine.must("volume", "rm", "pgdata")
            #expect(await lab.lab.world.listVolumes(name: "pgdata", region: "nyc1").isEmpty, "deleted on DigitalOcean")

            // AUTO_CREATE=false: Create only adopts, with the old error for a volume DigitalOcean lacks.
            try await engine.must("plugin", "disable", driver)
            try await engine.must("plugin", "set", driver, "AUTO_CREATE=false")
            try await engine.must("plugin", "enable", driver)
            let absent = try await engine.docker("volume", "create", "-d", driver, "absent")
            #expect(absent.status != 0 && absent.error.contains("doctl compute volume create absent --region nyc1"), "\(absent)")
            #expect(await lab.lab.world.listVolumes(name: "absent", region: "nyc1").isEmpty)
        }
    }

    /// Compose's `driver_opts` reach DigitalOcean; compose's `<project>_<volume>` maps to `<project>-<volume>`; a
    /// second Docker name for a known volume is refused naming the first; names Docker allows behave as documented.
    @Test func composeDriverOptsAndNamesOnARealEngine() async throws {
        try await EngineLab.withLab { lab in
            let engine = try await lab.startDroplet(1001)
            try await lab.configureAndEnable(engine, droplet: 1001)
            let driver = lab.pluginName
            let file = lab.lab.root + "/options-compose.yml"
            try """
                services:
                  app:
                    image: bb
                    command: sh -c 'echo composed > /data/f && cat /proc/mounts'
                    volumes:
                      - app_data:/data
                  logs:
                    image: bb
                    command: "true"
                    volumes:
                      - logs:/data
                volumes:
                  app_data:
                    driver: \(driver)
                    driver_opts:
                      size: "3GiB"
                      fstype: xfs
                      fslabel: shop
                      description: the shop
                      tags: web
                      mountopts: nodev,noexec
                  logs:
                    driver: \(driver)
                    driver_opts:
                      size: "1"
                      onremove: delete
                """.write(toFile: file, atomically: true, encoding: .utf8)
            func compose(_ arguments: String...) async throws -> CommandResult {
                try await runCommand(
                    "docker-compose", ["-f", file, "-p", "shop"] + arguments,
                    environment: ["DOCKER_HOST": "unix://" + engine.socket, "COMPOSE_INTERACTIVE_NO_CLI": "1"])
            }
            let up = try await compose("run", "--rm", "-T", "app")
            #expect(up.status == 0, "\(up)")
            let line = up.output.split(separator: "\n").first { $0.contains(" /data ") } ?? ""
            #expect(line.contains(" xfs ") && line.contains("nodev") && line.contains("noexec"), "mountopts: \(line)")
            // compose named it shop_app_data: the DigitalOcean volume is shop-app-data, made with the options, as the
            // simulator's request log shows.
            let post = lab.lab.server.recorded.first { $0.method == "POST" && $0.path == "/v2/volumes" }?.requestBody ?? ""
            for field in [#""name":"shop-app-data""#, #""size_gigabytes":3"#, #""filesystem_type":"xfs""#,
                          #""filesystem_label":"shop""#, #""description":"the shop""#] {
                #expect(post.contains(field), "\(field) in \(post)")
            }
            let volume = try #require(await lab.lab.world.listVolumes(name: "shop-app-data", region: "nyc1").first)
            #expect(volume.sizeGigabytes == 3 && volume.filesystemType == "xfs")
            #expect(volume.tags == ["web", "do-storage", "do-storage-name:shop_app_data", "do-storage-data"])
            // onremove=delete: compose's down -v removes the volume, and the plugin deletes it on DigitalOcean.
            #expect(try await compose("run", "--rm", "-T", "logs").status == 0)
            #expect(await lab.lab.world.listVolumes(name: "shop-logs", region: "nyc1").count == 1)
            #expect(try await compose("down", "-v").status == 0)
            #expect(await lab.lab.world.listVolumes(name: "shop-logs", region: "nyc1").isEmpty)
            #expect(await lab.lab.world.listVolumes(name: "shop-app-data", region: "nyc1").count == 1, "retained")
            try await engine.must("volume", "create", "-d", driver, "shop_app_data")

            // One volume, one Docker name: shop-app-data is refused, naming shop_app_data.
            let alias = try await engine.docker("volume", "create", "-d", driver, "shop-app-data")
            #expect(alias.status != 0 && alias.error.contains("shop_app_data"), "\(alias)")
            // Upper case and dots map; a 200-character name gets its own hashed volume and mounts under its name.
            try await engine.must("volume", "create", "-d", driver, "-o", "size=1", "Shop.Logs")
            #expect(try await engine.must("volume", "inspect", "Shop.Logs", "--format", "{{index .Status \"do_name\"}}") == "shop-logs")
            let long = String(repeating: "l", count: 200)
            try await engine.must("volume", "create", "-d", driver, "-o", "size=1", long)
            let hashed = try await engine.must("volume", "inspect", long, "--format", "{{index .Status \"do_name\"}}")
            let made = await lab.lab.world.listVolumes(name: hashed, region: "nyc1")
            #expect(hashed.count == 64 && hashed.hasPrefix("lll") && made.count == 1)
            let written = try await engine.must(
                "run", "--rm", "--network", "none", "-v", "\(long):/data", "bb", "sh", "-c", "echo long > /data/f && cat /data/f")
            #expect(written == "long")
        }
    }

    /// Volumes resized on DigitalOcean grow: xfs online while a container writes (df shows it within 10 s), ext4
    /// online where the machine grants CAP_SYS_RESOURCE and otherwise at its next Mount (the failure shown in
    /// Status meanwhile), and both at the next Mount when resized while unmounted. A blank volume whose Create asked
    /// for a filesystem is formatted; the data written stays intact throughout.
    @Test func resizedVolumesGrowAndABlankVolumeIsFormattedWhenAsked() async throws {
        try await EngineLab.withLab { lab in
            for (name, fs) in [("logs", "xfs"), ("db", "ext4"), ("cold-xfs", "xfs"), ("cold-ext4", "ext4")] {
                try await lab.lab.createVolume(name, filesystem: fs)
            }
            try await lab.lab.createVolume("blank", filesystem: nil)
            let engine = try await lab.startDroplet(1001)
            try await lab.configureAndEnable(engine, droplet: 1001)
            let driver = lab.pluginName
            func resize(_ name: String) async throws {
                let volume = try #require(await lab.lab.world.listVolumes(name: name, region: "nyc1").first)
                _ = try await lab.lab.world.startAction(
                    volumeID: volume.id, request: VolumeActionRequest(type: "resize", region: "nyc1", sizeGigabytes: 2))
            }
            /// The size `df` shows for the container's /data, in KiB.
            func dfSize(_ arguments: [String]) async throws -> Int {
                let output = try await engine.must(arguments + ["df", "-k", "/data"])
                let fields = output.split(separator: "\n").last?.split(separator: " ") ?? []
                return fields.count > 1 ? Int(fields[1]) ?? 0 : 0
            }
            let grown = 3 << 19  // 1.5 GiB in KiB: a 2 GiB volume shows more

            // xfs, online, while a container writes.
            try await engine.must(
                "run", "-d", "--name", "writer", "--network", "none", "-v", "logs:/data", "--volume-driver", driver, "bb",
                "sh", "-c", "i=0; while true; do echo $i >> /data/log; i=$((i+1)); sleep 0.02; done")
            try await waitFor("the writer to write") { try await dfSize(["exec", "writer"]) > 0 }
            #expect(try await dfSize(["exec", "writer"]) < grown)
            let resized = ContinuousClock.now
            try await resize("logs")
            try await waitFor("df in the writer to show the new size", timeout: .seconds(10)) {
                try await dfSize(["exec", "writer"]) > grown
            }
            print("xfs online growth seen by df in the container \(ContinuousClock.now - resized) after the resize")
            try await engine.must("rm", "-f", "writer")
            let log = try await engine.must("run", "--rm", "--network", "none", "-v", "logs:/data", "bb", "cat", "/data/log")
            let lines = log.split(separator: "\n").compactMap { Int($0) }
            #expect(lines.count > 10 && lines == Array(0..<lines.count), "every line written is there, in order")

            // ext4 resized while mounted.
            try await engine.must(
                "run", "-d", "--name", "db", "--network", "none", "-v", "db:/data", "--volume-driver", driver, "bb", "sleep", "100000")
            try await engine.must("exec", "db", "sh", "-c", "echo kept > /data/f")
            try await resize("db")
            if EngineLab.grantsSysResource {
                try await waitFor("ext4 to grow online", timeout: .seconds(10)) { try await dfSize(["exec", "db"]) > grown }
            } else {
                try await waitFor("Status to show the failed online growth", timeout: .seconds(10)) {
                    let error = try await engine.must("volume", "inspect", "db", "--format", "{{index .Status \"last_error\"}}")
                    return error.contains("grows at the volume's next Mount")
                }
                #expect(try await dfSize(["exec", "db"]) < grown)
            }
            try await engine.must("rm", "-f", "db")
            #expect(try await dfSize(["run", "--rm", "--network", "none", "-v", "db:/data", "bb"]) > grown)
            #expect(try await engine.must("run", "--rm", "--network", "none", "-v", "db:/data", "bb", "cat", "/data/f") == "kept")
            #expect(try await engine.must("volume", "inspect", "db", "--format", "[{{index .Status \"last_error\"}}] {{index .Status \"size_gib\"}}") == "[] 2")

            // Resized while not mounted: the next container sees the new size.
            for name in ["cold-xfs", "cold-ext4"] {
                try await resize(name)
                #expect(try await dfSize(["run", "--rm", "--network", "none", "-v", "\(name):/data", "--volume-driver", driver, "bb"]) > grown, "\(name)")
            }

            // A blank volume: refused until its Create asks for a filesystem, then formatted.
            try await engine.must("volume", "create", "-d", driver, "-o", "fstype=ext4", "-o", "fslabel=blank", "blank")
            let output = try await engine.must(
                "run", "--rm", "--network", "none", "-v", "blank:/data", "bb", "sh", "-c", "echo fresh > /data/f && cat /data/f")
            #expect(output == "fresh")
            #expect(try await engine.must("volume", "inspect", "blank", "--format", "{{index .Status \"fstype\"}}") == "ext4")
        }
    }

    @Test func aRestartAlwaysContainerComesBackWithItsDataAfterDockerdRestarts() async throws {
        try await EngineLab.withLab { lab in
            try await lab.lab.createVolume("pgdata")
            let engine = try await lab.startDroplet(1001)
            try await lab.configureAndEnable(engine, droplet: 1001)
            try await engine.must(
                "run", "-d", "--name", "db", "--restart", "always", "--network", "none", "-v", "pgdata:/data",
                "--volume-driver", lab.pluginName, "bb", "sh", "-c", "echo kept >> /data/log; sleep 3000")
            try await waitFor("the container to write") {
                (try? await engine.docker("exec", "db", "cat", "/data/log"))?.output == "kept\n"
            }
            let restarted = try await lab.restart(engine)
            try await waitFor("the container to come back", timeout: .seconds(60)) {
                (try? await restarted.docker("exec", "db", "cat", "/data/log"))?.output == "kept\nkept\n"
            }
            #expect(await lab.lab.attachments("pgdata") == [1001])
        }
    }

    @Test func theComposeFileWorksWithDockerCompose() async throws {
        try await withTwoDroplets { lab, one, two in
            let file = EngineE2E.repositoryRoot + "/docker-compose.yml"
            func compose(_ engine: Engine, _ arguments: String...) async throws -> CommandResult {
                try await runCommand(
                    "docker-compose", ["-f", file, "-p", "app"] + arguments,
                    environment: [
                        "DOCKER_HOST": "unix://" + engine.socket, "APP_IMAGE": "bb", "DO_STORAGE_DRIVER": lab.pluginName,
                        "COMPOSE_INTERACTIVE_NO_CLI": "1",
                    ])
            }
            let write = try await compose(one, "run", "--rm", "-T", "db", "sh", "-c", "echo from-compose > /var/lib/postgresql/data/f")
            #expect(write.status == 0, "\(write)")
            let inspect = try await one.must("volume", "inspect", "pgdata", "--format", "{{.Driver}}")
            #expect(inspect == lab.pluginName, "the compose declaration (name + driver) made the volume")
            _ = try await compose(one, "down")
            // Read back through the exit status: docker-compose run -T does not always pass on a short-lived
            // container's output (docker/compose#3267), seen once here as an empty read.
            let read = try await compose(
                two, "run", "--rm", "-T", "db", "sh", "-c", #"test "$(cat /var/lib/postgresql/data/f)" = from-compose"#)
            #expect(read.status == 0, "the data written on droplet 1 is read on droplet 2: \(read)")
            _ = try await compose(two, "down")
            #expect(await lab.lab.attachments("pgdata").isEmpty)
        }
    }
}
