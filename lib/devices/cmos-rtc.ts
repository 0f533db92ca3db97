/**
 * MC146818-style CMOS RTC at 0x70 (index, bit 7 = NMI disable) and 0x71
 * (data): 128 bytes of CMOS RAM, time registers derived from an injectable
 * host wall clock plus a guest-set offset, BCD/binary and 12/24-hour formats,
 * UIP, SET, register C flags and the update-ended interrupt on IRQ 8 (driven
 * by the embedder calling poll()). Not modelled: periodic and alarm interrupts,
 * the CMOS checksum, daylight saving. Time is UTC.
 * Reference: Motorola MC146818A / Dallas DS12887 datasheets; Linux
 * drivers/rtc/rtc-mc146818-lib.c (how the guest reads it consistently).
 *
 * Threat model: the guest controls the index (masked to 7 bits), every data
 * byte and the access rate. Time fields accept any byte: values that are not
 * valid BCD or are out of range are normalised by the date arithmetic, never
 * thrown on. State is a fixed 128-byte array plus one offset; nothing grows.
 */

import { StateReader, toBase64 } from './device-state';
import type { IoDevice, IrqLine } from './types';

export const CMOS_INDEX_OFFSET = 0;
export const CMOS_DATA_OFFSET = 1;
/** Index port bit 7 masks NMI on PCs; it is not part of the CMOS address. */
export const CMOS_NMI_DISABLE_BIT = 0x80;
export const CMOS_RAM_SIZE = 128;

export const RTC_SECONDS = 0x00;
export const RTC_SECONDS_ALARM = 0x01;
export const RTC_MINUTES = 0x02;
export const RTC_MINUTES_ALARM = 0x03;
export const RTC_HOURS = 0x04;
export const RTC_HOURS_ALARM = 0x05;
export const RTC_DAY_OF_WEEK = 0x06;
export const RTC_DAY_OF_MONTH = 0x07;
export const RTC_MONTH = 0x08;
export const RTC_YEAR = 0x09;
export const RTC_REG_A = 0x0a;
export const RTC_REG_B = 0x0b;
export const RTC_REG_C = 0x0c;
export const RTC_REG_D = 0x0d;
/** Century byte; the FADT CENTURY field must point here. */
export const RTC_CENTURY = 0x32;

/** Register A: update in progress, read-only. */
export const REG_A_UIP_BIT = 0x80;
/** Register A power-on value: 32.768 kHz divider, 1024 Hz rate. */
const REG_A_DEFAULT = 0x26;
/** Register B: halt updates so the guest can set the time. */
export const REG_B_SET_BIT = 0x80;
export const REG_B_PIE_BIT = 0x40;
export const REG_B_AIE_BIT = 0x20;
export const REG_B_UIE_BIT = 0x10;
/** Register B: data mode, 1 = binary, 0 = BCD. */
export const REG_B_DM_BIT = 0x04;
/** Register B: 1 = 24-hour mode. */
export const REG_B_24H_BIT = 0x02;
/** Register B power-on value as PC firmware leaves it: 24-hour, BCD. */
const REG_B_DEFAULT = REG_B_24H_BIT;
export const REG_C_IRQF_BIT = 0x80;
export const REG_C_UF_BIT = 0x10;
/** Register D: valid RAM and time; the battery never dies. */
export const REG_D_VRT_BIT = 0x80;
/** 12-hour mode: bit 7 of the hours byte means PM. */
const HOURS_PM_BIT = 0x80;

/**
 * UIP is visible for the last millisecond of each second. The chip raises it
 * 244 µs ahead of the update; Date has millisecond resolution, so one
 * millisecond is the closest window. Linux re-reads the seconds around its
 * UIP checks, which closes any race the wider window leaves.
 */
const UIP_WINDOW_MS = 1;

const TIME_REGISTERS = new Set([RTC_SECONDS, RTC_MINUTES, RTC_HOURS, RTC_DAY_OF_WEEK, RTC_DAY_OF_MONTH, RTC_MONTH, RTC_YEAR, RTC_CENTURY]);

const MIB = 1024 * 1024;

/** RAM sizes for the BIOS memory-size bytes QEMU and PC firmware populate. */
export interface CmosMemorySizes {
  /** Bytes of RAM below 4 GiB (including the first MiB). */
  belowFourGiB: number;
  /** Bytes of RAM at or above 4 GiB. */
  aboveFourGiB: number;
}

