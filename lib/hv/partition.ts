/**
 * The hypervisor-neutral contract the VM layer programs against.
 * `openHypervisor()` (hypervisor.ts) hands out partitions; each is the
 * neutral core (partition-core.ts) with one backend plugged in (backend.ts:
 * KVM x86_64 and KVM arm64 today, a Windows Hypervisor Platform backend
 * later), so callers never change.
 */
import type { EventEmitter } from 'node:events';
import type { GuestBuffer, GuestMemory } from '../memory/guest-memory';
import type { Arm64CoreReg, Arm64CoreRegs } from './arm64-regs';
import type { Arm64PartitionState } from './arm64-state';
import type { IoBus } from './io-bus';
import type { X86CpuidEntry, X86Msr, X86PartitionState, X86Regs, X86Sregs } from './x86-state';

/**
 * eventfds and their registrations with the partition: a guest write to an
 * address signals an eventfd (ioeventfd), an eventfd raises a GSI (irqfd).
 * Devices that are served off the main thread (vhost, queue notifiers) use them.
 */
export interface NotifyOps {
  eventfd(): number;
  signal(fd: number): void;
  close(fd: number): void;
  ioeventfd(fd: number, address: number, length: number, datamatch: number, assign: boolean): void;
  irqfd(fd: number, gsi: number, assign: boolean): void;
  /** Read (and so reset) an eventfd's counter: the kicks since the last drain, 0 when none. */
  drain(fd: number): number;
  /** Call `onReadable` on the event loop while `fd` is readable (never keeps the process alive); `onReadable(errnoName)` on a poll error. */
  watch(fd: number, onReadable: (error?: string) => void): { close(): void };
}

/** Why a vCPU left its run loop for good. */
export interface VcpuStop {
  vcpu: number;
  kind: 'hlt' | 'triple-fault' | 'system-event' | 'fail-entry' | 'internal-error' | 'debug' | 'unknown' | 'host-error';
  message: string;
  /** For system events: what the guest asked for. */
  systemEvent?: 'shutdown' | 'reset' | 'crash' | 'other';
  rip?: bigint;
  /** Up to 15 bytes at RIP, when they could be read (emulation failures). */
  instructionBytes?: Uint8Array;
  suberror?: number;
  detail?: bigint[];
  error?: Error;
}

export interface RamOptions {
  gpa: number;
  size: number;
  readonly?: boolean;
  name?: string;
  /**
   * Ask for transparent huge pages (MADV_HUGEPAGE; default true), as QEMU
   * does for guest RAM: fewer nested-page faults and TLB misses for the
   * guest. Honoured where the host's THP mode allows it.
   */
  hugepages?: boolean;
  /**
   * Start from this open regular file's first `size` bytes instead of
   * zeros (a snapshot's memory), mapped copy-on-write (MAP_PRIVATE): the
   * pages are read on first touch and copied only when the guest writes
   * them, so mapping costs the same for any size and several partitions
   * share the pages none of them wrote. Such RAM has no shareable fd
   * (`ramMappings()[i].fd` is -1: no vhost-user device can map it). The
   * caller may close the fd afterwards; the file must not change while mapped.
   */
  privateFile?: number;
  /**
   * Back the region with a memfd mapped shared (`ramMappings()[i].fd`), which
   * another process can map: what a vhost-user device (virtio-fs's
   * virtiofsd) needs. Default false: private anonymous memory with no fd,
   * which the host backs with transparent huge pages where THP `enabled`
   * allows (a memfd is shmem and follows `shmem_enabled` instead, `never` on
   * most distributions). Not with `privateFile`. Linux only (Windows RAM
   * never has an fd).
   */
  shared?: boolean;
}

/** A vCPU of any architecture. */
export interface VirtualProcessor {
  readonly index: number;
  /** Its run thread's state ('created', 'paused', 'running', 'exited', ...). */
  readonly state: string;
}

/** An x86 vCPU as the VM layer sees it. */
export interface X86VirtualProcessor extends VirtualProcessor {
  getRegs(): X86Regs;
  setRegs(regs: Partial<X86Regs>): void;
  getSregs(): X86Sregs;
  setSregs(sregs: Partial<X86Sregs>): void;
  getMsrs(indices: number[]): X86Msr[];
  setMsrs(msrs: X86Msr[]): void;
  getMpState(): number;
  setMpState(state: number): void;
  /** The CPUID the guest sees on this vCPU. */
  getCpuid(): X86CpuidEntry[];
  /** The local APIC page (KVM_GET_LAPIC layout: 1 KiB of registers). */
  getLapic(): Uint8Array;
  /** The exit this vCPU waits on JavaScript for, if any. */
  pendingExit(): PendingExit | undefined;
}

