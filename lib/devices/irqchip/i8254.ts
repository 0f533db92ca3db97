/**
 * An Intel 8254 programmable interval timer: three 16-bit down counters at
 * 1.193182 MHz behind offsets 0-2 (counters 0-2) and 3 (control word), with
 * the counter latch and read-back commands, LSB/MSB/both access, binary and
 * BCD counting, and modes 0 (interrupt on terminal count), 1 (one-shot), 2
 * (rate generator), 3 (square wave), 4 and 5 (strobes). Counter 0's output
 * drives IRQ0; counter 2's gate and output are bits 0 and 5 of PC port 0x61
 * (`Pit.systemControlPort()`), which Linux uses to calibrate the TSC.
 * Reference: Intel 8254 datasheet (231164-005); Linux
 * arch/x86/kernel/tsc.c (pit_calibrate_tsc, quick_pit_calibrate) and
 * drivers/clocksource/i8253.c (the clockevent).
 *
 * Counts are computed from the host's monotonic clock when read, never
 * ticked: a counter costs nothing while the guest does not look at it. Only
 * counter 0 in a mode that raises IRQ0 holds a host timer, one at a time, set
 * for the next rising edge of its output; a guest asking for edges faster
 * than MIN_TIMER_NS gets one per MIN_TIMER_NS (edges in between are merged,
 * as KVM's in-kernel PIT limits its period).
 *
 * Threat model: the guest controls every control word and count byte, the
 * access widths and the rate of accesses. Only 1-byte accesses are decoded
 * (others read all-ones and are counted); modes 6 and 7 alias 2 and 3 as on
 * the chip; a count of 0 means 65536 (10000 in BCD); nothing allocates per
 * access, and at most one host timer exists per PIT.
 */
import type { IoDevice, IrqLine, NsClock } from '../types';
import { monotonicNs } from '../types';

/** The PIT's input clock (Hz): the PC's 14.31818 MHz crystal divided by 12. */
export const PIT_HZ = 1_193_182;
export const PIT_COUNTER_OFFSETS = [0, 1, 2] as const;
export const PIT_CONTROL_OFFSET = 3;
/** Ports the PIT takes from its base (0x40-0x43 on a PC). */
export const PIT_PORT_COUNT = 4;
/** The shortest host timer the PIT sets for IRQ0 (ns). */
export const MIN_TIMER_NS = 1_000_000;

/** Control word fields. */
const CW_SELECT_SHIFT = 6; // 0-2 counter, 3 read-back
const CW_ACCESS_SHIFT = 4; // 0 latch, 1 LSB, 2 MSB, 3 LSB then MSB
const CW_MODE_SHIFT = 1;
const CW_BCD_BIT = 1;
const READ_BACK = 3;
/** Read-back command: bit 5 clear latches counts, bit 4 clear latches status, bits 1-3 select counters 0-2. */
const RB_NO_COUNT_BIT = 1 << 5;
const RB_NO_STATUS_BIT = 1 << 4;
/** Status byte: OUT in bit 7, null count in bit 6, then access, mode, BCD as in the control word. */
const STATUS_OUT_BIT = 1 << 7;
const STATUS_NULL_COUNT_BIT = 1 << 6;

/** Port 0x61 ("system control port B") bits. */
export const PORT61_GATE2_BIT = 1 << 0;
export const PORT61_SPEAKER_BIT = 1 << 1;
/** Parity and channel check enables: stored, no effect. */
const PORT61_WRITABLE = 0x0f;
export const PORT61_REFRESH_BIT = 1 << 4;
export const PORT61_OUT2_BIT = 1 << 5;
/** The DRAM refresh request toggles every 15.085 µs on a PC; some delay loops poll it. */
const REFRESH_PERIOD_NS = 15_085n;

type Access = 1 | 2 | 3;

/** Host timers, injectable so tests run on a fake clock. */
export interface TimerHost {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const nodeTimers: TimerHost = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface PitOptions {
  /** Counter 0's output. */
  irq0: IrqLine;
  clock?: NsClock;
  timers?: TimerHost;
}

class Counter {
  mode = 0;
  access: Access = 3;
  bcd = false;
  /** The count register as written; 0 means the maximum. */
  reload = 0;
  /** A count was written since the mode was set and counting started (mode 1 and 5: on a gate edge). */
  armed = false;
  /** Counting started at this host time (ns). */
  startNs = 0n;
  /** Ticks counted before the gate last stopped the counter (counting pauses while the gate is low). */
  heldTicks = 0;
  gate: boolean;
  /** Next write of a two-byte count is the MSB; `lsb` holds the first byte. */
  writeMsb = false;
  lsb = 0;
  /** Next direct read of a two-byte count returns the MSB. */
  readMsb = false;
  /** Latched count bytes still to be read, in order. */
  latched: number[] = [];
  status: number | undefined;
  nullCount = true;

  constructor(gate: boolean) {
    this.gate = gate;
  }

