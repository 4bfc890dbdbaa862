import DOSimulator
import DigitalOcean
import Foundation
import Testing

/// Snapshots, restores, clones and schedules with the managed plugin in real dockerd engines, real loop devices and
/// real filesystems; the command line run exactly as the README writes it.
@Suite(.serialized, .timeLimit(.minutes(10)), .enabled(if: EngineE2E.available, "needs root, udev, dockerd and plugin/build; CI sets DO_STORAGE_E2E=1"))
struct SnapshotEngineTests {
    /// The README's line that makes `do-storage` a shell command on a droplet with only Docker and the plugin.
    static func readmeCommandLine() throws -> String {
        let readme = try String(contentsOfFile: EngineE2E.repositoryRoot + "/README.md", encoding: .utf8)
        let lines = readme.split(separator: "\n").filter { $0.hasPrefix("do-storage() {") }
        guard lines.count == 1 else { throw LabError("README.md should have one line starting `do-storage() {`, not \(lines.count)") }
        return String(lines[0])
    }

    /// Runs `command` in bash after the README's line, against `engine` (the lab's engines listen on their own
    /// sockets, where a droplet's use the default ones: that is the only difference). Killed after 2 minutes.
    static func shell(_ engine: Engine, _ command: String) async throws -> CommandResult {
        try await runCommand(
            "timeout", ["-s", "KILL", "120", "bash", "-c", try readmeCommandLine() + "\n" + command],
            environment: [
                "DOCKER_HOST": "unix://" + engine.socket, "DOCKER_CONFIG": engine.dataRoot + "/client",
                "CONTAINERD_ADDRESS": engine.execRoot + "/containerd/containerd.sock",
            ])
    }

    /// The files the writer container has finished (`f<N>`; it writes `f<N>.tmp` and renames it).
    static func finishedFiles(_ engine: Engine, container: String, folder: String = "/data") async throws -> Set<String> {
        // The shell's glob, not ls: busybox's ls looks at each name it lists, and fails on a .tmp file the writer
        // renames in between.
        let listing = try await engine.must("exec", container, "sh", "-c", "cd \(folder) && printf '%s\\n' *")
        return Set(listing.split(separator: "\n").map(String.init).filter { $0.hasPrefix("f") && !$0.hasSuffix(".tmp") })
    }

    /// Droplet 1001 with the plugin enabled, volume "pgdata" of `size` made with Docker, and container `name`
    /// running `script` on it at /data.
    static func withContainerOnPgdata(
        size: String, name: String, script: String, _ body: (EngineLab, Engine) async throws -> Void
    ) async throws {
        try await EngineLab.withLab { lab in
            let engine = try await lab.startDroplet(1001)
            try await lab.configureAndEnable(engine, droplet: 1001)
            try await engine.must("volume", "create", "-d", lab.pluginName, "-o", "size=\(size)", "pgdata")
            try await engine.must("run", "-d", "--name", name, "--network", "none", "-v", "pgdata:/data", "bb", "sh", "-c", script)
            try await body(lab, engine)
        }
    }

