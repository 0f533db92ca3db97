/**
 * KVM implementation of Partition: a VM fd, its memory slots, vCPU threads
 * and the JS side of exit dispatch.
 *
 * Exit path (docs/architecture.md): a vCPU thread answers what it can
 * natively (unclaimed and constant ranges, shadowed registers, posted
 * writes); the rest lands in its mailbox and one coalesced notification
 * wakes this object's `dispatch()`, which drains posted writes, answers
 * mailboxes through the buses, and handles lifecycle events. With
 * `dispatchSpinUs` > 0 the dispatcher keeps polling the mailboxes for that
 * long after an exit, so back-to-back exits skip the event-loop wakeup.
 */
import { EventEmitter } from 'node:events';
import { GuestMemoryError, NodevmmError, VmStateError } from '../errors';
import { GuestMemory, type GuestBuffer } from '../memory/guest-memory';
import { hex } from '../util/bytes';
import { adjustCpuid } from './cpuid';
import { checkLayout, EXIT_KIND_PIO, VcpuSharedView } from './exit-mailbox';
import { IoBus, type BusRange, type ShadowBlock } from './io-bus';
import { native, nativeBinding, type CpuidEntry, type NativeBinding, type NativeEvent, type NativeGuestRam, type NativeRoute, type NativeVcpu, type NativeVm } from './native';
import type { FileIoMode, NotifyOps, PartitionStats, PendingExit, RamOptions, VcpuStop, X86Partition, X86VirtualProcessor } from './partition';
import type { X86Msr, X86Regs, X86Sregs } from './x86-state';

export type { FileIoMode } from './partition';

export interface KvmPartitionOptions {
  vcpus: number;
  /** In-kernel LAPIC/IOAPIC/PIC (KVM_CREATE_IRQCHIP). Default true. */
  irqchip?: boolean;
  /** In-kernel PIT (KVM_CREATE_PIT2). Default: same as irqchip. */
  pit?: boolean;
  /** GPA of the 3-page TSS area Intel VMX needs below 4 GiB; must not be RAM. */
  tssAddress?: number;
  /** GPA of the identity-map page Intel VMX needs for real mode; must not be RAM. */
  identityMapAddress?: number;
  /** Set the adjusted supported CPUID on every vCPU. Default true. */
  cpuid?: boolean;
  /**
   * Keep polling for the next exit this long after handling one (µs).
   * Default 32, QEMU's default adaptive-polling window (poll-max-ns): back-
   * to-back exits then skip the event-loop wakeup, which costs ~40 µs on
   * the hosts measured (docs/benchmarks.md). 0 turns polling off.
   */
  dispatchSpinUs?: number;
}

/** Where KVM's private pages go: just below the IOAPIC, inside the MMIO gap (QEMU uses the same spot). */
export const DEFAULT_TSS_ADDRESS = 0xfffbd000;
export const DEFAULT_IDENTITY_MAP_ADDRESS = 0xfffbc000;

const MAX_VCPUS = 255;
/** include/uapi/linux/kvm.h */
const KVM_CAP_TSC_DEADLINE_TIMER = 72;
/** Guest RAM of at least this size asks for transparent huge pages (native/guest_ram.cc aligns it to them). */
const HUGE_PAGE = 2 * 1024 * 1024;
/** Longest the dispatcher holds the event loop in one go before yielding (ns). */
const DISPATCH_TURN_NS = 2_000_000n;

let cpuidCache: CpuidEntry[] | undefined;
/** KVM_GET_SUPPORTED_CPUID answers the same for the life of the process: ask once. */
export function supportedCpuid(binding: NativeBinding = nativeBinding()): CpuidEntry[] {
  cpuidCache ??= native(() => binding.getSupportedCpuid());
  return cpuidCache;
}
const KVM_SYSTEM_EVENT: Record<number, VcpuStop['systemEvent']> = { 1: 'shutdown', 2: 'reset', 3: 'crash' };

class KvmVcpu implements X86VirtualProcessor {
  readonly index: number;
  readonly native: NativeVcpu;
  readonly shared: VcpuSharedView;
  stopped: VcpuStop | undefined;
  paused = true;

