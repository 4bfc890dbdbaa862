import DigitalOcean
import Testing
import Timekeeping

@Suite(.timeLimit(.minutes(5))) struct TextTests {
    @Test(arguments: [("  7\r\n", "7"), ("\tnyc1\n", "nyc1"), ("", ""), (" \r\n ", ""), ("a b", "a b")])
    func trimming(text: String, expected: String) {
        #expect(text.trimmedWhitespace == expected)
    }

    @Test func percentEncodingKeepsOnlyUnreservedCharacters() {
        #expect("pg-data_1.~".percentEncodedQueryValue == "pg-data_1.~")
        #expect("a b&c=d/é".percentEncodedQueryValue == "a%20b%26c%3Dd%2F%C3%A9")
    }
}
