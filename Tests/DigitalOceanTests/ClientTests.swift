import CurlTransport
import DOSimulator
import DigitalOcean
import Foundation
import Logging
import NIOConcurrencyHelpers
import TestClocks
import Testing
import Timekeeping

/// The DigitalOcean client over libcurl against the simulator on loopback: real HTTP, real faults, counted requests.
@Suite(.timeLimit(.minutes(5))) struct ClientTests {
    static let token = "dop_v1_secret-token-value-0123456789"

    struct Lab {
        let server: SimulatorServer
        let running: RunningSimulator
        let client: DOClient
        let clock: ImmediateTime
        let root: String
    }

    /// A simulator, and a client whose waits return at once (the backoff is recorded, not slept).
    func withLab(
        retry: RetryPolicy = RetryPolicy(), options: (inout SimulatorOptions) -> Void = { _ in },
        _ body: (Lab) async throws -> Void
    ) async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("do-client-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        var simOptions = SimulatorOptions(token: Self.token, actionLatency: .milliseconds(20))
        options(&simOptions)
        let world = SimulatorWorld(options: simOptions, devices: FileDeviceBackend(dataDirectory: root + "/data"))
        try await world.addDroplet(id: 1001, deviceDirectory: root + "/d1")
        let server = SimulatorServer(world: world)
        let running = try await server.start()
        let record = ImmediateTime()
        let client = DOClient(
            baseURL: running.apiURL, token: Self.token, transport: CurlTransport(), retry: retry, time: record.timeSource,
            logger: Logger(label: "test"))
        do {
            try await body(Lab(server: server, running: running, client: client, clock: record, root: root))
        } catch {
            await running.stop()
            throw error
        }
        await running.stop()
    }

    @Test func createListGetAttachDetach() async throws {
        try await withLab { lab in
            let created = try await lab.client.createVolume(
                VolumeCreateRequest(name: "pgdata", sizeGigabytes: 1, region: "nyc1", filesystemType: "ext4"))
            let found = try await lab.client.volumes(named: "pgdata", region: "nyc1")
            #expect(found.map(\.id) == [created.id])
            #expect(found.first?.filesystemType == "ext4")
            var action = try await lab.client.attach(volumeID: created.id, dropletID: 1001, region: "nyc1")
            #expect(action.status == .inProgress)
            #expect(action.type == "attach_volume")
            let deadline = ContinuousClock.now + .seconds(10)
            while action.status == .inProgress {
                try #require(ContinuousClock.now < deadline, "the attach action still in progress after 10 s")
                try await Task.sleep(for: .milliseconds(10))
                action = try await lab.client.action(volumeID: created.id, actionID: action.id)
            }
            #expect(action.status == .completed)
            #expect(try await lab.client.volume(id: created.id).dropletIDs == [1001])
            #expect(try await lab.client.droplet(id: 1001).volumeIDs == [created.id])
            let detach = try await lab.client.detach(volumeID: created.id, dropletID: 1001, region: "nyc1")
            #expect(detach.type == "detach_volume")
        }
    }

    @Test func listFollowsEveryPage() async throws {
        try await withLab { lab in
            for index in 0..<205 {
                _ = try await lab.server.world.createVolume(
                    VolumeCreateRequest(name: "v\(index)", sizeGigabytes: 1, region: "nyc1"))
            }
            lab.server.clearRecorded()
            let all = try await lab.client.volumes(region: "nyc1")
            #expect(all.count == 205)
            #expect(Set(all.map(\.name)).count == 205)
            #expect(lab.server.count(method: "GET") == 2, "200 per page: two pages")
        }
    }

    @Test func errorsCarryDigitalOceansMessageAndAdvice() async throws {
        try await withLab { lab in
            let created = try await lab.client.createVolume(VolumeCreateRequest(name: "pgdata", sizeGigabytes: 1, region: "nyc1"))
            let conflict = await #expect(throws: DOError.self) {
                try await lab.client.createVolume(VolumeCreateRequest(name: "pgdata", sizeGigabytes: 1, region: "nyc1"))
            }
            #expect(conflict?.code == .conflict)
            #expect(conflict?.message.contains("already exists") == true)
            let invalid = await #expect(throws: DOError.self) {
                try await lab.client.createVolume(VolumeCreateRequest(name: "Bad_Name", sizeGigabytes: 1, region: "nyc1"))
            }
            #expect(invalid?.message == "failed to create volume: invalid volume name. names must be lowercase and alphanumeric")
            let missing = await #expect(throws: DOError.self) { try await lab.client.volume(id: "nope") }
            #expect(missing?.code == .notFound)
            #expect(created.dropletIDs.isEmpty)
        }
    }

    @Test func detachingAnUnattachedVolumeIsAttachmentNotFound() async throws {
        try await withLab { lab in
            let created = try await lab.client.createVolume(VolumeCreateRequest(name: "pgdata", sizeGigabytes: 1, region: "nyc1"))
            let error = await #expect(throws: DOError.self) {
                try await lab.client.detach(volumeID: created.id, dropletID: 1001, region: "nyc1")
            }
            #expect(error?.reason == .attachmentNotFound)
            #expect(lab.server.count(method: "POST") == 2, "a 422 is not retried")
        }
    }

    @Test func badTokenIsUnauthorizedWithAdviceAndNoToken() async throws {
        try await withLab { lab in
            let wrong = DOClient(
                baseURL: lab.running.apiURL, token: "dop_v1_wrong-secret", transport: CurlTransport(),
                logger: Logger(label: "test"))
            let error = await #expect(throws: DOError.self) { try await wrong.volumes(named: "x", region: "nyc1") }
            #expect(error?.code == .unauthorized)
            #expect(error?.description.contains("ACCESS_TOKEN") == true)
            #expect(error?.description.contains("wrong-secret") == false)
            #expect(lab.server.count() == 1, "401 is not retried")
        }
    }

    @Test func tooManyRequestsHonoursRetryAfter() async throws {
        try await withLab { lab in
            lab.server.inject(Fault(.tooManyRequests(retryAfter: 7), count: 1))
            _ = try await lab.client.volumes(named: "pgdata", region: "nyc1")
            #expect(lab.server.count() == 2)
            #expect(lab.clock.sleeps == [.seconds(7)])
        }
    }

    /// Absurd rate-limit headers never crash the client: a wait past the deadline fails the call at once, a value
    /// that is not a number falls back to the backoff.
    @Test(arguments: [
        (["retry-after": "inf"], false), (["retry-after": "1e19"], false), (["retry-after": "nan", "ratelimit-reset": "0"], true),
        (["retry-after": "-5"], true), (["ratelimit-reset": "1e19"], false), (["ratelimit-reset": "inf"], false),
        (["ratelimit-reset": "nan"], true), (["ratelimit-reset": "-1e300"], true),
    ])
    func absurdRateLimitHeadersAreClamped(headers: [String: String], retried: Bool) async throws {
        try await withLab { lab in
            lab.server.inject(Fault(.tooManyRequestsWithHeaders(headers), count: 1))
            if retried {
                _ = try await lab.client.volumes(named: "pgdata", region: "nyc1")
                #expect(lab.server.count() == 2)
                #expect(lab.clock.sleeps.count == 1 && lab.clock.sleeps[0] <= RetryPolicy().maxBackoff)
            } else {
                let error = await #expect(throws: DOError.self) { try await lab.client.volumes(named: "pgdata", region: "nyc1") }
                #expect(error?.code == .rateLimited)
                #expect(lab.server.count() == 1, "no wait past the deadline, no retry")
                #expect(lab.clock.sleeps.isEmpty)
            }
        }
    }

    /// A response body or header block larger than the transport accepts fails the call without being kept or
    /// retried.
    @Test func oversizedResponsesAreRefused() async throws {
        try await withLab { lab in
            lab.server.inject(Fault(.oversizedBody(bytes: 16 << 20), count: 1))
            let error = await #expect(throws: DOError.self) { try await lab.client.volumes(named: "pgdata", region: "nyc1") }
            #expect(error?.code == .invalidResponse)
            #expect(error?.message.contains("exceeded 4194304 bytes") == true, "\(String(describing: error))")
            #expect(lab.server.count() == 1, "not retried")
            // Within the limit, the same kind of answer is read.
            lab.server.inject(Fault(.oversizedBody(bytes: 1 << 20), count: 1))
            let read = try await lab.client.volumes(named: "pgdata", region: "nyc1")
            #expect(read.isEmpty)
            lab.server.inject(Fault(.tooManyRequestsWithHeaders(["x-padding": String(repeating: "y", count: 100_000)]), count: 1))
            let headers = await #expect(throws: DOError.self) { try await lab.client.volumes(named: "pgdata", region: "nyc1") }
            #expect(headers?.message.contains("headers exceeded") == true, "\(String(describing: headers))")
        }
    }

    /// A task's deadline (a Mount's) bounds the call: none is sent once it has passed, and a slow answer is cut
    /// off by it rather than by the longer attempt timeout.
    @Test func aTasksDeadlineBoundsTheCall() async throws {
        try await withLab { lab in
            let passed = await #expect(throws: DOError.self) {
                try await Deadline.$current.withValue(ContinuousClock.now - .seconds(1)) {
                    try await lab.client.volumes(named: "pgdata", region: "nyc1")
                }
            }
            #expect(passed?.code == .deadlineExceeded)
            #expect(lab.server.count() == 0, "nothing sent")
        }
        // A slow answer is cut off by the task's deadline: the attempt's timeout is what is left of it (300 ms),
        // not the 15 s attempt timeout. Read on the transport, on a clock that does not move by itself.
        let time = TestTime()
        let transport = RecordingTransport()
        let client = DOClient(
            baseURL: "http://127.0.0.1:9", token: Self.token, transport: transport, retry: RetryPolicy(), time: time.timeSource,
            logger: Logger(label: "test"))
        _ = try await Deadline.$current.withValue(time.timeSource.now() + .milliseconds(300)) {
            try await client.volumes(named: "pgdata", region: "nyc1")
        }
        #expect(transport.timeouts == [.milliseconds(300)])
    }

    /// 1,000 hostile answers (malformed JSON, wrong types, huge, missing or deeply nested fields, absurd headers,
    /// unexpected statuses) to every call the plugin makes: each ends in a value or a DOError, never a crash, and
    /// the client keeps working.
    @Test func hostileResponsesEndInAValueOrAnError() async throws {
        // The simulator's own rate limit stays out of the way of this many requests.
        try await withLab(options: { $0.requestsPerMinute = 1 << 30; $0.requestsPerHour = 1 << 30 }) { lab in
            let created = try await lab.client.createVolume(VolumeCreateRequest(name: "pgdata", sizeGigabytes: 1, region: "nyc1"))
            var random = SystemRandomNumberGenerator()
            let volumeJSON = #"{"id":"x","name":"n","region":{"slug":"nyc1"},"size_gigabytes":1,"created_at":"t"}"#
            let bodies: [String] = [
                "", "{", "null", "[]", "{}", #"{"volumes":"x"}"#, #"{"volumes":[{"id":5}]}"#, #"{"volume":{"id":null}}"#,
                #"{"volume":\#(volumeJSON)}"#, #"{"volumes":[\#(volumeJSON)],"links":{},"meta":{"total":-1}}"#,
                #"{"action":{"id":"seven","status":"done"}}"#, #"{"action":{"id":1e400}}"#, #"{"droplet":{"id":[]}}"#,
                #"{"id":"not_found","message":null}"#, "\u{FEFF}{}", "\u{0}\u{1}\u{2}",
                #"{"volume":{"name":""# + String(repeating: "n", count: 200_000) + #""}}"#,
                String(repeating: "[", count: 1000) + String(repeating: "]", count: 1000),
                String(repeating: #"{"a":"#, count: 600) + "1" + String(repeating: "}", count: 600),
            ]
            let statuses = [200, 201, 202, 204, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 302, 418]
            let headerSets: [[String: String]] = [
                [:], ["retry-after": "inf"], ["retry-after": "-1"], ["ratelimit-reset": "1e308"],
                ["ratelimit-remaining": "lots"], ["retry-after": "99999999999999999999"],
            ]
            var values = 0
            var errors = 0
            var others: [String] = []
            for _ in 0..<1000 {
                lab.server.inject(Fault(
                    .raw(
                        status: statuses.randomElement(using: &random)!, headers: headerSets.randomElement(using: &random)!,
                        body: Array(bodies.randomElement(using: &random)!.utf8)),
                    count: 1))
                do {
                    switch Int.random(in: 0..<5, using: &random) {
                    case 0: _ = try await lab.client.volumes(named: "pgdata", region: "nyc1")
                    case 1: _ = try await lab.client.volume(id: created.id)
                    case 2: _ = try await lab.client.action(volumeID: created.id, actionID: 1)
                    case 3: _ = try await lab.client.droplet(id: 1001)
                    default: _ = try await lab.client.createVolume(VolumeCreateRequest(name: "other", sizeGigabytes: 1, region: "nyc1"))
                    }
                    values += 1
                } catch is DOError {
                    errors += 1
                } catch {
                    others.append("\(error)")
                }
            }
            print("hostile DigitalOcean answers: 1000 — \(values) read as values, \(errors) as DOError, \(others.count) otherwise")
            #expect(others.isEmpty, "every failure is a DOError: \(others.prefix(3))")
            #expect(values > 0 && errors > 0, "both kinds of answer were met")
            #expect(try await lab.client.volume(id: created.id).id == created.id, "still working")
        }
    }

    @Test func rateLimitBudgetAnswers429WithHeaders() async throws {
        try await withLab(options: { $0.requestsPerMinute = 3 }) { lab in
            for _ in 0..<3 { _ = try await lab.client.volumes(named: "x", region: "nyc1") }
            let limited = lab.server.recorded.last!
            #expect(limited.responseHeaders["ratelimit-limit"] == "5000")
            #expect(limited.responseHeaders["ratelimit-remaining"] == "4997")
            #expect(Int(limited.responseHeaders["ratelimit-reset"] ?? "") ?? 0 > Int(Date().timeIntervalSince1970))
            // The 4th request within the minute is refused; the client waits as told, within its deadline.
            let error = await #expect(throws: DOError.self) { try await lab.client.volumes(named: "x", region: "nyc1") }
            #expect(error?.code == .rateLimited)
            #expect(lab.server.recorded.last?.status == 429)
            #expect(lab.server.recorded.last?.responseHeaders["retry-after"] != nil)
            #expect(lab.server.count() <= 3 + 1 + RetryPolicy().maxRetries)
        }
    }

    @Test func burstOf500sIsRetriedWithBackoff() async throws {
        try await withLab { lab in
            lab.server.inject(Fault(.status(500), count: 3))
            _ = try await lab.client.volumes(named: "pgdata", region: "nyc1")
            #expect(lab.server.count() == 4)
            #expect(lab.clock.sleeps == [.milliseconds(500), .seconds(1), .seconds(2)])
        }
    }

    @Test func persistent503GivesUpAfterMaxRetries() async throws {
        try await withLab { lab in
            lab.server.inject(Fault(.status(503), count: 100))
            let error = await #expect(throws: DOError.self) { try await lab.client.volumes(named: "pgdata", region: "nyc1") }
            #expect(error?.code == .server)
            #expect(lab.server.count() == 5, "one try and four retries, no storm")
        }
    }

    @Test func notImplementedIsNotRetried() async throws {
        try await withLab { lab in
            lab.server.inject(Fault(.status(501), count: 1))
            await #expect(throws: DOError.self) { try await lab.client.volumes(named: "pgdata", region: "nyc1") }
            #expect(lab.server.count() == 1)
        }
    }

    @Test func resetConnectionIsRetried() async throws {
        try await withLab { lab in
            lab.server.inject(Fault(.reset, count: 2))
            let volumes = try await lab.client.volumes(named: "pgdata", region: "nyc1")
            #expect(volumes.isEmpty)
            #expect(lab.server.count() == 3)
        }
    }

    @Test func retriedAttachAfterLostResponseReadsAlreadyAttached() async throws {
        try await withLab { lab in
            let created = try await lab.client.createVolume(VolumeCreateRequest(name: "pgdata", sizeGigabytes: 1, region: "nyc1"))
            _ = try await lab.client.attach(volumeID: created.id, dropletID: 1001, region: "nyc1")
            let deadline = ContinuousClock.now + .seconds(30)
            while try await lab.client.volume(id: created.id).dropletIDs.isEmpty {
                try #require(ContinuousClock.now < deadline, "the attach did not complete within 30 s")
                try await Task.sleep(for: .milliseconds(10))
            }
            let error = await #expect(throws: DOError.self) {
                try await lab.client.attach(volumeID: created.id, dropletID: 1001, region: "nyc1")
            }
            #expect(error?.reason == .alreadyAttached)
        }
    }

    @Test func slowResponsesTimeOutAndTheDeadlineHolds() async throws {
        let retry = RetryPolicy(maxRetries: 10, attemptTimeout: .milliseconds(200), deadline: .seconds(2))
        try await withLab(retry: retry) { lab in
            lab.server.inject(Fault(.slow(.seconds(1)), count: 100))
            let error = await #expect(throws: DOError.self) { try await lab.client.volumes(named: "pgdata", region: "nyc1") }
            #expect(error?.code == .transport)
            #expect(error?.message.contains("imeout") == true || error?.message.contains("timed out") == true)
            #expect(lab.server.count() < 10, "the deadline stops the retries")
        }
    }

    @Test func connectionRefusedIsATransportError() async throws {
        let client = DOClient(
            baseURL: "http://127.0.0.1:9", token: Self.token, transport: CurlTransport(),
            retry: RetryPolicy(maxRetries: 1, initialBackoff: .milliseconds(1)), logger: Logger(label: "test"))
        let error = await #expect(throws: DOError.self) { try await client.volumes(named: "x", region: "nyc1") }
        #expect(error?.code == .transport)
        #expect(error?.description.contains(Self.token) == false)
    }

    @Test func metadataServiceGivesDropletIdentity() async throws {
        try await withLab { lab in
            let identity = try await MetadataClient(
                baseURL: lab.running.metadataURL(droplet: 1001), transport: CurlTransport()
            ).identity()
            #expect(identity == DropletIdentity(id: 1001, region: "nyc1"))
            let missing = MetadataClient(
                baseURL: lab.running.metadataURL(droplet: 9999), transport: CurlTransport(), time: ImmediateTime().timeSource)
            let error = await #expect(throws: MetadataError.self) { try await missing.identity() }
            #expect(error?.code == .unreachable && error?.message.contains("DROPLET_ID") == true)
        }
    }
}

