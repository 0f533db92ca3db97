/**
 * 16550A UART register model: offsets 0-7, byte accesses, FIFOs, interrupt
 * priority, loopback and PC-style OUT2 gating of the interrupt output.
 * It does not know its port number, the bus, KVM or Node streams: TX bytes go
 * to a ByteSink, RX bytes come in through enqueue(), the IRQ goes to an IrqLine.
 * Reference: National Semiconductor PC16550D datasheet (register and IIR
 * priority tables); Linux drivers/tty/serial/8250/8250_port.c (what a guest probes).
 *
 * Threat model: the guest controls every register write and the order and rate
 * of accesses. Every value is masked to the bits the 16550A defines, unknown
 * offsets and non-byte accesses are counted and ignored, nothing the guest does
 * throws or allocates beyond the RX FIFO bound (`rxCapacity`, default 64). Guest
 * output is forwarded byte by byte and cannot be bounded here: the embedder's
 * sink must batch, bound and rate-limit it. Host input is bounded by the FIFO:
 * enqueue() takes what fits and reports the rest as dropped.
 */

import { StateReader, toBase64 } from './device-state';
import type { ByteSink, IoDevice, IrqLine } from './types';

/** RBR (read) / THR (write); DLL while LCR.DLAB is set. */
export const UART_DATA_OFFSET = 0;
/** IER; DLM while LCR.DLAB is set. */
export const UART_IER_OFFSET = 1;
/** IIR (read) / FCR (write). The 16550A has no EFR, so DLAB does not change this. */
export const UART_IIR_FCR_OFFSET = 2;
export const UART_LCR_OFFSET = 3;
export const UART_MCR_OFFSET = 4;
export const UART_LSR_OFFSET = 5;
export const UART_MSR_OFFSET = 6;
export const UART_SCR_OFFSET = 7;
/** Number of ports the UART decodes. */
export const UART_REGISTER_COUNT = 8;

/** IER: received data available (and character timeout). */
export const IER_ERBFI_BIT = 0x01;
/** IER: transmitter holding register empty. */
export const IER_ETBEI_BIT = 0x02;
/** IER: receiver line status (overrun, parity, framing, break). */
export const IER_ELSI_BIT = 0x04;
/** IER: modem status change. */
export const IER_EDSSI_BIT = 0x08;
/** IER bits 7:4 are reserved on a 16550A; Linux checks they read 0 (XScale UUE probe). */
export const IER_MASK = 0x0f;

/** IIR: no interrupt pending (active low "pending" flag). */
export const IIR_NO_INT_BIT = 0x01;
export const IIR_MODEM_STATUS = 0x00;
export const IIR_THRE = 0x02;
export const IIR_RX_DATA = 0x04;
export const IIR_LINE_STATUS = 0x06;
export const IIR_CHAR_TIMEOUT = 0x0c;
/** IIR bits 7:6 = 11 when FIFOs are enabled: how Linux tells a 16550A from a 16450. */
export const IIR_FIFO_ENABLED_MASK = 0xc0;

/** FCR: enable both FIFOs; changing it clears them. */
export const FCR_ENABLE_FIFO_BIT = 0x01;
export const FCR_CLEAR_RX_BIT = 0x02;
export const FCR_CLEAR_TX_BIT = 0x04;
/** FCR bits 7:6 select the RX trigger level. */
const FCR_TRIGGER_SHIFT = 6;
const RX_TRIGGER_LEVELS = [1, 4, 8, 14] as const;

/** LCR: divisor latch access. */
export const LCR_DLAB_BIT = 0x80;

export const MCR_DTR_BIT = 0x01;
export const MCR_RTS_BIT = 0x02;
export const MCR_OUT1_BIT = 0x04;
/** MCR: on PC boards OUT2 gates the UART's interrupt output onto the ISA IRQ line. */
export const MCR_OUT2_BIT = 0x08;
export const MCR_LOOP_BIT = 0x10;
/** MCR bits 7:5 are reserved on a 16550A and read 0. */
const MCR_MASK = 0x1f;

