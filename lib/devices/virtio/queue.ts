/**
 * The device side of a split virtqueue (VIRTIO 1.2 §2.7): descriptor table,
 * available and used rings in guest memory, indirect descriptors (§2.7.5.3)
 * and event-index notification suppression (§2.7.7, §2.7.10). Every index,
 * address and length the guest wrote is checked before it is used; a
 * violation throws VirtioQueueError, which the transport turns into the
 * DEVICE_NEEDS_RESET state. This module does no I/O and knows no device.
 * Not here: packed virtqueues (§2.8).
 */
import { NodevmmError } from '../../errors';
import type { GuestMemory } from '../../memory/guest-memory';
import { hex } from '../../util/bytes';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** used.flags: the device asks not to be kicked (only meaningful without EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** avail.flags: the driver asks for no interrupts (only meaningful without EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** §2.7: the largest queue size a split virtqueue can have. */
export const VIRTQ_MAX_SIZE = 32768;
/** Entries an indirect table may have: `next` is 16 bits, so no chain reaches further (vhost's limit too). */
export const VIRTQ_MAX_INDIRECT_ENTRIES = 65536;
const DESC_SIZE = 16;

/**
 * A pass over a queue (one kick's work) takes at most `SplitQueue.size`
 * chains. A driver on another vCPU can make chains available as fast as the
 * device takes them (moving `avail.idx` over the same heads is enough), so
 * a pass that ran until the ring was empty could hold the event loop
 * forever. A device that stops at the bound schedules the rest here: one
 * more pass on a later turn of the event loop, at most one outstanding.
 */
export class DeferredPass {
  private scheduled = false;
  constructor(private readonly run: () => void) {}

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.run();
    });
  }
}

/** The guest broke a virtqueue rule; the device must stop using the queue until reset. */
export class VirtioQueueError extends NodevmmError {
  constructor(message: string) {
    super('ERR_VIRTIO_QUEUE', message);
  }
}

/** One guest buffer of a descriptor chain: `length` > 0 and `gpa + length` inside guest RAM. */
export interface VirtqSegment {
  gpa: number;
  length: number;
}

/** A chain the driver made available: device-readable segments first, then device-writable ones. */
export interface VirtqChain {
  /** The head descriptor index, handed back in the used ring. */
  head: number;
  readable: VirtqSegment[];
  writable: VirtqSegment[];
  readableBytes: number;
  writableBytes: number;
}

export interface SplitQueueLayout {
  /** Queue size chosen by the driver: a power of two from 1 to 32768. */
  size: number;
  descGpa: number;
  /** The available ("driver") ring. */
  availGpa: number;
  /** The used ("device") ring. */
  usedGpa: number;
}

export interface SplitQueueFeatures {
  /** VIRTIO_F_RING_EVENT_IDX was negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_RING_INDIRECT_DESC was negotiated. */
  indirect: boolean;
}

/** Bytes each part of a split virtqueue of `size` entries occupies (§2.7: with the event fields). */
export function splitQueueSizes(size: number): { desc: number; avail: number; used: number } {
  return { desc: DESC_SIZE * size, avail: 6 + 2 * size, used: 6 + 8 * size };
}

/** Where the device is in a split virtqueue: what a snapshot saves to resume it exactly. */
export interface SplitQueueIndices {
  /** Next available-ring slot the device reads (last_avail_idx), free-running mod 2^16. */
  lastAvail: number;
  /** Used index the device publishes next, free-running mod 2^16. */
  usedIdx: number;
  /** Used index when the driver was last interrupted (event-index suppression). */
  signalledUsed: number;
}

export function isValidQueueSize(size: number): boolean {
  return Number.isInteger(size) && size >= 1 && size <= VIRTQ_MAX_SIZE && (size & (size - 1)) === 0;
}

export class SplitQueue {
  readonly size: number;
  private readonly mem: GuestMemory;
  private readonly layout: SplitQueueLayout;
  private readonly features: SplitQueueFeatures;
  /** Next available-ring slot the device will read (free-running, mod 2^16). */
  private lastAvail = 0;
  /** Used index the device will publish next (free-running, mod 2^16). */
  private usedIdx = 0;
  /** Used index when the driver was last interrupted (for event-index suppression). */
  private signalledUsed = 0;
  private desc: DataView | undefined;

