/**
 * The JS side of the exit path (docs/architecture.md): a vCPU thread answers
 * what it can natively (unclaimed and constant ranges, shadowed registers,
 * posted writes); the rest lands in its mailbox and one coalesced
 * notification wakes `dispatch()`, which drains posted writes, answers
 * mailboxes through the buses, and hands lifecycle events to the partition.
 * With a spin window > 0 the dispatcher keeps polling the mailboxes for up to
 * that long after an exit (less while polls find nothing), so back-to-back
 * exits skip the event-loop wakeup. Posted writes need no answer: once a
 * dispatch has applied some, the ring is drained on a timer while writes keep
 * coming (every POSTED_DRAIN_MS while the guest waits on them, else every
 * POSTED_LAZY_DRAIN_MS), and the vCPUs wake JS for them only when it is half
 * full (a console burst costs one wakeup, not one per byte). A 50 ms watchdog
 * rescues work a lost wakeup would strand.
 */
import { EXIT_KIND_EOI, EXIT_KIND_PIO, type ControlBlock } from './exit-mailbox';
import type { VcpuRunner } from './backend';
import type { IoBus } from './io-bus';

/** Longest the dispatcher holds the event loop in one go before yielding (ns). */
const DISPATCH_TURN_NS = 2_000_000n;
const WATCHDOG_MS = 50;
/**
 * How long posted writes may wait in the ring during a burst (ms) while the
 * guest waits for what applying them brings (IoBus.postedAwaited: a UART
 * transmitting on interrupts gets its next THRE interrupt only once its FIFO's
 * bytes are applied). A wakeup per byte cost the emulated host's console ~0.6
 * notifications per byte (docs/benchmarks.md, "Real kernel boot").
 */
export const POSTED_DRAIN_MS = 1;
/**
 * The longest delay when nobody waits (a kernel console printing with its
 * UART's interrupts off, CMOS index writes): the delay a console byte may see
 * on its way out during a long burst (the delay starts at POSTED_DRAIN_MS and
 * doubles while drains keep finding writes). Each drain is an event-loop turn;
 * under an emulator a turn costs milliseconds of a CPU the guest's vCPU
 * competes for, and 1 ms drains through a kernel's boot log took half of a
 * core there (docs/benchmarks.md, "Posted writes drained lazily"). The rings
 * hold 2048 writes and wake JS when half full, so a guest printing faster than
 * this still never waits.
 */
export const POSTED_LAZY_DRAIN_MS = 16;

/** What the dispatcher works for: the partition's buses and vCPUs, and its answers to events and device failures. */
export interface DispatchTarget {
  readonly runners: readonly VcpuRunner[];
  readonly pio: IoBus;
  readonly mmio: IoBus;
  /** A device handler may destroy the partition: asked after every call into one. */
  destroyed(): boolean;
  /** True while the vCPUs should be running (the watchdog looks only then). */
  running(): boolean;
  /** Take and handle the queued lifecycle events. */
  handleEvents(): void;
  /** A device threw while answering an exit. */
  hostError(error: Error): void;
  /** The guest EOId `vector` (EOI exits of a userspace IOAPIC). */
  eoi(vector: number): void;
}

export class ExitDispatcher {
  /** Dispatches started (notifications from the vCPUs, redispatches, rescues, timed drains of posted writes). */
  notifications = 0;
  /** Dispatches the posted-write timer started. */
  postedDrains = 0;
  /** Dispatches the watchdog had to start because no wakeup arrived. */
  rescues = 0;
  private readonly spinNs: number;
  /**
   * The polling window now (ns), adapted as KVM's halt polling is (adaptWindow):
   * halved when the next exit's wakeup came more than spinNs after going idle,
   * doubled (up to spinNs) when it came sooner. On a machine whose cores are all busy, polling
   * that finds nothing takes the core the vCPU thread needs: a TypeScript port
   * exit took 84 us with a fixed window there against 21 us without polling.
   */
  private pollNs: number;
  get pollWindowNs(): number {
    return this.pollNs;
  }
  /** When the last dispatch went idle (hrtime ns); 0n before the first and once the next dispatch has judged its wakeup by it. */
  private idleSince = 0n;
  private redispatchScheduled = false;
  private watchdog: NodeJS.Timeout | undefined;
  private lastWatchdogNotifications = -1;
  /** Posted writes were applied since the dispatcher last went idle. */
  private postedSeen = false;
  /** The timer that drains posted writes (NOTIFY_POSTED_LATER), made once and re-armed with refresh(). */
  private postedTimer: NodeJS.Timeout | undefined;
  private postedTimerArmed = false;
  /** The delay postedTimer was made with (refresh() keeps it). */
  private postedTimerMs = 0;
  /** The drain delay while nobody waits on the writes, POSTED_DRAIN_MS..POSTED_LAZY_DRAIN_MS (postedDrainDue). */
  private lazyDrainMs = POSTED_DRAIN_MS;
  get postedDrainMs(): number {
    return this.postedTimerMs;
  }

