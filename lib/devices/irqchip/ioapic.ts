/**
 * An 82093AA I/O APIC: the index register IOREGSEL (offset 0x00) and the
 * data window IOWIN (offset 0x10) over the ID, version, arbitration and
 * redirection-table registers; edge and level inputs, the remote IRR of
 * level-triggered pins and its clearing by an EOI of the pin's vector. It
 * turns an interrupt into one x86 MSI message (Intel SDM vol. 3 §11.11, the
 * format the local APICs accept) and hands it to `deliver`; it knows no GPA,
 * no hypervisor and no bus. Used where the hypervisor emulates only the local
 * APICs: KVM with KVM_CAP_SPLIT_IRQCHIP, Windows Hypervisor Platform.
 * Reference: Intel 82093AA datasheet (290566-001) §3; Linux
 * arch/x86/kernel/apic/io_apic.c (how the guest programs it).
 *
 * Inputs are logical: `setLevel(pin, true)` means "asserted", whatever the
 * entry's polarity bit says (the machine's devices drive asserted levels and
 * the MADT describes the wiring); the polarity bit is stored and read back.
 *
 * Threat model: the guest controls IOREGSEL, every IOWIN value, the access
 * widths and offsets, and when it EOIs. Register indexes outside the table
 * read 0 and ignore writes; accesses other than the datasheet's (byte or
 * wider at IOREGSEL, 32-bit at IOWIN) are dropped and counted. Read-only
 * bits (delivery status, remote IRR, version) cannot be written. A level
 * line the guest never quiets is re-delivered once per EOI the guest sends,
 * so the guest paces it; nothing here loops or allocates per access.
 */
import { NodevmmError } from '../../errors';
import type { IoDevice } from '../types';

export const IOREGSEL_OFFSET = 0x00;
export const IOWIN_OFFSET = 0x10;
/** Bytes the register window takes in the MMIO space (one page, as QEMU and KVM map it). */
export const IOAPIC_MMIO_SIZE = 0x1000;

/** Register indexes (IOREGSEL values). */
export const IOAPICID = 0x00;
export const IOAPICVER = 0x01;
export const IOAPICARB = 0x02;
/** Redirection entry n: low dword at 0x10 + 2n, high dword at 0x11 + 2n. */
export const IOREDTBL_BASE = 0x10;

/** The 82093AA's version number in IOAPICVER bits 0-7 (what KVM and QEMU report too). */
export const IOAPIC_VERSION = 0x11;
/** Pins of an 82093AA. */
export const IOAPIC_DEFAULT_PINS = 24;

/** Redirection entry, low dword. */
export const REDIR_VECTOR_MASK = 0xff;
export const REDIR_DELIVERY_MODE_SHIFT = 8; // 3 bits: fixed, lowest priority, SMI, -, NMI, INIT, -, ExtINT
export const REDIR_DEST_MODE_BIT = 1 << 11; // logical destination
export const REDIR_DELIVERY_STATUS_BIT = 1 << 12; // read-only
export const REDIR_POLARITY_BIT = 1 << 13; // active low
export const REDIR_REMOTE_IRR_BIT = 1 << 14; // read-only: a level interrupt was accepted and not yet EOId
export const REDIR_TRIGGER_LEVEL_BIT = 1 << 15;
export const REDIR_MASK_BIT = 1 << 16;
/** Bits the guest may write in the low dword. */
const REDIR_LO_WRITABLE = 0x1ffff & ~(REDIR_DELIVERY_STATUS_BIT | REDIR_REMOTE_IRR_BIT);
/** High dword: destination field, bits 56-63 of the entry. */
const REDIR_HI_WRITABLE = 0xff000000;
const ID_MASK = 0x0f000000;

/** x86 MSI: address 0xFEE0_0000 | destination << 12 | logical << 2 (SDM §11.11.1). */
export const MSI_ADDRESS_BASE = 0xfee00000;
/** MSI data: vector, delivery mode << 8, level-assert bit 14, trigger bit 15 (SDM §11.11.2). */
const MSI_DATA_ASSERT_BIT = 1 << 14;
const MSI_DATA_LEVEL_BIT = 1 << 15;

/** One interrupt message for the local APICs. */
export interface MsiMessage {
  address: number;
  data: number;
}

