/**
 * Port-I/O and MMIO buses: ordered, non-overlapping ranges mapped to device
 * models. The bus translates an absolute port/GPA to the device's offset.
 * Unclaimed reads return all-ones (an empty ISA/PCI bus floats high) and
 * unclaimed writes are dropped; both are counted, never errors.
 *
 * The bus also describes itself to the native layer as a route table, so a
 * vCPU thread can answer unclaimed and constant ranges, register shadows and
 * posted writes without waking JS (see docs/architecture.md).
 */
import { NodevmmError } from '../errors';
import { hex } from '../util/bytes';

/**
 * What the bus dispatches to: a device reachable through port I/O or MMIO.
 * `offset` is relative to the claimed range; a device never learns its port
 * number or GPA. Device models implement it (lib/devices/types.ts names it
 * among their other contracts).
 */
export interface IoDevice {
  /** Short name for diagnostics ("com1", "acpi-pm", "cmos"). */
  readonly name: string;
  /** Read `size` (1, 2, 4 or 8) bytes at offset; return the value (bigint only for size 8). */
  read(offset: number, size: number): number;
  write(offset: number, size: number, value: number): void;
  /**
   * For a range with posted offsets: true while the guest waits for something
   * that applying the posted writes brings (a UART sending on interrupts gets
   * its next THRE interrupt only then). The dispatcher then applies queued
   * writes within POSTED_DRAIN_MS, else within POSTED_LAZY_DRAIN_MS
   * (lib/hv/exit-dispatcher.ts). Without it: never waited on.
   */
  postedAwaited?(): boolean;
}

export type BusKind = 'pio' | 'mmio';

export interface IoRegistrationOptions {
  /** Offsets (< 31) whose writes may be queued and applied later, in order. */
  posted?: number[];
  /** Offsets (< 31) whose 1-byte reads are side-effect free and answered from a shadow byte. */
  shadowed?: number[];
  /**
   * Posted and shadowed offsets of registers that read back what was written
   * (ANDed with `mask`): a vCPU thread that posts a 1-byte write there also
   * stores it into the offset's shadow byte, so its next read sees the write
   * before JS has applied it (wider writes there are not posted). While
   * posting is on, the vCPU threads own these bytes: the device sets them
   * only with posting off or just before turning it on, when no write can be
   * in flight (ShadowBlock.enable). Nothing else may change such a register
   * while posting is on.
   */
  mirrored?: Array<{ offset: number; mask: number }>;
  /**
   * An interrupt-status register pair answered by the vCPU threads from the
   * block's shared words: 4-byte reads at `read` return `ShadowBlock.word`
   * ORed with `ShadowBlock.held`, 4-byte writes at `ack` clear the bits
   * written in `word`. For edge-triggered devices only, since such an ACK
   * never reaches the device to lower a line. The two words are the block's
   * bytes 0-7: shadowed offsets below 8 would alias them.
   */
  interruptStatus?: { read: number; ack: number };
}

/** A 32-bit word shared with the vCPU threads; every access is atomic. */
export interface SharedWord {
  load(): number;
  store(value: number): void;
  /** Sets `bits`; returns the value before (one atomic fetch-or where the word is shared). */
  or(bits: number): number;
  and(mask: number): void;
}

/** A SharedWord that lives only in JS (pure-JS buses, unit tests). */
export function localWord(): SharedWord {
  let v = 0;
  return {
    load: () => v,
    store: (x) => {
      v = x >>> 0;
    },
    or: (bits) => {
      const before = v;
      v = (v | bits) >>> 0;
      return before;
    },
    and: (mask) => {
      v = (v & mask) >>> 0;
    },
  };
}

/** A device's handle on its shadow block: the bytes native code answers reads from. */
export interface ShadowBlock {
  /** Set the value a 1-byte read at `offset` returns natively. */
  set(offset: number, value: number): void;
  /**
   * Turn shadows / posting on or off (off while a device's reads depend on posted writes).
   * Mirrored bytes (IoRegistrationOptions.mirrored) are the vCPU threads' while posting is on.
   */
  enable(shadows: boolean, posting: boolean): void;
  /** The block's first four bytes as one word (the interrupt-status register, when the range has one). */
  word: SharedWord;
  /** Bytes 4-7: bits every native interrupt-status read reports on top of `word`; an ACK leaves them. */
  held: SharedWord;
}

/** What a bus tells the route table of its partition (route-table.ts). */
export interface BusRoutes {
  /** Ranges were added or removed. */
  changed(): void;
  /** A shadow block for a range that wants shadows, posted writes or an interrupt-status pair. */
  allocShadow(): { block: number; shadow: ShadowBlock };
}

export interface BusRange {
  start: number;
  length: number;
  name: string;
  device?: IoDevice;
  /** For constant ranges: the value every read returns (writes are dropped). */
  constant?: number;
  posted: number[];
  shadowed: number[];
  mirrored: Array<{ offset: number; mask: number }>;
  interruptStatus?: { read: number; ack: number };
  shadow?: ShadowBlock;
  shadowBlock?: number;
  /** Accesses that reached this range's device in JS (the native fast paths do not count). */
  jsAccesses: number;
}