  constructor(
    private readonly target: DispatchTarget,
    private readonly control: ControlBlock,
    spinUs: number,
  ) {
    // Whole nanoseconds: the window becomes a BigInt when it is used.
    this.spinNs = Math.max(0, Math.round(spinUs * 1000));
    this.pollNs = this.spinNs;
  }

  /**
   * One posted write, from drainPosted. A method rather than a closure: one made per poll turn
   * was garbage for the GC, and one made once and held here kept destroyed partitions' heaps
   * alive past scavenges (V8 heap 8 -> 40 MiB in a create/destroy loop).
   */
  applyPosted(kind: number, address: number, size: number, value: number): void {
    const t = this.target;
    if (t.destroyed()) return;
    this.postedSeen = true;
    (kind === EXIT_KIND_PIO ? t.pio : t.mmio).write(address, size, value);
  }

  /**
   * Runs on the JS thread for every (coalesced) notification from the vCPU
   * threads. The "notification pending" flag stays set while we poll, so
   * vCPUs skip the cross-thread wakeup entirely during a burst; it is
   * cleared only when we go idle, followed by one last look so an exit
   * posted just before the clear is never stranded. Going idle after
   * applying posted writes leaves the flag at NOTIFY_POSTED_LATER instead,
   * with the drain timer armed: the vCPUs then queue writes without waking
   * us, and the last look is for exits only.
   */
  dispatch(): void {
    const t = this.target;
    if (t.destroyed()) return;
    this.redispatchScheduled = false;
    this.notifications++;
    const now = process.hrtime.bigint();
    if (this.idleSince !== 0n) {
      // A wakeup a vCPU sent since we went idle: adapt the window to how soon it came.
      // Judged by when the vCPU sent it, not when the event loop ran this dispatch: the
      // loop's own wake-up latency can exceed the whole window, and judged by arrival
      // a window that shrank on a busy moment never grew back on a quiet machine
      // (TypeScript exits stuck at ~7x the raw loop instead of ~1.1x). Timer, watchdog
      // and redispatch turns carry no new stamp and change nothing.
      const sent = this.control.notifiedAt;
      if (sent >= this.idleSince) this.adaptWindow((sent <= now ? sent : now) - this.idleSince);
      this.idleSince = 0n;
    }
    const turnEnd = now + DISPATCH_TURN_NS;
    try {
      for (;;) {
        if (this.serviceVcpus(true) && this.pollNs > 0) this.poll(turnEnd);
        if (process.hrtime.bigint() >= turnEnd) {
          // A guest that exits without pause must not starve the event loop
          // (timers, I/O, other VMs): yield, and come back on the next turn.
          // The notify flag stays set, so the vCPUs send no wakeups meanwhile.
          this.scheduleRedispatch();
          break;
        }
        // A device handler may have destroyed the partition (vm.kill() from
        // a listener): the control block is gone then, and so is the work.
        if (t.destroyed()) return;
        const later = this.postedSeen;
        this.postedSeen = false;
        if (later) {
          this.control.deferPostedNotify();
          this.armPostedDrain();
        } else this.control.clearNotify();
        if (!this.serviceVcpus(!later) && !this.postedSeen) {
          this.idleSince = process.hrtime.bigint();
          break;
        }
      }
      if (t.destroyed()) return;
      if (this.control.eventsQueued) t.handleEvents();
    } catch (e) {
      t.hostError(e as Error);
    }
  }

  startWatchdog(): void {
    this.watchdog ??= setInterval(() => this.watchdogTick(), WATCHDOG_MS).unref();
  }