  constructor(index: number, nv: NativeVcpu, ringEntries: number) {
    this.index = index;
    this.native = nv;
    this.shared = new VcpuSharedView(nv.sharedBuffer(), ringEntries);
  }
  get state(): string {
    return this.native.state;
  }
  pendingExit(): PendingExit | undefined {
    const sh = this.shared;
    return sh.pending ? { kind: sh.kind === EXIT_KIND_PIO ? 'port' : 'mmio', write: !!sh.isWrite, size: sh.size, address: Number(sh.address) } : undefined;
  }
  getRegs(): X86Regs {
    return native(() => this.native.getRegs());
  }
  setRegs(regs: Partial<X86Regs>): void {
    native(() => this.native.setRegs(regs));
  }
  getSregs(): X86Sregs {
    return native(() => this.native.getSregs());
  }
  setSregs(sregs: Partial<X86Sregs>): void {
    native(() => this.native.setSregs(sregs));
  }
  getMsrs(indices: number[]): X86Msr[] {
    return native(() => this.native.getMsrs(indices));
  }
  /** Sets every MSR or throws naming the first one KVM refused. */
  setMsrs(msrs: X86Msr[]): void {
    const n = native(() => this.native.setMsrs(msrs));
    if (n !== msrs.length) {
      const bad = msrs[n]!;
      throw new NodevmmError('ERR_KVM_MSR', `kvm refused msr ${hex(bad.index)} = ${hex(bad.value)} on vcpu ${this.index}`);
    }
  }
  getMpState(): number {
    return native(() => this.native.getMpState());
  }
  setMpState(state: number): void {
    native(() => this.native.setMpState(state));
  }
  getFpu(): Uint8Array {
    return native(() => this.native.getFpu());
  }
  setFpu(fpu: Uint8Array): void {
    native(() => this.native.setFpu(fpu));
  }
  getLapic(): Uint8Array {
    return native(() => this.native.getLapic());
  }
  setLapic(l: Uint8Array): void {
    native(() => this.native.setLapic(l));
  }
  getXcrs(): { xcr: number; value: bigint }[] {
    return native(() => this.native.getXcrs());
  }
  setXcrs(x: { xcr: number; value: bigint }[]): void {
    native(() => this.native.setXcrs(x));
  }
  getVcpuEvents(): Uint8Array {
    return native(() => this.native.getVcpuEvents());
  }
  setVcpuEvents(e: Uint8Array): void {
    native(() => this.native.setVcpuEvents(e));
  }
}

type PartitionState = 'created' | 'running' | 'paused' | 'stopped' | 'destroyed';

export class KvmPartition extends EventEmitter implements X86Partition {
  readonly memory = new GuestMemory();
  readonly pio = new IoBus('pio');
  readonly mmio = new IoBus('mmio');
  readonly vcpus: KvmVcpu[] = [];
  private readonly binding: NativeBinding;
  private readonly vm: NativeVm;
  private readonly rams: NativeGuestRam[] = [];
  private readonly ramGpas: number[] = [];
  /** Fds whose filesystem refused RWF_NOWAIT: fileIo goes straight to the pool for them. */
  private readonly noNowait = new Set<number>();
  /** Each RAM's size, kept here: `GuestRam.size` is a native accessor, too slow for per-descriptor use. */
  private readonly ramSizes: number[] = [];
  private readonly ramReadonly: boolean[] = [];
  private nextSlot = 0;
  private state: PartitionState = 'created';
  private readonly control: Int32Array;
  private readonly controlU8: Uint8Array;
  private readonly controlU32: Uint32Array;
  private readonly controlDv: DataView;
  private nextShadowBlock = 0;
  private pauseWaiters: Array<() => void> = [];
  private readonly spinNs: number;
  private notifications = 0;
  private routesDirty = false;
  private readonly irqchip: boolean;
  private redispatchScheduled = false;
  private watchdog: NodeJS.Timeout | undefined;
  private lastWatchdogNotifications = -1;
  private rescues = 0;
  /** kvmclock at the moment every vCPU had paused. */
  private pausedClock: bigint | undefined;

