/**
 * virtio-blk (VIRTIO 1.2 §5.2) over a raw image file: read, write, flush,
 * get-id, discard and write-zeroes, optionally read-only. The device decides
 * what each request means; a BlockBackend (./blk-backends.ts) moves the bytes
 * between the image and the guest's buffers, in a VM straight into guest
 * pages: from libuv's thread pool, or at once when the backend can do it
 * without waiting for a disk and nothing else is in flight (then the request
 * completes before its kick is handled). Requests of a queue run
 * concurrently, complete to the guest in the order they were taken, and a
 * flush waits for every earlier request. Discard is accepted and does nothing
 * (no hole punch).
 *
 * Like a DMA engine, a request already on its way finishes even if the driver
 * resets the device meanwhile (its data lands in the buffers the driver gave);
 * only its completion is dropped.
 */
import { NodevmmError } from '../../errors';
import type { GuestBuffer } from '../../memory/guest-memory';
import { StateReader } from '../device-state';
import type { VirtioActivation, VirtioDevice } from './mmio';
import { readConfigBytes } from './mmio';
import { DeferredPass, VirtioQueueError, type SplitQueue, type VirtqChain } from './queue';

export const VIRTIO_ID_BLOCK = 2;
export const SECTOR_SIZE = 512;

export const VIRTIO_BLK_F_SEG_MAX = 2n;
export const VIRTIO_BLK_F_RO = 5n;
export const VIRTIO_BLK_F_BLK_SIZE = 6n;
export const VIRTIO_BLK_F_FLUSH = 9n;
export const VIRTIO_BLK_F_DISCARD = 13n;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14n;

export const BLK_T = { in: 0, out: 1, flush: 4, getId: 8, discard: 11, writeZeroes: 13 } as const;
export const BLK_S = { ok: 0, ioerr: 1, unsupp: 2 } as const;
export const VIRTIO_BLK_ID_BYTES = 20;
const HEADER_BYTES = 16;
const DISCARD_SEGMENT_BYTES = 16;
/** Limits we advertise for discard / write-zeroes (sectors per segment, segments per request). */
const MAX_RANGE_SECTORS = 0x3f_ffff;
const MAX_RANGE_SEGMENTS = 1;

/** Moves bytes between the image and guest buffers, off the event loop. */
export interface BlockBackend {
  /** Fill `buffers` (in order) from the image at `position`; bytes past the image's end read as zeros. */
  read(buffers: readonly GuestBuffer[], position: number): Promise<void>;
  /** Write the bytes of `buffers` (in order) to the image at `position`. */
  write(buffers: readonly GuestBuffer[], position: number): Promise<void>;
  /** Write `length` zero bytes at `position`. */
  writeZeroes(position: number, length: number): Promise<void>;
  /** Make every completed write durable. */
  datasync(): Promise<void>;
  /**
   * Optional: the same read or write done before returning, where the
   * backend can do it without waiting for a disk (an image in memory, pages
   * in the page cache). True when done; false when the caller must use
   * read/write instead (the buffers may then hold part of the data).
   */
  transferNow?(op: 'read' | 'write', buffers: readonly GuestBuffer[], position: number): boolean;
}

/** A request's status byte and the data bytes it placed in guest buffers. */
interface BlkResult {
  status: number;
  written: number;
}

/** A read or write that passed its checks. */
interface TransferPlan {
  op: 'read' | 'write';
  /** Data bytes (a multiple of the sector size). */
  bytes: number;
  /** Byte offset in the image. */
  position: number;
}

export interface VirtioBlkOptions {
  name?: string;
  backend: BlockBackend;
  /** Image size in bytes (capacity is rounded down to whole sectors). */
  sizeBytes: number;
  readonly?: boolean;
  /** Up to 20 bytes returned by GET_ID (the guest's /sys/block/vdX/serial). */
  serial?: string;
  queueSize?: number;
}