export interface IoapicOptions {
  /** APIC ID (IOAPICID bits 24-27), as the MADT names it. */
  id: number;
  /** Input pins (1 to 32); 24 by default. */
  pins?: number;
  /** Send one message to the local APICs. */
  deliver(message: MsiMessage): void;
  /**
   * The message each pin sends now (undefined while masked), after every
   * change of it. Hypervisors that must know which vectors are
   * level-triggered (KVM's EOI exits) or that route eventfds by pin (irqfd)
   * mirror it.
   */
  onRoutesChanged?(routes: ReadonlyArray<MsiMessage | undefined>): void;
}

export interface IoapicState {
  id: number;
  regsel: number;
  /** Each entry as [low dword, high dword]. */
  redirection: Array<[number, number]>;
  /** Pins whose input is asserted (bit per pin). */
  levels: number;
  /** Pins with an interrupt waiting to be sent (bit per pin). */
  irr: number;
}

export class Ioapic implements IoDevice {
  readonly name = 'ioapic';
  readonly pins: number;
  /** Guest accesses of a width or offset the chip does not decode. */
  missedReads = 0;
  missedWrites = 0;
  private id: number;
  private regsel = 0;
  private readonly lo: Uint32Array;
  private readonly hi: Uint32Array;
  private levels = 0;
  private irr = 0;
  private lastRoutes: ReadonlyArray<MsiMessage | undefined> = [];

  constructor(private readonly opts: IoapicOptions) {
    const pins = opts.pins ?? IOAPIC_DEFAULT_PINS;
    if (!Number.isInteger(pins) || pins < 1 || pins > 32) throw new NodevmmError('ERR_INVALID_ARG', `ioapic pins ${pins} must be an integer from 1 to 32`);
    if (!Number.isInteger(opts.id) || opts.id < 0 || opts.id > 15) throw new NodevmmError('ERR_INVALID_ARG', `ioapic id ${opts.id} must be an integer from 0 to 15`);
    this.pins = pins;
    this.id = opts.id << 24;
    this.lo = new Uint32Array(pins).fill(REDIR_MASK_BIT); // every pin masked at reset
    this.hi = new Uint32Array(pins);
    this.publishRoutes();
  }

  read(offset: number, size: number): number {
    if (offset === IOREGSEL_OFFSET && size <= 4) return this.regsel;
    if (offset === IOWIN_OFFSET && size === 4) return this.readRegister(this.regsel);
    this.missedReads++;
    return 0;
  }

  write(offset: number, size: number, value: number): void {
    if (offset === IOREGSEL_OFFSET && size <= 4) {
      this.regsel = value & 0xff;
      return;
    }
    if (offset === IOWIN_OFFSET && size === 4) {
      this.writeRegister(this.regsel, value >>> 0);
      return;
    }
    this.missedWrites++;
  }

  /** Drive input `pin` (host wiring: a bad pin is a bug and throws). */
  setLevel(pin: number, asserted: boolean): void {
    if (!Number.isInteger(pin) || pin < 0 || pin >= this.pins) throw new NodevmmError('ERR_INVALID_ARG', `ioapic pin ${pin} is outside 0..${this.pins - 1}`);
    const bit = (1 << pin) >>> 0;
    const was = (this.levels & bit) !== 0;
    if (asserted) {
      this.levels = (this.levels | bit) >>> 0;
      // Edge: a rising edge latches one interrupt; level: pending while asserted.
      if (!was || this.isLevel(pin)) this.irr = (this.irr | bit) >>> 0;
    } else {
      this.levels = (this.levels & ~bit) >>> 0;
      if (this.isLevel(pin)) this.irr = (this.irr & ~bit) >>> 0;
    }
    this.service();
  }

  /** The local APICs saw an EOI for `vector`: level pins waiting on it may fire again. */
  eoi(vector: number): void {
    let cleared = false;
    for (let pin = 0; pin < this.pins; pin++) {
      const lo = this.lo[pin]!;
      if ((lo & REDIR_VECTOR_MASK) === (vector & 0xff) && lo & REDIR_REMOTE_IRR_BIT) {
        this.lo[pin] = lo & ~REDIR_REMOTE_IRR_BIT;
        cleared = true;
      }
    }
    if (cleared) this.service();
  }

  /** The message each pin sends now (undefined while masked). */
  routes(): Array<MsiMessage | undefined> {
    const out: Array<MsiMessage | undefined> = [];
    for (let pin = 0; pin < this.pins; pin++) out.push(this.lo[pin]! & REDIR_MASK_BIT ? undefined : this.message(pin));
    return out;
  }

