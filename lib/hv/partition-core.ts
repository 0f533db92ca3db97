/**
 * The hypervisor-neutral partition: one backend (backend.ts) plugged into
 * the parts every backend shares: guest RAM and file I/O (ram-slots.ts), the
 * route table and shadows (route-table.ts), exit dispatch and its watchdog
 * (exit-dispatcher.ts), stop descriptions (stop-description.ts), and here
 * the run state every vCPU moves through (created, running, paused,
 * stopped, destroyed) and the order a destroy takes.
 */
import { EventEmitter } from 'node:events';
import { VmStateError } from '../errors';
import { GuestMemory, type GuestBuffer } from '../memory/guest-memory';
import type { PartitionBackend, VcpuEvent, VcpuRunner } from './backend';
import { ExitDispatcher, type DispatchTarget } from './exit-dispatcher';
import { ControlBlock } from './exit-mailbox';
import { IoBus } from './io-bus';
import type { FileIoMode, NotifyOps, Partition, PartitionIo, PartitionStats, RamOptions, VcpuStop, VirtualProcessor } from './partition';
import { RamSlots } from './ram-slots';
import { RouteTable } from './route-table';
import { describeStop, hostErrorStop } from './stop-description';

/**
 * How long the dispatcher keeps polling for the next exit after handling
 * one (µs): QEMU's default adaptive-polling window (poll-max-ns). Back-to-
 * back exits then skip the event-loop wakeup, which costs ~40 µs on the
 * hosts measured (docs/benchmarks.md).
 */
export const DEFAULT_DISPATCH_SPIN_US = 32;

type PartitionState = 'created' | 'running' | 'paused' | 'stopped' | 'destroyed';

export class PartitionCore<V extends VirtualProcessor, B extends PartitionBackend<V> = PartitionBackend<V>> extends EventEmitter implements Partition, PartitionIo {
  readonly memory = new GuestMemory();
  readonly pio = new IoBus('pio');
  readonly mmio = new IoBus('mmio');
  readonly vcpus: readonly V[];
  protected readonly backend: B;
  /** Each vCPU's run thread (the backend's), index order. */
  readonly runners: readonly VcpuRunner[];
  private readonly control: ControlBlock;
  private readonly ram: RamSlots;
  private readonly routes: RouteTable;
  private readonly dispatcher: ExitDispatcher;
  private state: PartitionState = 'created';
  /** Per vCPU: acknowledged the current pause. */
  private readonly paused: boolean[];
  /** Per vCPU: why it left its run loop for good. */
  private readonly stopped: Array<VcpuStop | undefined>;
  private pauseWaiters: Array<() => void> = [];
  /** The guest clock at the moment every vCPU had paused. */
  private pausedClock: bigint | undefined;
  private readonly detachNotify: () => void;
  /** Where EOI exits go (a userspace IOAPIC); dropped while unset. */
  private eoiHandler: ((vector: number) => void) | undefined;

  /** Takes ownership of `backend`: destroys it if this constructor fails. */
  constructor(backend: B, dispatchSpinUs = DEFAULT_DISPATCH_SPIN_US) {
    super();
    this.backend = backend;
    let ram: RamSlots | undefined;
    try {
      this.vcpus = backend.vcpus;
      this.runners = backend.runners;
      this.paused = this.runners.map(() => true);
      this.stopped = this.runners.map(() => undefined);
      this.control = new ControlBlock(backend.control);
      this.ram = ram = new RamSlots(this.memory, backend);
      const early = backend.takeEarlyRam?.() ?? [];
      early.forEach((e, i) => {
        try {
          this.ram.adopt(e);
        } catch (error) {
          for (const rest of early.slice(i)) rest.ram.release();
          throw error;
        }
      });
      this.routes = new RouteTable(this.control, this.pio, this.mmio, (r) => backend.setRoutes(r));
      this.dispatcher = new ExitDispatcher(new CoreDispatchTarget(this, (e) => this.handleEvents(e), (e) => this.hostError(e)), this.control, dispatchSpinUs);
      const hook = notifyHook(this.dispatcher);
      backend.onNotify(hook.fire);
      this.detachNotify = hook.detach;
    } catch (e) {
      backend.destroy();
      // RAM taken over from the backend is the core's to give back (the backend no longer maps it once destroyed).
      ram?.release();
      throw e;
    }
  }

  get destroyed(): boolean {
    return this.state === 'destroyed';
  }

  /** The vCPUs should be running (not paused, stopped or destroyed). */
  get running(): boolean {
    return this.state === 'running';
  }

  /** The lifecycle events the vCPU threads queued (for the dispatcher). */
  backendEvents(): VcpuEvent[] {
    return this.backend.takeEvents();
  }

  protected assertAlive(action: string): void {
    if (this.state === 'destroyed') throw new VmStateError(action, 'destroyed');
  }

  addRam(opts: RamOptions): void {
    this.assertAlive('add ram to');
    this.ram.add(opts);
  }

