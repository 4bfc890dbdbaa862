import DOSimulator
import DigitalOcean
import Foundation
import Testing
import VolumeService

/// Two do-storage processes as two droplets, one simulated DigitalOcean, real loop devices, real udev, real mounts.
/// Serialized: they share the machine's loop devices and udev.
@Suite(.serialized, .timeLimit(.minutes(10)), .enabled(if: E2E.available, "needs root and udev; CI sets DO_STORAGE_E2E=1"))
struct HandoffTests {
    @Test func dataFollowsTheVolumeFromDropletAToDropletB() async throws {
        try await Lab.withLab { lab in
            try await lab.addDroplet(1001)
            try await lab.addDroplet(1002)
            try await lab.createVolume("pgdata")
            let a = try await lab.startPlugin(droplet: 1001)
            let b = try await lab.startPlugin(droplet: 1002)

            let onA = try await a.mount("pgdata", id: "c1")
            #expect(Lab.isMounted(onA))
            try "written on A\n".write(toFile: onA + "/PG_VERSION", atomically: true, encoding: .utf8)
            let unmountSent = ContinuousClock.now
            try await a.unmount("pgdata", id: "c1")
            #expect(!Lab.isMounted(onA))

            let onB = try await b.mount("pgdata", id: "c2")
            #expect(try String(contentsOfFile: onB + "/PG_VERSION", encoding: .utf8) == "written on A\n")
            #expect(await lab.attachments("pgdata") == [1002])
            // The devices were found through udev events, not the slow re-check.
            for plugin in [a, b] {
                #expect(plugin.log.contains("udev event"))
                #expect(!plugin.log.contains("found by re-check"))
            }

            let log = await lab.world.actionLog
            #expect(log.map { "\($0.type)@\($0.dropletID)" } == ["attach@1001", "detach@1001", "attach@1002"])
            // The detach from A happened at A's last Unmount, and finished before B attached: no theft.
            #expect(log[1].started >= unmountSent)
            #expect(try #require(log[1].completed) <= log[2].started)
            try await b.unmount("pgdata", id: "c2")
            #expect(await lab.attachments("pgdata").isEmpty)
        }
    }

    @Test func takeoverNeverLeavesAsMountAloneThenWaitsForItsRelease() async throws {
        try await Lab.withLab { lab in
            try await lab.addDroplet(1001)
            try await lab.addDroplet(1002)
            try await lab.createVolume("pgdata")
            let a = try await lab.startPlugin(droplet: 1001)
            let b = try await lab.startPlugin(droplet: 1002, environment: ["HANDOFF_TIMEOUT": "2s", "TAKEOVER": "never"])
            let onA = try await a.mount("pgdata", id: "c1")
            try "A's data\n".write(toFile: onA + "/file", atomically: true, encoding: .utf8)

            let started = ContinuousClock.now
            let error = await #expect(throws: LabError.self) { try await b.mount("pgdata", id: "c2") }
            #expect(ContinuousClock.now - started >= .seconds(2))
            #expect(error?.description.contains("attached to droplet 1001") == true)
            #expect(error?.description.contains("TAKEOVER=always") == true)
            #expect(Lab.isMounted(onA))
            #expect(try String(contentsOfFile: onA + "/file", encoding: .utf8) == "A's data\n")
            #expect(await lab.attachments("pgdata") == [1001])
            #expect(await lab.world.actionLog.allSatisfy { $0.type == "attach" })

            // With a longer hand-off, B waits; A's container stops meanwhile, and B gets the volume.
            b.stop()
            let patient = try await lab.startPlugin(droplet: 1002, environment: ["HANDOFF_TIMEOUT": "30s"])
            async let mountOnB = patient.mount("pgdata", id: "c3")
            try await waitFor("B to ask DigitalOcean about the volume") {
                lab.server.recorded.contains { $0.method == "GET" && $0.path.hasPrefix("/v2/volumes/") && !$0.path.contains("actions") }
            }
            try await a.unmount("pgdata", id: "c1")
            let onB = try await mountOnB
            #expect(try String(contentsOfFile: onB + "/file", encoding: .utf8) == "A's data\n")
            #expect(await lab.world.actionLog.map { "\($0.type)@\($0.dropletID)" } == ["attach@1001", "detach@1001", "attach@1002"])
            try await patient.unmount("pgdata", id: "c3")
        }
    }

