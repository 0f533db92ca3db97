/**
 * ACPI fixed-hardware PM register block (PIIX4-style layout, as OpenVMM places
 * it at port 0x400, 0x37 ports): PM1a event and control, the 32-bit PM timer,
 * GPE0, and the FADT reset register. Power-off and reboot leave through the
 * onSleep/onReset callbacks; the device never stops the VM itself.
 * Not modelled: PM timer overflow (TMR_STS), processor and global registers,
 * wake from sleep. Reference: ACPI 6.5 §4.8.3 (PM1 registers, PM timer), §4.8.4 (GPE).
 *
 * Threat model: the guest controls every access (offset, width 1/2/4, value,
 * rate). Accesses are split into byte lanes and masked to the defined bits;
 * undefined offsets read all-ones and ignore writes (OpenVMM does the same);
 * nothing throws. A guest can call onSleep/onReset as often as it likes, so the
 * embedder must treat them as idempotent requests.
 */

import { StateReader } from './device-state';
import type { IoDevice, IrqLine, NsClock } from './types';
import { monotonicNs } from './types';

export const PM1_STS_OFFSET = 0x00;
export const PM1_EN_OFFSET = 0x02;
export const PM1_CNT_OFFSET = 0x04;
export const PM_TMR_OFFSET = 0x08;
export const GPE0_STS_OFFSET = 0x0c;
export const GPE0_EN_OFFSET = 0x0e;
export const RESET_REG_OFFSET = 0x33;
/** Ports decoded by the block (FADT PM1/PM_TMR/GPE0 all fall inside). */
export const ACPI_PM_BLOCK_SIZE = 0x37;

/** PM1_STS/PM1_EN: PM timer carry (status) and its enable. */
export const PM1_TMR_BIT = 0x0001;
/** PM1_STS/PM1_EN: power button. */
export const PM1_PWRBTN_BIT = 0x0100;
/** PM1_STS: woke from a sleep state. */
export const PM1_WAK_STS_BIT = 0x8000;
/** PM1_STS bits that exist in this model (write-1-to-clear). */
const PM1_STS_MASK = PM1_TMR_BIT | PM1_PWRBTN_BIT | PM1_WAK_STS_BIT;
/** PM1_STS/PM1_EN: global lock release (BIOS_RLS / GBL_EN). */
export const PM1_GBL_BIT = 0x0020;
/** PM1_STS/PM1_EN: RTC alarm. */
export const PM1_RTC_BIT = 0x0400;
/**
 * PM1_EN bits that hold what the guest writes. GBL_EN and RTC_EN never fire
 * here (no firmware takes the global lock; no RTC wake), but ACPICA enables
 * them at boot and reads them back: a register that dropped them makes Linux
 * log "ACPI Error: Could not enable GlobalLock/RealTimeClock event".
 */
const PM1_EN_MASK = PM1_TMR_BIT | PM1_GBL_BIT | PM1_PWRBTN_BIT | PM1_RTC_BIT;

/** PM1_CNT: events raise SCIs, not SMIs; fixed at 1 because there is no SMM to hand over from. */
export const PM1_CNT_SCI_EN_BIT = 0x0001;
export const PM1_CNT_SLP_TYP_SHIFT = 10;
export const PM1_CNT_SLP_TYP_MASK = 0x1c00;
/** PM1_CNT: write-only trigger; reads as 0. */
export const PM1_CNT_SLP_EN_BIT = 0x2000;
/** PM1_CNT bits the guest may store (BM_RLD, GBL_RLS, SLP_TYP). */
const PM1_CNT_STORED_MASK = 0x0006 | PM1_CNT_SLP_TYP_MASK;

/** ACPI PM timer frequency. */
export const PM_TIMER_HZ = 3_579_545n;
/** The FADT's RESET_VALUE; OpenVMM uses 1. */
export const ACPI_RESET_VALUE = 0x01;

export interface AcpiPmOptions {
  name?: string;
  /** The SCI (IRQ 9, level, active high). */
  sci: IrqLine;
  /** The guest wrote SLP_EN; `slpTyp` is bits 12:10. With our DSDT, 0 means S5 (power off). */
  onSleep?: (slpTyp: number) => void;
  /** The guest wrote the reset value to the reset register. */
  onReset?: () => void;
  clock?: NsClock;
  /** Value that triggers onReset at +0x33 (must match the FADT's RESET_VALUE). */
  resetValue?: number;
}

export interface AcpiPmState {
  pm1Status: number;
  pm1Enable: number;
  pm1Control: number;
  gpe0Status: number;
  gpe0Enable: number;
  /** PM timer value at snapshot time; restore continues counting from it. */
  timer: number;
}

export interface AcpiPmStats {
  sleepRequests: number;
  resetRequests: number;
  /** Reads and writes of offsets this model does not define, or of bad widths. */
  missedReads: number;
  missedWrites: number;
  hostErrors: number;
}

