import Foundation
import NIOCore
import Testing
import VolumeService

@testable import VolumePlugin

/// The hand-written answers to Get, List and Path read back as the JSON they stand for, whatever the strings hold.
@Suite(.timeLimit(.minutes(5))) struct LookupAnswersTests {
    static let awkward = "a \"quoted\" \\ back/slash\nnew\tline\r\u{01}\u{1F} é 名前 🙂"

    static func parse(_ bytes: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    @Test func getCarriesEveryFieldAndStatusKey() throws {
        let created = Date(timeIntervalSince1970: 1_795_000_000)
        let info = VolumeInfo(
            name: Self.awkward, mountpoint: "/mnt/volumes/" + Self.awkward, createdAt: created,
            status: ["do_id": "abc", "last_error": Self.awkward, "mounts": "2", "": ""])
        let answer = try Self.parse(LookupAnswers.get(info))
        #expect(answer["Err"] as? String == "")
        let volume = try #require(answer["Volume"] as? [String: Any])
        #expect(volume["Name"] as? String == Self.awkward)
        #expect(volume["Mountpoint"] as? String == "/mnt/volumes/" + Self.awkward)
        #expect(volume["CreatedAt"] as? String == created.formatted(.iso8601))
        #expect(volume["Status"] as? [String: String] == info.status)
        // Keys in sorted order, as JSONEncoder's .sortedKeys writes them.
        let text = String(decoding: LookupAnswers.get(info), as: UTF8.self)
        #expect(text.hasPrefix(#"{"Err":"","Volume":{"CreatedAt":"#))
        #expect(text.contains(#""Status":{"":"","do_id":"abc","last_error":"#))
    }

    /// CreatedAt is written from the C library's calendar: the same text as Foundation's ISO 8601 format, at the
    /// edges of days, months, leap years and centuries, and with fractions of a second dropped.
    @Test(arguments: [
        0, 59.999, 951_782_400, 951_868_799.5, 1_709_164_800, 1_735_689_599, 1_795_000_000.25, 4_102_444_800, 253_402_300_799,
    ])
    func createdAtIsWhatTheISO8601FormatWrites(seconds: Double) throws {
        let created = Date(timeIntervalSince1970: seconds)
        let answer = try Self.parse(LookupAnswers.get(VolumeInfo(name: "v", mountpoint: "", createdAt: created)))
        let volume = try #require(answer["Volume"] as? [String: Any])
        #expect(volume["CreatedAt"] as? String == created.formatted(.iso8601))
    }

    @Test func listLeavesOutTheDetailsAndPathIsTheMountpoint() throws {
        let volumes = [
            VolumeInfo(name: "a", mountpoint: "", createdAt: Date(), status: ["x": "y"]),
            VolumeInfo(name: Self.awkward, mountpoint: "/m", createdAt: nil),
        ]
        let answer = try Self.parse(LookupAnswers.list(volumes))
        let listed = try #require(answer["Volumes"] as? [[String: String]])
        #expect(listed == [["Name": "a", "Mountpoint": ""], ["Name": Self.awkward, "Mountpoint": "/m"]])
        #expect(try Self.parse(LookupAnswers.list([]))["Volumes"] as? [Any] != nil)
        let path = try Self.parse(LookupAnswers.mountpoint(Self.awkward))
        #expect(path as? [String: String] == ["Err": "", "Mountpoint": Self.awkward])
    }

    /// The body the engine sends to Get and Path is read without JSONDecoder; every body read that way reads as
    /// JSONDecoder reads it, and any other goes to JSONDecoder.
    @Test(arguments: [
        (#"{"Name":"pgdata"}"#, "pgdata"), (#"{"Name":"a.b_c-9"}"#, "a.b_c-9"), (#"{"Name":""}"#, ""),
        (#"{"Name":"a\"b"}"#, nil), (#"{"Name":"a","ID":"b"}"#, nil), (#"{"Name":"x"} "#, nil), (#"{ "Name":"x"}"#, nil),
        (#"{"Name":"é"}"#, nil), (#"{"Name":"x\u0041"}"#, nil), ("{}", nil), ("", nil),
    ] as [(String, String?)])
    func thePlainNameBodyReadsAsJSONDecoderReadsIt(body: String, plain: String?) throws {
        let read = VolumeDriverController.NameRequest.plain(ByteBuffer(string: body))
        #expect(read?.name == plain)
        if let read {
            let decoded = try JSONDecoder().decode(VolumeDriverController.NameRequest.self, from: Data(body.utf8))
            #expect(decoded.name == read.name)
        }
    }
}