export interface CmosRtcOptions {
  name?: string;
  /** IRQ 8; only the update-ended interrupt drives it. */
  irq?: IrqLine;
  /** Host wall clock (UTC). */
  now?: () => Date;
  memory?: CmosMemorySizes;
}

export interface CmosRtcState {
  index: number;
  nmiDisabled: boolean;
  /** 128 CMOS bytes, base64; time bytes are meaningful only while SET is on. */
  ram: string;
  /** Guest time minus host time, in milliseconds. */
  offsetMs: number;
  regC: number;
}

export class CmosRtc implements IoDevice {
  readonly name: string;
  readonly stats = { missedReads: 0, missedWrites: 0 };

  private readonly irq: IrqLine | undefined;
  private readonly now: () => Date;
  private readonly ram = new Uint8Array(CMOS_RAM_SIZE);
  private index = 0;
  private nmiDisabledFlag = false;
  private offsetMs = 0;
  private regC = 0;
  /** Guest-time second at which UF was last evaluated. */
  private lastUpdateSecond: number;
  private irqLevel = false;
  private lastHostMs = 0;

  constructor(options: CmosRtcOptions = {}) {
    this.name = options.name ?? 'cmos';
    this.irq = options.irq;
    this.now = options.now ?? (() => new Date());
    this.ram[RTC_REG_A] = REG_A_DEFAULT;
    this.ram[RTC_REG_B] = REG_B_DEFAULT;
    if (options.memory) this.writeMemorySizes(options.memory);
    this.lastUpdateSecond = Math.floor(this.guestMs() / 1000);
  }

  /** Whether the guest has masked NMIs through the index port. */
  get nmiDisabled(): boolean {
    return this.nmiDisabledFlag;
  }

  read(offset: number, size: number): number {
    if (size !== 1 || (offset !== CMOS_INDEX_OFFSET && offset !== CMOS_DATA_OFFSET)) {
      this.stats.missedReads++;
      return 0;
    }
    // The index port is write-only on PCs; reads float.
    if (offset === CMOS_INDEX_OFFSET) return 0xff;
    return this.readRegister(this.index);
  }

  write(offset: number, size: number, value: number): void {
    if (size !== 1 || (offset !== CMOS_INDEX_OFFSET && offset !== CMOS_DATA_OFFSET)) {
      this.stats.missedWrites++;
      return;
    }
    const byte = value & 0xff;
    if (offset === CMOS_INDEX_OFFSET) {
      this.index = byte & 0x7f;
      this.nmiDisabledFlag = (byte & CMOS_NMI_DISABLE_BIT) !== 0;
      return;
    }
    this.writeRegister(this.index, byte);
  }

  /**
   * Raise the update-ended interrupt if a second boundary has passed and UIE
   * is set. The embedder calls this from a timer while updateInterruptEnabled()
   * is true; msUntilNextUpdate() says when the next boundary is.
   */
  poll(): void {
    const second = Math.floor(this.guestMs() / 1000);
    if (this.setMode() || second === this.lastUpdateSecond) return;
    this.lastUpdateSecond = second;
    this.regC |= REG_C_UF_BIT;
    this.updateIrq();
  }

  /** Whether the guest has enabled the update-ended interrupt. */
  updateInterruptEnabled(): boolean {
    return (this.ram[RTC_REG_B]! & REG_B_UIE_BIT) !== 0;
  }

  /** Milliseconds until the next guest-time second boundary (1-1000). */
  msUntilNextUpdate(): number {
    const ms = this.guestMs();
    return 1000 - (((ms % 1000) + 1000) % 1000);
  }

  snapshot(): CmosRtcState {
    return {
      index: this.index,
      nmiDisabled: this.nmiDisabledFlag,
      ram: toBase64(this.ram),
      offsetMs: this.offsetMs,
      regC: this.regC,
    };
  }