  constructor(opts: KvmPartitionOptions) {
    super();
    if (!Number.isInteger(opts.vcpus) || opts.vcpus < 1 || opts.vcpus > MAX_VCPUS) {
      throw new NodevmmError('ERR_INVALID_ARG', `vcpu count ${opts.vcpus} must be an integer from 1 to ${MAX_VCPUS}`);
    }
    this.binding = nativeBinding();
    const layout = this.binding.layout();
    checkLayout(layout);
    this.vm = native(() => new this.binding.Vm());
    this.spinNs = Math.max(0, (opts.dispatchSpinUs ?? 32) * 1000);
    this.irqchip = opts.irqchip ?? true;
    try {
      this.control = new Int32Array(this.vm.controlBuffer());
      this.controlU8 = new Uint8Array(this.control.buffer);
      this.controlU32 = new Uint32Array(this.control.buffer);
      this.controlDv = new DataView(this.control.buffer);
      if (this.irqchip) {
        native(() => this.vm.setTssAddr(opts.tssAddress ?? DEFAULT_TSS_ADDRESS));
        native(() => this.vm.setIdentityMapAddr(opts.identityMapAddress ?? DEFAULT_IDENTITY_MAP_ADDRESS));
        native(() => this.vm.createIrqchip());
        if (opts.pit ?? true) native(() => this.vm.createPit2(0));
      }
      const cpuid = opts.cpuid ?? true ? supportedCpuid(this.binding) : undefined;
      const tscDeadline = this.irqchip && native(() => this.vm.checkExtension(KVM_CAP_TSC_DEADLINE_TIMER)) > 0;
      for (let i = 0; i < opts.vcpus; i++) {
        const nv = native(() => this.vm.createVcpu(i));
        const v = new KvmVcpu(i, nv, layout.ringEntries);
        if (cpuid) native(() => nv.setCpuid2(adjustCpuid(cpuid, i, opts.vcpus, { tscDeadline })));
        this.vcpus.push(v);
      }
      this.pio.shadowAllocator = (r) => this.allocShadow(r);
      this.mmio.shadowAllocator = (r) => this.allocShadow(r);
      this.pio.onChange = () => this.markRoutesDirty();
      this.mmio.onChange = () => this.markRoutesDirty();
      this.vm.setNotify(() => this.dispatch());
    } catch (e) {
      this.vm.destroy();
      throw e;
    }
  }

  get destroyed(): boolean {
    return this.state === 'destroyed';
  }

  /** Raw access for advanced users (irqfd, ioeventfd, GSI routing, MSI). */
  get nativeVm(): NativeVm {
    this.assertAlive('use');
    return this.vm;
  }

  private assertAlive(action: string): void {
    if (this.state === 'destroyed') throw new VmStateError(action, 'destroyed');
  }