  ramReady(): Promise<void> {
    return this.ram.ready();
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
    return this.ram.fileIo(op, fd, position, buffers, how);
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
    return this.ram.fileIoNow(op, fd, position, buffers, nowait);
  }

  /** fdatasync(2) on the thread pool. */
  fileSync(fd: number): Promise<void> {
    return this.ram.fileSync(fd);
  }

  /** Each RAM region with its address in this process (for vhost, which works on those). */
  ramMappings(): Array<{ gpa: number; size: number; hostAddress: bigint; fd: number }> {
    this.assertAlive('map the ram of');
    return this.ram.mappings();
  }

  /** eventfds registered with this partition as ioeventfds (kicks) and irqfds (interrupts). */
  notifyOps(): NotifyOps {
    return this.backend.notifyOps();
  }

  /** Send the guest's EOI exits to `fn` (the backend decodes them; KVM: KVM_EXIT_IOAPIC_EOI). */
  protected setEoiHandler(fn: (vector: number) => void): void {
    this.eoiHandler = fn;
  }

  /** An EOI exit from a vCPU (the dispatcher's call). */
  handleEoi(vector: number): void {
    this.eoiHandler?.(vector);
  }

  setIrqLine(irq: number, level: boolean): void {
    if (this.state === 'destroyed') return;
    this.backend.irqLine(irq, level);
  }

  start(): void {
    if (this.state !== 'created') throw new VmStateError('start', this.state);
    this.routes.goLive();
    for (const r of this.runners) r.start();
    this.state = 'paused';
    this.resume();
  }

  resume(): void {
    if (this.state === 'running') return;
    if (this.state !== 'paused') throw new VmStateError('resume', this.state);
    this.state = 'running';
    // Restart the guest clock where the pause stopped it, so a paused guest
    // does not see time jump forward by the length of the pause (QEMU does the same).
    if (this.pausedClock !== undefined) this.backend.clock?.set(this.pausedClock);
    this.pausedClock = undefined;
    this.backend.ref();
    this.dispatcher.startWatchdog();
    this.runners.forEach((r, i) => {
      if (this.stopped[i]) return;
      this.paused[i] = false;
      r.resume();
    });
  }

  pause(): Promise<void> {
    // A pause still on its way resolves together with the one in flight.
    if (this.state === 'paused' && this.pauseWaiters.length) return new Promise<void>((resolve) => this.pauseWaiters.push(resolve));
    if (this.state === 'paused' || this.state === 'stopped') return Promise.resolve();
    if (this.state !== 'running') return Promise.reject(new VmStateError('pause', this.state));
    this.state = 'paused';
    const p = new Promise<void>((resolve) => this.pauseWaiters.push(resolve));
    this.runners.forEach((r, i) => this.stopped[i] || r.pause());
    this.checkPaused();
    return p;
  }

  private checkPaused(): void {
    if (!this.runners.every((_, i) => this.paused[i] || this.stopped[i])) return;
    this.dispatcher.stopWatchdog();
    // Writes the vCPUs posted before they stopped reach their devices now: a pause
    // that resolves means every device has seen everything the guest did before it
    // (a snapshot taken next must not miss a UART byte whose instruction is done).
    if (this.state === 'paused' && !this.destroyed) for (const r of this.runners) r.shared.drainPosted(this.dispatcher);
    if (this.state === 'paused' && this.pausedClock === undefined && this.pauseWaiters.length) this.pausedClock = this.backend.clock?.get();
    if (this.state === 'paused' || this.state === 'stopped') this.backend.unref();
    const w = this.pauseWaiters;
    this.pauseWaiters = [];
    for (const f of w) f();
  }

  /**
   * Throws unless every vCPU is out of its run call for a while: the
   * partition was never started, or a pause has completed. Saving state
   * from a running vCPU would mix two moments (KVM refuses it anyway).
   */
  protected assertQuiet(action: string): void {
    const quiet = this.state === 'created' || (this.state === 'paused' && this.pauseWaiters.length === 0 && this.runners.every((_, i) => this.paused[i] || this.stopped[i]));
    if (!quiet) throw new VmStateError(action, this.pauseWaiters.length ? 'pausing' : this.state);
  }

  /** start() was never called. */
  protected get neverStarted(): boolean {
    return this.state === 'created';
  }

  /** The guest clock as the pause froze it (now, for a partition never started); undefined without a clock. */
  protected frozenClock(): bigint | undefined {
    return this.pausedClock ?? this.backend.clock?.get();
  }

  /** Start the guest clock at `ns` when the vCPUs next run (a restored partition continues its snapshot's time). */
  protected resumeClockAt(ns: bigint): void {
    this.pausedClock = ns;
  }

  /**
   * Each RAM region's bytes into its own regular file (`fds`, in the order
   * the regions were added), zero pages left as holes, each file sized to
   * its region. Only on a quiet partition (see assertQuiet). Returns the bytes written.
   */
  writeRamTo(fds: readonly number[]): number {
    this.assertQuiet('save the ram of');
    return this.ram.writeTo(fds);
  }

