/**
 * The contracts between device models and the buses/interrupt controllers.
 * A device model knows offsets inside its own range, never its port number,
 * GPA, KVM or Node streams; the bus translates.
 */

/** A device reachable through port I/O or MMIO: the contract is the bus's own (lib/hv/io-bus.ts). */
export type { IoDevice } from '../hv/io-bus';

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
  /**
   * One byte: the same as write(Uint8Array.of(byte)) without the array, for
   * devices that emit a byte per register write (a UART's THR). Optional.
   */
  writeByte?(byte: number): void;
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
