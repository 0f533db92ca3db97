/**
 * nodevmm's public surface: create and script VMs, the lower-level
 * partition API, the pure format modules, and the error classes.
 */
export * from './errors';
export { createVm, restoreVm, Vm, type CustomLoader, type VmEvents } from './vm/vm';
export type { RestoreOverrides } from './vm/snapshot';
export { readSnapshotFolder, SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_VERSION, type SnapshotContents, type SnapshotManifest, type SnapshotFile, type SnapshotMemoryRegion } from './snapshot/index';
export type { X86PartitionState, X86VcpuState, X86VmState, X86CpuidEntry } from './hv/x86-state';
export { resolveVmConfig, parseSize, DEFAULTS, type VmConfig, type ResolvedVmConfig, type ComPort, type BootProtocol, type VsockConfig, type NetConfig, type UserNetConfig, type PortForwardConfig, type DiskConfig } from './vm/config';
export { VsockStream, VsockServer, VMADDR_CID_HOST } from './vm/vsock-stream';
export type { StopReason, StopReasonKind, VmState } from './vm/lifecycle';
export { EXIT_CODES } from './vm/lifecycle';
export { commitOverlay, type CommitOptions, type CommitResult } from './vm/kept-overlay';
export { SerialPort, type ExpectOptions, type ExpectMatch } from './vm/serial-port';
export type { ExecOptions, ExecResult } from './vm/exec';
export type { Partition, VirtualProcessor, VcpuStop, PartitionStats, RamOptions, X86Partition, X86VirtualProcessor, Arm64Partition, PartitionIo } from './hv/partition';
export { openHypervisor, type Hypervisor } from './hv/hypervisor';
export { IoBus, type IoRegistrationOptions, type ShadowBlock } from './hv/io-bus';
export { GuestMemory, type GuestMemoryAccess, type GuestRamRange } from './memory/guest-memory';
export type { IoDevice, IrqLine, ByteSink } from './devices/types';
export { CpioWriter } from './initramfs/cpio';
export { buildInitramfs, buildTestInitramfs, buildShellInitramfs } from './initramfs/initramfs';
export { parseIgvm } from './igvm/parse';
export { inspectIgvm, formatIgvmSummary } from './igvm/inspect';
export { buildLinuxDirectIgvm } from './loader/igvm/linux-direct';
export { buildX86AcpiTables } from './acpi/x86-tables';
export { loadLinuxDirectX86 } from './loader/linux-direct';
export { KVM_IDENTITY_MAP_START, KVM_TSS_START, ramRangesFor, type RamRange } from './arch/x86_64/layout';
export { FdtWriter } from './fdt/writer';
export { parseFdt } from './fdt/reader';
