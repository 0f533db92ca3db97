/**
 * Guest-physical memory as seen from TypeScript: a set of RAM regions, each
 * backed by one or more ArrayBuffers. With the KVM backend those ArrayBuffers
 * are external buffers over the very pages KVM maps into the guest (zero copy);
 * for pure unit tests they are ordinary ArrayBuffers (`GuestMemory.anonymous`).
 *
 * GPAs are JS numbers: every GPA a guest can have (52 bits) is a safe integer.
 * Accesses may span views and regions that are contiguous; anything touching a
 * hole throws GuestMemoryError naming the GPA. This is the only module that
 * creates raw views of guest memory.
 */
import { GuestMemoryError } from '../errors';
import { hex } from '../util/bytes';

/** One contiguous piece of a region that is addressable through one ArrayBuffer. */
/** A guest-physical byte range (a DMA buffer, e.g. one virtqueue descriptor). */
export interface GuestBuffer {
  gpa: number;
  length: number;
}

/**
 * One piece of a region: an ArrayBuffer over it, or its size and how to make
 * one (`load`, called once, on the first access to the piece). A buffer made
 * only when touched keeps the rest of guest RAM out of V8's young
 * generation: an external ArrayBuffer counts there until two scavenges
 * promote it, and V8 forces those scavenges at the next allocations while
 * tens of MiB of them are young (two per VM, whatever its RAM size; under
 * an emulated CPU tens of ms each).
 */
export type GuestMemoryView = { gpa: number; buffer: ArrayBuffer } | { gpa: number; size: number; load: () => ArrayBuffer };

export interface GuestMemoryRegionInit {
  gpa: number;
  size: number;
  readonly?: boolean;
  /** Views covering [gpa, gpa+size) in ascending order, with no gaps. */
  views: GuestMemoryView[];
  /** Free-form label shown in errors and inspect output ("ram-low", "igvm-required"). */
  name?: string;
}

interface Chunk {
  gpa: number;
  end: number;
  /** Empty until `load` has run. */
  u8: Uint8Array;
  dv: DataView;
  readonly: boolean;
  /** Set while the chunk's buffer is not made yet (find() makes it). */
  load: (() => ArrayBuffer) | undefined;
}

const UNLOADED = new ArrayBuffer(0);

export interface GuestRamRange {
  gpa: number;
  size: number;
  readonly: boolean;
  name: string;
}

/** What loaders and devices need from guest memory. */
export interface GuestMemoryAccess {
  read(gpa: number, length: number): Uint8Array;
  write(gpa: number, data: Uint8Array): void;
  fill(gpa: number, length: number, value?: number): void;
  readU8(gpa: number): number;
  readU16(gpa: number): number;
  readU32(gpa: number): number;
  readU64(gpa: number): bigint;
  writeU8(gpa: number, v: number): void;
  writeU16(gpa: number, v: number): void;
  writeU32(gpa: number, v: number): void;
  writeU64(gpa: number, v: bigint | number): void;
  /** True when every byte of [gpa, gpa+length) is guest RAM. */
  isRam(gpa: number, length: number): boolean;
  ranges(): GuestRamRange[];
}

export class GuestMemory implements GuestMemoryAccess {
  private chunks: Chunk[] = [];
  private regionList: GuestRamRange[] = [];
  private invalidated = false;
  /** Last chunk hit: most accesses are local, so this skips the search. */
  private last: Chunk | undefined;

  /** Plain ArrayBuffer-backed memory (no hypervisor); for pure loader tests and tools. */
  static anonymous(ranges: { gpa: number; size: number; readonly?: boolean; name?: string }[]): GuestMemory {
    const mem = new GuestMemory();
    for (const r of ranges) {
      mem.addRegion({ gpa: r.gpa, size: r.size, readonly: r.readonly ?? false, name: r.name ?? 'ram', views: [{ gpa: r.gpa, buffer: new ArrayBuffer(r.size) }] });
    }
    return mem;
  }

