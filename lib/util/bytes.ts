/**
 * Bounds-checked little-endian readers and writers for the pure format modules.
 * Every read of an untrusted length or offset goes through `ByteReader`, so a
 * truncated or hostile input becomes a FormatError naming the field and offset
 * instead of a RangeError from DataView.
 */
import { FormatError } from '../errors';

export class ByteReader {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly format: string;

  constructor(bytes: Uint8Array, format: string) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.format = format;
  }

  get length(): number {
    return this.bytes.byteLength;
  }

  /** The stable error code for this format, e.g. ERR_ELF_TRUNCATED. */
  private code(kind: 'TRUNCATED' | 'FIELD'): string {
    return `ERR_${this.format.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_${kind}`;
  }

  /** Throws ERR_<FORMAT>_TRUNCATED unless [offset, offset+size) lies inside the input. */
  need(offset: number, size: number, field: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || offset < 0 || size < 0 || offset + size > this.length) {
      throw new FormatError(
        this.code('TRUNCATED'),
        `${this.format}: ${field} at offset 0x${offset.toString(16)} (${size} bytes) lies beyond the end of the ${this.length}-byte input`,
        { format: this.format, field, offset, expected: `<= ${this.length}`, actual: String(offset + size) },
      );
    }
  }

  u8(offset: number, field: string): number {
    this.need(offset, 1, field);
    return this.view.getUint8(offset);
  }
  u16(offset: number, field: string): number {
    this.need(offset, 2, field);
    return this.view.getUint16(offset, true);
  }
  u32(offset: number, field: string): number {
    this.need(offset, 4, field);
    return this.view.getUint32(offset, true);
  }
  u64(offset: number, field: string): bigint {
    this.need(offset, 8, field);
    return this.view.getBigUint64(offset, true);
  }
  /** A u64 that must fit a JS safe integer (file offsets, sizes). */
  u64n(offset: number, field: string): number {
    const v = this.u64(offset, field);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new FormatError(
        this.code('FIELD'),
        `${this.format}: ${field} at offset 0x${offset.toString(16)} is 0x${v.toString(16)}, too large`,
        { format: this.format, field, offset, actual: '0x' + v.toString(16) },
      );
    }
    return Number(v);
  }
  u16be(offset: number, field: string): number {
    this.need(offset, 2, field);
    return this.view.getUint16(offset, false);
  }
  u32be(offset: number, field: string): number {
    this.need(offset, 4, field);
    return this.view.getUint32(offset, false);
  }
  u64be(offset: number, field: string): bigint {
    this.need(offset, 8, field);
    return this.view.getBigUint64(offset, false);
  }
  slice(offset: number, size: number, field: string): Uint8Array {
    this.need(offset, size, field);
    return this.bytes.subarray(offset, offset + size);
  }
  /** ASCII string of exactly `size` bytes (no NUL handling). */
  ascii(offset: number, size: number, field: string): string {
    return String.fromCharCode(...this.slice(offset, size, field));
  }
  /** NUL-terminated string starting at offset, at most `max` bytes. */
  cstring(offset: number, field: string, max = this.length - offset): string {
    const end = Math.min(this.length, offset + max);
    this.need(offset, 0, field);
    let i = offset;
    while (i < end && this.bytes[i] !== 0) i++;
    if (i === end) {
      throw new FormatError(
        this.code('FIELD'),
        `${this.format}: ${field} at offset 0x${offset.toString(16)} is not NUL-terminated`,
        { format: this.format, field, offset },
      );
    }
    return new TextDecoder().decode(this.bytes.subarray(offset, i));
  }
}

/** A growable little-endian byte writer; `finish()` returns the bytes written. */
export class ByteWriter {
  private buf: Uint8Array;
  private dv: DataView;
  private len = 0;

  constructor(initialCapacity = 256) {
    this.buf = new Uint8Array(initialCapacity);
    this.dv = new DataView(this.buf.buffer);
  }

  get length(): number {
    return this.len;
  }

  private reserve(n: number): number {
    const at = this.len;
    const need = at + n;
    if (need > this.buf.length) {
      let cap = this.buf.length * 2;
      while (cap < need) cap *= 2;
      const nb = new Uint8Array(cap);
      nb.set(this.buf.subarray(0, this.len));
      this.buf = nb;
      this.dv = new DataView(nb.buffer);
    }
    this.len = need;
    return at;
  }

  u8(v: number): this {
    const at = this.reserve(1);
    this.dv.setUint8(at, v);
    return this;
  }
  u16(v: number): this {
    const at = this.reserve(2);
    this.dv.setUint16(at, v, true);
    return this;
  }
  u32(v: number): this {
    const at = this.reserve(4);
    this.dv.setUint32(at, v >>> 0, true);
    return this;
  }
  u64(v: bigint | number): this {
    const at = this.reserve(8);
    this.dv.setBigUint64(at, BigInt(v), true);
    return this;
  }
  u16be(v: number): this {
    const at = this.reserve(2);
    this.dv.setUint16(at, v, false);
    return this;
  }
  u32be(v: number): this {
    const at = this.reserve(4);
    this.dv.setUint32(at, v >>> 0, false);
    return this;
  }
  u64be(v: bigint | number): this {
    const at = this.reserve(8);
    this.dv.setBigUint64(at, BigInt(v), false);
    return this;
  }
  bytes(b: Uint8Array): this {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
    return this;
  }
  ascii(s: string): this {
    const at = this.reserve(s.length);
    for (let i = 0; i < s.length; i++) this.buf[at + i] = s.charCodeAt(i) & 0xff;
    return this;
  }
  zeros(n: number): this {
    const at = this.reserve(n);
    this.buf.fill(0, at, this.len);
    return this;
  }
  /** Pad with zeros up to a multiple of `align`. */
  align(align: number): this {
    const r = this.len % align;
    if (r) this.zeros(align - r);
    return this;
  }
  /** Overwrite a u32 already written (for lengths and offsets patched later). */
  patchU32(at: number, v: number): this {
    this.dv.setUint32(at, v >>> 0, true);
    return this;
  }
  patchU32be(at: number, v: number): this {
    this.dv.setUint32(at, v >>> 0, false);
    return this;
  }
  patchU8(at: number, v: number): this {
    this.dv.setUint8(at, v);
    return this;
  }
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

export function alignUp(v: number, align: number): number {
  return Math.ceil(v / align) * align;
}

export function alignUpBig(v: bigint, align: bigint): bigint {
  return ((v + align - 1n) / align) * align;
}

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * 1024 * 1024;

/** Format a number as 0x-prefixed hex (bigint or number). */
export function hex(v: number | bigint): string {
  return '0x' + v.toString(16);
}