export const LSR_DR_BIT = 0x01;
export const LSR_OE_BIT = 0x02;
/** LSR: THR empty; always set because the virtual transmitter finishes instantly. */
export const LSR_THRE_BIT = 0x20;
/** LSR: transmitter empty; always set for the same reason. */
export const LSR_TEMT_BIT = 0x40;

export const MSR_DCTS_BIT = 0x01;
export const MSR_DDSR_BIT = 0x02;
export const MSR_TERI_BIT = 0x04;
export const MSR_DDCD_BIT = 0x08;
export const MSR_CTS_BIT = 0x10;
export const MSR_DSR_BIT = 0x20;
export const MSR_RI_BIT = 0x40;
export const MSR_DCD_BIT = 0x80;
const MSR_DELTA_MASK = 0x0f;
/** The virtual line is always connected and ready: carrier, data set ready, clear to send. */
const MSR_CONNECTED = MSR_DCD_BIT | MSR_DSR_BIT | MSR_CTS_BIT;

/** Depth of the 16550A's own FIFOs; the loopback path honours it (see rxPushLoopback). */
export const UART_HW_FIFO_DEPTH = 16;
/** Default host-input bound; see the constructor option for why it is 64. */
export const UART_DEFAULT_RX_CAPACITY = 64;
const UART_MAX_RX_CAPACITY = 4096;
/** Divisor 12 = 9600 baud from the PC's 1.8432 MHz clock, the firmware default. */
const DEFAULT_DIVISOR = 0x000c;

export interface Uart16550Options {
  /** Diagnostic name (default "uart"). */
  name?: string;
  /** The ISA interrupt line (COM1: IRQ 4, COM2: IRQ 3). */
  irq: IrqLine;
  /** Receives every THR byte at once, unbatched; the sink batches. */
  sink: ByteSink;
  /**
   * How many host bytes the RX FIFO holds (16-4096, default 64). Larger than
   * the chip's 16 so a pasted line or a terminal escape sequence lands in one
   * enqueue() and the host stream pauses less often; the guest cannot tell,
   * because Linux drains RBR while LSR.DR is set. 64 is the bound vm-superio
   * and Firecracker use against console-input flooding.
   */
  rxCapacity?: number;
  /** Called once after enqueue() refused bytes, when the guest has emptied the FIFO. */
  onRxSpace?: () => void;
}

/** Plain, JSON-safe state of the UART. */
export interface Uart16550State {
  ier: number;
  lcr: number;
  mcr: number;
  scr: number;
  divisor: number;
  fifoEnabled: boolean;
  rxTrigger: number;
  /** THRE interrupt latched (cleared by an IIR read that reports it or by a THR write). */
  threPending: boolean;
  /** Sticky LSR error bits (only OE is ever set). */
  lsrErrors: number;
  /** MSR delta bits 3:0. */
  msrDelta: number;
  /** The RX FIFO, base64. */
  rx: string;
  /** enqueue() refused bytes and the host is waiting for onRxSpace. */
  rxBlocked: boolean;
}

/** Counters for diagnostics; none of them affect guest-visible state. */
export interface Uart16550Stats {
  txBytes: number;
  rxBytes: number;
  /** Host bytes offered to enqueue() that did not fit. */
  rxDropped: number;
  /** Loopback bytes lost because the 16-byte FIFO was full (LSR.OE was set). */
  rxOverruns: number;
  /** Accesses that were not 1 byte wide or hit an offset past 7. */
  missedReads: number;
  missedWrites: number;
  /** The sink or the onRxSpace callback threw; the device carried on. */
  hostErrors: number;
}

export class Uart16550 implements IoDevice {
  readonly name: string;
  readonly stats: Uart16550Stats = {
    txBytes: 0,
    rxBytes: 0,
    rxDropped: 0,
    rxOverruns: 0,
    missedReads: 0,
    missedWrites: 0,
    hostErrors: 0,
  };