  /**
   * Checks the layout (size, alignment §2.7 table, all parts inside guest RAM)
   * and throws VirtioQueueError when it is wrong. A fresh queue starts where
   * the used ring says (zero after reset); a restored one at `resume`, the
   * indices a snapshot saved (checked by the caller).
   */
  constructor(mem: GuestMemory, layout: SplitQueueLayout, features: SplitQueueFeatures, resume?: SplitQueueIndices) {
    if (!isValidQueueSize(layout.size)) throw new VirtioQueueError(`queue size ${layout.size} is not a power of two from 1 to ${VIRTQ_MAX_SIZE}`);
    const sizes = splitQueueSizes(layout.size);
    const parts: Array<[string, number, number, number]> = [
      ['descriptor table', layout.descGpa, sizes.desc, 16],
      ['available ring', layout.availGpa, sizes.avail, 2],
      ['used ring', layout.usedGpa, sizes.used, 4],
    ];
    for (const [name, gpa, len, align] of parts) {
      if (!Number.isSafeInteger(gpa) || gpa % align !== 0) throw new VirtioQueueError(`${name} address ${hex(gpa)} is not ${align}-byte aligned`);
      if (!mem.isRam(gpa, len)) throw new VirtioQueueError(`${name} at ${hex(gpa)} with ${len} bytes is outside guest ram`);
    }
    this.size = layout.size;
    this.mem = mem;
    this.layout = { ...layout };
    this.features = { ...features };
    if (resume) {
      this.lastAvail = resume.lastAvail & 0xffff;
      this.usedIdx = resume.usedIdx & 0xffff;
      this.signalledUsed = resume.signalledUsed & 0xffff;
      return;
    }
    // The used ring starts where the driver left it: zero after reset, by §2.7.
    this.usedIdx = mem.readU16(layout.usedGpa + 2);
    this.lastAvail = this.usedIdx;
    this.signalledUsed = this.usedIdx;
  }

  /** The device's indices, for a snapshot. */
  indices(): SplitQueueIndices {
    return { lastAvail: this.lastAvail, usedIdx: this.usedIdx, signalledUsed: this.signalledUsed };
  }

  /** The used index the guest's used ring holds (what the device last published). */
  publishedUsedIdx(): number {
    return this.mem.readU16(this.layout.usedGpa + 2);
  }

  /**
   * Give back the `count` chains the last pops took, unused (none of them
   * pushed): the next pops take them again. For a device holding spare
   * buffers it has not written to the used ring (a snapshot rewinds them).
   */
  unpop(count = 1): void {
    this.lastAvail = (this.lastAvail - count) & 0xffff;
  }

  /** The descriptor table (checked to lie in RAM at construction); re-made if its memory went away. */
  private descTable(): DataView {
    if (this.desc && this.desc.byteLength !== 0) return this.desc;
    const bytes = DESC_SIZE * this.size;
    const v = this.mem.view(this.layout.descGpa, bytes);
    // Only a view stays current; a table across two regions is copied afresh for each chain.
    if (!v) return this.tableView(this.layout.descGpa, bytes);
    return (this.desc = new DataView(v.buffer, v.byteOffset, v.byteLength));
  }

  private availIdx(): number {
    return this.mem.readU16(this.layout.availGpa + 2);
  }

  /** Chains the driver has made available and the device has not taken yet. */
  pending(): number {
    const n = (this.availIdx() - this.lastAvail) & 0xffff;
    if (n > this.size) throw new VirtioQueueError(`available index moved ${n} entries ahead of the device, more than the queue size ${this.size}`);
    return n;
  }

  /** Take the next available chain, validated; undefined when the ring is empty. */
  pop(): VirtqChain | undefined {
    if (this.pending() === 0) {
      if (!this.features.eventIdx) return undefined;
      // Ask for a kick on the next buffer, then look again: the driver may have
      // added one after we read its index and before it could see avail_event.
      this.mem.writeU16(this.layout.usedGpa + 4 + 8 * this.size, this.lastAvail);
      if (this.pending() === 0) return undefined;
    }
    const slot = this.lastAvail % this.size;
    const head = this.mem.readU16(this.layout.availGpa + 4 + 2 * slot);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return this.walk(head);
  }

  /**
   * The bytes of a descriptor table, read in place (a view of guest memory;
   * a copy only if the table spans two memory regions). A chain can have
   * hundreds of descriptors (a 1 MiB block request has 258), so fields are
   * read straight from one DataView, without BigInt or a lookup per field.
   */
  private tableView(gpa: number, bytes: number): DataView {
    const v = this.mem.view(gpa, bytes) ?? this.mem.read(gpa, bytes);
    return new DataView(v.buffer, v.byteOffset, v.byteLength);
  }

