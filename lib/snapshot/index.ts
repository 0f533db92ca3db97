/**
 * The snapshot format (docs/snapshot.md): the manifest, the state codec,
 * the x86 and arm64 hypervisor components' shapes, the CPU compatibility rule, and
 * the folder that holds them. No hypervisor or VM code here: lib/vm takes
 * the state from a paused VM and gives it to a fresh one.
 */
export { cpuIncompatibility, cpuVendor } from './cpu-compat';
export { decodeState, encodeState, stateFromJson, stateToJson } from './codec';
export { DEVICES_FILE, HYPERVISOR_FILE, ramFileName, readSnapshotFolder, writeSnapshotFolder, type SnapshotContents, type SnapshotDescription, type SnapshotParts } from './folder';
export { MANIFEST_FILE, parseManifest, serializeManifest, SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_VERSION, type SnapshotFile, type SnapshotManifest, type SnapshotMemoryRegion } from './manifest';
export { checkX86PartitionState } from './x86-state';
export { checkArm64PartitionState } from './arm64-state';