/// Answers every request with an empty volume list at once, noting the timeout each was sent with.
final class RecordingTransport: HTTPTransport {
    private let recorded = NIOLockedValueBox<[Duration]>([])
    var timeouts: [Duration] { recorded.withLockedValue { $0 } }

    func send(_ request: TransportRequest) async throws -> TransportResponse {
        recorded.withLockedValue { $0.append(request.timeout) }
        return TransportResponse(status: 200, body: Array(#"{"volumes":[],"links":{},"meta":{"total":0}}"#.utf8))
    }
}

extension ClientTests {
    /// The hourly budget refuses with 429 and `ratelimit-reset`, without `Retry-After` (only the per-minute burst
    /// limit sends that): the client does not retry past its deadline and says when the budget frees up.
    @Test func theHourlyLimitSaysWhenItFreesUp() async throws {
        try await withLab(options: { $0.requestsPerHour = 3 }) { lab in
            for _ in 0..<3 { _ = try await lab.client.volumes(named: "x", region: "nyc1") }
            let error = await #expect(throws: DOError.self) { try await lab.client.volumes(named: "x", region: "nyc1") }
            #expect(error?.code == .rateLimited)
            let refused = lab.server.recorded.last
            #expect(refused?.status == 429)
            #expect(refused?.responseHeaders["retry-after"] == nil)
            #expect(refused?.responseHeaders["ratelimit-remaining"] == "0")
            #expect(error?.description.contains("hourly API budget") == true, "\(String(describing: error))")
            #expect(error?.description.contains("frees up in about 60 minutes") == true, "\(String(describing: error))")
            #expect(lab.clock.sleeps.isEmpty, "not retried: the budget frees up past the call's deadline")
            #expect(lab.server.count() == 4)
        }
    }
}
