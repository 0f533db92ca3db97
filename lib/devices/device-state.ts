/**
 * Reading device state back from a snapshot. A snapshot file can be
 * tampered with, so saved device state is as hostile as the guest: every
 * field is checked for its type and range before a device takes it, and a
 * bad one is refused with one sentence naming the component and the field
 * ("snapshot device state com1.rx: expected at most 64 bytes, got 40").
 * Saved state is plain JSON data: numbers, booleans, strings, arrays, and
 * bytes as base64; never a bigint (64-bit values are hex strings).
 */
import { NodevmmError } from '../errors';

export const DEVICE_STATE_ERROR = 'ERR_DEVICE_STATE';

/** The one-sentence error for field `path` (e.g. "com1.rx") of saved device state. */
export function deviceStateError(path: string, problem: string): NodevmmError {
  return new NodevmmError(DEVICE_STATE_ERROR, `snapshot device state ${path}: ${problem}`);
}

/** A short, bounded rendering of a value a hostile file put somewhere. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return v.length > 40 ? `a string of ${v.length} characters` : JSON.stringify(v);
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return typeof v;
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * The fields of one saved object, each taken at most once and checked; done()
 * refuses fields nobody took (a state from another version, or a tampered one).
 */
export class StateReader {
  private readonly taken = new Set<string>();
  private readonly obj: Record<string, unknown>;

  /** `path` names the object in errors; '' for the top level. */
  constructor(
    readonly path: string,
    value: unknown,
  ) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw deviceStateError(path || 'device state', `expected an object, got ${describeValue(value)}`);
    this.obj = value as Record<string, unknown>;
  }

  /** The path of a field, for errors of values checked by the caller. */
  at(field: string): string {
    return this.path ? `${this.path}.${field}` : field;
  }

  error(field: string, problem: string): NodevmmError {
    return deviceStateError(this.at(field), problem);
  }

  /** A field's raw value (undefined when absent), marked as taken. */
  raw(field: string): unknown {
    this.taken.add(field);
    return Object.prototype.hasOwnProperty.call(this.obj, field) ? this.obj[field] : undefined;
  }

  /** The fields present. */
  keys(): string[] {
    return Object.keys(this.obj);
  }

  has(field: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.obj, field);
  }

  /** An integer from `min` to `max`. */
  int(field: string, min: number, max: number): number {
    const v = this.raw(field);
    if (typeof v !== 'number' || !Number.isInteger(v)) throw this.error(field, `expected an integer, got ${describeValue(v)}`);
    if (v < min || v > max) throw this.error(field, `expected ${min} to ${max}, got ${v}`);
    return v;
  }

  /** A finite number (e.g. a clock offset in ms) within ±`limit`. */
  number(field: string, limit: number): number {
    const v = this.raw(field);
    if (typeof v !== 'number' || !Number.isFinite(v)) throw this.error(field, `expected a finite number, got ${describeValue(v)}`);
    if (Math.abs(v) > limit) throw this.error(field, `expected at most ${limit} in magnitude, got ${v}`);
    return v;
  }

  bool(field: string): boolean {
    const v = this.raw(field);
    if (typeof v !== 'boolean') throw this.error(field, `expected true or false, got ${describeValue(v)}`);
    return v;
  }

  /** A string of at most `maxLength` characters. */
  string(field: string, maxLength: number): string {
    const v = this.raw(field);
    if (typeof v !== 'string') throw this.error(field, `expected a string, got ${describeValue(v)}`);
    if (v.length > maxLength) throw this.error(field, `expected at most ${maxLength} characters, got ${v.length}`);
    return v;
  }

  /** One of `choices`. */
  oneOf<T extends string | number>(field: string, choices: readonly T[]): T {
    const v = this.raw(field);
    if (!choices.includes(v as T)) throw this.error(field, `expected one of ${choices.join(', ')}, got ${describeValue(v)}`);
    return v as T;
  }

  /** A 64-bit value saved as a hex string ("0x1f"), at most `mask`'s bits. */
  u64(field: string, mask = 0xffff_ffff_ffff_ffffn): bigint {
    const v = this.raw(field);
    if (typeof v !== 'string' || !/^0x[0-9a-f]{1,16}$/.test(v)) throw this.error(field, `expected a hex string like "0x1f" of at most 16 digits, got ${describeValue(v)}`);
    const n = BigInt(v);
    if (n & ~mask) throw this.error(field, `has bits outside 0x${mask.toString(16)}: ${v}`);
    return n;
  }

  /** Bytes saved as base64, at most `maxBytes` of them. */
  bytes(field: string, maxBytes: number): Uint8Array {
    const v = this.raw(field);
    // Checked before decoding: base64 of n bytes has 4 * ceil(n / 3) characters.
    if (typeof v !== 'string' || v.length % 4 !== 0 || !BASE64_RE.test(v)) throw this.error(field, `expected base64 bytes, got ${describeValue(v)}`);
    const length = (v.length / 4) * 3 - (v.endsWith('==') ? 2 : v.endsWith('=') ? 1 : 0);
    if (length > maxBytes) throw this.error(field, `expected at most ${maxBytes} bytes, got ${length}`);
    return new Uint8Array(Buffer.from(v, 'base64'));
  }

  /** Exactly `length` bytes saved as base64. */
  fixedBytes(field: string, length: number): Uint8Array {
    const b = this.bytes(field, length);
    if (b.length !== length) throw this.error(field, `expected exactly ${length} bytes, got ${b.length}`);
    return b;
  }

  /** A nested object. */
  child(field: string): StateReader {
    return new StateReader(this.at(field), this.raw(field));
  }

  /** An array of at most `maxLength` entries (exactly, when `exact`). */
  array(field: string, maxLength: number, exact = false): unknown[] {
    const v = this.raw(field);
    if (!Array.isArray(v)) throw this.error(field, `expected an array, got ${describeValue(v)}`);
    if (exact ? v.length !== maxLength : v.length > maxLength) throw this.error(field, `expected ${exact ? 'exactly' : 'at most'} ${maxLength} entries, got ${v.length}`);
    return v;
  }

  /** Refuse fields no reader took. */
  done(): void {
    for (const k of Object.keys(this.obj)) if (!this.taken.has(k)) throw this.error(k, 'is not a field this version saves');
  }
}

/** Bytes as base64, for saved state. */
export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

/** A 64-bit value as the hex string StateReader.u64 reads. */
export function toHex64(v: bigint): string {
  return `0x${v.toString(16)}`;
}