export interface PartitionStats {
  exitsToJs: bigint;
  exitsNative: bigint;
  exitsPosted: bigint;
  unclaimedReads: bigint;
  unclaimedWrites: bigint;
  /** Dispatches started: wakeups from the vCPUs, redispatches, rescues and posted-write drains. */
  notifications: number;
  /** Of those, the timed drains of posted writes during a burst of them (exit-dispatcher.ts POSTED_DRAIN_MS). */
  postedDrains: number;
  /** Dispatches the 50 ms watchdog had to start because no wakeup arrived (should stay 0). */
  rescues: number;
  /** The dispatcher's polling window now, ns (dispatchSpinUs at most; it shrinks while polls find no exit). */
  pollWindowNs: number;
  /** The delay of the posted-write drain timer as last armed (ms; 0: never armed): POSTED_DRAIN_MS while a device's guest waits on its posted writes, else the burst's lazy delay (POSTED_DRAIN_MS doubling up to POSTED_LAZY_DRAIN_MS). */
  postedDrainMs: number;
}

export interface Partition extends EventEmitter {
  readonly memory: GuestMemory;
  readonly pio: IoBus;
  readonly mmio: IoBus;
  readonly vcpus: readonly VirtualProcessor[];
  addRam(opts: RamOptions): void;
  /**
   * Resolves once the RAM added so far is mapped for the guest; rejects with the
   * mapping's failure. A backend may map in the background (KVM does: its memory
   * slots cost milliseconds of kernel waiting); start() waits for it anyway, but
   * awaiting this first lets the event loop do other work meanwhile.
   */
  ramReady(): Promise<void>;
  /** Start every vCPU thread (paused) and let them run. */
  start(): void;
  resume(): void;
  /** Resolves once every vCPU is paused or has stopped. */
  pause(): Promise<void>;
  setIrqLine(irq: number, level: boolean): void;
  stats(): PartitionStats;
  /**
   * A device failed outside an exit (an ioeventfd kick, a timer): stop every
   * vCPU and report one `host-error` stop, as for a device that throws while
   * answering an exit. Nothing happens once the partition is destroyed.
   */
  reportHostError(error: Error): void;
  destroy(): void;
  readonly destroyed: boolean;
}

/** Where a partition's `fileIo` runs a transfer (see PartitionCore.fileIo in partition-core.ts). */
export type FileIoMode = 'pool' | 'nowait' | 'inline';

/** An exit a vCPU is waiting on JavaScript for (diagnosis). */
export interface PendingExit {
  /** 'eoi': the guest EOId a vector a userspace IOAPIC watches (address: the vector). */
  kind: 'port' | 'mmio' | 'eoi';
  write: boolean;
  size: number;
  address: number;
}

/**
 * Where an x86 partition's interrupt controllers live. 'kernel': the
 * hypervisor emulates the local APICs, the IOAPIC, the 8259 pair and the PIT
 * (KVM's in-kernel irqchip and PIT); `setIrqLine` drives the IOAPIC/PIC pins.
 * 'userspace': the hypervisor emulates only the local APICs and the caller
 * brings the IOAPIC (and PIT) as device models, which reach the local APICs
 * through the partition's `localApicBus` (KVM_CAP_SPLIT_IRQCHIP; the only
 * choice on Windows Hypervisor Platform, which has no IOAPIC, PIC or PIT).
 */
export type X86Irqchip = 'kernel' | 'userspace';

/** An x86 MSI message: address 0xFEEx_xxxx (destination), data (vector, delivery mode, trigger). */
export interface X86MsiMessage {
  address: number;
  data: number;
}

/**
 * The link between a userspace IOAPIC and the hypervisor's local APICs
 * (irqchip 'userspace'): interrupts go in as MSI messages, EOIs of the
 * vectors level-triggered pins use come back.
 */