  /** Stop the watchdog and the posted-write timer (pause, stop, destroy): the vCPUs wake JS for their next write again. */
  stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
    if (this.postedTimerArmed) clearTimeout(this.postedTimer);
    this.postedTimerArmed = false;
    if (!this.target.destroyed()) this.control.cancelPostedLater();
  }

  /** Arm the drain timer: prompt while a device's guest waits on its posted writes, lazy otherwise. */
  private armPostedDrain(): void {
    if (this.postedTimerArmed) return;
    this.postedTimerArmed = true;
    const t = this.target;
    const ms = t.pio.postedAwaited() || t.mmio.postedAwaited() ? POSTED_DRAIN_MS : this.lazyDrainMs;
    if (this.postedTimer && this.postedTimerMs === ms) this.postedTimer.refresh();
    else {
      if (this.postedTimer) clearTimeout(this.postedTimer);
      this.postedTimer = setTimeout(() => this.postedDrainDue(), ms).unref();
      this.postedTimerMs = ms;
    }
  }

  private postedDrainDue(): void {
    if (!this.postedTimerArmed) return;
    this.postedTimerArmed = false;
    this.postedDrains++;
    // The lazy delay follows the burst: doubled by each drain that finds writes (a boot log
    // streaming out), halved by one that finds none (the burst ended; its next write wakes JS
    // at once). A short burst so keeps ~1 ms latency; a flood costs a turn per 16 ms.
    const found = this.target.runners.some((r) => r.shared.postedQueued());
    this.lazyDrainMs = found ? Math.min(POSTED_LAZY_DRAIN_MS, this.lazyDrainMs * 2) : Math.max(POSTED_DRAIN_MS, this.lazyDrainMs / 2);
    this.dispatch();
  }

  /**
   * Safety net against a lost wakeup: while running, every 50 ms check for
   * work the vCPUs left (a pending exit, queued posted writes, a raised
   * notify flag) that no dispatch has picked up since the last check, and
   * dispatch it.
   */
  private watchdogTick(): void {
    if (!this.target.running()) return;
    const waiting = this.control.notifyPending || this.target.runners.some((r) => r.shared.pending || r.shared.postedQueued());
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

  /**
   * KVM's halt-polling rule, with `gap` the time from going idle to the next exit's
   * wakeup: an exit that came within spinNs would have been caught by a longer
   * window (double it, from 1 us); one that came later means the last poll only
   * burned a core the vCPU may have needed (halve it, to none below 2 us).
   */
  private adaptWindow(gap: bigint): void {
    if (gap < BigInt(this.spinNs)) {
      if (this.pollNs < this.spinNs) this.pollNs = Math.min(this.spinNs, Math.max(1000, this.pollNs * 2));
    } else this.pollNs = this.pollNs < 2000 ? 0 : Math.floor(this.pollNs / 2); // whole ns: poll() makes it a BigInt
  }

  /**
   * Keep answering exits until none arrives for spinNs (adaptive polling), at
   * most until turnEnd. The clock (a native call and a BigInt) is read after
   * every 16th exit or 64th empty look rather than per exit; an exit handled
   * since the last reading moves the deadline on from that reading.
   */
  private poll(turnEnd: bigint): void {
    const spin = BigInt(this.pollNs);
    let deadline = process.hrtime.bigint() + spin;
    let handled = false;
    let work = 0;
    while (!this.target.destroyed()) {
      if (this.serviceVcpus(true)) {
        handled = true;
        work += 4;
      } else {
        if (this.control.eventsQueued) return; // lifecycle events need the caller
        work++;
      }
      if (work < 64) continue;
      work = 0;
      const now = process.hrtime.bigint();
      if (now >= turnEnd) return;
      if (handled) {
        deadline = now + spin;
        handled = false;
      } else if (now > deadline) {
        return;
      }
    }
  }

  /**
   * Posted writes first (they happened before any pending read), then
   * mailboxes; with `posted` false the ring is drained only ahead of a
   * pending exit. True when a mailbox exit was answered; applied posted
   * writes set postedSeen.
   */
  private serviceVcpus(posted: boolean): boolean {
    const t = this.target;
    let handled = false;
    for (const r of t.runners) {
      // Every device call below may destroy the partition: after that no
      // device of it may run again, and the exits left are aborted natively.
      if (t.destroyed()) return handled;
      const sh = r.shared;
      if (posted) sh.drainPosted(this);
      if (t.destroyed()) return handled;
      if (sh.pending) {
        // The vCPU published every write it posted before this exit (ring head, then the
        // mailbox), but the drain above may have looked before the last of them: a ring that
        // filled up meanwhile is what sent this write here. Apply them first, in order.
        sh.drainPosted(this);
        if (t.destroyed()) return true;
        const kind = sh.kind;
        if (kind === EXIT_KIND_EOI) t.eoi(sh.address & 0xff);
        else {
          const bus = kind === EXIT_KIND_PIO ? t.pio : t.mmio;
          if (sh.isWrite) bus.write(sh.address, sh.size, sh.data);
          else sh.setReadResult(bus.read(sh.address, sh.size));
        }
        // Answer from JS; only a vCPU that went to sleep needs the native wake.
        if (sh.complete()) r.completeExit();
        handled = true;
      }
    }
    return handled;
  }
}