  private readonly irq: IrqLine;
  private readonly sink: ByteSink;
  private readonly rxCapacity: number;
  private readonly onRxSpace: (() => void) | undefined;

  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private scr = 0;
  private divisor = DEFAULT_DIVISOR;
  private fifoEnabled = false;
  private rxTrigger = 1;
  private threPending = false;
  private lsrErrors = 0;
  private msrDelta = 0;
  private rx: number[] = [];
  private rxBlocked = false;
  /** Level last driven on the IRQ line, so set() is called only on changes. */
  private irqLevel = false;

  constructor(options: Uart16550Options) {
    const capacity = options.rxCapacity ?? UART_DEFAULT_RX_CAPACITY;
    if (!Number.isInteger(capacity) || capacity < UART_HW_FIFO_DEPTH || capacity > UART_MAX_RX_CAPACITY) {
      throw new RangeError(`rxCapacity must be an integer from ${UART_HW_FIFO_DEPTH} to ${UART_MAX_RX_CAPACITY}, got ${capacity}`);
    }
    this.name = options.name ?? 'uart';
    this.irq = options.irq;
    this.sink = options.sink;
    this.rxCapacity = capacity;
    this.onRxSpace = options.onRxSpace;
  }

  /** How many bytes the RX FIFO can hold (host input bound). */
  fifoCapacity(): number {
    return this.rxCapacity;
  }

  /** Bytes waiting in the RX FIFO. */
  rxPending(): number {
    return this.rx.length;
  }

  /** Whether the IRQ output is asserted now (after OUT2 gating). */
  irqAsserted(): boolean {
    return this.irqLevel;
  }

  /**
   * Offer host input. Takes as many bytes as fit and returns that count; the
   * rest are counted in stats.rxDropped and onRxSpace fires once the guest has
   * drained the FIFO. In loopback mode the serial input is disconnected, so
   * nothing is taken until the guest leaves loopback.
   */
  enqueue(bytes: Uint8Array): number {
    const room = this.isLoopback() ? 0 : this.rxCapacity - this.rx.length;
    const taken = Math.min(room, bytes.length);
    for (let i = 0; i < taken; i++) this.rx.push(bytes[i]!);
    this.stats.rxBytes += taken;
    if (taken < bytes.length) {
      this.stats.rxDropped += bytes.length - taken;
      this.rxBlocked = true;
    }
    this.updateIrq();
    return taken;
  }

  read(offset: number, size: number): number {
    if (size !== 1 || !Number.isInteger(offset) || offset < 0 || offset >= UART_REGISTER_COUNT) {
      this.stats.missedReads++;
      return 0;
    }
    const dlab = (this.lcr & LCR_DLAB_BIT) !== 0;
    let value: number;
    switch (offset) {
      case UART_DATA_OFFSET:
        value = dlab ? this.divisor & 0xff : this.readRbr();
        break;
      case UART_IER_OFFSET:
        value = dlab ? this.divisor >> 8 : this.ier;
        break;
      case UART_IIR_FCR_OFFSET:
        value = this.readIir();
        break;
      case UART_LCR_OFFSET:
        value = this.lcr;
        break;
      case UART_MCR_OFFSET:
        value = this.mcr;
        break;
      case UART_LSR_OFFSET:
        value = this.lsr();
        // Reading LSR is what clears the error bits and the line-status interrupt.
        this.lsrErrors = 0;
        break;
      case UART_MSR_OFFSET:
        value = this.msrStatus() | this.msrDelta;
        this.msrDelta = 0;
        break;
      default:
        value = this.scr;
        break;
    }
    this.updateIrq();
    this.notifyRxSpaceIfDrained();
    return value;
  }

