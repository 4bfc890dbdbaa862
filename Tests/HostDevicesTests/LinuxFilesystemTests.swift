import Foundation
import HostDevices
import Logging
import Testing
import VolumeService

@Suite(.timeLimit(.minutes(5))) struct MountInfoTests {
    @Test func parsesFieldsAndEscapes() {
        let text = """
            36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
            44 86 7:0 / /mnt/volumes/with\\040space rw,noatime shared:3 - ext4 /dev/loop0 rw
            """
        let entries = MountInfo.parse(text)
        #expect(entries == [
            MountEntry(source: "/dev/root", mountpoint: "/mnt/parent", fstype: "ext3"),
            MountEntry(source: "/dev/loop0", mountpoint: "/mnt/volumes/with space", fstype: "ext4"),
        ])
    }
}

@Suite(.timeLimit(.minutes(5))) struct ProcFileTests {
    @Test func readsProcFilesToTheEnd() throws {
        // /proc/self/maps of a Swift process is far longer than a page.
        let maps = try ProcFile.read("/proc/self/maps")
        let lines = maps.split(separator: "\n")
        #expect(maps.utf8.count > 8192)
        // The last mapping (the vsyscall page, or the stack or vdso) does not move between reads: the read reached it.
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/self/maps"))
        let whole = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        try handle.close()
        #expect(lines.last.map(String.init) == whole.split(separator: "\n").last.map(String.init))
        #expect(maps.hasSuffix("\n"))
    }
}

