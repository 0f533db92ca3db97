/**
 * An Arm PL061 GPIO controller: eight pins, the masked data window, direction,
 * the interrupt sense/both-edges/event registers, mask, raw and masked status,
 * clear, and the PrimeCell identification registers, enough for Linux's
 * gpio-pl061 driver and the gpio-keys driver on top of it. The host drives
 * input pins with setInput() (the arm64 machine's power key is pin 3, as on
 * QEMU's virt machine). No alternate functions (AFSEL reads back, does nothing).
 * Spec: Arm PrimeCell GPIO (PL061) Technical Reference Manual r1p1, ch. 3.
 */
import { StateReader } from './device-state';
import type { IoDevice, IrqLine } from './types';

/** Register offsets (TRM table 3-1). DATA is a 256-word window: address bits 9:2 mask the pins. */
export const PL061 = {
  DATA: 0x000,
  DIR: 0x400,
  IS: 0x404,
  IBE: 0x408,
  IEV: 0x40c,
  IE: 0x410,
  RIS: 0x414,
  MIS: 0x418,
  IC: 0x41c,
  AFSEL: 0x420,
  PERIPH_ID0: 0xfe0,
} as const;

/** PeriphID0-3 then PCellID0-3: part 0x061, designer Arm (0x41), revision 1; PrimeCell 0xB105F00D. */
const ID_BYTES = [0x61, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
const PINS = 0xff;

/** Plain, JSON-safe state of a PL061: one pin mask per register, and the levels the host drives. */
export interface Pl061State {
  inputs: number;
  outputs: number;
  dir: number;
  is: number;
  ibe: number;
  iev: number;
  ie: number;
  ris: number;
  afsel: number;
}

export class Pl061 implements IoDevice {
  readonly name: string;
  private readonly irq: IrqLine;
  /** Levels the host drives on the pins (inputs). */
  private inputs = 0;
  /** Levels the guest wrote (outputs). */
  private outputs = 0;
  private dir = 0;
  private is = 0;
  private ibe = 0;
  private iev = 0;
  private ie = 0;
  private ris = 0;
  private afsel = 0;
  private irqLevel = false;

  constructor(name: string, irq: IrqLine) {
    this.name = name;
    this.irq = irq;
  }

  /** What the pins read: outputs where DIR says output, the host's levels elsewhere. */
  private get pins(): number {
    return ((this.outputs & this.dir) | (this.inputs & ~this.dir)) & PINS;
  }

  read(offset: number, size: number): number {
    const reg = offset & ~3;
    const value = this.readReg(reg) >>> ((offset & 3) * 8);
    return size >= 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1);
  }

  write(offset: number, size: number, value: number): void {
    if ((offset & 3) !== 0) return;
    const v = (size >= 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1)) & PINS;
    if (offset < PL061.DIR) {
      // Only the pins named by address bits 9:2 change (TRM 3.3.1).
      const mask = (offset >>> 2) & PINS;
      this.outputs = (this.outputs & ~mask) | (v & mask);
      return;
    }
    const before = this.pins;
    switch (offset) {
      case PL061.DIR:
        this.dir = v;
        break;
      case PL061.IS:
        this.is = v;
        break;
      case PL061.IBE:
        this.ibe = v;
        break;
      case PL061.IEV:
        this.iev = v;
        break;
      case PL061.IE:
        this.ie = v;
        break;
      case PL061.IC:
        // Clears edge-detected status; a level-sensitive pin stays pending while its level holds.
        this.ris &= ~(v & ~this.is);
        break;
      case PL061.AFSEL:
        this.afsel = v;
        break;
      default:
        break; // read-only or reserved
    }
    this.sense(before);
  }

  /** Drive input pin `pin` (0-7) to `level`; an edge or level the guest asked for raises the interrupt. */
  setInput(pin: number, level: boolean): void {
    if (!Number.isInteger(pin) || pin < 0 || pin > 7) throw new RangeError(`pl061: pin ${pin} must be 0 to 7`);
    const before = this.pins;
    this.inputs = level ? this.inputs | (1 << pin) : this.inputs & ~(1 << pin);
    this.sense(before);
  }

  /** Whether input pin `pin` is driven high by the host. */
  inputHigh(pin: number): boolean {
    return (this.inputs & (1 << pin)) !== 0;
  }

  /** The registers and the host's pin levels as plain, JSON-safe data. */
  snapshot(): Pl061State {
    return { inputs: this.inputs, outputs: this.outputs, dir: this.dir, is: this.is, ibe: this.ibe, iev: this.iev, ie: this.ie, ris: this.ris, afsel: this.afsel };
  }

  /**
   * Take saved state, each field a pin mask (errors name `path` and the
   * field; nothing changes when one is refused). Level-sensitive status is
   * recomputed from the pins, so a saved RIS cannot claim a level the pins
   * do not have; the SPI is driven to the restored level.
   */
  restoreState(input: unknown, path: string = this.name): void {
    const r = new StateReader(path, input);
    const pins = (field: string) => r.int(field, 0, PINS);
    const s = { inputs: pins('inputs'), outputs: pins('outputs'), dir: pins('dir'), is: pins('is'), ibe: pins('ibe'), iev: pins('iev'), ie: pins('ie'), ris: pins('ris'), afsel: pins('afsel') };
    r.done();
    Object.assign(this, s);
    this.sense(this.pins);
  }

  /** Latch the interrupts the change from `before` to the current pin levels causes, then update the line. */
  private sense(before: number): void {
    const now = this.pins;
    const changed = before ^ now;
    // Edge-sensitive pins (IS = 0): both edges when IBE, else rising when IEV, falling otherwise.
    const rising = changed & now;
    const falling = changed & ~now;
    const edge = ~this.is & ((this.ibe & changed) | (~this.ibe & ((this.iev & rising) | (~this.iev & falling))));
    // Level-sensitive pins (IS = 1): pending while high (IEV) or low (!IEV).
    const level = this.is & ((this.iev & now) | (~this.iev & ~now));
    this.ris = (((this.ris | edge) & ~this.is) | level) & PINS;
    const up = (this.ris & this.ie) !== 0;
    if (up !== this.irqLevel) {
      this.irqLevel = up;
      this.irq.set(up);
    }
  }

  private readReg(reg: number): number {
    if (reg < PL061.DIR) return this.pins & ((reg >>> 2) & PINS);
    switch (reg) {
      case PL061.DIR:
        return this.dir;
      case PL061.IS:
        return this.is;
      case PL061.IBE:
        return this.ibe;
      case PL061.IEV:
        return this.iev;
      case PL061.IE:
        return this.ie;
      case PL061.RIS:
        return this.ris;
      case PL061.MIS:
        return this.ris & this.ie;
      case PL061.AFSEL:
        return this.afsel;
      default:
        if (reg >= PL061.PERIPH_ID0 && reg < PL061.PERIPH_ID0 + 32) return ID_BYTES[(reg - PL061.PERIPH_ID0) >> 2]!;
        return 0;
    }
  }
}
