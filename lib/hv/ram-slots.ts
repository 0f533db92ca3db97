/**
 * Guest RAM of one partition: each region's host memory, the slot the
 * backend maps it in, its place in GuestMemory, and the (ram index, offset,
 * length) tables that move file bytes straight to and from guest pages
 * (native/block_io.cc) without a copy through JS.
 */
import { GuestMemoryError, NodevmmError } from '../errors';
import type { GuestBuffer, GuestMemory, GuestMemoryView } from '../memory/guest-memory';
import { hex } from '../util/bytes';
import type { EarlyRam, HostRam, PartitionBackend } from './backend';
import type { FileIoMode, RamOptions } from './partition';

/** Guest RAM of at least this size asks for transparent huge pages (native/guest_ram.cc aligns it to them). */
const HUGE_PAGE = 2 * 1024 * 1024;
/** Guest RAM is seen from JS in pieces of this size: one touched piece stays under the 32 MiB of young external buffers at which V8 (node 20, 16 MiB semi-spaces) forces scavenges. */
const VIEW_SIZE = 16 * 1024 * 1024;
/** Guest physical addresses have at most 52 bits. */
const GPA_LIMIT = 2 ** 52;

type Op = 'read' | 'write';

/**
 * Settles when both do (rejects with the first failure), with a handler attached so a failure
 * nobody awaits is not an unhandled rejection (it also fails the vCPUs' start). Made outside
 * RamSlots.add so the chain, which lives until the kernel is done, holds none of add's scope
 * (the RAM, the partition's memory).
 */
function both(a: Promise<void>, b: Promise<void>): Promise<void> {
  const p = Promise.all([a, b]).then(noop);
  p.catch(noop);
  return p;
}
function noop(): void {}

/**
 * Throws unless `opts` is a non-empty, 4 KiB-aligned region inside the
 * 52-bit guest physical space that overlaps none of `taken`; returns its name.
 */
export function checkRamPlacement(opts: RamOptions, taken: Iterable<{ gpa: number; size: number; name: string }>): string {
  const { gpa, size } = opts;
  const name = opts.name ?? `ram@${hex(gpa)}`;
  if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(size) || gpa < 0 || size <= 0 || gpa % 4096 || size % 4096) {
    throw new NodevmmError('ERR_GUEST_MEMORY_ALIGN', `guest ram ${name} at gpa ${hex(gpa)} with size ${hex(size)} must be 4 KiB aligned and non-empty`);
  }
  if (gpa + size > GPA_LIMIT) throw new NodevmmError('ERR_GUEST_MEMORY_RANGE', `guest ram ${name} ends at ${hex(gpa + size)}, beyond the 52-bit guest physical address space`);
  for (const r of taken) {
    if (gpa < r.gpa + r.size && r.gpa < gpa + size) {
      throw new NodevmmError('ERR_GUEST_MEMORY_OVERLAP', `guest ram ${name} [${hex(gpa)}, ${hex(gpa + size)}) overlaps ${r.name} [${hex(r.gpa)}, ${hex(r.gpa + r.size)})`);
    }
  }
  return name;
}

/** The backend's host memory for `opts` (checked by checkRamPlacement), asked for transparent huge pages unless `hugepages` is false. */
export function hostRamFor(backend: Pick<PartitionBackend, 'allocateRam'>, opts: RamOptions, name: string): HostRam {
  if (opts.shared && opts.privateFile !== undefined) {
    throw new NodevmmError('ERR_INVALID_ARG', `guest ram ${name} cannot be both shared (a memfd) and a snapshot's file mapped private (privateFile)`);
  }
  const ram = backend.allocateRam(opts.size, opts.privateFile !== undefined ? { name, privateFile: opts.privateFile } : opts.shared ? { name, shared: true } : { name });
  if (opts.hugepages !== false && opts.size >= HUGE_PAGE) {
    try {
      ram.advise('hugepage');
    } catch {
      // A host without transparent huge pages (THP "never", or not built): 4 KiB pages work too.
    }
  }
  return ram;
}

export class RamSlots {
  private readonly rams: HostRam[] = [];
  private readonly gpas: number[] = [];
  /** Each RAM's size, kept here: a native accessor is too slow for per-descriptor use. */
  private readonly sizes: number[] = [];
  private readonly readonly: boolean[] = [];
  /** Fds whose filesystem refused RWF_NOWAIT: fileIo goes straight to the pool for them. */
  private readonly noNowait = new Set<number>();
  /** Every mapping the backend finishes in the background, settled (rejects with the first failure). */
  private mapped: Promise<void> = Promise.resolve();

  constructor(
    private readonly memory: GuestMemory,
    private readonly backend: PartitionBackend,
  ) {}

  add(opts: RamOptions): void {
    const name = checkRamPlacement(opts, this.memory.ranges());
    const ram = hostRamFor(this.backend, opts, name);
    try {
      const pending = this.backend.mapRam(this.rams.length, opts.gpa, ram, !!opts.readonly, opts.privateFile !== undefined);
      if (pending) this.mapped = both(this.mapped, pending);
      this.register(opts, name, ram);
    } catch (e) {
      ram.release();
      throw e;
    }
  }

  /**
   * Take RAM the backend allocated and mapped in slot `this.rams.length`
   * while it made the partition (EarlyRam, backend.ts): placement checked,
   * host memory and slot done; only the bookkeeping is left. The RAM is
   * this object's from here on (release() gives it back).
   */
  adopt(early: EarlyRam): void {
    this.register(early.opts, early.name, early.ram);
  }