  write(offset: number, size: number, value: number): void {
    if (size !== 1 || !Number.isInteger(offset) || offset < 0 || offset >= UART_REGISTER_COUNT) {
      this.stats.missedWrites++;
      return;
    }
    const byte = value & 0xff;
    const dlab = (this.lcr & LCR_DLAB_BIT) !== 0;
    switch (offset) {
      case UART_DATA_OFFSET:
        if (dlab) this.divisor = (this.divisor & 0xff00) | byte;
        else this.writeThr(byte);
        break;
      case UART_IER_OFFSET:
        if (dlab) this.divisor = (this.divisor & 0x00ff) | (byte << 8);
        else this.writeIer(byte);
        break;
      case UART_IIR_FCR_OFFSET:
        this.writeFcr(byte);
        break;
      case UART_LCR_OFFSET:
        this.lcr = byte;
        break;
      case UART_MCR_OFFSET:
        this.writeMcr(byte);
        break;
      case UART_SCR_OFFSET:
        this.scr = byte;
        break;
      default:
        // LSR and MSR writes are factory-test features on real parts; ignoring them is safe.
        break;
    }
    this.updateIrq();
    this.notifyRxSpaceIfDrained();
  }

  /**
   * What a 1-byte read at `offset` would return, without its side effects,
   * for registers whose read has none: IER/DLM (1), LCR (3), MCR (4), LSR
   * (5, only while no error bit is latched) and SCR (7). undefined for the
   * rest. The VMM mirrors these into native register shadows so the
   * console's LSR polling never leaves the vCPU thread.
   */
  peek(offset: number): number | undefined {
    const dlab = (this.lcr & LCR_DLAB_BIT) !== 0;
    switch (offset) {
      case UART_IER_OFFSET:
        return dlab ? this.divisor >> 8 : this.ier;
      case UART_LCR_OFFSET:
        return this.lcr;
      case UART_MCR_OFFSET:
        return this.mcr;
      case UART_LSR_OFFSET:
        return this.lsrErrors === 0 ? this.lsr() : undefined;
      case UART_SCR_OFFSET:
        return this.scr;
      default:
        return undefined;
    }
  }

  /**
   * True while THR writes may be queued and register shadows trusted: not in
   * loopback (where a THR write changes what RBR/LSR read) and no latched
   * line error (whose LSR read would clear it).
   */
  shadowSafe(): boolean {
    return !this.isLoopback() && this.lsrErrors === 0;
  }

  /** Current state as plain, JSON-safe data (the RX FIFO as base64). */
  snapshot(): Uart16550State {
    return {
      ier: this.ier,
      lcr: this.lcr,
      mcr: this.mcr,
      scr: this.scr,
      divisor: this.divisor,
      fifoEnabled: this.fifoEnabled,
      rxTrigger: this.rxTrigger,
      threPending: this.threPending,
      lsrErrors: this.lsrErrors,
      msrDelta: this.msrDelta,
      rx: toBase64(Uint8Array.from(this.rx)),
      rxBlocked: this.rxBlocked,
    };
  }

  /**
   * Take saved state into this UART, checking every field (a snapshot file
   * may be tampered with: errors name `path` and the field), and drive the
   * IRQ line to the restored level, so an interrupt pending at save time is
   * not lost. Nothing changes when a field is refused.
   */
  restoreState(input: unknown, path: string = this.name): void {
    const r = new StateReader(path, input);
    const byte = (field: string, mask: number) => {
      const v = r.int(field, 0, 0xff);
      if (v & ~mask) throw r.error(field, `has bits outside 0x${mask.toString(16)}: 0x${v.toString(16)}`);
      return v;
    };
    const s = {
      ier: byte('ier', IER_MASK),
      lcr: byte('lcr', 0xff),
      mcr: byte('mcr', MCR_MASK),
      scr: byte('scr', 0xff),
      divisor: r.int('divisor', 0, 0xffff),
      fifoEnabled: r.bool('fifoEnabled'),
      rxTrigger: r.oneOf('rxTrigger', RX_TRIGGER_LEVELS),
      threPending: r.bool('threPending'),
      lsrErrors: byte('lsrErrors', LSR_OE_BIT),
      msrDelta: byte('msrDelta', MSR_DELTA_MASK),
      rx: r.bytes('rx', this.rxCapacity),
      rxBlocked: r.bool('rxBlocked'),
    };
    r.done();
    // Without FIFOs the chip reports trigger level 1 (writeFcr); loopback holds at most the chip's FIFO.
    if (!s.fifoEnabled && s.rxTrigger !== 1) throw r.error('rxTrigger', `expected 1 while FIFOs are off, got ${s.rxTrigger}`);
    this.ier = s.ier;
    this.lcr = s.lcr;
    this.mcr = s.mcr;
    this.scr = s.scr;
    this.divisor = s.divisor;
    this.fifoEnabled = s.fifoEnabled;
    this.rxTrigger = s.rxTrigger;
    this.threPending = s.threPending;
    this.lsrErrors = s.lsrErrors;
    this.msrDelta = s.msrDelta;
    this.rx = [...s.rx];
    this.rxBlocked = s.rxBlocked;
    this.updateIrq();
  }

