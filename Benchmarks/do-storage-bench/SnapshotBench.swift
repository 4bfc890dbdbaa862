import ArgumentParser
import DOSimulator
import Foundation
import Synchronization
import TestSupport
import VolumeService

/// The host filesystem with a stopwatch on FIFREEZE…FITHAW: how long writers on the volume were blocked.
final class FreezeStopwatch: HostFilesystem {
    let inner: any HostFilesystem
    private let state = Mutex<(started: ContinuousClock.Instant?, windows: [Duration])>((nil, []))

    init(_ inner: any HostFilesystem) { self.inner = inner }

    /// Every freeze window so far, oldest first: from before FIFREEZE to after FITHAW.
    var windows: [Duration] { state.withLock { $0.windows } }

    func freeze(mountpoint: String) async throws {
        state.withLock { $0.started = ContinuousClock.now }
        try await inner.freeze(mountpoint: mountpoint)
    }

    func thaw(mountpoint: String) async throws {
        try await inner.thaw(mountpoint: mountpoint)
        let ended = ContinuousClock.now
        state.withLock {
            if let started = $0.started { $0.windows.append(ended - started) }
            $0.started = nil
        }
    }

    func filesystemType(device: String) async throws -> String? { try await inner.filesystemType(device: device) }
    func mounts(under root: String) async throws -> [MountEntry] { try await inner.mounts(under: root) }
    func mount(device: String, at path: String, type: String, options: [MountOption]) async throws {
        try await inner.mount(device: device, at: path, type: type, options: options)
    }
    func unmount(path: String) async throws { try await inner.unmount(path: path) }
    func checkBlank(device: String) async throws -> BlankCheck { try await inner.checkBlank(device: device) }
    func format(device: String, type: FilesystemType, label: String?) async throws {
        try await inner.format(device: device, type: type, label: label)
    }
    func sizes(device: String) async throws -> (device: UInt64, filesystem: UInt64?) { try await inner.sizes(device: device) }
    func grow(device: String, type: FilesystemType, mountpoint: String?) async throws {
        try await inner.grow(device: device, type: type, mountpoint: mountpoint)
    }
    func prepareDirectory(_ path: String, uid: UInt32?, gid: UInt32?, mode: UInt32?) async throws {
        try await inner.prepareDirectory(path, uid: uid, gid: gid, mode: mode)
    }
}

extension Bench {
    /// Snapshots of a mounted volume: the freeze window beyond the simulator's own time for the snapshot request,
    /// then DigitalOcean calls per scheduled snapshot once retention deletes one each time.
    func measureSnapshots(
        world: SimulatorWorld, server: SimulatorServer, service: VolumeService, freezes: FreezeStopwatch,
        clock: MovableWallClock
    ) async throws {
        let name = "snapshot-bench"
        let keep = 3
        try await service.create(name: name, options: ["size": "1", "snapshot_every": "1h", "snapshot_keep": "last:\(keep)"])
        _ = try await service.mount(name: name, id: "bench")
        var beyond: [Double] = []
        for index in 0..<snapshots {
            let before = freezes.windows.count
            _ = try await service.createSnapshot(volume: name, name: "manual-\(index)")
            guard freezes.windows.count == before + 1, let window = freezes.windows.last,
                let simulated = await world.snapshotDurations.last
            else { throw ValidationError("the snapshot of a mounted volume was not frozen") }
            beyond.append((window - simulated).milliseconds)
            try await service.deleteSnapshot(volume: name, snapshot: "manual-\(index)")
        }
        var calls: [Int] = []
        var frozen = 0
        for _ in 0..<max(snapshots, keep + 2) {
            clock.move(by: .seconds(3600))
            server.clearRecorded()
            let before = freezes.windows.count
            await service.snapshotSchedulesOnce()
            frozen += freezes.windows.count - before
            calls.append(server.recorded.count)
        }
        let kept = try await service.listSnapshots(volume: name).count
        guard kept == keep else { throw ValidationError("retention kept \(kept) scheduled snapshots, not \(keep)") }
        try await service.unmount(name: name, id: "bench")

        beyond.sort()
        let steady = Array(calls.dropFirst(keep))
        print(String(format: "freeze window of a consistent snapshot beyond the simulator's %d ms snapshot time (%@): median %.1f ms, p90 %.1f ms, max %.1f ms (target <= 20 ms)",
                     snapshotLatencyMs, devices == "loop" ? "FIFREEZE on a real ext4" : "fake filesystem",
                     percentile(beyond, 0.5), percentile(beyond, 0.9), beyond.last ?? 0))
        print(String(format: "DigitalOcean calls per scheduled snapshot, keep last:%d: %d while fewer are kept, then %.1f on average, at most %d (the volume, its snapshots, the snapshot, one delete); %d of %d frozen",
                     keep, calls.first ?? 0, average(steady), steady.max() ?? 0, frozen, calls.count))
    }
}
