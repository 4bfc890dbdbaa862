/// The scopes a DigitalOcean custom-scoped token needs for each call the plugin makes, as DigitalOcean's OpenAPI
/// document gives them per operation. A token without one gets 403 for that call; the error names the scope.
public enum TokenScopes {
    /// One call: its method, its path with `{}` for each parameter, and the scope it needs.
    public struct Call: Sendable, Equatable {
        public var method: String
        public var path: String
        public var scope: String
    }

    /// Every call of `DOClient`, and the one scope each needs.
    public static let calls: [Call] = [
        Call(method: "GET", path: "/v2/volumes", scope: "block_storage:read"),
        Call(method: "POST", path: "/v2/volumes", scope: "block_storage:create"),
        Call(method: "GET", path: "/v2/volumes/{}", scope: "block_storage:read"),
        Call(method: "DELETE", path: "/v2/volumes/{}", scope: "block_storage:delete"),
        Call(method: "POST", path: "/v2/volumes/{}/actions", scope: "block_storage_action:create"),
        Call(method: "GET", path: "/v2/volumes/{}/actions/{}", scope: "block_storage_action:read"),
        Call(method: "GET", path: "/v2/droplets/{}", scope: "droplet:read"),
        Call(method: "POST", path: "/v2/volumes/{}/snapshots", scope: "block_storage_snapshot:create"),
        Call(method: "GET", path: "/v2/volumes/{}/snapshots", scope: "block_storage_snapshot:read"),
        Call(method: "GET", path: "/v2/volumes/snapshots/{}", scope: "block_storage_snapshot:read"),
        Call(method: "DELETE", path: "/v2/volumes/snapshots/{}", scope: "block_storage_snapshot:delete"),
        Call(method: "GET", path: "/v2/snapshots", scope: "snapshot:read"),
        Call(method: "POST", path: "/v2/tags", scope: "tag:create"),
        Call(method: "POST", path: "/v2/tags/{}/resources", scope: "tag:create"),
        Call(method: "DELETE", path: "/v2/tags/{}/resources", scope: "tag:delete"),
        Call(method: "DELETE", path: "/v2/tags/{}", scope: "tag:delete"),
    ]

    /// The call an operation (`GET /v2/volumes/0b1c…`) is, if it is one of `calls`.
    ///
    /// - Parameter operation: A method and a concrete path, as `DOError.operation` holds them.
    /// - Returns: The call, with its template and scope; nil for a path the plugin does not call.
    public static func call(for operation: String) -> Call? {
        let parts = operation.split(separator: " ", maxSplits: 1)
        guard parts.count == 2 else { return nil }
        let path = parts[1].split(separator: "?", maxSplits: 1).first ?? ""
        let segments = path.split(separator: "/")
        return calls.first { call in
            let template = call.path.split(separator: "/")
            return call.method == parts[0] && template.count == segments.count
                && zip(template, segments).allSatisfy { $0 == "{}" || $0 == $1 }
        }
    }
}