  private readDesc(table: DataView, index: number): { gpa: number; length: number; flags: number; next: number } {
    const at = DESC_SIZE * index;
    const lo = table.getUint32(at, true);
    const hi = table.getUint32(at + 4, true);
    const length = table.getUint32(at + 8, true);
    const gpa = hi * 2 ** 32 + lo;
    // Beyond 2^53 a Number is no longer exact, and no guest RAM is up there.
    if (hi >= 0x20_0000 || gpa + length > Number.MAX_SAFE_INTEGER) {
      throw new VirtioQueueError(`descriptor ${index} address ${(BigInt(hi) * 2n ** 32n + BigInt(lo)).toString(16)} with length ${length} overflows`);
    }
    return { gpa, length, flags: table.getUint16(at + 12, true), next: table.getUint16(at + 14, true) };
  }

  /**
   * Follow a chain from `head`, checking it against the spec's bounds: at
   * most `size` buffer descriptors in all, direct ones and those of an
   * indirect table together, the one pointing at the table not counted (§2.7.5.3.1:
   * a chain is never longer than the queue size, so a longer walk is a loop
   * or a broken driver), an indirect table of at most 65 536 entries (`next`
   * is 16 bits: more are unreachable) that is not itself indirect and is
   * the chain's last descriptor, and at most 2^32 bytes (§2.7.5.2). The walk
   * therefore reads at most `size` descriptors and copies at most 1 MiB of
   * table, whatever the guest wrote. Zero-length descriptors are checked
   * like any other but add no segment.
   */
  private walk(head: number): VirtqChain {
    if (head >= this.size) throw new VirtioQueueError(`available ring names descriptor ${head}, outside a queue of size ${this.size}`);
    const chain: VirtqChain = { head, readable: [], writable: [], readableBytes: 0, writableBytes: 0 };
    let table = this.descTable();
    let tableSize = this.size;
    let index = head;
    let indirect = false;
    let budget = this.size;
    let writableSeen = false;
    for (;;) {
      if (budget-- <= 0) throw new VirtioQueueError(`descriptor chain from head ${head} is longer than the queue size ${this.size} (a loop, or a chain the spec forbids)`);
      const d = this.readDesc(table, index);
      if (d.flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.features.indirect) throw new VirtioQueueError(`descriptor ${index} is indirect but VIRTIO_F_RING_INDIRECT_DESC was not negotiated`);
        if (indirect) throw new VirtioQueueError(`indirect table entry ${index} is itself indirect`);
        if (d.flags & VIRTQ_DESC_F_NEXT) throw new VirtioQueueError(`descriptor ${index} has both INDIRECT and NEXT set`);
        if (d.length === 0 || d.length % DESC_SIZE !== 0) throw new VirtioQueueError(`indirect table length ${d.length} of descriptor ${index} is not a non-zero multiple of 16`);
        if (d.length > VIRTQ_MAX_INDIRECT_ENTRIES * DESC_SIZE) throw new VirtioQueueError(`indirect table of descriptor ${index} has ${d.length / DESC_SIZE} entries, more than the ${VIRTQ_MAX_INDIRECT_ENTRIES} a 16-bit next can reach`);
        if (!this.mem.isRam(d.gpa, d.length)) throw new VirtioQueueError(`indirect table at ${hex(d.gpa)} with ${d.length} bytes is outside guest ram`);
        if (d.gpa % 8 !== 0) throw new VirtioQueueError(`indirect table at ${hex(d.gpa)} is not 8-byte aligned`);
        // The descriptor that points at the table is not itself a buffer of the
        // chain: Linux puts a whole queue-size request (virtio-blk: seg_max + 2)
        // in the table behind it.
        budget++;
        indirect = true;
        table = this.tableView(d.gpa, d.length);
        tableSize = d.length / DESC_SIZE;
        index = 0;
        continue;
      }
      if (d.length > 0 && !this.mem.isRam(d.gpa, d.length)) throw new VirtioQueueError(`descriptor ${index} buffer at ${hex(d.gpa)} with ${d.length} bytes is outside guest ram`);
      if (d.flags & VIRTQ_DESC_F_WRITE) {
        writableSeen = true;
        if (d.length > 0) chain.writable.push({ gpa: d.gpa, length: d.length });
        chain.writableBytes += d.length;
      } else {
        // The order rule holds for every descriptor, zero-length ones included.
        if (writableSeen) throw new VirtioQueueError(`descriptor ${index} is device-readable but follows a device-writable one`);
        if (d.length > 0) chain.readable.push({ gpa: d.gpa, length: d.length });
        chain.readableBytes += d.length;
      }
      if (chain.readableBytes + chain.writableBytes > 0xffff_ffff) throw new VirtioQueueError(`descriptor chain from head ${head} holds more than 4 GiB`);
      if (!(d.flags & VIRTQ_DESC_F_NEXT)) return chain;
      if (d.next >= tableSize) throw new VirtioQueueError(`descriptor ${index} points to next ${d.next}, outside its table of ${tableSize} entries`);
      index = d.next;
    }
  }

  /**
   * Return a chain to the driver with `written` bytes placed in its writable
   * segments. With `publish` false the element is written but the used index
   * is not moved: the driver sees it with the next publishUsed() (several
   * elements that must appear together, as one packet's buffers).
   */
  pushUsed(head: number, written: number, publish = true): void {
    const slot = this.usedIdx % this.size;
    const at = this.layout.usedGpa + 4 + 8 * slot;
    this.mem.writeU32(at, head);
    this.mem.writeU32(at + 4, written);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    if (publish) this.publishUsed();
  }

  /** Make every element pushed so far visible to the driver (write the used index). */
  publishUsed(): void {
    // The elements must be visible before the index: x86 keeps stores in order, and
    // the typed-array stores before this one are not reordered past it by V8.
    this.mem.writeU16(this.layout.usedGpa + 2, this.usedIdx);
  }

  /**
   * Whether the driver wants an interrupt for what was pushed since the last
   * call that answered true (§2.7.10: used_event, or the NO_INTERRUPT flag).
   */
  shouldInterrupt(): boolean {
    const now = this.usedIdx;
    const old = this.signalledUsed;
    if (now === old) return false;
    let want: boolean;
    if (this.features.eventIdx) {
      const usedEvent = this.mem.readU16(this.layout.availGpa + 4 + 2 * this.size);
      // vring_need_event: did the used index cross used_event + 1 since `old`?
      want = ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    } else {
      want = (this.mem.readU16(this.layout.availGpa) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    this.signalledUsed = now;
    return want;
  }

  /**
   * Ask the driver to kick (true) or not (false) for new buffers. With event
   * index the device publishes avail_event = the next slot it will read;
   * otherwise it sets or clears used.flags NO_NOTIFY. After enabling, callers
   * must check pending() again: the driver may have added buffers meanwhile.
   */
  setKicks(enabled: boolean): void {
    if (this.features.eventIdx) {
      if (enabled) this.mem.writeU16(this.layout.usedGpa + 4 + 8 * this.size, this.lastAvail);
      return;
    }
    this.mem.writeU16(this.layout.usedGpa, enabled ? 0 : VIRTQ_USED_F_NO_NOTIFY);
  }

  // --- buffer access -------------------------------------------------------

  /** Copy all device-readable bytes of a chain out of guest memory (at most `limit`). */
  readAll(chain: VirtqChain, limit = chain.readableBytes): Uint8Array {
    return gather(this.mem, chain.readable, 0, Math.min(limit, chain.readableBytes));
  }

  /** Copy `length` readable bytes starting `offset` bytes into the chain's readable part. */
  readAt(chain: VirtqChain, offset: number, length: number): Uint8Array {
    if (offset + length > chain.readableBytes) throw new VirtioQueueError(`device read of ${length} bytes at ${offset} passes the ${chain.readableBytes} readable bytes of chain ${chain.head}`);
    return gather(this.mem, chain.readable, offset, length);
  }

  /** Copy data into the chain's writable part starting `offset` bytes in; returns bytes written. */
  writeAt(chain: VirtqChain, offset: number, data: Uint8Array): number {
    return scatter(this.mem, chain.writable, offset, data);
  }
}

/** Copy `length` bytes from `offset` into a list of segments. */
export function gather(mem: GuestMemory, segs: readonly VirtqSegment[], offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let skip = offset;
  let done = 0;
  for (const s of segs) {
    if (done >= length) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const n = Math.min(s.length - skip, length - done);
    out.set(mem.read(s.gpa + skip, n), done);
    done += n;
    skip = 0;
  }
  return out;
}

/** Copy data into a list of segments from `offset`; returns bytes written (short when the segments end). */
export function scatter(mem: GuestMemory, segs: readonly VirtqSegment[], offset: number, data: Uint8Array): number {
  let skip = offset;
  let done = 0;
  for (const s of segs) {
    if (done >= data.length) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const n = Math.min(s.length - skip, data.length - done);
    mem.write(s.gpa + skip, data.subarray(done, done + n));
    done += n;
    skip = 0;
  }
  return done;
}