  snapshot(): IoapicState {
    const redirection: Array<[number, number]> = [];
    for (let pin = 0; pin < this.pins; pin++) redirection.push([this.lo[pin]!, this.hi[pin]!]);
    return { id: this.id >>> 24, regsel: this.regsel, redirection, levels: this.levels, irr: this.irr };
  }

  private isLevel(pin: number): boolean {
    return (this.lo[pin]! & REDIR_TRIGGER_LEVEL_BIT) !== 0;
  }

  private readRegister(index: number): number {
    if (index === IOAPICID) return this.id;
    if (index === IOAPICVER) return (((this.pins - 1) << 16) | IOAPIC_VERSION) >>> 0;
    if (index === IOAPICARB) return this.id;
    const pin = (index - IOREDTBL_BASE) >> 1;
    if (index >= IOREDTBL_BASE && pin < this.pins) return index & 1 ? this.hi[pin]! : this.lo[pin]!;
    return 0;
  }

  private writeRegister(index: number, value: number): void {
    if (index === IOAPICID) {
      this.id = (value & ID_MASK) >>> 0;
      return;
    }
    const pin = (index - IOREDTBL_BASE) >> 1;
    if (index < IOREDTBL_BASE || pin >= this.pins) return; // version, arbitration, unimplemented: read-only or absent
    if (index & 1) {
      this.hi[pin] = (value & REDIR_HI_WRITABLE) >>> 0;
    } else {
      const keep = this.lo[pin]! & REDIR_REMOTE_IRR_BIT;
      let lo = ((value & REDIR_LO_WRITABLE) | keep) >>> 0;
      const bit = (1 << pin) >>> 0;
      if (lo & REDIR_TRIGGER_LEVEL_BIT) {
        // A level pin is pending exactly while its input is asserted.
        this.irr = this.levels & bit ? (this.irr | bit) >>> 0 : (this.irr & ~bit) >>> 0;
      } else {
        // No EOI will come for an edge pin: a remote IRR left from level mode would block it for good.
        lo &= ~REDIR_REMOTE_IRR_BIT;
        // A level pin's pending bit is no edge: only a rising edge after the switch sends.
        if (this.lo[pin]! & REDIR_TRIGGER_LEVEL_BIT) this.irr = (this.irr & ~bit) >>> 0;
      }
      this.lo[pin] = lo;
    }
    this.publishRoutes();
    this.service();
  }

  /** Send what is pending and allowed: unmasked pins, level pins only while no earlier interrupt awaits its EOI. */
  private service(): void {
    let pending = this.irr;
    while (pending) {
      const pin = 31 - Math.clz32(pending);
      const bit = (1 << pin) >>> 0;
      pending = (pending & ~bit) >>> 0;
      const lo = this.lo[pin]!;
      if (lo & REDIR_MASK_BIT) continue; // an edge stays latched until the pin is unmasked
      if (lo & REDIR_TRIGGER_LEVEL_BIT) {
        if (lo & REDIR_REMOTE_IRR_BIT) continue;
        this.lo[pin] = lo | REDIR_REMOTE_IRR_BIT;
      } else {
        this.irr = (this.irr & ~bit) >>> 0;
      }
      this.opts.deliver(this.message(pin));
    }
  }

  private message(pin: number): MsiMessage {
    const lo = this.lo[pin]!;
    const dest = this.hi[pin]! >>> 24;
    const address = (MSI_ADDRESS_BASE | (dest << 12) | (lo & REDIR_DEST_MODE_BIT ? 1 << 2 : 0)) >>> 0;
    const deliveryMode = (lo >> REDIR_DELIVERY_MODE_SHIFT) & 7;
    const data = (lo & REDIR_VECTOR_MASK) | (deliveryMode << 8) | MSI_DATA_ASSERT_BIT | (lo & REDIR_TRIGGER_LEVEL_BIT ? MSI_DATA_LEVEL_BIT : 0);
    return { address, data };
  }

  private publishRoutes(): void {
    if (!this.opts.onRoutesChanged) return;
    const next = this.routes();
    const same = next.length === this.lastRoutes.length && next.every((m, i) => sameMessage(m, this.lastRoutes[i]));
    if (same) return;
    this.lastRoutes = next;
    this.opts.onRoutesChanged(next);
  }
}

function sameMessage(a: MsiMessage | undefined, b: MsiMessage | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.address === b.address && a.data === b.data);
}
