// swift-tools-version: 6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "do-storage",
    platforms: [.macOS(.v15)],
    // The one product shipped: the plugin's binary. The simulator (do-sim) and the benchmark (do-storage-bench) are
    // built by name for the tests, the demo and `make bench` (`swift build --product do-sim`), never shipped.
    products: [
        .executable(name: "do-storage", targets: ["do-storage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // Without their Foundation-based traits: the plugin links FoundationEssentials only (no ICU data), which
        // keeps its rootfs and memory small.
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: []),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2", traits: []),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
    ],
    targets: [
        // System libraries.
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(
            name: "CUdev", pkgConfig: "libudev",
            providers: [.apt(["libudev-dev"])]),
        .systemLibrary(
            name: "CBlkid", pkgConfig: "blkid",
            providers: [.apt(["libblkid-dev"])]),

        // DigitalOcean API: models, errors, the client over an HTTP-transport seam, the metadata client.
        // The time and its waits (real or virtual), deadlines, and durations read from text: for the clients and
        // the orchestration alike.
        .target(name: "Timekeeping", swiftSettings: swiftSettings),
        // The shape of the plugin's simple errors: a code to match, a message to act on.
        .target(name: "TypedErrors", swiftSettings: swiftSettings),
        .target(
            name: "DigitalOcean",
            dependencies: [
                "Timekeeping", "TypedErrors",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        // The libcurl implementation of the HTTP-transport seam.
        .target(
            name: "CurlTransport",
            dependencies: ["Timekeeping",
                "CCurl", "DigitalOcean",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        // udev device watcher, filesystem probe and mount(2).
        .target(
            name: "HostDevices",
            dependencies: [
                "CUdev", "CBlkid", "VolumeService", "TypedErrors",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ],
            swiftSettings: swiftSettings),
        // The orchestration: mount/unmount/create/remove, persisted state, the seam protocols.
        .target(
            name: "VolumeService",
            dependencies: ["Timekeeping",
                "DigitalOcean", "TypedErrors",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        // Docker's VolumeDriver wire format and routes, and the server that serves them (SwiftNIO's HTTP/1).
        .target(
            name: "VolumePlugin",
            dependencies: ["Timekeeping",
                "VolumeService",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // Configuration and assembly of the concrete parts (kept out of main so tests inject configuration).
        .target(
            name: "PluginApp",
            dependencies: ["Timekeeping",
                "VolumePlugin", "VolumeService", "DigitalOcean", "CurlTransport", "HostDevices", "TypedErrors",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "do-storage",
            dependencies: ["PluginApp", "StorageCLI"],
            swiftSettings: swiftSettings),
        // The command line (`do-storage snapshot …`): asks the running plugin over its socket.
        .target(
            name: "StorageCLI",
            dependencies: [
                "Timekeeping", "VolumePlugin", "VolumeService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),

        // ------------------------------------------------------------------------------------------------------------
        // Test-only targets, under Tests/Support and Benchmarks: what the tests, the demo and the benchmark use. None
        // of them is linked into the plugin.

        // The DigitalOcean simulator (tests, demo, benchmarks).
        .target(
            name: "DOSimulator",
            dependencies: ["Timekeeping",
                "DigitalOcean",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/Support/DOSimulator",
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "do-sim",
            dependencies: ["Timekeeping",
                "DOSimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Tests/Support/do-sim",
            swiftSettings: swiftSettings),
        // The benchmark: the orchestration over fakes and real devices, the plugin's binary, the load on its socket.
        .executableTarget(
            name: "do-storage-bench",
            dependencies: ["Timekeeping",
                "DOSimulator", "VolumeService", "VolumePlugin", "PluginApp", "DigitalOcean", "CurlTransport", "HostDevices", "TestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ],
            path: "Benchmarks/do-storage-bench",
            swiftSettings: swiftSettings),

        // Time that tests move: waits, deadlines and retries tested without waiting or measuring real time.
        .target(
            name: "TestClocks",
            dependencies: ["Timekeeping", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            path: "Tests/Support/TestClocks",
            swiftSettings: swiftSettings),
        // Fakes and harnesses shared by the test targets and the benchmark.
        .target(
            name: "TestSupport",
            dependencies: ["Timekeeping", "TestClocks",
                "DOSimulator", "VolumeService", "VolumePlugin", "DigitalOcean",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/Support/TestSupport",
            swiftSettings: swiftSettings),

        .testTarget(
            name: "DigitalOceanTests",
            dependencies: [
                "Timekeeping", "TestClocks", "DigitalOcean", "CurlTransport", "DOSimulator",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]),
        .testTarget(
            name: "VolumeServiceTests",
            dependencies: ["Timekeeping", "TestClocks",
                "VolumeService", "DigitalOcean", "DOSimulator", "TestSupport",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]),
        .testTarget(
            name: "VolumePluginTests",
            dependencies: ["Timekeeping",
                "VolumePlugin", "VolumeService", "TestSupport",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(
            name: "DOSimulatorTests",
            dependencies: ["Timekeeping", "TestClocks",
                "DOSimulator", "DigitalOcean", "CurlTransport",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "HostDevicesTests",
            dependencies: ["HostDevices", "VolumeService", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "PluginAppTests",
            dependencies: [
                "Timekeeping", "TestClocks", "TestSupport", "PluginApp", "VolumePlugin", "VolumeService", "DigitalOcean",
                "HostDevices",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // The randomized model test: operation sequences over three droplets, kills and faults, checked after every step.
        .testTarget(
            name: "ModelTests",
            dependencies: [
                "Timekeeping", "TestClocks", "TestSupport", "DOSimulator", "DigitalOcean", "VolumeService", "PluginApp",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["Timekeeping",
                "DOSimulator", "DigitalOcean", "CurlTransport", "HostDevices", "VolumeService", "VolumePlugin", "TestSupport",
                "do-storage",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Logging", package: "swift-log"),
            ]),
    ]
)
