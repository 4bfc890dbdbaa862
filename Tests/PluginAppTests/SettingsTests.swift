import DigitalOcean
import Foundation
import Logging
import PluginApp
import Testing
import VolumeService

@Suite(.timeLimit(.minutes(5))) struct SettingsTests {
    @Test func defaultsAreTheDocumentedOnes() throws {
        let settings = try PluginSettings.fromEnvironment([:])
        #expect(settings.accessToken == nil)
        #expect(settings.apiURL == "https://api.digitalocean.com")
        #expect(settings.metadataURL == "http://169.254.169.254/metadata/v1")
        #expect(settings.dropletID == nil)
        #expect(settings.dropletRegion == nil)
        #expect(settings.deviceDirectory == "/dev/disk/by-id")
        #expect(settings.mountRoot == "/mnt/volumes")
        #expect(settings.stateDirectory == "/var/lib/do-storage")
        #expect(settings.socketPath == "/run/docker/plugins/do_storage.sock")
        #expect(settings.detachOnUnmount == true)
        #expect(settings.handoffTimeout == .seconds(30))
        #expect(settings.takeover == .lease)
        #expect(settings.leaseRenew == .seconds(300))
        #expect(settings.leaseTTL == .seconds(720))
        #expect(settings.snapshotMinInterval == .seconds(900))
        #expect(settings.logLevel == .info)
        #expect(settings.volumeDefaults == VolumeDefaults(
            autoCreate: true, sizeGiB: 10, fstype: .ext4, mountOptions: [], removePolicy: .retain))
    }

    /// The managed plugin's config.json declares every setting settable, and its values are the defaults.
    @Test func theManagedPluginConfigDeclaresEverySettingWithItsDefault() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("config.json")
        struct Config: Decodable {
            struct Variable: Decodable { var name: String; var settable: [String]; var value: String }
            struct Mount: Decodable { var name: String; var source: String; var destination: String }
            var env: [Variable]
            var mounts: [Mount]
        }
        let decoded = try JSONDecoder().decode(Config.self, from: Data(contentsOf: path))
        // The process environment the plugin always runs with, which users do not set.
        let fixed = decoded.env.filter { $0.settable.isEmpty }
        #expect(fixed.map { "\($0.name)=\($0.value)" } == ["GNUTLS_NO_IMPLICIT_INIT=1"])
        var config = decoded
        config.env.removeAll { $0.settable.isEmpty }
        #expect(Set(config.env.map(\.name)) == [
            "ACCESS_TOKEN", "DO_API_URL", "DO_METADATA_URL", "DROPLET_ID", "DROPLET_REGION", "DEVICE_DIR", "MOUNT_ROOT",
            "STATE_DIR", "SOCKET_PATH", "DETACH_ON_UNMOUNT", "HANDOFF_TIMEOUT", "TAKEOVER", "LEASE_RENEW",
            "LEASE_TTL", "SNAPSHOT_MIN_INTERVAL", "LOG_LEVEL", "AUTO_CREATE", "DEFAULT_SIZE", "DEFAULT_FSTYPE", "DEFAULT_MOUNTOPTS", "REMOVE_POLICY",
        ])
        #expect(config.env.allSatisfy { $0.settable == ["value"] })

        let environment = Dictionary(uniqueKeysWithValues: config.env.map { ($0.name, $0.value) })
        #expect(try PluginSettings.fromEnvironment(environment) == PluginSettings.fromEnvironment([:]))

        // runc refuses to start a plugin whose mount source is missing, and udev makes /dev/disk only once a disk
        // has a link: the plugin sees DEVICE_DIR through the host's /dev, so it enables on any host.
        #expect(config.mounts.map(\.source).sorted() == ["/dev", "/run/udev"])
        let settings = try PluginSettings.fromEnvironment(environment)
        #expect(settings.deviceDirectory.hasPrefix("/dev/"), "DEVICE_DIR is seen through the /dev mount")
    }

    @Test func everyVariableIsRead() throws {
        let settings = try PluginSettings.fromEnvironment([
            "ACCESS_TOKEN": " tok ", "DO_API_URL": "http://127.0.0.1:9/", "DO_METADATA_URL": "http://127.0.0.1:9/m",
            "DROPLET_ID": "42", "DROPLET_REGION": "fra1", "DEVICE_DIR": "/d", "MOUNT_ROOT": "/m/", "STATE_DIR": "/s",
            "SOCKET_PATH": "/p.sock", "DETACH_ON_UNMOUNT": "false", "HANDOFF_TIMEOUT": "45s",
            "TAKEOVER": "always", "LEASE_RENEW": "1m", "LEASE_TTL": "150s", "SNAPSHOT_MIN_INTERVAL": "1h",
            "LOG_LEVEL": "debug", "AUTO_CREATE": "false", "DEFAULT_SIZE": "1TiB",
            "DEFAULT_FSTYPE": "xfs", "DEFAULT_MOUNTOPTS": "noatime,discard", "REMOVE_POLICY": "delete",
        ])
        #expect(settings.accessToken == "tok")
        #expect(settings.apiURL == "http://127.0.0.1:9")
        #expect(settings.metadataURL == "http://127.0.0.1:9/m")
        #expect(settings.dropletID == 42)
        #expect(settings.dropletRegion == "fra1")
        #expect(settings.deviceDirectory == "/d")
        #expect(settings.mountRoot == "/m")
        #expect(settings.stateDirectory == "/s")
        #expect(settings.socketPath == "/p.sock")
        #expect(settings.detachOnUnmount == false)
        #expect(settings.handoffTimeout == .seconds(45))
        #expect(settings.takeover == .always)
        #expect(settings.leaseRenew == .seconds(60))
        #expect(settings.leaseTTL == .seconds(150))
        #expect(settings.snapshotMinInterval == .seconds(3600))
        #expect(settings.logLevel == .debug)
        #expect(settings.volumeDefaults == VolumeDefaults(
            autoCreate: false, sizeGiB: 1024, fstype: .xfs, mountOptions: [.noatime, .discard], removePolicy: .delete))
    }

    @Test(arguments: [("30", Duration.seconds(30)), ("30s", .seconds(30)), ("500ms", .milliseconds(500)),
                      ("2m", .seconds(120)), ("1.5s", .milliseconds(1500)), ("0", .zero), ("1h", .seconds(3600)),
                      ("1e20", Duration.longestReadable), ("1e300ms", Duration.longestReadable)])
    func durations(text: String, expected: Duration) throws {
        #expect(try PluginSettings.duration(text, "X") == expected)
    }

    @Test(arguments: [
        ("DROPLET_ID", "abc"), ("DO_API_URL", "api.digitalocean.com"), ("DO_METADATA_URL", "ftp://x"),
        ("DEVICE_DIR", "relative"), ("MOUNT_ROOT", "mnt"), ("STATE_DIR", "state"), ("SOCKET_PATH", "x.sock"),
        ("DETACH_ON_UNMOUNT", "maybe"), ("HANDOFF_TIMEOUT", "soon"), ("HANDOFF_TIMEOUT", "5m"),
        ("HANDOFF_TIMEOUT", "-3"), ("HANDOFF_TIMEOUT", "1e20"), ("HANDOFF_TIMEOUT", "1e300h"), ("HANDOFF_TIMEOUT", "inf"),
        ("HANDOFF_TIMEOUT", "nan"), ("TAKEOVER", "sometimes"), ("LEASE_RENEW", "5s"), ("LEASE_RENEW", "often"),
        ("LEASE_TTL", "10m"), ("LEASE_TTL", "forever"),
        ("SNAPSHOT_MIN_INTERVAL", "9s"), ("SNAPSHOT_MIN_INTERVAL", "often"), ("LOG_LEVEL", "loud"), ("AUTO_CREATE", "perhaps"),
        ("DEFAULT_SIZE", "0"), ("DEFAULT_SIZE", "17TiB"), ("DEFAULT_SIZE", "big"), ("DEFAULT_FSTYPE", "btrfs"),
        ("DEFAULT_MOUNTOPTS", "noatime,exec"), ("REMOVE_POLICY", "shred"),
    ])
    func badValuesNameTheVariable(name: String, value: String) {
        let error = #expect(throws: SettingsError.self) { try PluginSettings.fromEnvironment([name: value]) }
        #expect(error?.setting == name && error?.message.hasPrefix(name) == true)
    }

    @Test func missingTokenMakesEveryCallExplainHowToSetIt() async throws {
        let driver = PluginApp.makeDriver(settings: PluginSettings(), logger: Logger(label: "test"))
        let error = await #expect(throws: VolumeError.self) { try await driver.get(name: "pgdata") }
        #expect(error?.code == .notConfigured)
        #expect(error?.message.contains("docker plugin set <plugin> ACCESS_TOKEN=<token>") == true)
    }
}