  /**
   * Take saved state, checking every field (errors name `path` and the
   * field; nothing changes when one is refused). The guest clock keeps its
   * offset from host wall-clock time, so it reads the host's time plus what
   * the guest set, as a battery-backed clock would after the pause.
   */
  restoreState(input: unknown, path: string = this.name): void {
    const r = new StateReader(path, input);
    const index = r.int('index', 0, 0x7f);
    const nmiDisabled = r.bool('nmiDisabled');
    const ram = r.fixedBytes('ram', CMOS_RAM_SIZE);
    // Date covers ±8.64e15 ms from 1970: an offset beyond ±1e15 ms (31 700 years) is no clock.
    const offsetMs = r.number('offsetMs', 1e15);
    const regC = r.int('regC', 0, 0xff);
    r.done();
    if (regC & 0x0f) throw r.error('regC', `has bits outside 0xf0: 0x${regC.toString(16)}`);
    this.index = index;
    this.nmiDisabledFlag = nmiDisabled;
    this.ram.set(ram);
    this.offsetMs = offsetMs;
    this.regC = regC;
    this.lastUpdateSecond = Math.floor(this.guestMs() / 1000);
    this.updateIrq();
  }

  /** A new RTC with saved state (see restoreState). */
  static restore(state: unknown, options: CmosRtcOptions = {}): CmosRtc {
    const rtc = new CmosRtc({ ...options, memory: undefined });
    rtc.restoreState(state);
    return rtc;
  }

  private readRegister(index: number): number {
    if (TIME_REGISTERS.has(index) && !this.setMode()) return this.encodeTimeField(index, new Date(this.guestMs()));
    switch (index) {
      case RTC_REG_A:
        return (this.ram[RTC_REG_A]! & 0x7f) | (this.updateInProgress() ? REG_A_UIP_BIT : 0);
      case RTC_REG_C: {
        // UF also latches without interrupts, so polling drivers see it.
        this.poll();
        const value = this.regC;
        this.regC = 0;
        this.updateIrq();
        return value;
      }
      case RTC_REG_D:
        return REG_D_VRT_BIT;
      default:
        return this.ram[index]!;
    }
  }

  private writeRegister(index: number, byte: number): void {
    if (TIME_REGISTERS.has(index)) {
      if (this.setMode()) {
        this.ram[index] = byte;
      } else {
        // A write while the clock runs changes that field and keeps the rest ticking.
        this.latchTime();
        this.ram[index] = byte;
        this.adoptLatchedTime();
      }
      return;
    }
    switch (index) {
      case RTC_REG_A:
        this.ram[RTC_REG_A] = byte & 0x7f;
        return;
      case RTC_REG_B:
        this.writeRegB(byte);
        return;
      case RTC_REG_C:
      case RTC_REG_D:
        return;
      default:
        this.ram[index] = byte;
    }
  }

  private writeRegB(byte: number): void {
    const wasSet = this.setMode();
    let next = byte;
    // Setting SET clears UIE on the MC146818: no update interrupts while halted.
    if (next & REG_B_SET_BIT) next &= ~REG_B_UIE_BIT;
    if (!wasSet && next & REG_B_SET_BIT) {
      // Freeze the clock in the format in force before this write.
      this.latchTime();
    }
    const formatBefore = this.ram[RTC_REG_B]! & (REG_B_DM_BIT | REG_B_24H_BIT);
    this.ram[RTC_REG_B] = next;
    if (wasSet && !(next & REG_B_SET_BIT)) {
      // The guest finished writing the time, possibly after switching format in the same write.
      this.adoptLatchedTime(formatBefore);
      this.lastUpdateSecond = Math.floor(this.guestMs() / 1000);
    }
    this.updateIrq();
  }

  private setMode(): boolean {
    return (this.ram[RTC_REG_B]! & REG_B_SET_BIT) !== 0;
  }

  private updateInProgress(): boolean {
    if (this.setMode()) return false;
    const ms = ((this.guestMs() % 1000) + 1000) % 1000;
    return ms >= 1000 - UIP_WINDOW_MS;
  }

  private hostMs(): number {
    const ms = this.now().getTime();
    // A broken host clock must not poison guest time with NaN.
    if (Number.isFinite(ms)) this.lastHostMs = ms;
    return this.lastHostMs;
  }

  private guestMs(): number {
    return this.hostMs() + this.offsetMs;
  }

  private binary(): boolean {
    return (this.ram[RTC_REG_B]! & REG_B_DM_BIT) !== 0;
  }