  /** A new UART with saved state (see restoreState). */
  static restore(state: unknown, options: Uart16550Options): Uart16550 {
    const uart = new Uart16550(options);
    uart.restoreState(state);
    return uart;
  }

  private isLoopback(): boolean {
    return (this.mcr & MCR_LOOP_BIT) !== 0;
  }

  private readRbr(): number {
    return this.rx.shift() ?? 0;
  }

  private writeThr(byte: number): void {
    if (this.isLoopback()) {
      this.rxPushLoopback(byte);
    } else {
      this.stats.txBytes++;
      try {
        // A byte per guest write: no array for it where the sink takes bytes.
        const sink = this.sink;
        if (sink.writeByte) sink.writeByte(byte);
        else sink.write(Uint8Array.of(byte));
      } catch {
        // A failing host sink must not stall the guest driver, which waits for THRE.
        this.stats.hostErrors++;
      }
    }
    // The write clears THRE, and the instant transmitter empties THR again at
    // once; the net effect is a fresh THRE that the next IIR read consumes.
    this.threPending = true;
  }

  /**
   * In loopback the transmitter feeds the receiver through the chip's real
   * FIFO, 16 bytes (1 without FIFOs). Linux's size_fifo() counts how many
   * looped bytes survive and would call a 64-byte answer a U6_16550A, so the
   * host-input capacity must not leak into this path.
   */
  private rxPushLoopback(byte: number): void {
    const depth = this.fifoEnabled ? UART_HW_FIFO_DEPTH : 1;
    if (this.rx.length >= depth) {
      this.lsrErrors |= LSR_OE_BIT;
      this.stats.rxOverruns++;
      return;
    }
    this.rx.push(byte);
  }

  private writeIer(byte: number): void {
    const next = byte & IER_MASK;
    const enablingThre = (next & IER_ETBEI_BIT) !== 0 && (this.ier & IER_ETBEI_BIT) === 0;
    // Enabling ETBEI while THR is empty raises THRE at once; Linux's
    // start_tx and its UART_BUG_THRE probe both depend on this re-assertion.
    if (enablingThre) this.threPending = true;
    if ((next & IER_ETBEI_BIT) === 0) this.threPending = false;
    this.ier = next;
  }

  private writeFcr(byte: number): void {
    const enable = (byte & FCR_ENABLE_FIFO_BIT) !== 0;
    if (enable !== this.fifoEnabled) {
      // Toggling FIFO mode resets both FIFOs on a 16550A.
      this.clearRx();
      this.fifoEnabled = enable;
    }
    // With FCR0 clear the chip ignores the other FCR bits.
    if (!enable) {
      this.rxTrigger = 1;
      return;
    }
    if (byte & FCR_CLEAR_RX_BIT) this.clearRx();
    this.rxTrigger = RX_TRIGGER_LEVELS[(byte >> FCR_TRIGGER_SHIFT) & 3]!;
  }

  private clearRx(): void {
    this.rx.length = 0;
    this.lsrErrors = 0;
  }

