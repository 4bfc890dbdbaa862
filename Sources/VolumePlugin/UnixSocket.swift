import Glibc
import Timekeeping

/// The plugin's unix socket as a client reaches it: the command line, the server's check that no live plugin
/// serves the path already, and the tools that measure it.
public enum UnixSocket {
    /// The address of `path`, or nil when the path does not fit `sun_path` (107 bytes and a NUL).
    public static func address(_ path: String) -> sockaddr_un? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: bytes)
            buffer[bytes.count] = 0
        }
        return address
    }

    /// Runs `call` (bind(2) or connect(2)) with `address` as a `sockaddr`.
    public static func withSockaddr<Result>(
        _ address: sockaddr_un, _ call: (UnsafePointer<sockaddr>, socklen_t) -> Result
    ) -> Result {
        withUnsafePointer(to: address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// A stream socket connected to `path`, which the caller closes; or the reason it is not (errno's words).
    public static func connect(_ path: String) -> Swift.Result<Int32, ConnectError> {
        guard let address = address(path) else { return .failure(ConnectError(reason: "socket path too long")) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(ConnectError(reason: String(cString: strerror(errno)))) }
        guard withSockaddr(address, { Glibc.connect(fd, $0, $1) }) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            return .failure(ConnectError(reason: reason))
        }
        return .success(fd)
    }

    /// Whether a process accepts connections at `path` now (the benchmark's start-to-ready mark).
    public static func isServed(_ path: String) -> Bool {
        guard case .success(let fd) = connect(path) else { return false }
        close(fd)
        return true
    }

    /// Whether a process answers the plugin protocol at `path` within `timeout`: a running plugin does. A socket file
    /// left behind does not, and neither does a listening socket that a leftover child holds but never serves
    /// (connect(2) succeeds on it all the same). Looks for the answer every 10 ms, sleeping between looks, so no
    /// thread blocks on it.
    public static func answers(_ path: String, within timeout: Duration) async -> Bool {
        guard case .success(let fd) = connect(path) else { return false }
        defer { close(fd) }
        let request = Array("POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n".utf8)
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        guard sent == request.count else { return false }
        let deadline = ContinuousClock.now + timeout
        while true {
            var poll = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if Glibc.poll(&poll, 1, 0) == 1 {
                var byte: UInt8 = 0
                return recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) == 1
            }
            guard ContinuousClock.now < deadline, (try? await Task.sleep(for: .milliseconds(10))) != nil else { return false }
        }
    }

    public struct ConnectError: Error, Sendable {
        public let reason: String
    }
}
