/**
 * An Arm PL011 UART register model: data, flags, baud divisors, line and
 * control registers, the interrupt mask/status/clear set and the PrimeCell
 * identification registers, enough for Linux's amba-pl011 driver and its
 * console. Transmit is instantaneous (the FIFO is always empty, bytes go
 * straight to the sink); receive has a 32-entry FIFO fed by `enqueue` (which
 * takes what fits and calls `onRxSpace` once the guest made room again) or
 * `pushInput` (which drops what does not fit).
 * No DMA, no modem-line changes, no break or error conditions.
 * Spec: Arm PrimeCell UART (PL011) Technical Reference Manual r1p5, ch. 3.
 */
import { StateReader, toBase64 } from './device-state';
import type { ByteSink, IoDevice, IrqLine } from './types';

/** Register offsets (TRM table 3-1). */
export const PL011 = {
  DR: 0x000,
  RSR_ECR: 0x004,
  FR: 0x018,
  ILPR: 0x020,
  IBRD: 0x024,
  FBRD: 0x028,
  LCR_H: 0x02c,
  CR: 0x030,
  IFLS: 0x034,
  IMSC: 0x038,
  RIS: 0x03c,
  MIS: 0x040,
  ICR: 0x044,
  DMACR: 0x048,
  PERIPH_ID0: 0xfe0,
  PCELL_ID0: 0xff0,
} as const;

/** Flag register bits. */
export const PL011_FR = { CTS: 1 << 0, DSR: 1 << 1, DCD: 1 << 2, BUSY: 1 << 3, RXFE: 1 << 4, TXFF: 1 << 5, RXFF: 1 << 6, TXFE: 1 << 7 } as const;
/** Interrupt bits shared by IMSC, RIS, MIS and ICR. */
export const PL011_INT = { RX: 1 << 4, TX: 1 << 5, RT: 1 << 6 } as const;

/** PeriphID0-3 then PCellID0-3: part 0x011, designer Arm (0x41), revision 1; PrimeCell 0xB105F00D. */
const ID_BYTES = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
const RX_FIFO_DEPTH = 32;
const INT_MASK = 0x7ff;
/** CR reset value: TXE and RXE set, UART disabled (TRM 3.3.8). */
const CR_RESET = 0x300;

/** Plain, JSON-safe state of a PL011 (the receive FIFO as base64). */
export interface Pl011State {
  ibrd: number;
  fbrd: number;
  lcrh: number;
  cr: number;
  ifls: number;
  imsc: number;
  ris: number;
  ilpr: number;
  dmacr: number;
  rx: string;
  /** enqueue() refused bytes and the host waits for onRxSpace. */
  rxWanted: boolean;
}

export class Pl011 implements IoDevice {
  readonly name: string;
  private readonly irq: IrqLine;
  private readonly sink: ByteSink;
  private readonly rx: number[] = [];
  private ibrd = 0;
  private fbrd = 0;
  private lcrh = 0;
  private cr = CR_RESET;
  private ifls = 0x12;
  private imsc = 0;
  private ris = 0;
  private ilpr = 0;
  private dmacr = 0;
  private irqLevel = false;
  /** enqueue() refused bytes: tell onRxSpace when the guest has read some. */
  private rxWanted = false;
  private readonly onRxSpace: (() => void) | undefined;
  /** Bytes written to DR. */
  bytesOut = 0;
  /** Bytes dropped because the receive FIFO was full. */
  rxOverruns = 0;

  constructor(name: string, irq: IrqLine, sink: ByteSink, onRxSpace?: () => void) {
    this.name = name;
    this.irq = irq;
    this.sink = sink;
    this.onRxSpace = onRxSpace;
  }