type RegisterId = 'pm1Status' | 'pm1Enable' | 'pm1Control' | 'timer' | 'gpe0Status' | 'gpe0Enable' | 'reset';

interface RegisterSpan {
  id: RegisterId;
  base: number;
  width: number;
}

const REGISTERS: readonly RegisterSpan[] = [
  { id: 'pm1Status', base: PM1_STS_OFFSET, width: 2 },
  { id: 'pm1Enable', base: PM1_EN_OFFSET, width: 2 },
  { id: 'pm1Control', base: PM1_CNT_OFFSET, width: 2 },
  { id: 'timer', base: PM_TMR_OFFSET, width: 4 },
  { id: 'gpe0Status', base: GPE0_STS_OFFSET, width: 2 },
  { id: 'gpe0Enable', base: GPE0_EN_OFFSET, width: 2 },
  { id: 'reset', base: RESET_REG_OFFSET, width: 1 },
];

function registerAt(offset: number): RegisterSpan | undefined {
  return REGISTERS.find((r) => offset >= r.base && offset < r.base + r.width);
}

export class AcpiPm implements IoDevice {
  readonly name: string;
  readonly stats: AcpiPmStats = { sleepRequests: 0, resetRequests: 0, missedReads: 0, missedWrites: 0, hostErrors: 0 };

  private readonly sci: IrqLine;
  private readonly onSleep: ((slpTyp: number) => void) | undefined;
  private readonly onReset: (() => void) | undefined;
  private readonly clock: NsClock;
  private readonly resetValue: number;

  private pm1Status = 0;
  private pm1Enable = 0;
  private pm1Control = 0;
  private gpe0Status = 0;
  private gpe0Enable = 0;
  /** Clock reading at which the PM timer read 0. */
  private timerEpochNs: bigint;
  private sciLevel = false;

  constructor(options: AcpiPmOptions) {
    this.name = options.name ?? 'acpi-pm';
    this.sci = options.sci;
    this.onSleep = options.onSleep;
    this.onReset = options.onReset;
    this.clock = options.clock ?? monotonicNs;
    this.resetValue = (options.resetValue ?? ACPI_RESET_VALUE) & 0xff;
    this.timerEpochNs = this.clock();
  }

  read(offset: number, size: number): number {
    if (!validAccess(offset, size)) {
      this.stats.missedReads++;
      return 0;
    }
    // One timer sample per access so a 32-bit read is coherent across its lanes.
    const values = new Map<RegisterId, number>();
    let result = 0;
    let known = false;
    for (let lane = 0; lane < size; lane++) {
      const reg = registerAt(offset + lane);
      let byte = 0xff;
      if (reg) {
        known = true;
        let value = values.get(reg.id);
        if (value === undefined) {
          value = this.registerValue(reg.id);
          values.set(reg.id, value);
        }
        byte = (value >>> (8 * (offset + lane - reg.base))) & 0xff;
      }
      result |= byte << (8 * lane);
    }
    if (!known) this.stats.missedReads++;
    return result >>> 0;
  }

  write(offset: number, size: number, value: number): void {
    if (!validAccess(offset, size)) {
      this.stats.missedWrites++;
      return;
    }
    // Gather the lanes per register so W1C and SLP_EN see the whole write at once.
    const pieces = new Map<RegisterSpan, { value: number; mask: number }>();
    let known = false;
    for (let lane = 0; lane < size; lane++) {
      const reg = registerAt(offset + lane);
      if (!reg) continue;
      known = true;
      const shift = 8 * (offset + lane - reg.base);
      const piece = pieces.get(reg) ?? { value: 0, mask: 0 };
      piece.value |= ((value >>> (8 * lane)) & 0xff) << shift;
      piece.mask |= 0xff << shift;
      pieces.set(reg, piece);
    }
    if (!known) this.stats.missedWrites++;
    for (const [reg, piece] of pieces) this.writeRegister(reg.id, piece.value >>> 0, piece.mask >>> 0);
    this.updateSci();
  }

  /** Press the power button: sets PWRBTN_STS, which raises the SCI if PWRBTN_EN is set. */
  pressPowerButton(): void {
    this.pm1Status |= PM1_PWRBTN_BIT;
    this.updateSci();
  }

  /** Set a GPE0 status bit (0-15), e.g. for a future hotplug event. */
  raiseGpe(bit: number): void {
    if (!Number.isInteger(bit) || bit < 0 || bit > 15) throw new RangeError(`gpe bit must be 0-15, got ${bit}`);
    this.gpe0Status |= 1 << bit;
    this.updateSci();
  }

  /** The SCI level currently driven. */
  sciAsserted(): boolean {
    return this.sciLevel;
  }

