/**
 * A 16550 UART as the vCPU threads see it: the registers whose reads have no
 * side effects are mirrored into the range's native shadow bytes, and the
 * writes a console makes most (THR for each byte, IER around each printk:
 * Linux's 8250 console saves IER, clears it, writes the line and restores it)
 * are posted, so the vCPU waits for JS on neither. The UART model stays the
 * one source of truth: posted writes reach it later, in order, before any
 * access that needs JS (the dispatcher drains them first), and a posted IER
 * write goes into IER's shadow byte on the vCPU thread itself
 * (IoRegistrationOptions.mirrored), so a read of IER that follows it sees it.
 *
 * IER is posted only on a machine with one vCPU. Each vCPU has its own ring,
 * and JS drains the rings in vCPU order, not in the order the writes were
 * made: with two vCPUs, one CPU's console write restoring IER and the next
 * CPU's start_tx setting THRI could reach the UART swapped, leaving THRI off
 * and the tty stalled. THR is posted on every machine (a swap there reorders
 * output the guest already interleaved).
 */
import { IER_ETBEI_BIT, IER_MASK, LCR_DLAB_BIT, UART_IER_OFFSET, UART_LCR_OFFSET, type Uart16550 } from '../devices/uart16550';
import type { IoDevice, IoRegistrationOptions, ShadowBlock } from '../hv/io-bus';

/** UART registers whose reads have no side effects (IER, LCR, MCR, LSR, SCR): answered natively. */
const UART_SHADOWED = [1, 3, 4, 5, 7];
/** Registers that read back what was written: IER (bits 3:0) while LCR.DLAB is clear. */
const UART_MIRRORED = [{ offset: UART_IER_OFFSET, mask: IER_MASK }];

/** How a UART's range is registered on the port bus (`postIer`: see above, one vCPU only). */
export function uartRegistration(postIer: boolean): IoRegistrationOptions {
  return postIer ? { posted: [0, UART_IER_OFFSET], shadowed: UART_SHADOWED, mirrored: UART_MIRRORED } : { posted: [0], shadowed: UART_SHADOWED };
}

const SWITCH_SHADOWS = 1;
const SWITCH_POSTING = 2;

export class ShadowedUart implements IoDevice {
  readonly name: string;
  shadow: ShadowBlock | undefined;
  /** What the shadow block holds now, by offset (-1: not written yet, or the vCPUs' own), and its switch (-1: not yet). */
  private readonly shown = new Int16Array(8).fill(-1);
  private shownSwitch = -1;

  /** `postIer`: the range was registered with uartRegistration(true), so IER's shadow byte is the vCPUs' while posting is on. */
  constructor(
    readonly uart: Uart16550,
    private readonly postIer: boolean,
  ) {
    this.name = uart.name;
  }

  /**
   * Bring the shadow bytes and the switch up to date with the UART, after an
   * access or host input. Only what changed is stored: a console writes THR
   * once per byte and changes no shadowed register, and the switch is an
   * atomic store (a fence) each time.
   *
   * Posting needs the UART's reads not to depend on a queued write (no
   * loopback, no latched line error: shadowSafe) and LCR.DLAB clear (with it
   * set, offset 1 is the divisor latch's high byte, which IER's mirror mask
   * would cut). While posting is on and stays on, IER's shadow byte is the
   * vCPUs': they may hold writes JS has not applied yet, so storing the value
   * JS has now would undo a newer one. It is written here only while posting
   * is off, before posting is turned on, and after it was turned off: such
   * changes come from accesses the vCPU waits for (LCR, MCR, LSR reads), with
   * its earlier posted writes already applied.
   */
  refresh(): void {
    const sh = this.shadow;
    if (!sh) return;
    const shadows = this.uart.shadowSafe();
    const posting = shadows && ((this.uart.peek(UART_LCR_OFFSET) ?? 0) & LCR_DLAB_BIT) === 0;
    const wasPosting = this.shownSwitch > 0 && (this.shownSwitch & SWITCH_POSTING) !== 0;
    if (wasPosting && !posting) this.setSwitch(sh, 0); // the vCPUs stop mirroring before the bytes are rewritten
    const vcpusOwnIer = this.postIer && wasPosting && posting;
    let ok = shadows;
    for (const off of UART_SHADOWED) {
      if (vcpusOwnIer && off === UART_IER_OFFSET) continue;
      const v = this.uart.peek(off);
      if (v === undefined) ok = false;
      else if (this.shown[off] !== v) {
        sh.set(off, v);
        this.shown[off] = v;
      }
    }
    this.setSwitch(sh, (ok ? SWITCH_SHADOWS : 0) | (ok && posting ? SWITCH_POSTING : 0));
    // From here the vCPUs may change IER's byte: what JS stored there is no longer known.
    if (this.postIer && (this.shownSwitch & SWITCH_POSTING) !== 0) this.shown[UART_IER_OFFSET] = -1;
  }

  /**
   * Rewrite every shadow byte and the switch from the UART, IER's too. Only
   * while no vCPU runs and no posted write is queued (a new machine, a
   * restored snapshot).
   */
  resync(): void {
    this.shown.fill(-1);
    this.shownSwitch = -1;
    this.refresh();
  }

  read(offset: number, size: number): number {
    const v = this.uart.read(offset, size);
    this.refresh();
    return v;
  }

  write(offset: number, size: number, value: number): void {
    this.uart.write(offset, size, value);
    this.refresh();
  }

  /**
   * A UART whose THR-empty interrupt is enabled sends on interrupts: its
   * driver wrote a FIFO's worth and waits for the next THRE interrupt, which
   * comes once the posted writes reach the model. With it disabled (a kernel
   * console polls LSR with IER cleared) nothing waits on them.
   */
  postedAwaited(): boolean {
    return ((this.uart.peek(UART_IER_OFFSET) ?? 0) & IER_ETBEI_BIT) !== 0;
  }

  enqueue(bytes: Uint8Array): number {
    const n = this.uart.enqueue(bytes);
    this.refresh();
    return n;
  }

  private setSwitch(sh: ShadowBlock, bits: number): void {
    if (this.shownSwitch === bits) return;
    sh.enable((bits & SWITCH_SHADOWS) !== 0, (bits & SWITCH_POSTING) !== 0);
    this.shownSwitch = bits;
  }
}