  read(offset: number, size: number): number {
    const reg = offset & ~3;
    const shift = (offset & 3) * 8;
    const value = this.readReg(reg) >>> shift;
    return size >= 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1);
  }

  write(offset: number, size: number, value: number): void {
    // Sub-word writes land in the low bits of their register, as on the bus.
    if ((offset & 3) !== 0) return;
    const v = size >= 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1);
    switch (offset) {
      case PL011.DR:
        this.sink.write(Uint8Array.of(v & 0xff));
        this.bytesOut++;
        // The byte leaves at once: the FIFO drops below any trigger level again.
        this.ris |= PL011_INT.TX;
        break;
      case PL011.RSR_ECR:
        break; // no receive errors to clear
      case PL011.ILPR:
        this.ilpr = v & 0xff;
        break;
      case PL011.IBRD:
        this.ibrd = v & 0xffff;
        break;
      case PL011.FBRD:
        this.fbrd = v & 0x3f;
        break;
      case PL011.LCR_H:
        this.lcrh = v & 0xff;
        break;
      case PL011.CR:
        this.cr = v & 0xffff;
        break;
      case PL011.IFLS:
        this.ifls = v & 0x3f;
        break;
      case PL011.IMSC:
        this.imsc = v & INT_MASK;
        break;
      case PL011.ICR:
        this.ris &= ~v;
        break;
      case PL011.DMACR:
        this.dmacr = v & 0x7;
        break;
      default:
        break; // read-only or reserved
    }
    this.updateIrq();
  }

  /** Bytes typed at the console; overflow beyond the FIFO is dropped and counted. */
  pushInput(bytes: Uint8Array): void {
    for (const b of bytes) {
      if (this.rx.length >= RX_FIFO_DEPTH) {
        this.rxOverruns++;
        continue;
      }
      this.rx.push(b);
    }
    if (this.rx.length) this.ris |= PL011_INT.RX | PL011_INT.RT;
    this.updateIrq();
  }

  /** Bytes from the host with backpressure: takes what fits in the receive FIFO and returns how many. */
  enqueue(bytes: Uint8Array): number {
    const n = Math.min(bytes.length, RX_FIFO_DEPTH - this.rx.length);
    if (n < bytes.length) this.rxWanted = true;
    if (n > 0) this.pushInput(bytes.subarray(0, n));
    return n;
  }

  /** The divisor state Linux programmed (for tests and diagnostics). */
  get divisors(): { ibrd: number; fbrd: number; lcrh: number; cr: number } {
    return { ibrd: this.ibrd, fbrd: this.fbrd, lcrh: this.lcrh, cr: this.cr };
  }

  /** The registers and the receive FIFO as plain, JSON-safe data. */
  snapshot(): Pl011State {
    return {
      ibrd: this.ibrd,
      fbrd: this.fbrd,
      lcrh: this.lcrh,
      cr: this.cr,
      ifls: this.ifls,
      imsc: this.imsc,
      ris: this.ris,
      ilpr: this.ilpr,
      dmacr: this.dmacr,
      rx: toBase64(Uint8Array.from(this.rx)),
      rxWanted: this.rxWanted,
    };
  }

  /**
   * Take saved state, checking every field against the bits each register
   * keeps (errors name `path` and the field; nothing changes when one is
   * refused), and drive the SPI to the restored level.
   */
  restoreState(input: unknown, path: string = this.name): void {
    const r = new StateReader(path, input);
    const reg = (field: string, mask: number) => {
      const v = r.int(field, 0, 0xffff_ffff);
      if (v & ~mask) throw r.error(field, `has bits outside 0x${mask.toString(16)}: 0x${v.toString(16)}`);
      return v;
    };
    const s = {
      ibrd: reg('ibrd', 0xffff),
      fbrd: reg('fbrd', 0x3f),
      lcrh: reg('lcrh', 0xff),
      cr: reg('cr', 0xffff),
      ifls: reg('ifls', 0x3f),
      imsc: reg('imsc', INT_MASK),
      ris: reg('ris', INT_MASK),
      ilpr: reg('ilpr', 0xff),
      dmacr: reg('dmacr', 0x7),
      rx: r.bytes('rx', RX_FIFO_DEPTH),
      rxWanted: r.bool('rxWanted'),
    };
    r.done();
    this.ibrd = s.ibrd;
    this.fbrd = s.fbrd;
    this.lcrh = s.lcrh;
    this.cr = s.cr;
    this.ifls = s.ifls;
    this.imsc = s.imsc;
    this.ris = s.ris;
    this.ilpr = s.ilpr;
    this.dmacr = s.dmacr;
    this.rx.length = 0;
    this.rx.push(...s.rx);
    this.rxWanted = s.rxWanted;
    this.updateIrq();
  }

  private readReg(reg: number): number {
    switch (reg) {
      case PL011.DR: {
        const b = this.rx.shift();
        if (this.rx.length === 0) {
          this.ris &= ~(PL011_INT.RX | PL011_INT.RT);
          this.updateIrq();
          if (this.rxWanted) {
            this.rxWanted = false;
            this.onRxSpace?.();
          }
        }
        return b ?? 0;
      }
      case PL011.RSR_ECR:
        return 0;
      case PL011.FR:
        return (
          PL011_FR.TXFE |
          PL011_FR.CTS |
          PL011_FR.DSR |
          PL011_FR.DCD |
          (this.rx.length === 0 ? PL011_FR.RXFE : 0) |
          (this.rx.length >= RX_FIFO_DEPTH ? PL011_FR.RXFF : 0)
        );
      case PL011.ILPR:
        return this.ilpr;
      case PL011.IBRD:
        return this.ibrd;
      case PL011.FBRD:
        return this.fbrd;
      case PL011.LCR_H:
        return this.lcrh;
      case PL011.CR:
        return this.cr;
      case PL011.IFLS:
        return this.ifls;
      case PL011.IMSC:
        return this.imsc;
      case PL011.RIS:
        return this.ris;
      case PL011.MIS:
        return this.ris & this.imsc;
      case PL011.DMACR:
        return this.dmacr;
      default:
        if (reg >= PL011.PERIPH_ID0 && reg < PL011.PERIPH_ID0 + 32) return ID_BYTES[(reg - PL011.PERIPH_ID0) >> 2]!;
        return 0;
    }
  }

  /** The SPI is level-triggered: it follows (RIS & IMSC) != 0. */
  private updateIrq(): void {
    const level = (this.ris & this.imsc) !== 0;
    if (level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq.set(level);
    }
  }
}