  stats(): PartitionStats {
    const s: PartitionStats = { exitsToJs: 0n, exitsNative: 0n, exitsPosted: 0n, unclaimedReads: 0n, unclaimedWrites: 0n, notifications: this.dispatcher.notifications, postedDrains: this.dispatcher.postedDrains, rescues: this.dispatcher.rescues, pollWindowNs: this.dispatcher.pollWindowNs, postedDrainMs: this.dispatcher.postedDrainMs };
    if (this.state === 'destroyed') return s;
    for (const r of this.runners) {
      s.exitsToJs += r.shared.exitsToJs;
      s.exitsNative += r.shared.exitsNative;
      s.exitsPosted += r.shared.exitsPosted;
    }
    s.unclaimedReads = this.control.unclaimedReads + BigInt(this.pio.unclaimedReads + this.mmio.unclaimedReads);
    s.unclaimedWrites = this.control.unclaimedWrites + BigInt(this.pio.unclaimedWrites + this.mmio.unclaimedWrites);
    return s;
  }

  private handleEvents(events: VcpuEvent[]): void {
    for (const ev of events) {
      if (!(ev.vcpu in this.runners)) continue;
      if (ev.type === 'paused') {
        // A "paused" that arrives after a resume() belongs to the pause that resume cancelled.
        if (this.state === 'paused') this.paused[ev.vcpu] = true;
      } else if (ev.type === 'exited' && ev.exit) {
        const stop = describeStop(ev.vcpu, ev.exit, this.backend.stopSite(ev.vcpu, this.memory), this.backend);
        this.stopped[ev.vcpu] = stop;
        this.emit('vcpu-stop', stop);
        // A listener destroyed the partition (a VM stopping on the guest's power-off): the rest
        // of the batch is moot, and a destroyed partition must not turn back into a stopped one.
        if (this.state === 'destroyed') return;
      }
    }
    if (this.stopped.every((s) => s)) {
      this.state = 'stopped';
      this.backend.unref();
    }
    this.checkPaused();
  }

  reportHostError(error: Error): void {
    this.hostError(error);
  }

  /** A device model threw while handling a guest access: that is a host bug, so stop the VM. */
  private hostError(error: Error): void {
    // Destroyed meanwhile (a handler killed the VM, then something threw): the destroy stands.
    if (this.state === 'destroyed') return;
    let first: VcpuStop | undefined;
    this.runners.forEach((_, i) => {
      if (this.stopped[i]) return;
      this.stopped[i] = hostErrorStop(i, error);
      first ??= this.stopped[i];
    });
    // One event for the VM; none when every vCPU had already stopped (that stop was reported).
    if (first) this.emit('vcpu-stop', first);
    if (this.destroyed) return; // a 'vcpu-stop' listener destroyed the partition
    for (const r of this.runners) r.stop();
    this.state = 'stopped';
    this.backend.unref();
    this.checkPaused();
  }

  /** Stop all vCPU threads, close the VM, release guest RAM. Idempotent. */
  destroy(): void {
    if (this.state === 'destroyed') return;
    this.state = 'destroyed';
    this.dispatcher.stopWatchdog();
    this.routes.retire();
    this.detachNotify();
    // The backend joins every vCPU thread and aborts their exits before any RAM goes.
    this.backend.destroy();
    this.ram.release();
    const w = this.pauseWaiters;
    this.pauseWaiters = [];
    for (const f of w) f();
  }
}

/**
 * What the dispatcher sees of a partition: an object holding the partition,
 * not an object literal of closures over it. Such closures (this target's
 * getters, the route table's hooks on the buses) kept every destroyed
 * partition alive until the next full GC: ~1 MiB promoted per scavenge in a
 * create/destroy loop (node --trace-gc-nvp), RSS up ~5 MiB per 1000 VMs.
 */
class CoreDispatchTarget implements DispatchTarget {
  readonly runners: readonly VcpuRunner[];
  readonly pio: IoBus;
  readonly mmio: IoBus;
  constructor(
    private readonly core: PartitionCore<VirtualProcessor>,
    private readonly events: (events: VcpuEvent[]) => void,
    readonly hostError: (error: Error) => void,
  ) {
    this.runners = core.runners;
    this.pio = core.pio;
    this.mmio = core.mmio;
  }
  destroyed(): boolean {
    return this.core.destroyed;
  }
  running(): boolean {
    return this.core.running;
  }
  handleEvents(): void {
    this.events(this.core.backendEvents());
  }
  eoi(vector: number): void {
    this.core.handleEoi(vector);
  }
}

/**
 * The callback the backend calls on every vCPU notification. The backend's
 * native side may hold it until its own finalizer runs, some time after a
 * destroy: detached, it holds nothing of the partition by then (made here,
 * outside the constructor, so its closure shares no scope with one).
 */
function notifyHook(dispatcher: ExitDispatcher): { fire: () => void; detach: () => void } {
  let target: ExitDispatcher | undefined = dispatcher;
  return {
    fire: () => target?.dispatch(),
    detach: () => {
      target = undefined;
    },
  };
}
