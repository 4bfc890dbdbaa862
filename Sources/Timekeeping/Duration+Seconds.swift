extension Duration {
    /// The duration in (fractional) seconds.
    public var seconds: Double {
        let (s, attos) = components
        return Double(s) + Double(attos) / 1e18
    }

    /// The duration in (fractional) milliseconds.
    public var milliseconds: Double { seconds * 1000 }
}