  addRegion(init: GuestMemoryRegionInit): void {
    const end = init.gpa + init.size;
    for (const r of this.regionList) {
      if (init.gpa < r.gpa + r.size && r.gpa < end) {
        throw new GuestMemoryError(
          `guest memory region ${init.name ?? ''} [${hex(init.gpa)}, ${hex(end)}) overlaps region ${r.name} [${hex(r.gpa)}, ${hex(r.gpa + r.size)})`,
          init.gpa,
          init.size,
          'ERR_GUEST_MEMORY_OVERLAP',
        );
      }
    }
    let at = init.gpa;
    for (const v of init.views) {
      if (v.gpa !== at) throw new GuestMemoryError(`guest memory view at ${hex(v.gpa)} leaves a gap at ${hex(at)}`, at, 0);
      const buffer = 'buffer' in v ? v.buffer : UNLOADED;
      const len = 'buffer' in v ? v.buffer.byteLength : v.size;
      this.chunks.push({ gpa: at, end: at + len, u8: new Uint8Array(buffer), dv: new DataView(buffer), readonly: !!init.readonly, load: 'load' in v ? v.load : undefined });
      at += len;
    }
    if (at !== end) throw new GuestMemoryError(`guest memory views cover ${hex(at - init.gpa)} bytes of a ${hex(init.size)}-byte region`, init.gpa, init.size);
    this.chunks.sort((a, b) => a.gpa - b.gpa);
    this.regionList.push({ gpa: init.gpa, size: init.size, readonly: !!init.readonly, name: init.name ?? 'ram' });
    this.regionList.sort((a, b) => a.gpa - b.gpa);
  }

  /** Called when the backing VM is destroyed: every later access throws instead of touching freed pages. */
  invalidate(): void {
    this.invalidated = true;
    this.chunks = [];
    this.last = undefined;
  }

  ranges(): GuestRamRange[] {
    return this.regionList.map((r) => ({ ...r }));
  }

  /** Total bytes of RAM, read-only regions included. */
  get totalSize(): number {
    return this.regionList.reduce((s, r) => s + r.size, 0);
  }

  /** The chunk holding `gpa`, its buffer made. */
  private find(gpa: number): Chunk | undefined {
    const l = this.last;
    if (l && gpa >= l.gpa && gpa < l.end) return l;
    const c = this.locate(gpa);
    if (!c) return undefined;
    if (c.load) this.materialize(c);
    this.last = c;
    return c;
  }

