/// Durations read from text: settings, command-line options, and servers' headers. No text can make a conversion
/// overflow: numbers beyond `Duration.longestReadable` are read as it.
extension Duration {
    /// The longest duration read from text: 10⁹ seconds (about 31 years).
    public static let longestReadable: Duration = .seconds(1_000_000_000)

    /// `seconds` as a duration; nil when it is not a number (NaN). Negative is zero; past `limit` (+∞ too) is `limit`.
    public static func clamped(seconds: Double, to limit: Duration = .longestReadable) -> Duration? {
        guard !seconds.isNaN else { return nil }
        if seconds <= 0 { return .zero }
        if seconds >= limit.seconds { return limit }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }

    /// Reads `30` (seconds), `30s`, `500ms`, `2m`, `1h` or `1d`. Nil when the text is none of these, or negative, or not
    /// finite. A value past `longestReadable` is read as it, so callers compare against their own limits.
    public init?(parsing text: String) {
        let text = text.trimmedWhitespace
        let units: [(suffix: String, scale: Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400), ("", 1)]
        for unit in units where text.hasSuffix(unit.suffix) {
            let number = text.dropLast(unit.suffix.count).trimmedWhitespace
            if let value = Double(number), value >= 0, value.isFinite, let duration = Self.clamped(seconds: value * unit.scale) {
                self = duration
                return
            }
        }
        return nil
    }
}

/// Small text helpers, so the plugin needs only FoundationEssentials (no CharacterSet).
extension StringProtocol {
    /// Without leading and trailing white space (spaces, tabs, line breaks including "\r\n").
    public var trimmedWhitespace: String {
        guard let first = firstIndex(where: { !$0.isWhitespace }), let last = lastIndex(where: { !$0.isWhitespace }) else {
            return ""
        }
        return String(self[first...last])
    }
}