export class VirtioBlk implements VirtioDevice {
  readonly name: string;
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly features: bigint;
  readonly queueMaxSizes: readonly number[];
  readonly readonly: boolean;
  readonly capacitySectors: number;
  private readonly backend: BlockBackend;
  private readonly config = new Uint8Array(60);
  private readonly id: Uint8Array;
  private ctx: VirtioActivation | undefined;
  /** Bumped on reset so completions of an earlier activation are dropped. */
  private epoch = 0;
  /** The tail of the in-order completion chain per queue. */
  private tail: Promise<void> = Promise.resolve();
  private inflight = 0;
  /**
   * While a drain pass runs: whether a request it took completed at once.
   * Such completions tell the driver once, at the end of the pass, instead
   * of once each: at queue depth 16 one kick brings several requests, and
   * each interrupt costs the guest an interrupt and the host an irqfd write.
   */
  private passCompleted: boolean | undefined;
  private idleWaiters: Array<() => void> = [];
  private readonly pass = new DeferredPass(() => {
    const ctx = this.ctx;
    if (!ctx) return;
    try {
      this.drain(0);
    } catch (e) {
      ctx.fail(e);
    }
  });
  /** Counters for tests and diagnostics. */
  readonly stats = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0, errors: 0 };

  constructor(opts: VirtioBlkOptions) {
    this.name = opts.name ?? 'blk';
    this.backend = opts.backend;
    this.readonly = !!opts.readonly;
    this.capacitySectors = Math.floor(opts.sizeBytes / SECTOR_SIZE);
    // 512 entries: a chain may be as long as the queue (§2.7.5.3.1), and seg_max
    // below follows it, so a 1 MiB request of 4 KiB pages (256 data descriptors
    // plus header and status) fits in one chain instead of two. Each request
    // costs a pass through the event loop; fewer, larger ones are cheaper.
    const qsize = opts.queueSize ?? 512;
    this.queueMaxSizes = [qsize];
    this.features =
      (1n << VIRTIO_BLK_F_SEG_MAX) |
      (1n << VIRTIO_BLK_F_BLK_SIZE) |
      (1n << VIRTIO_BLK_F_FLUSH) |
      (this.readonly ? 1n << VIRTIO_BLK_F_RO : (1n << VIRTIO_BLK_F_DISCARD) | (1n << VIRTIO_BLK_F_WRITE_ZEROES));
    const dv = new DataView(this.config.buffer);
    dv.setBigUint64(0, BigInt(this.capacitySectors), true); // capacity
    dv.setUint32(12, qsize - 2, true); // seg_max: room for header and status descriptors
    dv.setUint32(20, SECTOR_SIZE, true); // blk_size
    dv.setUint32(36, MAX_RANGE_SECTORS, true); // max_discard_sectors
    dv.setUint32(40, MAX_RANGE_SEGMENTS, true); // max_discard_seg
    dv.setUint32(44, 1, true); // discard_sector_alignment
    dv.setUint32(48, MAX_RANGE_SECTORS, true); // max_write_zeroes_sectors
    dv.setUint32(52, MAX_RANGE_SEGMENTS, true); // max_write_zeroes_seg
    this.id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    this.id.set(new TextEncoder().encode(opts.serial ?? this.name).subarray(0, VIRTIO_BLK_ID_BYTES));
  }

  readConfig(offset: number, size: number): number {
    return readConfigBytes(this.config, offset, size);
  }

  activate(ctx: VirtioActivation): void {
    this.ctx = ctx;
    this.drain(0);
  }

  reset(): void {
    this.ctx = undefined;
    this.epoch++;
  }

  notify(index: number): void {
    this.drain(index);
  }

  /** Requests taken from the ring and not yet completed. */
  get requestsInFlight(): number {
    return this.inflight;
  }

  /**
   * What the guest was told about the disk (capacity, read-only), for a
   * snapshot. A request in flight cannot be saved (its data may be half
   * moved): refused, after VM quiesce (which awaits idle()) there is none.
   */
  saveState(_active: boolean): Record<string, unknown> {
    if (this.inflight) throw new NodevmmError('ERR_SNAPSHOT', `${this.name} has ${this.inflight} requests in flight, which a snapshot cannot hold: let the disks go idle first (quiesce)`);
    return { capacitySectors: this.capacitySectors, readonly: this.readonly };
  }

  /** The attached image must be what the guest saw: the same size and the same read-only flag. */
  restoreState(state: unknown, path: string, _active: boolean): void {
    const r = new StateReader(path, state);
    const capacitySectors = r.int('capacitySectors', 0, Number.MAX_SAFE_INTEGER);
    const readonly = r.bool('readonly');
    r.done();
    if (capacitySectors !== this.capacitySectors) throw r.error('capacitySectors', `the guest saw ${capacitySectors} sectors, the attached image has ${this.capacitySectors}`);
    if (readonly !== this.readonly) throw r.error('readonly', `the guest saw a ${readonly ? 'read-only' : 'writable'} disk, the attached one is ${this.readonly ? 'read-only' : 'writable'}`);
  }

  /** Resolves when no request is in flight (a clean shutdown waits for this before closing the file). */
  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private drain(index: number): void {
    const ctx = this.ctx;
    if (!ctx?.queues[index] || this.passCompleted !== undefined) return this.drainPass(index);
    this.passCompleted = false;
    try {
      this.drainPass(index);
    } finally {
      const completed = this.passCompleted;
      this.passCompleted = undefined;
      if (completed && this.ctx === ctx) ctx.usedBuffers(index);
    }
  }

  private drainPass(index: number): void {
    const ctx = this.ctx;
    const q = ctx?.queues[index];
    if (!ctx || !q) return;
    // A queue's worth of requests per pass; the rest on a later turn (see DeferredPass).
    let taken = 0;
    for (;;) {
      q.setKicks(false);
      let chain: VirtqChain | undefined;
      while (taken < q.size && (chain = q.pop())) {
        this.start(ctx, q, index, chain);
        taken++;
      }
      q.setKicks(true);
      if (q.pending() === 0) return;
      if (taken >= q.size) return this.pass.schedule();
    }
  }

  private start(ctx: VirtioActivation, q: SplitQueue, index: number, chain: VirtqChain): void {
    const epoch = this.epoch;
    const status = chain.writable[chain.writable.length - 1];
    if (chain.readableBytes < HEADER_BYTES || !status || status.length < 1) {
      throw new VirtioQueueError(`block request at head ${chain.head} lacks a 16-byte header or a status byte`);
    }
    let type: number;
    let sector: number;
    const first = chain.readable[0]!;
    if (first.length >= HEADER_BYTES) {
      // The header in one descriptor (as Linux sends it): read in place.
      type = ctx.memory.readU32(first.gpa);
      sector = ctx.memory.readU32(first.gpa + 12) * 2 ** 32 + ctx.memory.readU32(first.gpa + 8);
    } else {
      const header = new DataView(q.readAt(chain, 0, HEADER_BYTES).buffer);
      type = header.getUint32(0, true);
      sector = Number(header.getBigUint64(8, true));
    }
    // Nothing in flight, and the backend can move the bytes without waiting:
    // the request completes before this returns, in order by construction,
    // with no promise, no pool hop and no second pass through the event loop.
    if (this.inflight === 0 && this.backend.transferNow) {
      const r = this.executeNow(chain, type, sector);
      if (r) {
        this.complete(ctx, q, index, chain, status, r);
        return;
      }
    }
    // A flush orders after everything taken before it; other requests run at once.
    const barrier = type === BLK_T.flush ? this.tail : Promise.resolve();
    this.inflight++;
    const work = barrier.then(() => this.execute(q, chain, type, sector)).catch((e: unknown) => {
      this.stats.errors++;
      return e instanceof VirtioQueueError ? e : { status: BLK_S.ioerr, written: 0 };
    });
    this.tail = this.tail
      .then(() => work)
      .then((r) => {
        this.inflight--;
        if (this.inflight === 0) for (const w of this.idleWaiters.splice(0)) w();
        if (epoch !== this.epoch || this.ctx !== ctx) return;
        if (r instanceof VirtioQueueError) return ctx.fail(r);
        this.complete(ctx, q, index, chain, status, r);
      });
  }

  /** Put the status byte and the chain on the used ring, and tell the driver. */
  private complete(ctx: VirtioActivation, q: SplitQueue, index: number, chain: VirtqChain, status: GuestBuffer, r: BlkResult): void {
    try {
      ctx.memory.writeU8(status.gpa + status.length - 1, r.status);
      q.pushUsed(chain.head, r.written + 1);
      if (this.passCompleted !== undefined) this.passCompleted = true;
      else ctx.usedBuffers(index);
    } catch (e) {
      ctx.fail(e);
    }
  }

  /**
   * A read or write done at once through `backend.transferNow`; undefined
   * when the request is of another type or the backend must wait (then the
   * asynchronous path runs it, from the start).
   */
  private executeNow(chain: VirtqChain, type: number, sector: number): BlkResult | undefined {
    if (type !== BLK_T.in && type !== BLK_T.out) return undefined;
    const plan = this.planTransfer(chain, type, sector);
    if ('status' in plan) return plan;
    if (plan.bytes) {
      try {
        if (!this.backend.transferNow!(plan.op, this.transferBuffers(chain, plan), plan.position)) return undefined;
      } catch {
        this.stats.errors++;
        return { status: BLK_S.ioerr, written: 0 };
      }
    }
    return this.transferDone(plan);
  }

  /** A read or write checked against the disk: what to move and where, or the status it fails with. */
  private planTransfer(chain: VirtqChain, type: typeof BLK_T.in | typeof BLK_T.out, sector: number): TransferPlan | BlkResult {
    const op = type === BLK_T.in ? 'read' : 'write';
    if (op === 'write' && this.readonly) return { status: BLK_S.ioerr, written: 0 };
    const bytes = op === 'read' ? chain.writableBytes - 1 : chain.readableBytes - HEADER_BYTES;
    if (bytes % SECTOR_SIZE || !Number.isSafeInteger(sector) || sector * SECTOR_SIZE + bytes > this.capacitySectors * SECTOR_SIZE) return { status: BLK_S.ioerr, written: 0 };
    return { op, bytes, position: sector * SECTOR_SIZE };
  }

  /** The guest buffers a planned transfer moves: after the header for a write, before the status byte for a read. */
  private transferBuffers(chain: VirtqChain, plan: TransferPlan): readonly GuestBuffer[] {
    return plan.op === 'read' ? sliceBuffers(chain.writable, 0, plan.bytes) : sliceBuffers(chain.readable, HEADER_BYTES, plan.bytes);
  }

  /** Count a finished transfer; a read reports its data bytes as written to the guest. */
  private transferDone(plan: TransferPlan): BlkResult {
    if (plan.op === 'read') {
      this.stats.reads++;
      this.stats.bytesRead += plan.bytes;
      return { status: BLK_S.ok, written: plan.bytes };
    }
    this.stats.writes++;
    this.stats.bytesWritten += plan.bytes;
    return { status: BLK_S.ok, written: 0 };
  }

  /** Run one request; resolves to its status and the data bytes placed in guest buffers. */
  private async execute(q: SplitQueue, chain: VirtqChain, type: number, sector: number): Promise<BlkResult> {
    const dataOut = chain.readableBytes - HEADER_BYTES;
    const dataIn = chain.writableBytes - 1;
    switch (type) {
      case BLK_T.in:
      case BLK_T.out: {
        const plan = this.planTransfer(chain, type, sector);
        if ('status' in plan) return plan;
        if (plan.bytes) await this.backend[plan.op](this.transferBuffers(chain, plan), plan.position);
        return this.transferDone(plan);
      }
      case BLK_T.flush:
        if (!this.readonly) await this.backend.datasync();
        this.stats.flushes++;
        return { status: BLK_S.ok, written: 0 };
      case BLK_T.getId: {
        const n = q.writeAt(chain, 0, this.id.subarray(0, Math.min(VIRTIO_BLK_ID_BYTES, dataIn)));
        return { status: BLK_S.ok, written: n };
      }
      case BLK_T.discard:
      case BLK_T.writeZeroes: {
        if (this.readonly) return { status: BLK_S.ioerr, written: 0 };
        if (dataOut === 0 || dataOut % DISCARD_SEGMENT_BYTES || dataOut / DISCARD_SEGMENT_BYTES > MAX_RANGE_SEGMENTS) return { status: BLK_S.unsupp, written: 0 };
        const segs = new DataView(q.readAt(chain, HEADER_BYTES, dataOut).buffer);
        for (let o = 0; o < dataOut; o += DISCARD_SEGMENT_BYTES) {
          const start = Number(segs.getBigUint64(o, true));
          const count = segs.getUint32(o + 8, true);
          if (count > MAX_RANGE_SECTORS || !Number.isSafeInteger(start) || start + count > this.capacitySectors) return { status: BLK_S.ioerr, written: 0 };
          if (type === BLK_T.writeZeroes) await this.backend.writeZeroes(start * SECTOR_SIZE, count * SECTOR_SIZE);
        }
        return { status: BLK_S.ok, written: 0 };
      }
      default:
        return { status: BLK_S.unsupp, written: 0 };
    }
  }
}

/** The guest buffers holding bytes [offset, offset + length) of a chain part. */
export function sliceBuffers(segments: readonly GuestBuffer[], offset: number, length: number): readonly GuestBuffer[] {
  // The common case, a data part that starts and ends on descriptor
  // boundaries (header, data pages, status byte each in their own), takes
  // the descriptors as they are: no new object per page.
  let first = 0;
  let skip = offset;
  while (first < segments.length && skip >= segments[first]!.length) skip -= segments[first++]!.length;
  if (skip === 0) {
    let end = first;
    let left = length;
    while (end < segments.length && left >= segments[end]!.length && left > 0) left -= segments[end++]!.length;
    if (left === 0) return first === 0 && end === segments.length ? segments : segments.slice(first, end);
  }
  const out: GuestBuffer[] = [];
  skip = offset;
  let left = length;
  for (const s of segments) {
    if (left === 0) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const n = Math.min(s.length - skip, left);
    out.push({ gpa: s.gpa + skip, length: n });
    left -= n;
    skip = 0;
  }
  return out;
}
