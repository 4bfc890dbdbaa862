import ArgumentParser
import FoundationEssentials
import Glibc
import VolumePlugin

/// One request to the plugin: HTTP/1.1 over its unix socket, the answer read until the plugin closes. Blocking, for
/// a short-lived command (no Swift concurrency runs here); the plugin's error comes back as the thrown message.
struct PluginSocket {
    let path: String
    /// How long the plugin may take: a frozen snapshot waits for DigitalOcean.
    var timeout = timeval(tv_sec: 150, tv_usec: 0)

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    func call<Answer: Decodable>(_ method: VolumeDriverController.Method, _ request: some Encodable) throws -> Answer {
        let body = try JSONEncoder().encode(request)
        let head = "POST /\(method.rawValue) HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        let reply = try exchange(Array(head.utf8) + Array(body))
        guard let split = reply.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw Failure(description: "the plugin at \(path) gave no answer")
        }
        let status = String(decoding: reply[..<split.lowerBound], as: UTF8.self).split(separator: " ").dropFirst().first ?? ""
        let payload = Data(reply[split.upperBound...])
        if let err = try? JSONDecoder().decode(ErrorAnswer.self, from: payload), let message = err.message, !message.isEmpty {
            throw Failure(description: message)
        }
        guard status == "200" else {
            throw Failure(description: "the plugin answered HTTP \(status): \(String(decoding: payload.prefix(300), as: UTF8.self))")
        }
        do {
            return try JSONDecoder().decode(Answer.self, from: payload)
        } catch {
            throw Failure(description: "unexpected answer from the plugin: \(error)")
        }
    }

    private func exchange(_ request: [UInt8]) throws -> [UInt8] {
        let fd: Int32
        switch UnixSocket.connect(path) {
        case .success(let connected): fd = connected
        case .failure(let error): throw Failure(description: "cannot reach the plugin at \(path): \(error.reason)")
        }
        defer { close(fd) }
        var limit = timeout
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var offset = 0
        while offset < request.count {
            let sent = request[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw Failure(description: "cannot write to the plugin: \(String(cString: strerror(errno)))") }
            offset += sent
        }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return reply }
            guard count > 0 else {
                throw Failure(description: "no answer from the plugin: \(String(cString: strerror(errno)))")
            }
            reply += buffer[0..<count]
            guard reply.count <= 16 << 20 else { throw Failure(description: "the plugin's answer is too large") }
        }
    }
}

/// The plugin's `{"Err": "..."}`.
struct ErrorAnswer: Decodable {
    var message: String?
    enum CodingKeys: String, CodingKey { case message = "Err" }
}