    @Test func takeoverAlwaysTakesTheVolume() async throws {
        try await Lab.withLab { lab in
            try await lab.addDroplet(1001)
            try await lab.addDroplet(1002)
            try await lab.createVolume("pgdata")
            let a = try await lab.startPlugin(droplet: 1001, environment: ["DETACH_ON_UNMOUNT": "false"])
            let b = try await lab.startPlugin(droplet: 1002, environment: ["TAKEOVER": "always"])
            let onA = try await a.mount("pgdata", id: "c1")
            try "from A\n".write(toFile: onA + "/file", atomically: true, encoding: .utf8)
            sync()
            try await a.unmount("pgdata", id: "c1")
            #expect(await lab.attachments("pgdata") == [1001], "DETACH_ON_UNMOUNT=false keeps it attached")
            let onB = try await b.mount("pgdata", id: "c2")
            #expect(try String(contentsOfFile: onB + "/file", encoding: .utf8) == "from A\n")
            #expect(await lab.attachments("pgdata") == [1002])
            #expect(b.log.contains("takeover always"))
            try await b.unmount("pgdata", id: "c2")
        }
    }

    /// TAKEOVER=lease (the default): the plugin on droplet A is killed while A's container holds the volume. While
    /// A's heartbeat is fresh, B waits and fails naming A; once it is older than LEASE_TTL, B takes the volume, with
    /// the data A wrote.
    @Test func aDropletWhosePluginDiedLosesItsVolumeOnceItsHeartbeatIsStale() async throws {
        try await Lab.withLab { lab in
            try await lab.addDroplet(1001)
            try await lab.addDroplet(1002)
            try await lab.createVolume("pgdata")
            let a = try await lab.startPlugin(droplet: 1001)
            let b = try await lab.startPlugin(droplet: 1002, environment: ["HANDOFF_TIMEOUT": "1s"])
            let onA = try await a.mount("pgdata", id: "c1")
            try "A's last write\n".write(toFile: onA + "/file", atomically: true, encoding: .utf8)
            sync()
            try await waitFor("A's heartbeat") {
                LeaseTag.heartbeat(in: await lab.world.dropletTags(id: 1001), droplet: 1001) != nil
            }
            a.kill9()

            let error = await #expect(throws: LabError.self) { try await b.mount("pgdata", id: "c2") }
            #expect(error?.description.contains("attached to droplet 1001") == true, "\(String(describing: error))")
            #expect(error?.description.contains("its do_storage plugin is alive") == true)
            #expect(await lab.attachments("pgdata") == [1001])

            // Thirteen minutes on (LEASE_TTL is 12m), A's heartbeat is that old.
            await lab.world.setDropletTags(
                id: 1001, prefix: LeaseTag.prefix, to: [LeaseTag.name(droplet: 1001, at: Date().addingTimeInterval(-780))])
            let onB = try await b.mount("pgdata", id: "c2")
            #expect(try String(contentsOfFile: onB + "/file", encoding: .utf8) == "A's last write\n")
            #expect(await lab.attachments("pgdata") == [1002])
            #expect(b.log.contains("missed its heartbeat"))
            #expect(b.log.contains("lease.age.s=78"), "the warning gives the heartbeat's age")
            try await b.unmount("pgdata", id: "c2")
            #expect(await lab.attachments("pgdata").isEmpty)
        }
    }

    /// Where a plugin can be killed (SIGKILL) in a volume's life, and a reboot (the mounts are gone, the
    /// attachment and the state file stay).
    enum CrashPoint: String, CaseIterable, Sendable {
        case afterAttachRequest, afterAttachCompleted, afterMount, duringUnmount, duringDetach, reboot
    }