  private writeMcr(byte: number): void {
    const before = this.msrStatus();
    const wasLoopback = this.isLoopback();
    this.mcr = byte & MCR_MASK;
    const after = this.msrStatus();
    const changed = before ^ after;
    if (changed & MSR_CTS_BIT) this.msrDelta |= MSR_DCTS_BIT;
    if (changed & MSR_DSR_BIT) this.msrDelta |= MSR_DDSR_BIT;
    if (changed & MSR_DCD_BIT) this.msrDelta |= MSR_DDCD_BIT;
    // TERI flags only the trailing edge of RI.
    if (before & MSR_RI_BIT && !(after & MSR_RI_BIT)) this.msrDelta |= MSR_TERI_BIT;
    // enqueue() refuses input in loopback; leaving it is the moment to ask for more.
    if (wasLoopback && !this.isLoopback() && this.rxBlocked && this.rx.length < this.rxCapacity) {
      this.rxBlocked = false;
      this.callOnRxSpace();
    }
  }

  /** MSR bits 7:4: the modem inputs, or the MCR outputs folded back in loopback. */
  private msrStatus(): number {
    if (!this.isLoopback()) return MSR_CONNECTED;
    let status = 0;
    if (this.mcr & MCR_RTS_BIT) status |= MSR_CTS_BIT;
    if (this.mcr & MCR_DTR_BIT) status |= MSR_DSR_BIT;
    if (this.mcr & MCR_OUT1_BIT) status |= MSR_RI_BIT;
    if (this.mcr & MCR_OUT2_BIT) status |= MSR_DCD_BIT;
    return status;
  }

  private lsr(): number {
    let value = LSR_THRE_BIT | LSR_TEMT_BIT | this.lsrErrors;
    if (this.rx.length > 0) value |= LSR_DR_BIT;
    return value;
  }

  /** The highest-priority pending interrupt as the IIR low nibble. */
  private interruptId(): number {
    if (this.ier & IER_ELSI_BIT && this.lsrErrors !== 0) return IIR_LINE_STATUS;
    if (this.ier & IER_ERBFI_BIT && this.rx.length > 0) {
      // Below the trigger level the chip reports a character timeout after
      // four idle character times. Host input arrives in bursts and there is
      // no reason to delay the guest, so the timeout is taken as already expired.
      return this.fifoEnabled && this.rx.length < this.rxTrigger ? IIR_CHAR_TIMEOUT : IIR_RX_DATA;
    }
    if (this.ier & IER_ETBEI_BIT && this.threPending) return IIR_THRE;
    if (this.ier & IER_EDSSI_BIT && this.msrDelta !== 0) return IIR_MODEM_STATUS;
    return IIR_NO_INT_BIT;
  }

  private readIir(): number {
    const id = this.interruptId();
    // Reading IIR acknowledges THRE only when THRE is what it reports.
    if (id === IIR_THRE) this.threPending = false;
    return id | (this.fifoEnabled ? IIR_FIFO_ENABLED_MASK : 0);
  }

  /**
   * Drive the line only when the gated output changes. The PC wires the
   * UART's INTR through OUT2 (forced inactive in loopback) to an edge-triggered
   * ISA input; KVM's in-kernel 8259 latches an edge only on a 0->1 change of
   * the level it was given, so a level model gives exactly one edge per new
   * interrupt and the guest's IIR loop handles anything that arrives meanwhile.
   */
  private updateIrq(): void {
    const gateOpen = (this.mcr & (MCR_OUT2_BIT | MCR_LOOP_BIT)) === MCR_OUT2_BIT;
    const level = gateOpen && this.interruptId() !== IIR_NO_INT_BIT;
    if (level === this.irqLevel) return;
    this.irqLevel = level;
    this.irq.set(level);
  }

  private notifyRxSpaceIfDrained(): void {
    if (!this.rxBlocked || this.rx.length !== 0 || this.isLoopback()) return;
    this.rxBlocked = false;
    this.callOnRxSpace();
  }

  private callOnRxSpace(): void {
    if (!this.onRxSpace) return;
    try {
      this.onRxSpace();
    } catch {
      this.stats.hostErrors++;
    }
  }
}
