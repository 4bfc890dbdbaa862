import FoundationEssentials
import Glibc

/// The plugin's open file descriptors, kept out of its children: a child that outlived a killed plugin (a stuck
/// mkfs, a crash reporter) and held its listening socket would make every restart think the plugin still runs.
/// SwiftNIO opens its sockets without close-on-exec, so the plugin marks every descriptor it has.
public enum Descriptors {
    /// Marks every open descriptor above standard error close-on-exec. Cheap (one directory read): called once the
    /// socket listens, and before every program the plugin runs.
    public static func closeOnExec() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for fd in entries.compactMap(Int32.init) where fd > 2 {
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 && flags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }
}