  /** The chunk holding `gpa`, made or not (binary search). */
  private locate(gpa: number): Chunk | undefined {
    let lo = 0;
    let hi = this.chunks.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = this.chunks[mid]!;
      if (gpa < c.gpa) hi = mid - 1;
      else if (gpa >= c.end) lo = mid + 1;
      else return c;
    }
    return undefined;
  }

  /** Make a lazy chunk's buffer (the `last` fast path in find only ever holds made ones). */
  private materialize(c: Chunk): void {
    const buffer = c.load!();
    if (buffer.byteLength !== c.end - c.gpa) throw new GuestMemoryError(`guest memory view at ${hex(c.gpa)} is ${buffer.byteLength} bytes, ${c.end - c.gpa} were promised`, c.gpa, c.end - c.gpa);
    c.u8 = new Uint8Array(buffer);
    c.dv = new DataView(buffer);
    c.load = undefined;
  }

  private fail(gpa: number, length: number, what: string): never {
    if (this.invalidated) throw new GuestMemoryError(`guest memory was released when its vm was destroyed (${what} at ${hex(gpa)})`, gpa, length, 'ERR_GUEST_MEMORY_RELEASED');
    throw new GuestMemoryError(`${what} of ${length} bytes at gpa ${hex(gpa)} is outside guest ram`, gpa, length);
  }

  private check(gpa: number, length: number, what: string): void {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(length) || gpa < 0 || length < 0) {
      throw new GuestMemoryError(`${what}: gpa ${gpa} and length ${length} must be non-negative integers`, Number.isSafeInteger(gpa) ? gpa : 0, 0, 'ERR_INVALID_ARG');
    }
  }

  /** Calls fn for each chunk piece of [gpa, gpa+length); throws on holes. */
  private each(gpa: number, length: number, what: string, write: boolean, fn: (c: Chunk, off: number, n: number, done: number) => void): void {
    this.check(gpa, length, what);
    let done = 0;
    while (done < length) {
      const at = gpa + done;
      const c = this.find(at);
      if (!c) this.fail(at, length - done, what);
      if (write && c.readonly) throw new GuestMemoryError(`${what} at gpa ${hex(at)} targets read-only guest memory`, at, length - done, 'ERR_GUEST_MEMORY_READONLY');
      const n = Math.min(length - done, c.end - at);
      fn(c, at - c.gpa, n, done);
      done += n;
    }
  }

  isRam(gpa: number, length: number): boolean {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(length) || gpa < 0 || length < 0) return false;
    let at = gpa;
    const end = gpa + length;
    while (at < end) {
      // locate, not find: asking whether bytes are RAM does not make their buffers.
      const c = this.locate(at);
      if (!c) return false;
      at = c.end;
    }
    return true;
  }

  /** Copy bytes out of guest memory. */
  read(gpa: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.each(gpa, length, 'read', false, (c, off, n, done) => out.set(c.u8.subarray(off, off + n), done));
    return out;
  }

  /** Copy bytes into guest memory (read-only regions are writable only by `load`). */
  write(gpa: number, data: Uint8Array): void {
    this.each(gpa, data.length, 'write', true, (c, off, n, done) => c.u8.set(data.subarray(done, done + n), off));
  }

  /** Like write, but also allowed into read-only regions: how a loader puts a ROM image in place. */
  load(gpa: number, data: Uint8Array): void {
    this.each(gpa, data.length, 'load', false, (c, off, n, done) => c.u8.set(data.subarray(done, done + n), off));
  }

  fill(gpa: number, length: number, value = 0): void {
    this.each(gpa, length, 'fill', true, (c, off, n) => c.u8.fill(value, off, off + n));
  }

  /**
   * Let `source` write [gpa, gpa+length) in place: it is handed the range piece by piece as
   * views of guest RAM, with how many bytes came before each (a file read straight into
   * guest memory, without a buffer in between).
   */
  writeFrom(gpa: number, length: number, source: (target: Uint8Array, done: number) => void): void {
    this.each(gpa, length, 'write', true, (c, off, n, done) => source(c.u8.subarray(off, off + n), done));
  }

  /**
   * A zero-copy view of [gpa, gpa+length) when it lies within one backing
   * buffer (device models use this for DMA); undefined when it spans buffers.
   */
  view(gpa: number, length: number): Uint8Array | undefined {
    this.check(gpa, length, 'view');
    const c = this.find(gpa);
    if (!c) this.fail(gpa, length, 'view');
    if (gpa + length > c.end) return undefined;
    return c.u8.subarray(gpa - c.gpa, gpa - c.gpa + length);
  }

  private scalar(gpa: number, size: number, what: string, write: boolean): { c: Chunk; off: number } | undefined {
    const c = this.find(gpa);
    if (c && gpa + size <= c.end && Number.isSafeInteger(gpa)) {
      if (write && c.readonly) throw new GuestMemoryError(`${what} at gpa ${hex(gpa)} targets read-only guest memory`, gpa, size, 'ERR_GUEST_MEMORY_READONLY');
      return { c, off: gpa - c.gpa };
    }
    return undefined;
  }

  readU8(gpa: number): number {
    const s = this.scalar(gpa, 1, 'read', false);
    return s ? s.c.u8[s.off]! : this.fail(gpa, 1, 'read');
  }
  readU16(gpa: number): number {
    const s = this.scalar(gpa, 2, 'read', false);
    return s ? s.c.dv.getUint16(s.off, true) : new DataView(this.read(gpa, 2).buffer).getUint16(0, true);
  }
  readU32(gpa: number): number {
    const s = this.scalar(gpa, 4, 'read', false);
    return s ? s.c.dv.getUint32(s.off, true) : new DataView(this.read(gpa, 4).buffer).getUint32(0, true);
  }
  readU64(gpa: number): bigint {
    const s = this.scalar(gpa, 8, 'read', false);
    return s ? s.c.dv.getBigUint64(s.off, true) : new DataView(this.read(gpa, 8).buffer).getBigUint64(0, true);
  }
  writeU8(gpa: number, v: number): void {
    const s = this.scalar(gpa, 1, 'write', true);
    if (s) s.c.u8[s.off] = v;
    else this.fail(gpa, 1, 'write');
  }
  writeU16(gpa: number, v: number): void {
    const s = this.scalar(gpa, 2, 'write', true);
    if (s) s.c.dv.setUint16(s.off, v, true);
    else this.writeScalarSlow(gpa, 2, (dv) => dv.setUint16(0, v, true));
  }
  writeU32(gpa: number, v: number): void {
    const s = this.scalar(gpa, 4, 'write', true);
    if (s) s.c.dv.setUint32(s.off, v >>> 0, true);
    else this.writeScalarSlow(gpa, 4, (dv) => dv.setUint32(0, v >>> 0, true));
  }
  writeU64(gpa: number, v: bigint | number): void {
    const s = this.scalar(gpa, 8, 'write', true);
    if (s) s.c.dv.setBigUint64(s.off, BigInt(v), true);
    else this.writeScalarSlow(gpa, 8, (dv) => dv.setBigUint64(0, BigInt(v), true));
  }
  private writeScalarSlow(gpa: number, size: number, set: (dv: DataView) => void): void {
    const b = new Uint8Array(size);
    set(new DataView(b.buffer));
    this.write(gpa, b);
  }
}
