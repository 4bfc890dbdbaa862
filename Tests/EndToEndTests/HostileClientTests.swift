import Foundation
import Glibc
import HostDevices
import Testing
import TestSupport
import VolumePlugin

/// Hostile clients on the plugin's real socket: connections that stall in the middle of a request, one that sends
/// its request a byte at a time, and bodies past the 1 MiB the plugin reads. Docker's own requests keep being
/// answered, every hostile request that completes gets a JSON answer, and memory stays bounded.
@Suite(.serialized, .timeLimit(.minutes(5)), .enabled(if: E2E.available, "needs root and udev; CI sets DO_STORAGE_E2E=1"))
struct HostileClientTests {
    @Test func slowAndOversizedClientsNeitherStallThePluginNorGrowItsMemory() async throws {
        try await Lab.withPgdataOnOneDroplet(environment: ["LOG_LEVEL": "error"]) { _, plugin in
            let residentBefore = try Self.residentMB(plugin.pid)

            // 200 connections that stop half-way through a request, and stay open.
            var stalled: [RawConnection] = []
            defer { for connection in stalled { connection.close() } }
            for index in 0..<200 {
                let connection = try RawConnection(path: plugin.socket)
                let head = index % 2 == 0
                    ? "POST /VolumeDriver.Get HTTP/1.1\r\nHost: plugin\r\nContent-Length: 100\r\n\r\n{\"Na"
                    : "POST /VolumeDriver.Mou"
                try connection.send(Array(head.utf8))
                stalled.append(connection)
            }
            // Docker's requests are answered meanwhile, and a Mount works.
            let get = try await plugin.call("VolumeDriver.Get", #"{"Name":"pgdata"}"#)
            #expect((get["Volume"] as? [String: Any])?["Name"] as? String == "pgdata")
            let mountpoint = try await plugin.mount("pgdata", id: "c1")
            #expect(Lab.isMounted(mountpoint))

            // A request sent a byte every 10 ms is answered once it is whole.
            let trickle = try RawConnection(path: plugin.socket)
            defer { trickle.close() }
            let body = #"{"Name":"pgdata"}"#
            let request = "POST /VolumeDriver.Path HTTP/1.1\r\nHost: plugin\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            for byte in request.utf8 {
                try trickle.send([byte])
                try await Task.sleep(for: .milliseconds(10))
            }
            let answer = try trickle.receiveResponse()
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
            let answerBody = answer.components(separatedBy: "\r\n\r\n").last ?? ""
            let object = try JSONSerialization.jsonObject(with: Data(answerBody.utf8)) as? [String: Any]
            #expect(object?["Mountpoint"] as? String == mountpoint, "\(answer)")

            // 100 bodies of 2 MiB, past what the plugin reads: each refused with a JSON error, none kept in memory.
            let huge = Array("{\"Name\":\"".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 2 << 20) + Array("\"}".utf8)
            for _ in 0..<100 {
                let connection = try RawConnection(path: plugin.socket)
                defer { connection.close() }
                try connection.send(Array("POST /VolumeDriver.Create HTTP/1.1\r\nHost: plugin\r\nContent-Length: \(huge.count)\r\n\r\n".utf8))
                // The plugin may answer and close before reading it all: a refused write is fine.
                try? connection.send(huge)
                let response = try connection.receiveResponse()
                #expect(response.contains("\"Err\":\""), "\(response.prefix(300))")
                #expect(!response.contains("\"Err\":\"\""))
            }
            let residentAfter = try Self.residentMB(plugin.pid)
            #expect(residentAfter - residentBefore < 32, "resident memory grew from \(residentBefore) to \(residentAfter) MB")

            // Still serving, with the mount intact.
            try await plugin.unmount("pgdata", id: "c1")
            #expect(!Lab.isMounted(mountpoint))
        }
    }

    static func residentMB(_ pid: Int32) throws -> Double {
        let status = try ProcFile.read("/proc/\(pid)/status")
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kilobytes = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { throw LabError("no VmRSS for \(pid)") }
        return kilobytes / 1024
    }
}