  private register(opts: RamOptions, name: string, ram: HostRam): void {
    const { gpa, size } = opts;
    const readonly = !!opts.readonly;
    // Each piece gets its ArrayBuffer when JS first touches it (GuestMemoryView says why).
    const views: GuestMemoryView[] = [];
    for (let off = 0; off < size; off += VIEW_SIZE) {
      const len = Math.min(VIEW_SIZE, size - off);
      views.push({ gpa: gpa + off, size: len, load: () => ram.view(off, len) });
    }
    this.memory.addRegion({ gpa, size, readonly, name, views });
    this.rams.push(ram);
    this.gpas.push(gpa);
    this.sizes.push(size);
    this.readonly.push(readonly);
  }

  /** Partition.fileIo (documented there). */
  fileIo(op: Op, fd: number, position: number, buffers: readonly GuestBuffer[], how: FileIoMode): Promise<number> {
    const table = this.segmentTable(op, buffers);
    const code = op === 'read' ? 0 : 1;
    if (how !== 'pool') {
      let done: number;
      try {
        done = this.transferNow(code, fd, position, table, how === 'nowait');
      } catch (e) {
        return Promise.reject(e);
      }
      if (done >= 0) return Promise.resolve(done);
    }
    return new Promise((resolve, reject) => {
      this.backend.transfer(code, fd, position, this.rams, table, (e, bytes) => (e ? reject(e) : resolve(bytes)));
    });
  }

  /** Partition.fileIoNow (documented there). */
  fileIoNow(op: Op, fd: number, position: number, buffers: readonly GuestBuffer[], nowait: boolean): number {
    return this.transferNow(op === 'read' ? 0 : 1, fd, position, this.segmentTable(op, buffers), nowait);
  }

  fileSync(fd: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.backend.transfer(2, fd, 0, [], new Float64Array(0), (e) => (e ? reject(e) : resolve()));
    });
  }

  private transferNow(code: 0 | 1, fd: number, position: number, table: Float64Array, nowait: boolean): number {
    if (nowait && this.noNowait.has(fd)) return -1;
    const done = this.backend.transferNow(code, fd, position, this.rams, table, nowait);
    // -2: this file cannot say whether it would block (no RWF_NOWAIT): stop asking.
    if (done === -2) this.noNowait.add(fd);
    return done < 0 ? -1 : done;
  }

  /**
   * (ram index, offset, length) triples for `buffers`; a buffer across two RAM
   * regions takes two. A 1 MiB request is ~256 buffers, and under an emulated
   * CPU every call and allocation per buffer shows in the throughput: plain
   * arrays only, one typed array sized for the common case, grown only when a
   * buffer crosses regions.
   */
  segmentTable(op: Op, buffers: readonly GuestBuffer[]): Float64Array {
    const gpas = this.gpas;
    const sizes = this.sizes;
    let table = new Float64Array(buffers.length * 3);
    let n = 0;
    let i = 0; // the region of the last buffer: most requests stay in one
    for (let b = 0; b < buffers.length; b++) {
      let gpa = buffers[b]!.gpa;
      let left = buffers[b]!.length;
      while (left > 0) {
        if (!(gpa >= gpas[i]! && gpa - gpas[i]! < sizes[i]!)) i = this.indexOf(gpa);
        if (i < 0) throw new GuestMemoryError(`disk ${op} at gpa ${hex(gpa)} is outside guest ram`, gpa, left);
        if (op === 'read' && this.readonly[i]) throw new GuestMemoryError(`disk read at gpa ${hex(gpa)} targets read-only guest memory`, gpa, left, 'ERR_GUEST_MEMORY_READONLY');
        const offset = gpa - gpas[i]!;
        const len = Math.min(left, sizes[i]! - offset);
        if (n + 3 > table.length) {
          const grown = new Float64Array(table.length * 2 + 3);
          grown.set(table);
          table = grown;
        }
        table[n++] = i;
        table[n++] = offset;
        table[n++] = len;
        gpa += len;
        left -= len;
      }
    }
    return n < table.length ? table.subarray(0, n) : table;
  }

  /** The index of the RAM holding `gpa`, or -1. */
  private indexOf(gpa: number): number {
    for (let k = 0; k < this.gpas.length; k++) if (gpa >= this.gpas[k]! && gpa - this.gpas[k]! < this.sizes[k]!) return k;
    return -1;
  }

  /** Resolves once every region is mapped for the guest (some backends map in the background). */
  ready(): Promise<void> {
    return this.mapped;
  }

  mappings(): Array<{ gpa: number; size: number; hostAddress: bigint; fd: number }> {
    return this.rams.map((r, i) => ({ gpa: this.gpas[i]!, size: this.sizes[i]!, hostAddress: r.hostAddress, fd: r.fd }));
  }

  /** Each region's bytes into its own file (`fds` in region order), zero pages left as holes; returns the bytes written. */
  writeTo(fds: readonly number[]): number {
    if (fds.length !== this.rams.length) throw new NodevmmError('ERR_INVALID_ARG', `${fds.length} files given for ${this.rams.length} ram regions`);
    let n = 0;
    this.rams.forEach((r, i) => (n += r.writeTo(fds[i]!)));
    return n;
  }

  /** Give every region's host memory back (after the backend stopped using it) and invalidate the views. */
  release(): void {
    for (const r of this.rams) r.release();
    this.rams.length = 0;
    this.gpas.length = 0;
    this.sizes.length = 0;
    this.readonly.length = 0;
    this.memory.invalidate();
  }
}