export interface LocalApicBus {
  /** Deliver one message to the local APICs it addresses. */
  signalMsi(message: X86MsiMessage): void;
  /**
   * The message each IOAPIC pin (= GSI) sends now, undefined while masked.
   * The hypervisor learns from it which vectors are level-triggered (so their
   * EOIs reach `onEoi`) and where an irqfd on that GSI delivers.
   */
  setPinRoutes(routes: ReadonlyArray<X86MsiMessage | undefined>): void;
  /** `fn` runs on the JS thread when the guest EOIs a vector a level-triggered pin route carries, before that vCPU runs on. */
  onEoi(fn: (vector: number) => void): void;
}

export interface X86PartitionOptions {
  vcpus: number;
  /** Default 'kernel'; see X86Irqchip. */
  irqchip?: X86Irqchip;
  /**
   * Guest-physical pages below 4 GiB, outside RAM, that a hypervisor may
   * keep for itself (KVM on Intel VMX: a 3-page TSS and an identity-map
   * page). The machine's layout names them; a backend that needs none ignores them.
   */
  tssAddress: number;
  identityMapAddress: number;
  /** Adaptive exit-polling window of the dispatcher, in µs (0: off). */
  dispatchSpinUs?: number;
  /**
   * Guest RAM to add while the partition is made, as addRam would after it
   * (same checks, same order). KVM maps it before it creates the in-kernel
   * irqchip, when a memory slot costs ~0.02 ms instead of ~7.6 ms on KVM-PVM
   * (kvm-backend.ts mapEarlyRam); a restore, which cannot run before its
   * RAM is mapped, saves all of it. Other backends add it right after.
   */
  ram?: RamOptions[];
}

/** Guest-page I/O and notification plumbing the device models use. */
export interface PartitionIo {
  /** A file read or write straight to/from guest pages; resolves with the bytes moved. */
  fileIo(op: 'read' | 'write', fd: number, position: number, buffers: readonly GuestBuffer[], how?: FileIoMode): Promise<number>;
  /** The same done before returning, or -1 if it would block. */
  fileIoNow(op: 'read' | 'write', fd: number, position: number, buffers: readonly GuestBuffer[], nowait: boolean): number;
  fileSync(fd: number): Promise<void>;
  /** Each RAM region with its address in this process (for vhost) and the memfd behind it at offset 0 (for vhost-user; -1 unless added `shared`). */
  ramMappings(): Array<{ gpa: number; size: number; hostAddress: bigint; fd: number }>;
  /** eventfds and their registration with this partition (ioeventfd kicks, irqfd interrupts). */
  notifyOps(): NotifyOps;
}

export interface X86Partition extends Partition, PartitionIo {
  readonly vcpus: readonly X86VirtualProcessor[];
  /** Present with irqchip 'userspace': where a userspace IOAPIC sends its interrupts. */
  readonly localApicBus: LocalApicBus | undefined;
  /** The hypervisor's state of a paused (or never started) partition, RAM apart (KvmPartition.saveState). */
  saveState(): X86PartitionState;
  /** Put a saved state on a partition that never ran (KvmPartition.restoreState). */
  restoreState(state: X86PartitionState): void;
  /** Each RAM region into its own file, zero pages as holes (PartitionCore.writeRamTo). */
  writeRamTo(fds: readonly number[]): number;
}

export interface Arm64PartitionOptions {
  vcpus: number;
  /** GICv3 distributor base. */
  gicDistributor: number;
  /** First redistributor frame; one 128 KiB region per vCPU follows it. */
  gicRedistributor: number;
  dispatchSpinUs?: number;
}

export interface Arm64Partition extends Partition, PartitionIo {
  setCoreRegs(vcpu: number, regs: Arm64CoreRegs): void;
  /** One core register of a vCPU that is not in its run call (diagnosis). */
  getCoreReg(vcpu: number, name: Arm64CoreReg): bigint;
  /** The MPIDR the hypervisor gave a vCPU (the device tree's cpu `reg`). */
  mpidr(vcpu: number): bigint;
  /** The hypervisor's state of a paused (or never started) partition, RAM apart (KvmArm64Partition.saveState). */
  saveState(): Arm64PartitionState;
  /** Put a saved state on a partition that never ran (KvmArm64Partition.restoreState). */
  restoreState(state: Arm64PartitionState): void;
  /** Each RAM region into its own file, zero pages as holes (PartitionCore.writeRamTo). */
  writeRamTo(fds: readonly number[]): number;
}