    /// dvol's first steps from the command line: a commit (frozen: the volume is mounted), the log, Status's head.
    @Test func commitAndLogFromTheCommandLine() async throws {
        try await Self.withContainerOnPgdata(size: "1GiB", name: "db", script: "echo v1 > /data/state && exec sleep 3600") { lab, engine in
            try await waitFor("the container to write") {
                (try await engine.docker("exec", "db", "cat", "/data/state")).output == "v1\n"
            }
            let committed = try await Self.shell(engine, #"do-storage commit pgdata -m "import base schema""#)
            #expect(committed.status == 0, "\(committed)")
            let id = committed.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(engine.log.contains("Snapshot taken with the filesystem frozen"), "mounted here: frozen")
            let log = try await Self.shell(engine, "do-storage log pgdata")
            let lines = log.output.split(separator: "\n")
            #expect(log.status == 0 && lines.count == 2 && lines[1].hasPrefix(id) && lines[1].hasSuffix("import base schema"), "\(log)")
            let json = try await Self.shell(engine, "do-storage log pgdata --json")
            let parsed = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [[String: Any]]
            #expect(parsed?.first?["id"] as? String == id && parsed?.first?["message"] as? String == "import base schema", "\(json)")
            #expect(parsed?.first?["branch"] as? String == "main" && parsed?.first?["created_at"] is String, "\(json)")
            let head = try await engine.must("volume", "inspect", "pgdata", "--format", #"{{ index .Status "head" }}"#)
            #expect(head == "\(id) import base schema")
            let empty = try await Self.shell(engine, #"do-storage commit pgdata -m """#)
            #expect(empty.status != 0 && empty.error.contains("a commit message is one line"), "\(empty)")
        }
    }

    /// dvol's story from the command line on two engines: a container writes, commit, it writes again, reset --hard
    /// brings the first state back; checkout -b, write, checkout main (from the second droplet) shows main's data.
    @Test func dvolsStoryFromTheCommandLineOnTwoEngines() async throws {
        try await EngineLab.withLab { lab in
            let one = try await lab.startDroplet(1001)
            let two = try await lab.startDroplet(1002)
            try await lab.configureAndEnable(one, droplet: 1001)
            try await lab.configureAndEnable(two, droplet: 1002)
            try await one.must("volume", "create", "-d", lab.pluginName, "-o", "size=1GiB", "pgdata")
            func write(_ engine: Engine, _ text: String) async throws {
                try await engine.must(
                    "run", "--rm", "--network", "none", "--volume-driver", lab.pluginName, "-v", "pgdata:/data", "bb", "sh", "-c",
                    "echo \(text) > /data/state && sync")
            }
            func read(_ engine: Engine) async throws -> String {
                try await engine.must("run", "--rm", "--network", "none", "--volume-driver", lab.pluginName, "-v", "pgdata:/data", "bb", "cat", "/data/state")
            }
            try await write(one, "base")
            let commit = try await Self.shell(one, #"do-storage commit pgdata -m "import base schema""#)
            #expect(commit.status == 0, "\(commit)")
            try await write(one, "broken")
            let soft = try await Self.shell(one, "do-storage reset pgdata")
            #expect(soft.status != 0 && soft.error.contains("--hard"), "\(soft)")
            let reset = try await Self.shell(one, "do-storage reset --hard pgdata")
            #expect(reset.status == 0 && reset.output.contains("reset to"), "\(reset)")
            #expect(try await read(one) == "base")
            #expect(try await read(two) == "base", "the second droplet mounts the reset volume")

            let branch = try await Self.shell(one, "do-storage checkout pgdata -b schema-tweaks")
            #expect(branch.status == 0 && branch.output.hasPrefix("schema-tweaks "), "\(branch)")
            try await write(one, "tweaked")
            #expect(try await read(two) == "tweaked")
            let back = try await Self.shell(two, "do-storage checkout pgdata main")
            #expect(back.status == 0, "\(back)")
            #expect(try await read(one) == "base", "main's data, on the droplet that wrote the branch's")
            let list = try await Self.shell(one, "do-storage branch pgdata --json")
            let parsed = try JSONSerialization.jsonObject(with: Data(list.output.utf8)) as? [[String: Any]]
            #expect(parsed?.map { $0["name"] as? String } == ["main", "schema-tweaks"], "\(list)")
            #expect(parsed?.map { $0["current"] as? Bool } == [true, false] && parsed?.first?["do_id"] is String, "\(list)")
            let status = try await one.must("volume", "inspect", "pgdata", "--format", #"{{ index .Status "branch" }}"#)
            #expect(status == "main")
        }
    }

    @Test func theReadmesCommandLineOnTheManagedPlugin() async throws {
        try await Self.withContainerOnPgdata(size: "2GiB", name: "db", script: "echo before > /data/PG_VERSION && exec sleep 3600") { lab, engine in
            let driver = lab.pluginName
            try await waitFor("the container to write") {
                (try await engine.docker("exec", "db", "cat", "/data/PG_VERSION")).output == "before\n"
            }

            let created = try await Self.shell(engine, "do-storage snapshot create pgdata --name before-upgrade")
            #expect(created.status == 0 && created.output.hasPrefix("before-upgrade "), "\(created)")
            #expect(engine.log.contains("Snapshot taken with the filesystem frozen"), "mounted here: frozen")
            try await engine.must("exec", "db", "sh", "-c", "echo after > /data/PG_VERSION")
            // The binary entered into the plugin's mount namespace only reads no arguments (Swift reads them from
            // /proc/self/cmdline, which is the plugin's pid namespace's there): it refuses to run, and above all
            // does not start a second server that would take the plugin's socket.
            let mountOnly = try await Self.shell(
                engine, #"nsenter -m -t "$(ctr -n plugins.moby task ls | awk 'NR == 2 { print $2 }')" /usr/bin/do-storage snapshot list pgdata"#)
            #expect(mountOnly.status == 2 && mountOnly.error.contains("cannot read this process's arguments"), "\(mountOnly)")
            let second = try await Self.shell(engine, "do-storage snapshot create pgdata")
            #expect(second.status == 0 && second.output.hasPrefix("pgdata-2"), "\(second)")

            let list = try await Self.shell(engine, "do-storage snapshot list pgdata")
            let lines = list.output.split(separator: "\n")
            #expect(list.status == 0 && lines.count == 3, "\(list)")
            #expect(lines.count == 3 && lines[1].hasPrefix("pgdata-2") && lines[2].hasPrefix("before-upgrade"), "newest first")
            let json = try await Self.shell(engine, "do-storage snapshot list pgdata --json")
            let parsed = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [[String: Any]]
            #expect(parsed?.last?["name"] as? String == "before-upgrade" && parsed?.last?["origin"] as? String == "manual", "\(json)")

            // restore, and from_snapshot with a larger size: the snapshot's moment, grown.
            let restored = try await Self.shell(engine, "do-storage restore before-upgrade pgdata-restored")
            #expect(restored.status == 0, "\(restored)")
            let read = try await engine.must("run", "--rm", "--network", "none", "-v", "pgdata-restored:/r", "bb", "cat", "/r/PG_VERSION")
            #expect(read == "before")
            try await engine.must("volume", "create", "-d", driver, "-o", "from_snapshot=before-upgrade", "-o", "size=3GiB", "bigger")
            let grown = try await engine.must(
                "run", "--rm", "--network", "none", "-v", "bigger:/r", "bb", "sh", "-c", "cat /r/PG_VERSION && df -k /r")
            #expect(grown.hasPrefix("before\n"), "\(grown)")
            let kilobytes = grown.split(separator: "\n").last?.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first
            #expect(Int(kilobytes ?? "") ?? 0 > 2 << 20, "the filesystem grew past the snapshot's 2 GiB: \(grown)")

            // Bad restores: a size below the snapshot's, an unknown name, a name two volumes' snapshots share.
            let small = try await engine.docker("volume", "create", "-d", driver, "-o", "from_snapshot=before-upgrade", "-o", "size=1GiB", "small")
            #expect(small.status != 0 && small.error.contains("is smaller than snapshot before-upgrade"), "\(small)")
            let unknown = try await engine.docker("volume", "create", "-d", driver, "-o", "from_snapshot=nightly", "x")
            #expect(unknown.status != 0 && unknown.error.contains("no volume snapshot with the id or name \"nightly\""), "\(unknown)")
            try await engine.must("volume", "create", "-d", driver, "-o", "size=1GiB", "other")
            #expect(try await Self.shell(engine, "do-storage snapshot create pgdata --name nightly").status == 0)
            #expect(try await Self.shell(engine, "do-storage snapshot create other --name nightly").status == 0)
            let ambiguous = try await engine.docker("volume", "create", "-d", driver, "-o", "from_snapshot=nightly", "x")
            #expect(ambiguous.status != 0 && ambiguous.error.contains("is used by snapshots of 2 volumes"), "\(ambiguous)")
            #expect(ambiguous.error.contains("of volume pgdata") && ambiguous.error.contains("of volume other"), "\(ambiguous)")

            let deleted = try await Self.shell(engine, "do-storage snapshot delete before-upgrade --volume pgdata")
            #expect(deleted.status == 0, "\(deleted)")
            #expect(try await lab.lab.world.listSnapshots(volumeID: nil).filter { $0.name == "before-upgrade" }.isEmpty)

            // Errors: the plugin's words and a non-zero status.
            let again = try await Self.shell(engine, "do-storage snapshot delete before-upgrade --volume pgdata")
            #expect(again.status != 0 && again.error.contains("volume pgdata has no snapshot with the name or id \"before-upgrade\""), "\(again)")
            let ghost = try await Self.shell(engine, "do-storage snapshot list ghost")
            #expect(ghost.status != 0 && ghost.error.contains("there is no volume ghost"), "\(ghost)")
            let usage = try await Self.shell(engine, "do-storage snapshot frobnicate")
            #expect(usage.status != 0 && usage.error.contains("Unexpected argument 'frobnicate'"), "\(usage)")
            try await engine.must("rm", "-f", "db")
            try await engine.must("plugin", "disable", "-f", driver)
            let dead = try await Self.shell(engine, "do-storage snapshot list pgdata")
            #expect(dead.status != 0 && dead.error.contains("nsenter: failed to parse pid"), "\(dead)")
            #expect(!engine.log.contains(Lab.token), "the token appears in no log line")
        }
    }

    /// A clone of a volume a container keeps writing to: frozen, clean (`e2fsck -n`), with every file finished
    /// before the clone began; the writer never fails, also when DigitalOcean refuses the snapshot while frozen.
    @Test func aConsistentCloneOfAVolumeInUse() async throws {
        let writer = #"i=0; while true; do i=$((i+1)); echo "file $i" > /data/f$i.tmp && mv /data/f$i.tmp /data/f$i || exit 1; sleep 0.01; done"#
        try await Self.withContainerOnPgdata(size: "1GiB", name: "writer", script: writer) { lab, engine in
            let driver = lab.pluginName
            try await waitFor("the writer to finish 20 files") { try await Self.finishedFiles(engine, container: "writer").count >= 20 }

            let before = try await Self.finishedFiles(engine, container: "writer")
            try await engine.must("volume", "create", "-d", driver, "-o", "clone_of=pgdata", "pgdata-test")
            let consistency = try await engine.must("volume", "inspect", "pgdata-test", "--format", #"{{index .Status "clone_consistency"}}"#)
            #expect(consistency == "frozen")
            let clone = try #require(await lab.lab.world.listVolumes(name: "pgdata-test", region: "nyc1").first)
            let check = try await runCommand("e2fsck", ["-n", "-f", lab.lab.root + "/data/\(clone.id).img"])
            #expect(check.status == 0, "the clone's filesystem is clean: \(check)")
            let cloned = try await engine.must("run", "--rm", "--network", "none", "-v", "pgdata-test:/c", "bb", "ls", "/c")
            let inClone = Set(cloned.split(separator: "\n").map(String.init))
            #expect(before.isSubset(of: inClone), "missing from the clone: \(before.subtracting(inClone).sorted())")
            let origin = try #require(await lab.lab.world.listSnapshots(volumeID: nil).first { $0.name.hasPrefix("pgdata-test-clone-") })
            #expect(origin.tags.contains("do-storage-clone"), "the clone's snapshot is kept, marked as its origin")

            // DigitalOcean refuses the snapshot while the filesystem is frozen: thawed, the writer goes on.
            let source = try #require(await lab.lab.world.listVolumes(name: "pgdata", region: "nyc1").first)
            lab.lab.server.inject(Fault(.status(422), method: "POST", pathPrefix: "/v2/volumes/\(source.id)/snapshots"))
            let refused = try await engine.docker("volume", "create", "-d", driver, "-o", "clone_of=pgdata", "pgdata-test2")
            #expect(refused.status != 0 && refused.error.contains("cannot take a snapshot of volume pgdata"), "\(refused)")
            let afterFailure = try await Self.finishedFiles(engine, container: "writer").count
            try await waitFor("the writer to go on after the failed snapshot") {
                try await Self.finishedFiles(engine, container: "writer").count >= afterFailure + 20
            }
            let running = try await engine.must("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", "writer")
            #expect(running == "true 0", "the writer never failed")
            #expect(await lab.lab.world.listVolumes(name: "pgdata-test2", region: "nyc1").isEmpty)
        }
    }

    /// A schedule runs where the volume is mounted, moves with it to the other droplet, and keeps what its rules say.
    @Test func aScheduleFollowsTheVolumeAndKeepsWhatItsRulesSay() async throws {
        try await EngineLab.withLab { lab in
            let one = try await lab.startDroplet(1001)
            let two = try await lab.startDroplet(1002)
            let fast = ["SNAPSHOT_MIN_INTERVAL=10s"]
            try await lab.configureAndEnable(one, droplet: 1001, extra: fast)
            try await lab.configureAndEnable(two, droplet: 1002, extra: fast)
            let driver = lab.pluginName
            try await one.must(
                "volume", "create", "-d", driver, "-o", "size=1GiB", "-o", "snapshot_every=10s", "-o", "snapshot_keep=last:2", "pgdata")
            let volume = try #require(await lab.lab.world.listVolumes(name: "pgdata", region: "nyc1").first)
            // A snapshot the schedule did not make: retention never deletes it.
            _ = try await lab.lab.world.createSnapshot(volumeID: volume.id, request: SnapshotCreateRequest(name: "by-hand", tags: nil))
            func scheduled() async throws -> [Snapshot] {
                try await lab.lab.world.listSnapshots(volumeID: volume.id).filter { $0.tags.contains("do-storage-scheduled") }
            }

            try await one.must("run", "-d", "--name", "db", "--network", "none", "-v", "pgdata:/data", "bb", "sleep", "3600")
            try await waitFor("two scheduled snapshots on droplet 1", timeout: .seconds(60)) { try await scheduled().count >= 2 }
            let first = try await scheduled()
            let times = first.compactMap { try? Date.ISO8601FormatStyle().parse($0.createdAt) }
            let gap = times[1].timeIntervalSince(times[0])
            #expect(gap >= 9 && gap <= 13, "one snapshot each 10 s (checked every second): \(gap) s apart")
            #expect(one.log.contains("Scheduled snapshot taken") && one.log.contains("Snapshot taken with the filesystem frozen"))

            try await one.must("rm", "-f", "db")
            try await two.must("run", "-d", "--name", "db", "--network", "none", "-v", "pgdata:/data", "--volume-driver", driver, "bb", "sleep", "3600")
            try await waitFor("two scheduled snapshots on droplet 2", timeout: .seconds(60)) {
                two.log.split(separator: "\n").filter { $0.contains("Scheduled snapshot taken") }.count >= 2
            }
            let kept = try await scheduled()
            #expect(kept.count == 2, "keep last:2: \(kept.map(\.name))")
            #expect(Set(first.map(\.id)).isDisjoint(with: kept.map(\.id)), "the older ones were deleted")
            let all = try await lab.lab.world.listSnapshots(volumeID: volume.id)
            #expect(all.contains { $0.name == "by-hand" }, "a snapshot the schedule did not make is kept")
            let status = try await two.must("volume", "inspect", "pgdata", "--format", #"{{index .Status "snapshot_every"}} {{index .Status "snapshot_keep"}}"#)
            #expect(status == "10s last:2", "\(status)")
            try await two.must("rm", "-f", "db")
        }
    }
}