  modulus(): number {
    return this.bcd ? 10000 : 65536;
  }
  period(): number {
    return this.reload === 0 ? this.modulus() : this.reload;
  }
}

export class Pit implements IoDevice {
  readonly name = 'i8254';
  missedReads = 0;
  missedWrites = 0;
  private readonly counters = [new Counter(true), new Counter(true), new Counter(false)];
  private readonly clock: NsClock;
  private readonly timers: TimerHost;
  private timer: unknown;
  /** The counter-0 output edge the timer waits for, as ticks since its start. */
  private nextEdgeTick = 0;
  private speaker = 0;
  private disposed = false;

  constructor(private readonly opts: PitOptions) {
    this.clock = opts.clock ?? monotonicNs;
    this.timers = opts.timers ?? nodeTimers;
  }

  read(offset: number, size: number): number {
    if (size !== 1 || !(offset >= 0 && offset <= 2)) {
      this.missedReads++;
      return size >= 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    }
    return this.readCounter(this.counters[offset]!);
  }

  write(offset: number, size: number, value: number): void {
    if (size !== 1 || !(offset >= 0 && offset <= PIT_CONTROL_OFFSET)) {
      this.missedWrites++;
      return;
    }
    const v = value & 0xff;
    if (offset === PIT_CONTROL_OFFSET) this.control(v);
    else this.writeCount(offset, v);
  }

  /** Port 0x61: counter 2's gate and output, the speaker enable and the refresh toggle. */
  systemControlPort(): IoDevice {
    return {
      name: 'port61',
      read: (offset, size) => {
        if (size !== 1 || offset !== 0) {
          this.missedReads++;
          return size >= 4 ? 0xffffffff : (1 << (8 * size)) - 1;
        }
        const refresh = (this.clock() / REFRESH_PERIOD_NS) & 1n ? PORT61_REFRESH_BIT : 0;
        return this.speaker | refresh | (this.output(2) ? PORT61_OUT2_BIT : 0);
      },
      write: (offset, size, value) => {
        if (size !== 1 || offset !== 0) {
          this.missedWrites++;
          return;
        }
        this.speaker = value & PORT61_WRITABLE;
        this.setGate(2, (value & PORT61_GATE2_BIT) !== 0);
      },
    };
  }

  /** Counter `n`'s output now (datasheet figures for each mode). */
  output(n: number): boolean {
    const c = this.counters[n]!;
    if (!c.armed) return c.mode !== 0; // mode 0 holds OUT low from the control word on; the others high
    const t = this.ticks(c);
    const p = c.period();
    switch (c.mode) {
      case 0:
      case 1:
        return t >= p;
      case 2:
        return !c.gate || t % p !== p - 1;
      case 3:
        return !c.gate || t % p < Math.ceil(p / 2);
      default: // 4, 5: low for the one tick after terminal count
        return t !== p;
    }
  }

  /** Counter `n`'s current count, as a direct read would see it. */
  count(n: number): number {
    return this.currentCount(this.counters[n]!);
  }

  /** Stop the host timer for good (the machine is going away). */
  dispose(): void {
    this.disposed = true;
    this.cancelTimer();
  }

  /** Whether a host timer is set (tests: no timer while the guest does not use IRQ0). */
  get timerArmed(): boolean {
    return this.timer !== undefined;
  }

  private ticks(c: Counter): number {
    if (!c.armed) return 0;
    if (!this.counts(c)) return c.heldTicks;
    return c.heldTicks + Number(((this.clock() - c.startNs) * BigInt(PIT_HZ)) / 1_000_000_000n);
  }

  /** Modes 0, 2, 3 and 4 pause while the gate is low; 1 and 5 are started by it and ignore its level. */
  private counts(c: Counter): boolean {
    return c.gate || c.mode === 1 || c.mode === 5;
  }

  private currentCount(c: Counter): number {
    if (!c.armed) return toBcd(c.reload, c.bcd);
    const t = this.ticks(c);
    const p = c.period();
    const m = c.modulus();
    let v: number;
    if (c.mode === 2) v = p - (t % p);
    else if (c.mode === 3) {
      // Counts down by two, twice per period (the odd-count subtlety of the datasheet is ignored).
      const half = Math.max(1, Math.floor(p / 2));
      v = p - 2 * (t % half);
    } else v = (((c.reload - t) % m) + m) % m; // 0, 1, 4, 5: wraps past zero and keeps counting
    return toBcd(v % m, c.bcd);
  }

  private readCounter(c: Counter): number {
    if (c.status !== undefined) {
      const s = c.status;
      c.status = undefined;
      return s;
    }
    if (c.latched.length) return c.latched.shift()!;
    const v = this.currentCount(c);
    if (c.access === 1) return v & 0xff;
    if (c.access === 2) return (v >> 8) & 0xff;
    c.readMsb = !c.readMsb;
    return c.readMsb ? v & 0xff : (v >> 8) & 0xff;
  }

