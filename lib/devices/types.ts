/**
 * The contracts between device models and the buses/interrupt controllers.
 * A device model knows offsets inside its own range, never its port number,
 * GPA, KVM or Node streams; the bus translates.
 */

/** A device reachable through port I/O or MMIO. `offset` is relative to the claimed range. */
export interface IoDevice {
  /** Short name for diagnostics ("com1", "acpi-pm", "cmos"). */
  readonly name: string;
  /** Read `size` (1, 2, 4 or 8) bytes at offset; return the value (bigint only for size 8). */
  read(offset: number, size: number): number;
  write(offset: number, size: number, value: number): void;
}

/** An interrupt line a device drives. Edge devices call pulse(); level devices call set(). */
export interface IrqLine {
  /** Drive the line to a level (level-triggered sources such as the SCI). */
  set(level: boolean): void;
  /** Raise and lower at once (edge-triggered sources such as ISA UARTs). */
  pulse(): void;
}

/** Where a device's output bytes go. Must not block; may drop (and count) under pressure. */
export interface ByteSink {
  write(bytes: Uint8Array): void;
}

/** A monotonic nanosecond clock; injectable so device tests are deterministic. */
export type NsClock = () => bigint;

export const monotonicNs: NsClock = () => process.hrtime.bigint();

/** An IrqLine that records what happened (for tests and for unconnected devices). */
export class RecordingIrqLine implements IrqLine {
  level = false;
  pulses = 0;
  readonly history: Array<'high' | 'low' | 'pulse'> = [];
  set(level: boolean): void {
    this.level = level;
    this.history.push(level ? 'high' : 'low');
  }
  pulse(): void {
    this.pulses++;
    this.history.push('pulse');
  }
}
