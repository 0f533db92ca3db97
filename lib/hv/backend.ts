/**
 * What a hypervisor backend implements so the neutral partition core
 * (partition-core.ts) can run it: the VM's memory slots, its vCPU threads,
 * the route table and control block the threads answer exits from, the
 * queue of lifecycle events, interrupt lines and eventfd plumbing. The core
 * owns everything else (exit dispatch and polling, shadows, pause and the
 * watchdog, RAM bookkeeping and file I/O tables, stop descriptions, destroy
 * order). KVM x86 (kvm-partition.ts) and KVM arm64 (kvm-arm64-partition.ts)
 * implement it through kvm-backend.ts; docs/architecture.md draws the layers.
 */
import type { GuestMemory } from '../memory/guest-memory';
import type { VcpuSharedView } from './exit-mailbox';
import type { NotifyOps, RamOptions, VcpuStop } from './partition';
import type { Route } from './route-table';

/** Why a vCPU thread left its run loop, as the backend decoded it. */
export interface VcpuExit {
  type: 'hlt' | 'shutdown' | 'system-event' | 'fail-entry' | 'internal-error' | 'debug' | 'pio' | 'mmio' | 'unknown';
  /** The backend's own exit code (KVM: kvm_run.exit_reason). */
  rawReason: number;
  /** System-event type, internal-error suberror (0xffff: the run call itself failed). */
  subtype: number;
  detail: bigint[];
}

/** A lifecycle event a vCPU thread queued for JS. */
export interface VcpuEvent {
  vcpu: number;
  type: 'paused' | 'exited';
  exit?: VcpuExit;
}

/** One vCPU's run thread as the core drives it. */
export interface VcpuRunner {
  /** The page the thread shares with JS: exit mailbox and posted-write ring. */
  readonly shared: VcpuSharedView;
  /** Start the thread, paused. */
  start(): void;
  resume(): void;
  /** Ask for a pause; a 'paused' event says when it happened. */
  pause(): void;
  /** End the run loop for good (host error). */
  stop(): void;
  /** Wake a thread that went to sleep waiting for JS to answer its mailbox. */
  completeExit(): void;
}

/** Host memory that backs a guest RAM region. */
export interface HostRam {
  readonly size: number;
  /** Where this process maps it (for vhost). */
  readonly hostAddress: bigint;
  /** The memfd behind the mapping at offset 0 when allocated `shared` (another process may map it: vhost-user); -1 otherwise and once released. */
  readonly fd: number;
  /** One ArrayBuffer over [offset, offset+length) of the RAM (RamSlots makes them per piece, on first touch). */
  view(offset: number, length: number): ArrayBuffer;
  advise(what: 'hugepage'): void;
  /** Its bytes into regular file `fd` from offset 0, zero pages left as holes; returns the bytes written. */
  writeTo(fd: number): number;
  release(): void;
}

/**
 * Guest RAM a backend mapped while it made the partition, before anything
 * that makes mapping slower (KVM: the in-kernel irqchip, see
 * X86PartitionOptions.ram), in slots 0, 1, ... in this order. The core takes
 * it over (takeEarlyRam) as if addRam had made it.
 */
export interface EarlyRam {
  opts: RamOptions;
  /** Its name, as checkRamPlacement (ram-slots.ts) gave it. */
  name: string;
  ram: HostRam;
}

/** Where a stopped vCPU was, best effort, for its stop message. */
export interface StopSite {
  /** "rip 0x…" or "pc 0x…". */
  at: string;
  rip?: bigint;
  /** Up to 15 bytes at the instruction pointer. */
  instructionBytes?: Uint8Array;
}

/** What `PartitionBackend.allocateRam` is asked for: the region's name, and at most one of `privateFile` (a snapshot's RAM file) and `shared` (a memfd). */
export interface RamAllocation {
  name: string;
  privateFile?: number;
  shared?: boolean;
}

export interface PartitionBackend<V = unknown> {
  /** 'kvm': names the hypervisor in messages. */
  readonly name: string;
  /** The call a vCPU thread enters the guest with ('KVM_RUN'), for messages. */
  readonly runCall: string;
  /** The public vCPU objects (register access), index order. */
  readonly vcpus: readonly V[];
  /** Each vCPU's run thread, same order. */
  readonly runners: readonly VcpuRunner[];
  /** The control block (layout: exit-mailbox.ts ControlBlock). */
  readonly control: ArrayBuffer;
  /** The guest's clock, frozen across a pause when the backend has one (x86 kvmclock). */
  readonly clock: { get(): bigint; set(ns: bigint): void } | undefined;

  /** The RAM mapped while the partition was made (once: later calls return none); none if the backend maps nothing early. */
  takeEarlyRam?(): EarlyRam[];
  /**
   * Fresh zeroed RAM (private to this process unless `shared`: then other processes can map it
   * through `fd`), or `privateFile`'s bytes mapped copy-on-write (not shareable: `fd` is -1).
   */
  allocateRam(size: number, opts: RamAllocation): HostRam;
  /**
   * Map `ram` at `gpa` in memory slot `slot`. A backend may finish the mapping in the
   * background and return a Promise for it; the vCPUs then start only once it is done.
   * `restored`: the RAM holds a snapshot's memory (`privateFile`), which a restore's saved
   * state refers to right after: map it before returning.
   */
  mapRam(slot: number, gpa: number, ram: HostRam, readonly: boolean, restored: boolean): void | Promise<void>;
  /** native/block_io.cc's transfer on the thread pool: op 0 read, 1 write, 2 fdatasync; `segments` as (ram index, offset, length). */
  transfer(op: 0 | 1 | 2, fd: number, position: number, rams: readonly HostRam[], segments: Float64Array, done: (error: Error | null, bytes: number) => void): void;
  /** The same read or write on this thread; -1: would block, -2: the file cannot promise not to. */
  transferNow(op: 0 | 1, fd: number, position: number, rams: readonly HostRam[], segments: Float64Array, nowait: boolean): number;

  setRoutes(routes: Route[]): void;
  /** `fn` runs on the JS thread for every coalesced vCPU notification. */
  onNotify(fn: () => void): void;
  takeEvents(): VcpuEvent[];
  irqLine(irq: number, level: boolean): void;
  notifyOps(): NotifyOps;
  /** Keep the event loop alive (vCPUs running) or not. */
  ref(): void;
  unref(): void;
  /** Best effort: never throws. */
  stopSite(vcpu: number, memory: GuestMemory): StopSite | undefined;
  /** What a 'system-event' exit's subtype asks for. */
  systemEvent(subtype: number): NonNullable<VcpuStop['systemEvent']>;
  /** Stop and join every vCPU thread (aborting the exits they wait on), close the VM. RAM stays the core's. */
  destroy(): void;
}