  addRam(opts: RamOptions): void {
    this.assertAlive('add ram to');
    const { gpa, size } = opts;
    const name = opts.name ?? `ram@${hex(gpa)}`;
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(size) || gpa < 0 || size <= 0 || gpa % 4096 || size % 4096) {
      throw new NodevmmError('ERR_GUEST_MEMORY_ALIGN', `guest ram ${name} at gpa ${hex(gpa)} with size ${hex(size)} must be 4 KiB aligned and non-empty`);
    }
    if (gpa + size > 2 ** 52) throw new NodevmmError('ERR_GUEST_MEMORY_RANGE', `guest ram ${name} ends at ${hex(gpa + size)}, beyond the 52-bit guest physical address space`);
    // Overlap check before any kernel state changes.
    for (const r of this.memory.ranges()) {
      if (gpa < r.gpa + r.size && r.gpa < gpa + size) {
        throw new NodevmmError('ERR_GUEST_MEMORY_OVERLAP', `guest ram ${name} [${hex(gpa)}, ${hex(gpa + size)}) overlaps ${r.name} [${hex(r.gpa)}, ${hex(r.gpa + r.size)})`);
      }
    }
    const ram = native(() => new this.binding.GuestRam(size, { name }));
    if (opts.hugepages !== false && size >= HUGE_PAGE) {
      try {
        ram.advise('hugepage');
      } catch {
        // A host without transparent huge pages (THP "never", or not built): 4 KiB pages work too.
      }
    }
    try {
      const slot = this.nextSlot;
      native(() => this.vm.setUserMemoryRegion(slot, gpa, ram, 0, size, { readonly: !!opts.readonly }));
      this.nextSlot++;
      let at = gpa;
      const views = ram.views().map((buffer) => {
        const v = { gpa: at, buffer };
        at += buffer.byteLength;
        return v;
      });
      this.memory.addRegion({ gpa, size, readonly: !!opts.readonly, name, views });
    } catch (e) {
      ram.release();
      throw e;
    }
    this.rams.push(ram);
    this.ramGpas.push(gpa);
    this.ramSizes.push(size);
    this.ramReadonly.push(!!opts.readonly);
  }

  /**
   * Move bytes between a file and guest pages on the thread pool, with no
   * copy through JS (native/block_io.cc): 'read' fills `buffers` from the file
   * at `position` (zeros past its end), 'write' writes them there. Each
   * buffer must lie in guest RAM, writable RAM for a read. Destroying the
   * partition meanwhile waits (up to 10 s) for a transfer already running and
   * cancels one still queued (it rejects with code ECANCELED, nothing moved),
   * so a write never copies freed pages to the file. Resolves with the bytes moved.
   *
   * `how` says where the transfer runs: 'pool' (default) on libuv's thread
   * pool; 'nowait' first on this thread with RWF_NOWAIT, which succeeds when
   * the file's pages are all in the page cache, else on the pool; 'inline'
   * on this thread, for files in memory (tmpfs) that never wait for a disk.
   * The thread-pool hop costs tens of microseconds natively and ~0.7 ms per
   * request under an emulated CPU; a page-cache copy costs less.
   */
  fileIo(op: 'read' | 'write', fd: number, position: number, buffers: readonly GuestBuffer[], how: FileIoMode = 'pool'): Promise<number> {
    this.assertAlive('do disk i/o for');
    const table = this.segmentTable(op, buffers);
    const code = op === 'read' ? 0 : 1;
    if (how !== 'pool') {
      let done: number;
      try {
        done = this.transferNow(code, fd, position, table, how === 'nowait');
      } catch (e) {
        return Promise.reject(e);
      }
      if (done >= 0) return Promise.resolve(done);
    }
    return new Promise((resolve, reject) => {
      native(() => this.binding.blockIo(code, fd, position, this.rams, table, (e, bytes) => (e ? reject(e) : resolve(bytes))));
    });
  }

  /**
   * The transfer of `fileIo` done before returning, on this thread: with
   * `nowait`, only if the kernel can do it without blocking (RWF_NOWAIT);
   * without, always (for files in memory). Returns the bytes moved, or -1
   * when it would block (nothing is promised about the buffers then: redo
   * the transfer with fileIo). Errors throw.
   */
  fileIoNow(op: 'read' | 'write', fd: number, position: number, buffers: readonly GuestBuffer[], nowait: boolean): number {
    this.assertAlive('do disk i/o for');
    return this.transferNow(op === 'read' ? 0 : 1, fd, position, this.segmentTable(op, buffers), nowait);
  }

  private transferNow(code: 0 | 1, fd: number, position: number, table: Float64Array, nowait: boolean): number {
    if (nowait && this.noNowait.has(fd)) return -1;
    const done = native(() => this.binding.blockIoNow(code, fd, position, this.rams, table, nowait));
    // -2: this file cannot say whether it would block (no RWF_NOWAIT): stop asking.
    if (done === -2) this.noNowait.add(fd);
    return done < 0 ? -1 : done;
  }

  /**
   * (ram index, offset, length) triples for `buffers`; a buffer across two RAM
   * regions takes two. A 1 MiB request is ~256 buffers, and under an emulated
   * CPU every call and allocation per buffer shows in the throughput: plain
   * arrays only, one typed array sized for the common case, grown only when a
   * buffer crosses regions.
   */
  private segmentTable(op: 'read' | 'write', buffers: readonly GuestBuffer[]): Float64Array {
    const gpas = this.ramGpas;
    const sizes = this.ramSizes;
    let table = new Float64Array(buffers.length * 3);
    let n = 0;
    let i = 0; // the region of the last buffer: most requests stay in one
    for (let b = 0; b < buffers.length; b++) {
      let gpa = buffers[b]!.gpa;
      let left = buffers[b]!.length;
      while (left > 0) {
        if (!(gpa >= gpas[i]! && gpa - gpas[i]! < sizes[i]!)) i = this.ramIndexOf(gpa);
        if (i < 0) throw new GuestMemoryError(`disk ${op} at gpa ${hex(gpa)} is outside guest ram`, gpa, left);
        if (op === 'read' && this.ramReadonly[i]) throw new GuestMemoryError(`disk read at gpa ${hex(gpa)} targets read-only guest memory`, gpa, left, 'ERR_GUEST_MEMORY_READONLY');
        const offset = gpa - gpas[i]!;
        const len = Math.min(left, sizes[i]! - offset);
        if (n + 3 > table.length) {
          const grown = new Float64Array(table.length * 2 + 3);
          grown.set(table);
          table = grown;
        }
        table[n++] = i;
        table[n++] = offset;
        table[n++] = len;
        gpa += len;
        left -= len;
      }
    }
    return n < table.length ? table.subarray(0, n) : table;
  }

  /** The index of the RAM holding `gpa`, or -1. */
  private ramIndexOf(gpa: number): number {
    for (let k = 0; k < this.ramGpas.length; k++) if (gpa >= this.ramGpas[k]! && gpa - this.ramGpas[k]! < this.ramSizes[k]!) return k;
    return -1;
  }

  /** eventfds registered on this VM's fd as ioeventfds (kicks) and irqfds (interrupts). */
  notifyOps(): NotifyOps {
    const binding = this.binding;
    const vm = this.vm;
    return {
      eventfd: () => native(() => binding.eventfd(0)),
      signal: (fd) => native(() => binding.eventfdWrite(fd, 1)),
      close: (fd) => binding.closeFd(fd),
      ioeventfd: (fd, address, length, datamatch, assign) => native(() => vm.ioeventfd(fd, address, length, { datamatch, deassign: !assign })),
      irqfd: (fd, gsi, assign) => native(() => vm.irqfd(fd, gsi, { deassign: !assign })),
    };
  }

  /** fdatasync(2) on the thread pool. */
  fileSync(fd: number): Promise<void> {
    return new Promise((resolve, reject) => {
      native(() => this.binding.blockIo(2, fd, 0, [], new Float64Array(0), (e) => (e ? reject(e) : resolve())));
    });
  }

  /** Each RAM region with its address in this process and its memfd (for vhost and vhost-user, which work on those). */
  ramMappings(): Array<{ gpa: number; size: number; hostAddress: bigint; fd: number }> {
    this.assertAlive('map the ram of');
    return this.rams.map((r, i) => ({ gpa: this.ramGpas[i]!, size: r.size, hostAddress: r.hostAddress, fd: r.fd }));
  }

  setIrqLine(irq: number, level: boolean): void {
    if (this.state === 'destroyed') return;
    native(() => this.vm.irqLine(irq, level));
  }

  private allocShadow(_range: BusRange): { block: number; shadow: ShadowBlock } {
    const block = this.nextShadowBlock++;
    if ((block + 1) * 32 > 4096) throw new NodevmmError('ERR_BUS_RANGE', 'no shadow blocks left (at most 128 ranges may use shadows or posted writes)');
    const base = 128 + block * 32;
    const u8 = this.controlU8;
    const u32 = this.controlU32;
    const w = base / 4;
    return {
      block,
      shadow: {
        set: (offset, value) => {
          u8[base + offset] = value;
        },
        enable: (shadows, posting) => {
          Atomics.store(u8, base + 31, (shadows ? 1 : 0) | (posting ? 2 : 0));
        },
        word: {
          load: () => Atomics.load(u32, w),
          store: (v) => void Atomics.store(u32, w, v),
          or: (bits) => void Atomics.or(u32, w, bits),
          and: (mask) => void Atomics.and(u32, w, mask),
        },
      },
    };
  }

  private markRoutesDirty(): void {
    this.routesDirty = true;
    if (this.state !== 'created') this.flushRoutes();
  }

  private flushRoutes(): void {
    if (!this.routesDirty || this.state === 'destroyed') return;
    this.routesDirty = false;
    const routes: NativeRoute[] = [];
    for (const [bus, kind] of [[this.pio, 1], [this.mmio, 2]] as const) {
      for (const r of bus.list()) {
        const mask = (offs: number[]) => offs.reduce((m, o) => m | (1 << o), 0);
        routes.push({
          kind,
          start: r.start,
          end: r.start + r.length,
          mode: r.constant !== undefined ? 1 : 0,
          postedMask: r.shadowBlock !== undefined ? mask(r.posted) : 0,
          shadowMask: r.shadowBlock !== undefined ? mask(r.shadowed) : 0,
          shadowOffset: (r.shadowBlock ?? 0) * 32,
          readValue: r.constant ?? 0xffffffff,
          ...(r.shadowBlock !== undefined && r.interruptStatus ? { isrRead: r.interruptStatus.read, isrAck: r.interruptStatus.ack } : {}),
        });
      }
    }
    native(() => this.vm.setRoutes(routes));
  }

  start(): void {
    if (this.state !== 'created') throw new VmStateError('start', this.state);
    this.routesDirty = true;
    this.flushRoutes();
    for (const v of this.vcpus) native(() => v.native.start());
    this.state = 'paused';
    this.resume();
  }

  resume(): void {
    if (this.state === 'running') return;
    if (this.state !== 'paused') throw new VmStateError('resume', this.state);
    this.state = 'running';
    // Restart the guest clock where the pause stopped it, so a paused guest
    // does not see time jump forward by the length of the pause (QEMU does the same).
    if (this.pausedClock !== undefined && this.irqchip) native(() => this.vm.setClock(this.pausedClock!));
    this.pausedClock = undefined;
    this.vm.ref();
    this.watchdog ??= setInterval(() => this.watchdogTick(), 50).unref();
    for (const v of this.vcpus) {
      if (v.stopped) continue;
      v.paused = false;
      v.native.resume();
    }
  }

  pause(): Promise<void> {
    // A pause still on its way resolves together with the one in flight.
    if (this.state === 'paused' && this.pauseWaiters.length) return new Promise<void>((resolve) => this.pauseWaiters.push(resolve));
    if (this.state === 'paused' || this.state === 'stopped') return Promise.resolve();
    if (this.state !== 'running') return Promise.reject(new VmStateError('pause', this.state));
    this.state = 'paused';
    const p = new Promise<void>((resolve) => this.pauseWaiters.push(resolve));
    for (const v of this.vcpus) if (!v.stopped) v.native.pause();
    this.checkPaused();
    return p;
  }

  private stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
  }

  private checkPaused(): void {
    if (this.vcpus.every((v) => v.paused || v.stopped)) {
      this.stopWatchdog();
      if (this.state === 'paused' && this.pausedClock === undefined && this.irqchip && this.pauseWaiters.length) {
        this.pausedClock = native(() => this.vm.getClock());
      }
      if (this.state === 'paused' || this.state === 'stopped') this.vm.unref();
      const w = this.pauseWaiters;
      this.pauseWaiters = [];
      for (const f of w) f();
    }
  }

  stats(): PartitionStats {
    const s: PartitionStats = { exitsToJs: 0n, exitsNative: 0n, exitsPosted: 0n, unclaimedReads: 0n, unclaimedWrites: 0n, notifications: this.notifications, rescues: this.rescues };
    if (this.state === 'destroyed') return s;
    for (const v of this.vcpus) {
      s.exitsToJs += v.shared.exitsToJs;
      s.exitsNative += v.shared.exitsNative;
      s.exitsPosted += v.shared.exitsPosted;
    }
    s.unclaimedReads = this.controlDv.getBigUint64(64, true) + BigInt(this.pio.unclaimedReads + this.mmio.unclaimedReads);
    s.unclaimedWrites = this.controlDv.getBigUint64(72, true) + BigInt(this.pio.unclaimedWrites + this.mmio.unclaimedWrites);
    return s;
  }

  /**
   * Runs on the JS thread for every (coalesced) notification from the vCPU
   * threads. The "notification pending" flag stays set while we poll, so
   * vCPUs skip the cross-thread wakeup entirely during a burst; it is
   * cleared only when we go idle, followed by one last look so an exit
   * posted just before the clear is never stranded.
   */
  private dispatch(): void {
    if (this.state === 'destroyed') return;
    this.redispatchScheduled = false;
    this.notifications++;
    const turnEnd = process.hrtime.bigint() + DISPATCH_TURN_NS;
    try {
      for (;;) {
        if (this.serviceVcpus() && this.spinNs > 0) this.poll(turnEnd);
        if (process.hrtime.bigint() >= turnEnd) {
          // A guest that exits without pause must not starve the event loop
          // (timers, I/O, other VMs): yield, and come back on the next turn.
          // The notify flag stays set, so the vCPUs send no wakeups meanwhile.
          this.scheduleRedispatch();
          break;
        }
        // A device handler may have destroyed the partition (vm.kill() from
        // a listener): the control block is gone then, and so is the work.
        if (this.destroyed) return;
        Atomics.store(this.control, 0, 0);
        if (!this.serviceVcpus()) break;
      }
      if (this.destroyed) return;
      if (Atomics.load(this.control, 1) !== 0) this.handleEvents(this.vm.takeEvents());
    } catch (e) {
      this.hostError(e as Error);
    }
  }

  /**
   * Safety net against a lost wakeup: while running, every 50 ms check for
   * work the vCPUs left (a pending exit, queued posted writes, a raised
   * notify flag) that no dispatch has picked up since the last check, and
   * dispatch it. `stats().rescues` counts how often that was needed.
   */
  private watchdogTick(): void {
    if (this.state !== 'running') return;
    const waiting = Atomics.load(this.control, 0) !== 0 || this.vcpus.some((v) => v.shared.pending || v.shared.postedQueued());
    if (waiting && this.notifications === this.lastWatchdogNotifications) {
      this.rescues++;
      this.dispatch();
    }
    this.lastWatchdogNotifications = this.notifications;
  }

  private scheduleRedispatch(): void {
    if (this.redispatchScheduled) return;
    this.redispatchScheduled = true;
    setImmediate(() => this.dispatch());
  }

  /** Keep answering exits until none arrives for spinNs (adaptive polling), at most until turnEnd. */
  private poll(turnEnd: bigint): void {
    let now = process.hrtime.bigint();
    let deadline = now + BigInt(this.spinNs);
    let iter = 0;
    while (!this.destroyed) {
      if (this.serviceVcpus()) {
        now = process.hrtime.bigint();
        if (now >= turnEnd) return;
        deadline = now + BigInt(this.spinNs);
        continue;
      }
      if (Atomics.load(this.control, 1) !== 0) return; // lifecycle events need the caller
      if ((++iter & 63) === 0) {
        now = process.hrtime.bigint();
        if (now > deadline || now >= turnEnd) return;
      }
    }
  }

  /** Posted writes first (they happened before any pending read), then mailboxes. */
  private serviceVcpus(): boolean {
    let handled = false;
    for (const v of this.vcpus) {
      // Every device call below may destroy the partition: after that no
      // device of it may run again, and the exits left are aborted natively.
      if (this.destroyed) return handled;
      const sh = v.shared;
      if (sh.drainPosted((kind, address, size, value) => this.destroyed || (kind === EXIT_KIND_PIO ? this.pio : this.mmio).write(address, size, value)) > 0) handled = true;
      if (this.destroyed) return handled;
      if (sh.pending) {
        const bus = sh.kind === EXIT_KIND_PIO ? this.pio : this.mmio;
        if (sh.isWrite) bus.write(sh.address, sh.size, sh.data);
        else sh.setReadResult(bus.read(sh.address, sh.size));
        // Answer from JS; only a vCPU that went to sleep needs the native wake.
        if (sh.complete()) v.native.completeExit();
        handled = true;
      }
    }
    return handled;
  }

  private handleEvents(events: NativeEvent[]): void {
    for (const ev of events) {
      const v = this.vcpus[ev.vcpu];
      if (!v) continue;
      if (ev.type === 'paused') {
        // A "paused" that arrives after a resume() belongs to the pause that resume cancelled.
        if (this.state === 'paused') v.paused = true;
      } else if (ev.type === 'exited' && ev.exit) {
        v.stopped = this.describeStop(v, ev);
        this.emit('vcpu-stop', v.stopped);
      }
    }
    if (this.vcpus.every((v) => v.stopped)) {
      this.state = 'stopped';
      this.vm.unref();
    }
    this.checkPaused();
  }

  private describeStop(v: KvmVcpu, ev: NativeEvent): VcpuStop {
    const x = ev.exit!;
    const base = { vcpu: v.index, detail: x.detail };
    let rip: bigint | undefined;
    let bytes: Uint8Array | undefined;
    try {
      const regs = v.getRegs();
      const sregs = v.getSregs();
      rip = regs.rip;
      const t = v.native.translate(sregs.cs.base + regs.rip);
      if (t.valid && this.memory.isRam(Number(t.gpa), 15)) bytes = this.memory.read(Number(t.gpa), 15);
    } catch {
      // registers are best effort: the vCPU may be in a state KVM won't report
    }
    const at = rip !== undefined ? ` at rip ${hex(rip)}` : '';
    const withRip = (s: VcpuStop): VcpuStop => {
      if (rip !== undefined) s.rip = rip;
      if (bytes) s.instructionBytes = bytes;
      return s;
    };
    switch (x.type) {
      case 'hlt':
        return withRip({ ...base, kind: 'hlt', message: `vcpu ${v.index} halted${at}` });
      case 'shutdown':
        return withRip({ ...base, kind: 'triple-fault', message: `vcpu ${v.index} triple-faulted${at}` });
      case 'system-event': {
        const se = KVM_SYSTEM_EVENT[x.subtype] ?? 'other';
        return withRip({ ...base, kind: 'system-event', systemEvent: se, message: `vcpu ${v.index} raised system event ${se}` });
      }
      case 'fail-entry':
        return withRip({ ...base, kind: 'fail-entry', message: `kvm could not enter vcpu ${v.index}: hardware entry failure reason ${hex(x.detail[0] ?? 0n)}` });
      case 'internal-error': {
        const what = x.subtype === 1 ? 'instruction emulation failed' : x.subtype === 0xffff ? `KVM_RUN failed with errno ${x.detail[0]}` : `kvm internal error (suberror ${x.subtype})`;
        const ib = bytes ? ` (instruction bytes ${Buffer.from(bytes).toString('hex').replace(/(..)/g, '$1 ').trim()})` : '';
        return withRip({ ...base, kind: 'internal-error', suberror: x.subtype, message: `vcpu ${v.index}: ${what}${at}${ib}` });
      }
      case 'debug':
        return withRip({ ...base, kind: 'debug', message: `vcpu ${v.index} stopped for a debug exception${at}` });
      default:
        return withRip({ ...base, kind: 'unknown', message: `vcpu ${v.index} stopped with unhandled kvm exit reason ${x.rawReason}${at}` });
    }
  }

  reportHostError(error: Error): void {
    this.hostError(error);
  }

  /** A device model threw while handling a guest access: that is a host bug, so stop the VM. */
  private hostError(error: Error): void {
    // Destroyed meanwhile (a handler killed the VM, then something threw): the destroy stands.
    if (this.state === 'destroyed') return;
    let first: VcpuStop | undefined;
    for (const v of this.vcpus) {
      if (v.stopped) continue;
      v.stopped = { vcpu: v.index, kind: 'host-error', message: `host error while handling a guest access: ${error.message}`, error };
      first ??= v.stopped;
    }
    // One event for the VM; none when every vCPU had already stopped (that stop was reported).
    if (first) this.emit('vcpu-stop', first);
    if (this.destroyed) return; // a 'vcpu-stop' listener destroyed the partition
    for (const v of this.vcpus) v.native.stop();
    this.state = 'stopped';
    this.vm.unref();
    this.checkPaused();
  }

  /** Stop all vCPU threads, close every fd, release guest RAM. Idempotent. */
  destroy(): void {
    if (this.state === 'destroyed') return;
    this.state = 'destroyed';
    this.stopWatchdog();
    this.vm.destroy();
    for (const r of this.rams) r.release();
    this.rams.length = 0;
    this.ramGpas.length = 0;
    this.ramSizes.length = 0;
    this.ramReadonly.length = 0;
    this.memory.invalidate();
    const w = this.pauseWaiters;
    this.pauseWaiters = [];
    for (const f of w) f();
  }
}