    /// Each crash point, then a restart: no reference lost, nothing mounted or attached here without a user (an
    /// attach still under way is released once it completes), the next Mount works, and the data written before
    /// the crash is there.
    @Test(arguments: CrashPoint.allCases)
    func aPluginKilledAtEachCrashPointRecovers(_ point: CrashPoint) async throws {
        // A slow attach is still under way when the plugin starts again.
        try await Lab.withLab(actionLatency: point == .afterAttachRequest ? .seconds(3) : .milliseconds(200)) { lab in
            try await lab.addDroplet(1001)
            try await lab.createVolume("pgdata")
            let first = try await lab.startPlugin(droplet: 1001)
            let mountpoint = first.mountRoot + "/pgdata"
            func mountAndWrite() async throws {
                _ = try await first.mount("pgdata", id: "c1")
                try "before the crash\n".write(toFile: mountpoint + "/file", atomically: true, encoding: .utf8)
                sync()
            }
            func killWhile(_ request: @escaping @Sendable () async throws -> Void, once condition: () async throws -> Bool) async throws {
                let pending = Task { try? await request() }
                try await waitFor("the crash point \(point)", condition)
                first.kill9()
                _ = await pending.value
            }
            switch point {
            case .afterAttachRequest:
                try await killWhile({ _ = try await first.mount("pgdata", id: "c1") }) {
                    await lab.world.actionLog.contains { $0.type == "attach" }
                }
            case .afterAttachCompleted:
                // The device appears late, so the plugin is caught waiting for it after the attach completed.
                await lab.world.setDeviceDelay(.seconds(3))
                try await killWhile({ _ = try await first.mount("pgdata", id: "c1") }) {
                    await lab.world.actionLog.contains { $0.type == "attach" && $0.status == .completed }
                }
                await lab.world.setDeviceDelay(.zero)
            case .afterMount:
                try await mountAndWrite()
                first.kill9()
            case .duringUnmount:
                try await mountAndWrite()
                try await killWhile({ try await first.unmount("pgdata", id: "c1") }) { first.log.contains("Volume unmounted") }
            case .duringDetach:
                try await mountAndWrite()
                try await killWhile({ try await first.unmount("pgdata", id: "c1") }) {
                    await lab.world.actionLog.contains { $0.type == "detach" }
                }
            case .reboot:
                try await mountAndWrite()
                first.kill9()
                umount2(mountpoint, Int32(MNT_DETACH))
            }

            let second = try await lab.startPlugin(droplet: 1001)
            if point == .afterMount {
                // Docker still runs the container: its reference and its mount are kept.
                #expect(try second.persistedReferences("pgdata") == ["c1": 1])
                #expect(Lab.isMounted(mountpoint))
                #expect(await lab.attachments("pgdata") == [1001])
            } else {
                try await waitFor("the actions under way at the crash to finish") {
                    await lab.world.actionLog.allSatisfy { $0.status != .inProgress }
                }
                try await waitFor("the attachment nobody uses to be released") {
                    let settled = await lab.world.actionLog.allSatisfy { $0.status != .inProgress }
                    let attached = await lab.attachments("pgdata")
                    return settled && attached.isEmpty
                }
                #expect(try second.persistedReferences("pgdata").isEmpty)
                #expect(Lab.mountinfo().filter { $0.mountpoint.hasPrefix(second.mountRoot + "/") }.isEmpty)
            }

            #expect(try await second.mount("pgdata", id: "c2") == mountpoint)
            if point != .afterAttachRequest && point != .afterAttachCompleted {
                #expect(try String(contentsOfFile: mountpoint + "/file", encoding: .utf8) == "before the crash\n")
            }
            try await second.unmount("pgdata", id: "c2")
            if point == .afterMount { try await second.unmount("pgdata", id: "c1") }
            #expect(!Lab.isMounted(mountpoint))
            #expect(try second.persistedReferences("pgdata").isEmpty)
            #expect(await lab.attachments("pgdata").isEmpty)
            #expect(await lab.world.actionLog.allSatisfy { $0.status == .completed })
        }
    }

    @Test func theTokenAppearsInNoLogLine() async throws {
        try await Lab.withPgdataOnOneDroplet(environment: ["LOG_LEVEL": "trace"]) { lab, a in
            _ = try await a.call("VolumeDriver.Get", #"{"Name":"pgdata"}"#)
            _ = try await a.call("VolumeDriver.Get", #"{"Name":"ghost"}"#)
            _ = try await a.mount("pgdata", id: "c1")
            try await a.unmount("pgdata", id: "c1")
            _ = try await a.call("VolumeDriver.Remove", #"{"Name":"pgdata"}"#)
            // A failing call too: DigitalOcean refusing the token.
            let wrong = try await lab.startPlugin(droplet: 1001, environment: ["ACCESS_TOKEN": "dop_v1_wrong-9d8e7f", "SOCKET_PATH": lab.root + "/wrong.sock", "STATE_DIR": lab.root + "/wrong-state"])
            // Create asks DigitalOcean (Get answers from the registry alone): the refusal is the answer.
            let answer = try await wrong.call("VolumeDriver.Create", #"{"Name":"other"}"#)
            let refusal = answer["Err"] as? String ?? ""
            #expect(refusal.contains("HTTP 401"), "\(refusal)")
            #expect(refusal.contains("Check ACCESS_TOKEN"), "\(refusal)")
            let log = a.log + wrong.log
            #expect(log.contains("Volume mounted"), "the log covers the whole cycle")
            #expect(log.contains("DigitalOcean request"))
            #expect(!log.contains(Lab.token))
            #expect(!log.contains("dop_v1_wrong-9d8e7f"))
            #expect(!"\(answer)".contains("dop_v1_wrong-9d8e7f"))
        }
    }
}

/// Awaits a condition, checking it every 10 ms, for at most `timeout`.
func waitFor(_ what: String, timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw LabError("timed out waiting for \(what)")
}