@Suite(.timeLimit(.minutes(5))) struct BlockDeviceTests {
    /// The name of a block device node in /dev (loop devices exist on any Linux machine that runs these tests).
    func someBlockDevice() throws -> String {
        let names = try FileManager.default.contentsOfDirectory(atPath: "/dev").sorted()
        let name = names.first { name in
            var info = stat()
            return stat("/dev/" + name, &info) == 0 && (info.st_mode & S_IFMT) == S_IFBLK
        }
        return try #require(name, "no block device in /dev")
    }

    @Test func udevsRelativeLinksResolveInDevWhereverTheFolderIsSeen() throws {
        let device = try someBlockDevice()
        // The host's /dev/disk as the managed plugin sees it: mounted at another path.
        let root = "/tmp/do-storage-links-\(UUID().uuidString.prefix(8))"
        let byID = root + "/host/disk/by-id"
        try FileManager.default.createDirectory(atPath: byID, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createSymbolicLink(atPath: byID + "/relative", withDestinationPath: "../../" + device)
        try FileManager.default.createSymbolicLink(atPath: byID + "/absolute", withDestinationPath: "/dev/" + device)
        try FileManager.default.createSymbolicLink(atPath: byID + "/gone", withDestinationPath: "../../no-such-device")
        try FileManager.default.createSymbolicLink(atPath: byID + "/file", withDestinationPath: "/dev/null")

        #expect(BlockDevice.resolve(byID + "/relative") == "/dev/" + device)
        #expect(BlockDevice.resolve(byID + "/absolute") == "/dev/" + device)
        #expect(BlockDevice.resolve(byID + "/gone") == nil)
        #expect(BlockDevice.resolve(byID + "/file") == nil, "a character device is no volume")
        #expect(BlockDevice.resolve(byID + "/missing") == nil)
        #expect(BlockDevice.resolve("/dev/" + device) == "/dev/" + device)
    }
}

/// mount(2) and umount2(2) for real: root only.
@Suite(
    .enabled(if: geteuid() == 0 || ProcessInfo.processInfo.environment["DO_STORAGE_E2E"] == "1", "needs root"),
    .timeLimit(.minutes(3)))
struct LinuxFilesystemTests {
    @Test func unmountRemovesEveryStackedCopy() async throws {
        let root = "/tmp/do-storage-fs-\(UUID().uuidString.prefix(8))"
        let path = root + "/volume"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer {
            while umount2(path, Int32(MNT_DETACH)) == 0 {}
            try? FileManager.default.removeItem(atPath: root)
        }
        // Two mounts at one path, as propagation leaves them in a managed plugin.
        #expect(mount("tmpfs", path, "tmpfs", 0, nil) == 0)
        #expect(mount("tmpfs", path, "tmpfs", 0, nil) == 0)
        let filesystem = LinuxFilesystem(logger: Logger(label: "test"))
        #expect(try await filesystem.mounts(under: root).count == 2)
        try await filesystem.unmount(path: path)
        #expect(try await filesystem.mounts(under: root).isEmpty)
        let error = await #expect(throws: DeviceError.self) { try await filesystem.unmount(path: path) }
        #expect(error?.code == .mount && error?.message.contains("umount(2) failed") == true)
    }

    /// A sparse image file of `megabytes`, formatted with `mkfs` arguments when given; with `keep`, an existing
    /// image is only resized.
    func image(_ path: String, megabytes: UInt64, mkfs: [String]? = nil, keep: Bool = false) throws {
        if !keep { try Data().write(to: URL(fileURLWithPath: path)) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: megabytes << 20)
        try handle.close()
        guard let mkfs else { return }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/" + mkfs[0])
        process.arguments = Array(mkfs.dropFirst()) + [path]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "\(mkfs[0]) failed")
    }

    /// Writes `bytes` into `path` at `offset`.
    func write(_ bytes: [UInt8], to path: String, at offset: UInt64) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data(bytes))
        try handle.close()
    }

    @Test func probingTellsBlankFormattedAndSuspiciousDevicesApart() async throws {
        let root = "/tmp/do-storage-blkid-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try image(root + "/blank.img", megabytes: 16)
        try image(root + "/ext4.img", megabytes: 16, mkfs: ["mkfs.ext4", "-q", "-F"])
        try image(root + "/xfs.img", megabytes: 320, mkfs: ["mkfs.xfs", "-q", "-f"])
        // A DOS partition table: the boot signature at 510.
        try image(root + "/partitioned.img", megabytes: 16)
        try write([0x55, 0xAA], to: root + "/partitioned.img", at: 510)
        // Two signatures: xfs's superblock at 0 and ext4's at 1024.
        try image(root + "/both.img", megabytes: 320, mkfs: ["mkfs.xfs", "-q", "-f"])
        let ext4 = try FileHandle(forReadingFrom: URL(fileURLWithPath: root + "/ext4.img"))
        try ext4.seek(toOffset: 1024)
        let superblock = try #require(try ext4.read(upToCount: 1024))
        try ext4.close()
        try write(Array(superblock), to: root + "/both.img", at: 1024)

        let filesystem = LinuxFilesystem(logger: Logger(label: "test"))
        #expect(try await filesystem.filesystemType(device: root + "/blank.img") == nil)
        #expect(try await filesystem.filesystemType(device: root + "/ext4.img") == "ext4")
        #expect(try await filesystem.filesystemType(device: root + "/xfs.img") == "xfs")
        let table = await #expect(throws: DeviceError.self) {
            try await filesystem.filesystemType(device: root + "/partitioned.img")
        }
        #expect(table?.code == .probe && table?.message.contains("holds a dos partition table") == true, "\(String(describing: table))")
        let both = await #expect(throws: DeviceError.self) {
            try await filesystem.filesystemType(device: root + "/both.img")
        }
        #expect(both?.code == .probe && both?.message.contains("more than one filesystem signature") == true, "\(String(describing: both))")
        let missing = await #expect(throws: DeviceError.self) {
            try await filesystem.filesystemType(device: root + "/missing.img")
        }
        #expect(missing?.code == .probe && missing?.message.contains("cannot open") == true, "\(String(describing: missing))")
    }

    /// `losetup` with arguments; its output.
    @discardableResult
    func losetup(_ arguments: String...) throws -> String {
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/losetup")
        process.arguments = arguments
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "losetup \(arguments) failed")
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs `body` with each image attached to a loop device (detached afterwards, also on failure).
    func withLoops(_ images: [String], _ body: ([String]) async throws -> Void) async throws {
        var loops: [String] = []
        defer { for loop in loops { _ = try? losetup("-d", loop) } }
        for image in images { loops.append(try losetup("--find", "--show", image)) }
        try await body(loops)
    }

    /// The formatting safety table on real loop devices: only a device that is blank through and through counts
    /// as blank; anything else is never formatted.
    @Test func onlyATrulyBlankDeviceIsBlank() async throws {
        let root = "/tmp/do-storage-blank-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let megabytes: UInt64 = 16
        try image(root + "/blank.img", megabytes: megabytes)
        try image(root + "/ext4.img", megabytes: megabytes, mkfs: ["mkfs.ext4", "-q", "-F"])
        try image(root + "/xfs.img", megabytes: 320, mkfs: ["mkfs.xfs", "-q", "-f"])
        try image(root + "/dos.img", megabytes: megabytes)
        try write([0x55, 0xAA], to: root + "/dos.img", at: 510)
        try image(root + "/lvm.img", megabytes: megabytes)
        try write(Array("LABELONE".utf8) + [1, 0, 0, 0, 0, 0, 0, 0], to: root + "/lvm.img", at: 512)
        try write(Array("LVM2 001".utf8), to: root + "/lvm.img", at: 512 + 24)
        try image(root + "/raid.img", megabytes: megabytes)
        try write([0xFC, 0x4E, 0x2B, 0xA9, 1, 0, 0, 0], to: root + "/raid.img", at: 4096)  // md 1.2 superblock magic
        try image(root + "/random.img", megabytes: megabytes)
        try write((0..<(megabytes << 20)).map { _ in UInt8.random(in: 0...255) }, to: root + "/random.img", at: 0)
        // An ext4 superblock only near the device's end (a filesystem whose start was overwritten, say).
        try image(root + "/tail.img", megabytes: megabytes)
        let ext4 = try FileHandle(forReadingFrom: URL(fileURLWithPath: root + "/ext4.img"))
        let head = try #require(try ext4.read(upToCount: 4096))
        try ext4.close()
        try write(Array(head), to: root + "/tail.img", at: (megabytes << 20) - 65536)

        let names = ["blank", "ext4", "xfs", "dos", "lvm", "raid", "random", "tail"]
        try await withLoops(names.map { "\(root)/\($0).img" }) { loops in
            let filesystem = LinuxFilesystem(logger: Logger(label: "test"))
            var found: [String: String?] = [:]
            for (name, loop) in zip(names, loops) {
                let check = try await filesystem.checkBlank(device: loop)
                #expect(check.sizeBytes == (name == "xfs" ? 320 : megabytes) << 20, "\(name)")
                found[name] = check.found
            }
            #expect(found["blank"] == .some(nil), "the blank device is blank")
            for name in names where name != "blank" {
                #expect(found[name] != .some(nil), "\(name) is not blank: \(String(describing: found[name]))")
            }
            #expect(found["ext4"] == "ext4" && found["xfs"] == "xfs")
            #expect(found["dos"] == "a dos partition table")

            // The blank one formats, and then holds ext4 of the device's size.
            try await filesystem.format(device: loops[0], type: .ext4, label: "data")
            #expect(try await filesystem.filesystemType(device: loops[0]) == "ext4")
            let sizes = try await filesystem.sizes(device: loops[0])
            #expect(sizes.device == megabytes << 20 && sizes.filesystem == megabytes << 20)
        }
    }

    /// Growth on real loop devices: ext4 offline (check, then resize), xfs online at its mount point.
    @Test func filesystemsGrowIntoALargerDevice() async throws {
        let root = "/tmp/do-storage-grow-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root + "/mnt", withIntermediateDirectories: true)
        defer {
            while umount2(root + "/mnt", Int32(MNT_DETACH)) == 0 {}
            try? FileManager.default.removeItem(atPath: root)
        }
        try image(root + "/ext4.img", megabytes: 32, mkfs: ["mkfs.ext4", "-q", "-F"])
        try image(root + "/xfs.img", megabytes: 320, mkfs: ["mkfs.xfs", "-q", "-f"])
        try await withLoops([root + "/ext4.img", root + "/xfs.img"]) { loops in
            let filesystem = LinuxFilesystem(logger: Logger(label: "test"))
            try image(root + "/ext4.img", megabytes: 64, keep: true)
            try image(root + "/xfs.img", megabytes: 640, keep: true)
            try losetup("-c", loops[0])
            try losetup("-c", loops[1])
            #expect(try await filesystem.sizes(device: loops[0]) == (64 << 20, 32 << 20))
            try await filesystem.grow(device: loops[0], type: .ext4, mountpoint: nil)
            #expect(try await filesystem.sizes(device: loops[0]) == (64 << 20, 64 << 20))

            try await filesystem.mount(device: loops[1], at: root + "/mnt", type: "xfs", options: [])
            var before = statvfs()
            #expect(statvfs(root + "/mnt", &before) == 0)
            try await filesystem.grow(device: loops[1], type: .xfs, mountpoint: root + "/mnt")
            var after = statvfs()
            #expect(statvfs(root + "/mnt", &after) == 0)
            #expect(UInt64(before.f_blocks) * UInt64(before.f_frsize) < 320 << 20)
            #expect(UInt64(after.f_blocks) * UInt64(after.f_frsize) > 500 << 20, "xfs grew online into the 640 MiB device")
            try await filesystem.unmount(path: root + "/mnt")
        }
    }

    /// A clone of an xfs volume carries its origin's filesystem UUID: it mounts beside its origin all the same.
    @Test func anXfsCloneMountsBesideItsOrigin() async throws {
        let root = "/tmp/do-storage-clone-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer {
            for mountpoint in ["origin", "clone"] { while umount2(root + "/" + mountpoint, Int32(MNT_DETACH)) == 0 {} }
            try? FileManager.default.removeItem(atPath: root)
        }
        try image(root + "/origin.img", megabytes: 320, mkfs: ["mkfs.xfs", "-q", "-f"])
        try FileManager.default.copyItem(atPath: root + "/origin.img", toPath: root + "/clone.img")
        try await withLoops([root + "/origin.img", root + "/clone.img"]) { loops in
            let filesystem = LinuxFilesystem(logger: Logger(label: "test"))
            try await filesystem.mount(device: loops[0], at: root + "/origin", type: "xfs", options: [])
            try await filesystem.mount(device: loops[1], at: root + "/clone", type: "xfs", options: [])
            #expect(try await filesystem.mounts(under: root).count == 2)
            try await filesystem.unmount(path: root + "/clone")
            try await filesystem.unmount(path: root + "/origin")
        }
    }
}