  private encode(value: number, binaryMode = this.binary()): number {
    return binaryMode ? value & 0xff : (Math.floor(value / 10) % 10 << 4) | value % 10;
  }

  private decode(byte: number, binaryMode: boolean): number {
    return binaryMode ? byte : (byte >> 4) * 10 + (byte & 0x0f);
  }

  private encodeTimeField(index: number, date: Date): number {
    switch (index) {
      case RTC_SECONDS:
        return this.encode(date.getUTCSeconds());
      case RTC_MINUTES:
        return this.encode(date.getUTCMinutes());
      case RTC_HOURS: {
        const hour = date.getUTCHours();
        if (this.ram[RTC_REG_B]! & REG_B_24H_BIT) return this.encode(hour);
        return this.encode(hour % 12 || 12) | (hour >= 12 ? HOURS_PM_BIT : 0);
      }
      case RTC_DAY_OF_WEEK:
        return this.encode(date.getUTCDay() + 1);
      case RTC_DAY_OF_MONTH:
        return this.encode(date.getUTCDate());
      case RTC_MONTH:
        return this.encode(date.getUTCMonth() + 1);
      case RTC_YEAR:
        return this.encode(date.getUTCFullYear() % 100);
      default:
        return this.encode(Math.floor(date.getUTCFullYear() / 100) % 100);
    }
  }

  /** Copy the running time into the RAM time bytes (used while SET is on). */
  private latchTime(): void {
    const date = new Date(this.guestMs());
    for (const index of TIME_REGISTERS) this.ram[index] = this.encodeTimeField(index, date);
  }

  /** Make the RAM time bytes the running time, by moving the offset. */
  private adoptLatchedTime(format = this.ram[RTC_REG_B]! & (REG_B_DM_BIT | REG_B_24H_BIT)): void {
    const bin = (format & REG_B_DM_BIT) !== 0;
    const d = (i: number) => this.decode(this.ram[i]!, bin);
    let hour: number;
    if (format & REG_B_24H_BIT) {
      hour = d(RTC_HOURS);
    } else {
      const raw = this.ram[RTC_HOURS]!;
      hour = (this.decode(raw & 0x7f, bin) % 12) + (raw & HOURS_PM_BIT ? 12 : 0);
    }
    const year = d(RTC_CENTURY) * 100 + d(RTC_YEAR);
    const guestMs = Date.UTC(year, d(RTC_MONTH) - 1, d(RTC_DAY_OF_MONTH), hour, d(RTC_MINUTES), d(RTC_SECONDS));
    // Date.UTC maps years 0-99 to 1900-1999; fix that up so century 0 stays year 0-99.
    const fixed = year < 100 ? new Date(guestMs).setUTCFullYear(year) : guestMs;
    if (Number.isFinite(fixed)) this.offsetMs = fixed - this.hostMs();
  }

  private updateIrq(): void {
    const b = this.ram[RTC_REG_B]!;
    const pending = (this.regC & REG_C_UF_BIT) !== 0 && (b & REG_B_UIE_BIT) !== 0;
    if (pending) this.regC |= REG_C_IRQF_BIT;
    else this.regC &= ~REG_C_IRQF_BIT;
    if (pending === this.irqLevel) return;
    this.irqLevel = pending;
    this.irq?.set(pending);
  }

  private writeMemorySizes(memory: CmosMemorySizes): void {
    const below = Math.max(0, Math.floor(memory.belowFourGiB));
    const above = Math.max(0, Math.floor(memory.aboveFourGiB));
    const put16 = (index: number, v: number) => {
      this.ram[index] = v & 0xff;
      this.ram[index + 1] = (v >> 8) & 0xff;
    };
    put16(0x15, 640); // conventional memory in KiB
    const extKiB = Math.min(0xffff, Math.max(0, Math.floor((below - MIB) / 1024)));
    put16(0x17, extKiB);
    put16(0x30, extKiB);
    const above16M = Math.min(0xffff, Math.max(0, Math.floor((below - 16 * MIB) / 65536)));
    put16(0x34, above16M);
    const high = Math.min(0xffffff, Math.floor(above / 65536));
    this.ram[0x5b] = high & 0xff;
    this.ram[0x5c] = (high >> 8) & 0xff;
    this.ram[0x5d] = (high >> 16) & 0xff;
  }
}