  private control(v: number): void {
    const select = v >> CW_SELECT_SHIFT;
    if (select === READ_BACK) {
      for (let n = 0; n < 3; n++) {
        if (!(v & (2 << n))) continue;
        const c = this.counters[n]!;
        if (!(v & RB_NO_COUNT_BIT)) this.latchCount(c);
        if (!(v & RB_NO_STATUS_BIT) && c.status === undefined) c.status = this.statusByte(n);
      }
      return;
    }
    const c = this.counters[select]!;
    const access = (v >> CW_ACCESS_SHIFT) & 3;
    if (access === 0) {
      this.latchCount(c);
      return;
    }
    let mode = (v >> CW_MODE_SHIFT) & 7;
    if (mode > 5) mode -= 4; // 6 and 7 are 2 and 3
    c.mode = mode;
    c.access = access as Access;
    c.bcd = (v & CW_BCD_BIT) !== 0;
    c.armed = false;
    c.heldTicks = 0;
    c.writeMsb = false;
    c.readMsb = false;
    c.latched = [];
    c.status = undefined;
    c.nullCount = true;
    if (select === 0) this.cancelTimer();
  }

  private latchCount(c: Counter): void {
    if (c.latched.length) return; // a second latch before the first is read is ignored
    const v = this.currentCount(c);
    if (c.access === 1) c.latched = [v & 0xff];
    else if (c.access === 2) c.latched = [(v >> 8) & 0xff];
    else c.latched = [v & 0xff, (v >> 8) & 0xff];
  }

  private statusByte(n: number): number {
    const c = this.counters[n]!;
    return (this.output(n) ? STATUS_OUT_BIT : 0) | (c.nullCount ? STATUS_NULL_COUNT_BIT : 0) | (c.access << CW_ACCESS_SHIFT) | (c.mode << CW_MODE_SHIFT) | (c.bcd ? CW_BCD_BIT : 0);
  }

  private writeCount(n: number, byte: number): void {
    const c = this.counters[n]!;
    let value: number;
    if (c.access === 1) value = byte;
    else if (c.access === 2) value = byte << 8;
    else if (!c.writeMsb) {
      c.lsb = byte;
      c.writeMsb = true;
      return;
    } else {
      c.writeMsb = false;
      value = c.lsb | (byte << 8);
    }
    c.reload = c.bcd ? fromBcd(value) : value;
    c.nullCount = false;
    // Modes 1 and 5 wait for a gate edge; the others start on the count write.
    if (c.mode === 1 || c.mode === 5) return;
    this.start(n);
  }

  private start(n: number): void {
    const c = this.counters[n]!;
    c.armed = true;
    c.heldTicks = 0;
    c.startNs = this.clock();
    if (n === 0) this.scheduleEdge(0);
  }

  private setGate(n: number, level: boolean): void {
    const c = this.counters[n]!;
    if (level === c.gate) return;
    // Modes 0, 2, 3 and 4 hold their count while the gate is low (ticks() reads it from heldTicks then).
    if (!level && c.armed && c.mode !== 1 && c.mode !== 5) c.heldTicks = this.ticks(c);
    const rising = level && !c.gate;
    c.gate = level;
    if (!rising) return;
    if (c.mode === 1 || c.mode === 5 || c.mode === 2 || c.mode === 3) {
      // A rising gate (re)starts these modes from the count register.
      if (!c.nullCount) this.start(n);
    } else if (c.armed) {
      c.startNs = this.clock(); // 0 and 4 resume where they stopped
    }
  }

  /** Counter 0: set the one host timer for the next rising edge of OUT0 (IRQ0), if its mode has one. */
  private scheduleEdge(fromTick: number): void {
    this.cancelTimer();
    const c = this.counters[0]!;
    if (this.disposed || !c.armed) return;
    const p = c.period();
    let edge: number;
    if (c.mode === 0) edge = p;
    else if (c.mode === 4) edge = p + 1;
    else if (c.mode === 2 || c.mode === 3) edge = (Math.floor(fromTick / p) + 1) * p;
    else return;
    if (edge <= fromTick) return; // the one-shot edge already happened
    this.nextEdgeTick = edge;
    const t = this.ticks(c);
    const ns = Math.max(MIN_TIMER_NS, Math.ceil(((edge - t) * 1e9) / PIT_HZ));
    this.timer = this.timers.setTimeout(() => this.fire(), Math.ceil(ns / 1e6));
  }

  private fire(): void {
    this.timer = undefined;
    if (this.disposed) return;
    const c = this.counters[0]!;
    const t = this.ticks(c);
    if (t < this.nextEdgeTick) {
      // The host woke early (timer granularity): wait for the edge.
      this.scheduleEdge(this.nextEdgeTick - 1);
      return;
    }
    this.opts.irq0.pulse();
    this.scheduleEdge(t);
  }

  private cancelTimer(): void {
    if (this.timer === undefined) return;
    this.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** A BCD count as its binary value; nibbles above 9 count as 9 (the chip's behaviour is undefined). */
function fromBcd(v: number): number {
  let out = 0;
  for (let shift = 12; shift >= 0; shift -= 4) out = out * 10 + Math.min(9, (v >> shift) & 0xf);
  return out;
}

function toBcd(v: number, bcd: boolean): number {
  if (!bcd) return v & 0xffff;
  let out = 0;
  for (let i = 0, x = v % 10000; i < 4; i++, x = Math.floor(x / 10)) out |= (x % 10) << (4 * i);
  return out;
}