  /** Current PM timer value (32 bits, 3.579545 MHz). */
  timerValue(): number {
    const elapsed = this.clock() - this.timerEpochNs;
    return Number(((elapsed * PM_TIMER_HZ) / 1_000_000_000n) & 0xffff_ffffn);
  }

  snapshot(): AcpiPmState {
    return {
      pm1Status: this.pm1Status,
      pm1Enable: this.pm1Enable,
      pm1Control: this.pm1Control,
      gpe0Status: this.gpe0Status,
      gpe0Enable: this.gpe0Enable,
      timer: this.timerValue(),
    };
  }

  /**
   * Take saved state, checking every field (errors name `path` and the
   * field; nothing changes when one is refused): the timer continues from
   * the saved value and the SCI is re-driven.
   */
  restoreState(input: unknown, path: string = this.name): void {
    const r = new StateReader(path, input);
    const reg = (field: string, mask: number) => {
      const v = r.int(field, 0, 0xffff);
      if (v & ~mask) throw r.error(field, `has bits outside 0x${mask.toString(16)}: 0x${v.toString(16)}`);
      return v;
    };
    const s = {
      pm1Status: reg('pm1Status', PM1_STS_MASK),
      pm1Enable: reg('pm1Enable', PM1_EN_MASK),
      pm1Control: reg('pm1Control', PM1_CNT_STORED_MASK),
      gpe0Status: reg('gpe0Status', 0xffff),
      gpe0Enable: reg('gpe0Enable', 0xffff),
      timer: r.int('timer', 0, 0xffff_ffff),
    };
    r.done();
    this.pm1Status = s.pm1Status;
    this.pm1Enable = s.pm1Enable;
    this.pm1Control = s.pm1Control;
    this.gpe0Status = s.gpe0Status;
    this.gpe0Enable = s.gpe0Enable;
    // Move the epoch back so that timerValue() reads the saved count now (rounded up to whole ns).
    this.timerEpochNs = this.clock() - (BigInt(s.timer) * 1_000_000_000n + PM_TIMER_HZ - 1n) / PM_TIMER_HZ;
    this.updateSci();
  }

  /** A new PM block with saved state (see restoreState). */
  static restore(state: unknown, options: AcpiPmOptions): AcpiPm {
    const pm = new AcpiPm(options);
    pm.restoreState(state);
    return pm;
  }

  private registerValue(id: RegisterId): number {
    switch (id) {
      case 'pm1Status':
        return this.pm1Status;
      case 'pm1Enable':
        return this.pm1Enable;
      case 'pm1Control':
        return this.pm1Control | PM1_CNT_SCI_EN_BIT;
      case 'timer':
        return this.timerValue();
      case 'gpe0Status':
        return this.gpe0Status;
      case 'gpe0Enable':
        return this.gpe0Enable;
      case 'reset':
        // The reset register is write-only; a read returns nothing meaningful.
        return 0;
    }
  }

  private writeRegister(id: RegisterId, value: number, mask: number): void {
    switch (id) {
      case 'pm1Status':
        this.pm1Status &= ~(value & mask & PM1_STS_MASK);
        break;
      case 'pm1Enable':
        this.pm1Enable = (this.pm1Enable & ~mask) | (value & mask & PM1_EN_MASK);
        break;
      case 'pm1Control':
        this.writeControl(value, mask);
        break;
      case 'timer':
        // Read-only.
        break;
      case 'gpe0Status':
        this.gpe0Status &= ~(value & mask);
        break;
      case 'gpe0Enable':
        this.gpe0Enable = (this.gpe0Enable & ~mask) | (value & mask);
        break;
      case 'reset':
        if ((value & 0xff) === this.resetValue) {
          this.stats.resetRequests++;
          this.callHost(() => this.onReset?.());
        }
        break;
    }
  }

  private writeControl(value: number, mask: number): void {
    this.pm1Control = (this.pm1Control & ~mask) | (value & mask & PM1_CNT_STORED_MASK);
    if (value & mask & PM1_CNT_SLP_EN_BIT) {
      const slpTyp = (this.pm1Control & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
      this.stats.sleepRequests++;
      this.callHost(() => this.onSleep?.(slpTyp));
    }
  }

  private updateSci(): void {
    const level = (this.pm1Status & this.pm1Enable) !== 0 || (this.gpe0Status & this.gpe0Enable) !== 0;
    if (level === this.sciLevel) return;
    this.sciLevel = level;
    this.sci.set(level);
  }

  private callHost(fn: () => void): void {
    try {
      fn();
    } catch {
      // A host callback bug must not surface as a guest I/O failure.
      this.stats.hostErrors++;
    }
  }
}

function validAccess(offset: number, size: number): boolean {
  return (
    (size === 1 || size === 2 || size === 4) &&
    Number.isInteger(offset) &&
    offset >= 0 &&
    offset + size <= ACPI_PM_BLOCK_SIZE
  );
}