export class IoBus {
  readonly kind: BusKind;
  private ranges: BusRange[] = [];
  private lastHit: BusRange | undefined;
  unclaimedReads = 0;
  unclaimedWrites = 0;
  /** The partition's route table: told of every change, supplies shadow blocks; absent on pure-JS buses. */
  routes: BusRoutes | undefined;

  constructor(kind: BusKind) {
    this.kind = kind;
  }

  private checkFree(start: number, length: number, name: string): void {
    const limit = this.kind === 'pio' ? 0x10000 : 2 ** 52;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length <= 0 || start + length > limit) {
      throw new NodevmmError('ERR_BUS_RANGE', `${this.kind} range for ${name} at ${hex(start)} with length ${length} is invalid (must be non-empty and below ${hex(limit)})`);
    }
    for (const r of this.ranges) {
      if (start < r.start + r.length && r.start < start + length) {
        throw new NodevmmError(
          'ERR_BUS_OVERLAP',
          `${this.kind} range ${hex(start)}-${hex(start + length - 1)} for ${name} overlaps ${r.name} at ${hex(r.start)}-${hex(r.start + r.length - 1)}`,
        );
      }
    }
  }

  /** Claim [start, start+length) for a device model. */
  register(start: number, length: number, device: IoDevice, opts: IoRegistrationOptions = {}): BusRange {
    this.checkFree(start, length, device.name);
    for (const o of [...(opts.posted ?? []), ...(opts.shadowed ?? [])]) {
      if (!Number.isInteger(o) || o < 0 || o >= Math.min(31, length)) throw new NodevmmError('ERR_BUS_RANGE', `posted/shadowed offset ${o} of ${device.name} must be inside the range and below 31`);
    }
    for (const m of opts.mirrored ?? []) {
      if (!opts.posted?.includes(m.offset) || !opts.shadowed?.includes(m.offset) || !Number.isInteger(m.mask) || m.mask < 0 || m.mask > 0xff) {
        throw new NodevmmError('ERR_BUS_RANGE', `mirrored offset ${m.offset} of ${device.name} must be posted and shadowed, with a byte mask (got ${m.mask})`);
      }
    }
    const isr = opts.interruptStatus;
    if (isr && [isr.read, isr.ack].some((o) => !Number.isInteger(o) || o < 0 || o % 4 !== 0 || o + 4 > length)) {
      throw new NodevmmError('ERR_BUS_RANGE', `interrupt-status registers of ${device.name} at ${isr.read}/${isr.ack} must be 4-byte aligned offsets inside the range`);
    }
    const range: BusRange = { start, length, name: device.name, device, posted: opts.posted ?? [], shadowed: opts.shadowed ?? [], mirrored: opts.mirrored ?? [], interruptStatus: isr, jsAccesses: 0 };
    if ((range.posted.length || range.shadowed.length || isr) && this.routes) {
      const a = this.routes.allocShadow();
      range.shadow = a.shadow;
      range.shadowBlock = a.block;
    }
    this.insert(range);
    return range;
  }

  /** Claim a range that reads as a constant and ignores writes, answered without JS. */
  registerConstant(start: number, length: number, name: string, value: number): BusRange {
    this.checkFree(start, length, name);
    const range: BusRange = { start, length, name, constant: value, posted: [], shadowed: [], mirrored: [], jsAccesses: 0 };
    this.insert(range);
    return range;
  }

  unregister(range: BusRange): void {
    const i = this.ranges.indexOf(range);
    if (i < 0) return;
    this.ranges.splice(i, 1);
    this.lastHit = undefined;
    this.routes?.changed();
  }

  private insert(range: BusRange): void {
    this.ranges.push(range);
    this.ranges.sort((a, b) => a.start - b.start);
    this.lastHit = undefined;
    this.routes?.changed();
  }

  /** True when a device with posted writes says the guest waits on them (IoDevice.postedAwaited). */
  postedAwaited(): boolean {
    for (const r of this.ranges) if (r.posted.length && r.device?.postedAwaited?.()) return true;
    return false;
  }

  list(): readonly BusRange[] {
    return this.ranges;
  }

  find(address: number): BusRange | undefined {
    const l = this.lastHit;
    if (l && address >= l.start && address < l.start + l.length) return l;
    let lo = 0;
    let hi = this.ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.ranges[mid]!;
      if (address < r.start) hi = mid - 1;
      else if (address >= r.start + r.length) lo = mid + 1;
      else return (this.lastHit = r);
    }
    return undefined;
  }

  read(address: number, size: number): number {
    const r = this.find(address);
    if (!r) {
      this.unclaimedReads++;
      return size >= 4 ? 0xffffffff : (1 << (size * 8)) - 1;
    }
    r.jsAccesses++;
    if (r.constant !== undefined) return r.constant;
    return r.device!.read(address - r.start, size);
  }

  write(address: number, size: number, value: number): void {
    const r = this.find(address);
    if (!r) {
      this.unclaimedWrites++;
      return;
    }
    r.jsAccesses++;
    if (r.constant !== undefined) return;
    r.device!.write(address - r.start, size, value);
  }
}
