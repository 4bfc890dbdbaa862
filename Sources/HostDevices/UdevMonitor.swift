import CUdev
import FoundationEssentials
import Glibc
import Logging
import NIOPosix
import VolumeService

/// Listens to udev's block-device events on a thread of its own (the receive blocks) and fires `signal` on each.
///
/// Pair it with `SignalDeviceWatcher` and `BlockDevice.resolve` to wait for `/dev/disk/by-id/...` links. The thread
/// ends with `stop()` or when the monitor is released (so a plugin whose start-up fails and is retried does not
/// gather threads); the C handles are released with the last reference.
public final class UdevMonitor: Sendable {
    public let signal = EventSignal()
    private let monitor: MonitorHandle
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let logger: Logger
    private let thread: NIOThreadPool

    public init(logger: Logger) throws {
        self.logger = logger
        let monitor = try MonitorHandle()
        self.monitor = monitor
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw DeviceError(.udev, "cannot create a pipe: \(String(cString: strerror(errno)))") }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        if !UdevMonitor.udevLooksActive() {
            logger.warning(
                "udev does not look active: libudev will deliver no device events, devices are found by a slower re-check",
                metadata: ["hint": "bind the host's /dev and /run/udev into the plugin"])
        }
        // A thread of its own: the loop blocks in poll(2) for as long as the plugin runs.
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        thread.submit { [monitor, signal, wakeRead, logger] state in
            // Released before the thread took the loop up: the pool hands it over cancelled, on another thread.
            guard case .active = state else {
                close(wakeRead)
                return
            }
            UdevMonitor.run(monitor: monitor, signal: signal, wakeFD: wakeRead, logger: logger)
        }
        self.thread = thread
    }

    deinit {
        stop()
        close(wakeWrite)
        // The loop has been told to return; the pool's thread then exits.
        thread.shutdownGracefully { _ in }
    }

    /// Ends the monitor thread.
    public func stop() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// The name of the monitor's thread, as `/proc/self/task/*/comm` shows it.
    public static let threadName = "udev-monitor"

    private static func run(monitor: MonitorHandle, signal: EventSignal, wakeFD: Int32, logger: Logger) {
        nameThisThread(threadName)
        var fds = [
            pollfd(fd: monitor.fileDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            let ready = poll(&fds, 2, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                logger.error("udev monitor poll failed", metadata: ["error": "\(String(cString: strerror(errno)))"])
                return
            }
            if fds[1].revents != 0 {
                close(wakeFD)
                return
            }
            if fds[0].revents & Int16(POLLIN) != 0 {
                if let event = monitor.receive() {
                    logger.debug(
                        "udev event",
                        metadata: ["udev.action": "\(event.action)", "device.path": "\(event.devnode)"])
                }
                signal.fire()
            }
        }
    }

    /// Names the calling thread (what `ps -L` and /proc show); best effort.
    private static func nameThisThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = name.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        close(fd)
    }

    /// systemd's libudev disables a udev monitor when neither holds (see the README's troubleshooting).
    static func udevLooksActive() -> Bool {
        if FileManager.default.fileExists(atPath: "/run/udev/control") { return true }
        guard let mounts = try? ProcFile.read("/proc/self/mounts") else { return false }
        return mounts.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[1] == "/dev" && fields[2] == "devtmpfs"
        }
    }
}

/// Owns a `udev` context and a `udev_monitor` on the "udev" netlink group, filtered to block devices.
final class MonitorHandle: @unchecked Sendable {
    private let udev: OpaquePointer
    private let monitor: OpaquePointer
    let fileDescriptor: Int32

    init() throws {
        guard let udev = udev_new() else { throw DeviceError(.udev, "libudev: udev_new failed") }
        guard let monitor = udev_monitor_new_from_netlink(udev, "udev") else {
            udev_unref(udev)
            throw DeviceError(.udev, "libudev: cannot open the udev netlink monitor (is the plugin on the host network?)")
        }
        udev_monitor_filter_add_match_subsystem_devtype(monitor, "block", nil)
        guard udev_monitor_enable_receiving(monitor) >= 0 else {
            udev_monitor_unref(monitor)
            udev_unref(udev)
            throw DeviceError(.udev, "libudev: cannot listen for device events")
        }
        self.udev = udev
        self.monitor = monitor
        self.fileDescriptor = udev_monitor_get_fd(monitor)
    }

    deinit {
        udev_monitor_unref(monitor)
        udev_unref(udev)
    }

    /// Reads one pending event. Called only from the monitor thread.
    func receive() -> (action: String, devnode: String)? {
        guard let device = udev_monitor_receive_device(monitor) else { return nil }
        defer { udev_device_unref(device) }
        let action = udev_device_get_action(device).map { String(cString: $0) } ?? ""
        let devnode = udev_device_get_devnode(device).map { String(cString: $0) } ?? ""
        return (action, devnode)
    }
}

/// Resolving a device link to a block device node.
public enum BlockDevice {
    /// The block device node `path` leads to, or nil when it is missing or not a block device.
    ///
    /// udev's links are relative to the folder it made them in (`/dev/disk/by-id/scsi-0DO_Volume_x -> ../../sda`),
    /// and kernel device nodes sit directly in /dev. The managed plugin sees the host's /dev/disk mounted elsewhere,
    /// where `../../sda` leads nowhere, so a relative link names the node in /dev by its last component.
    ///
    /// - Parameter path: A link under /dev/disk, or a device node.
    /// - Returns: The block device node; nil when the path leads to none.
    public static func resolve(_ path: String) -> String? {
        var candidate = path
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink(path, &buffer, buffer.count - 1)
        if length > 0 {
            let target = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if !target.hasPrefix("/"), let name = target.split(separator: "/").last {
                candidate = "/dev/" + name
            }
        }
        guard let resolved = realpath(candidate, nil) else { return nil }
        defer { free(resolved) }
        var info = stat()
        guard stat(resolved, &info) == 0, (info.st_mode & S_IFMT) == S_IFBLK else { return nil }
        return String(cString: resolved)
    }
}

/// The production `DeviceWatching`: udev events drive the waits, and a watched link counts as present once it
/// resolves to a block device. Owns its monitor, which runs for as long as this value is kept.
public struct UdevDeviceWatcher: DeviceWatching {
    public let monitor: UdevMonitor
    private let watcher: SignalDeviceWatcher

    public init(logger: Logger) throws {
        monitor = try UdevMonitor(logger: logger)
        watcher = SignalDeviceWatcher(signal: monitor.signal, logger: logger) { BlockDevice.resolve($0) }
    }

    public func watch(path: String) -> any DeviceWatch {
        watcher.watch(path: path)
    }

    public var eventCount: UInt64 { watcher.eventCount }

    public func nextEvent(after count: UInt64) async -> UInt64 { await watcher.nextEvent(after: count) }
}
