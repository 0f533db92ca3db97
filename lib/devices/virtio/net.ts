/**
 * virtio-net (VIRTIO 1.2 §5.1), one queue pair: receiveq 0 carries packets
 * from a NetBackend (a TAP) into the guest, transmitq 1 guest packets out.
 * Every packet starts with the 12-byte virtio_net_hdr_v1. Packets move
 * between the backend and guest memory through views of the guest's buffers
 * (readv/writev straight into and out of guest RAM) where a buffer lies in
 * one mapping, through a bounce buffer otherwise. Reception is driven by the
 * backend's readiness and stops while the guest has no receive buffers (the
 * kernel queues or drops, and counts, on its side) until the guest kicks
 * receiveq. Offloads (checksum, TSO) are offered only when the backend
 * passes virtio-net headers through (a TAP with IFF_VNET_HDR), and with them
 * mergeable receive buffers (MRG_RXBUF, §5.1.6.3.2): a 64 KiB TSO frame then
 * spreads over the guest's page-sized buffers, as QEMU's virtio-net does,
 * instead of each buffer being an 18-page chain ready for the largest frame
 * (~18 MiB of guest RAM per ring; docs/benchmarks.md has what it saves).
 * Not here: multiqueue, the control queue, MTU, announce.
 */
import type { VirtioActivation, VirtioDevice } from './mmio';
import { readConfigBytes } from './mmio';
import { DeferredPass, gather, scatter, VirtioQueueError, type SplitQueue, type VirtqChain, type VirtqSegment } from './queue';
import type { GuestMemory } from '../../memory/guest-memory';
import { StateReader } from '../device-state';

export const VIRTIO_ID_NET = 1;
export const VIRTIO_NET_F_CSUM = 0n;
export const VIRTIO_NET_F_GUEST_CSUM = 1n;
export const VIRTIO_NET_F_GUEST_TSO4 = 7n;
export const VIRTIO_NET_F_GUEST_TSO6 = 8n;
export const VIRTIO_NET_F_HOST_TSO4 = 11n;
export const VIRTIO_NET_F_HOST_TSO6 = 12n;
export const VIRTIO_NET_F_MAC = 5n;
export const VIRTIO_NET_F_MRG_RXBUF = 15n;
export const VIRTIO_NET_F_STATUS = 16n;
export const VIRTIO_NET_S_LINK_UP = 1;
/** struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
export const VIRTIO_NET_HDR_BYTES = 12;
const NUM_BUFFERS_OFFSET = 10;
/** linux/if_tun.h TUN_F_*: what the TAP may hand us in its headers. */
export const TUN_F = { csum: 1, tso4: 2, tso6: 4 } as const;
/** The largest frame a TAP gives or takes with a header: 64 KiB of GSO payload plus headers. */
export const MAX_PACKET_BYTES = VIRTIO_NET_HDR_BYTES + 65_550;
/** Packets handled per readiness callback or kick before yielding to the event loop. */
const BATCH = 64;
const RX = 0;
const TX = 1;

const OFFLOAD_FEATURES =
  (1n << VIRTIO_NET_F_CSUM) |
  (1n << VIRTIO_NET_F_GUEST_CSUM) |
  (1n << VIRTIO_NET_F_GUEST_TSO4) |
  (1n << VIRTIO_NET_F_GUEST_TSO6) |
  (1n << VIRTIO_NET_F_HOST_TSO4) |
  (1n << VIRTIO_NET_F_HOST_TSO6) |
  (1n << VIRTIO_NET_F_MRG_RXBUF);

/** Where packets go and come from: a TAP fd in production, an in-memory pair in tests. */
export interface NetBackend {
  /** True when packets carry a 12-byte virtio_net_hdr_v1 in both directions (IFF_VNET_HDR). */
  readonly vnetHdr: boolean;
  /** Read one packet into `buffers` in order; its length, or -1 when none is waiting. */
  readv(buffers: Uint8Array[]): number;
  /** Write one packet made of `buffers`; bytes taken, or -1 when the backend would block. */
  writev(buffers: Uint8Array[]): number;
  /** Call `onReadable` (on the event loop) whenever a packet may be waiting. */
  watch(onReadable: () => void): void;
  /** Stop calling onReadable until resumeReads(): nothing can be taken now. */
  pauseReads(): void;
  resumeReads(): void;
  /** Which TUN_F_* offloads the guest can take (called at activation). */
  setOffloads(flags: number): void;
  close(): void;
}

export interface VirtioNetOptions {
  backend: NetBackend;
  /** Six bytes. */
  mac: Uint8Array;
  queueSize?: number;
  /** Offer checksum and TSO offloads, and mergeable receive buffers, when the backend passes headers (default true). */
  offloads?: boolean;
}

export interface VirtioNetStats {
  rxPackets: number;
  rxBytes: number;
  /** Packets longer than the guest buffer that took them (the guest gets a 0-byte buffer back and counts a length error). */
  rxTooBig: number;
  /** Packets spread over more than one mergeable receive buffer (MRG_RXBUF). */
  rxMerged: number;
  txPackets: number;
  txBytes: number;
  /** Guest packets the backend refused (would block, or rejected with an error). */
  txDropped: number;
  /** Guest packets with more than MAX_PACKET_BYTES, dropped. */
  txTooBig: number;
  /** The last backend error, for diagnostics. */
  lastBackendError: string | undefined;
}

/** Where a device's segments of one chain are: guest views, or bounce buffers copied afterwards. */
interface IoPlan {
  buffers: Uint8Array[];
  /** Bounce buffers standing in for guest ranges (spanning two mappings, or too many segments): copy after reading. */
  bounces: Array<{ segs: VirtqSegment[]; buffer: Uint8Array }>;
}

/** Below the kernel's IOV_MAX (1024), with room for the overflow tail. */
const MAX_IOVECS = 1000;

/**
 * A received packet longer than the mergeable buffers the guest had posted
 * (§5.1.6.4.2): `chains` hold what was read straight into them, the rest is
 * in the overflow buffer from `tailAt` for `tail` bytes and goes into the
 * buffers the guest posts next. Nothing of it is in the used ring until all
 * of it is placed, and no other packet is read meanwhile (the overflow
 * buffer holds its tail).
 */
interface PartialPacket {
  /** The first buffer (its header gets num_buffers), and every buffer filled so far with its bytes. */
  first: VirtqChain;
  chains: Array<{ head: number; written: number }>;
  tailAt: number;
  tail: number;
  /** Frame bytes (without the header), for the counters. */
  frameBytes: number;
}

export class VirtioNet implements VirtioDevice {
  readonly name = 'net';
  readonly deviceId = VIRTIO_ID_NET;
  readonly features: bigint;
  readonly queueMaxSizes: readonly number[];
  readonly stats: VirtioNetStats = { rxPackets: 0, rxBytes: 0, rxTooBig: 0, rxMerged: 0, txPackets: 0, txBytes: 0, txDropped: 0, txTooBig: 0, lastBackendError: undefined };
  private readonly backend: NetBackend;
  private readonly config = new Uint8Array(10);
  private ctx: VirtioActivation | undefined;
  /** A receive buffer taken from the ring while no packet was waiting: used by the next packet. */
  private heldRx: VirtqChain | undefined;
  /**
   * Mergeable buffers taken from the ring, not yet used (oldest first):
   * enough for the largest packet when the guest has posted that many, so
   * a packet is read straight into them; what it leaves stays for the next.
   */
  private held: VirtqChain[] = [];
  /** Writable bytes of `held`. */
  private heldBytes = 0;
  /** A packet spanning several mergeable buffers whose tail waits for the guest to post more. */
  private partial: PartialPacket | undefined;
  /** VIRTIO_NET_F_MRG_RXBUF was negotiated. */
  private mergeable = false;
  private readsPaused = false;
  /** The tail of every receive readv: catches a packet longer than the guest's buffer, so it is counted and dropped whole. */
  private readonly overflow = new Uint8Array(MAX_PACKET_BYTES);
  private readonly zeroHeader = new Uint8Array(VIRTIO_NET_HDR_BYTES);
  private closed = false;
  private readonly txPass = new DeferredPass(() => {
    const ctx = this.ctx;
    if (!ctx) return;
    try {
      this.drainTx();
    } catch (e) {
      ctx.fail(e);
    }
  });

  constructor(opts: VirtioNetOptions) {
    if (opts.mac.length !== 6) throw new RangeError(`virtio-net: a MAC address has 6 bytes, got ${opts.mac.length}`);
    this.backend = opts.backend;
    const size = opts.queueSize ?? 256;
    this.queueMaxSizes = [size, size];
    let features = (1n << VIRTIO_NET_F_MAC) | (1n << VIRTIO_NET_F_STATUS);
    if (opts.backend.vnetHdr && opts.offloads !== false) features |= OFFLOAD_FEATURES;
    this.features = features;
    this.config.set(opts.mac, 0);
    new DataView(this.config.buffer).setUint16(6, VIRTIO_NET_S_LINK_UP, true);
    // max_virtqueue_pairs: only meaningful with VIRTIO_NET_F_MQ, which we do not offer.
    new DataView(this.config.buffer).setUint16(8, 1, true);
    this.backend.watch(() => this.onReadable());
    this.pauseReads();
  }

  readConfig(offset: number, size: number): number {
    return readConfigBytes(this.config, offset, size);
  }

  activate(ctx: VirtioActivation): void {
    this.ctx = ctx;
    this.dropHeld();
    const f = ctx.features;
    const has = (bit: bigint) => (f & (1n << bit)) !== 0n;
    this.mergeable = has(VIRTIO_NET_F_MRG_RXBUF);
    if (this.backend.vnetHdr) {
      // The TAP may hand us partial checksums and GSO frames only when the guest takes them.
      let flags = 0;
      if (has(VIRTIO_NET_F_GUEST_CSUM)) {
        flags |= TUN_F.csum;
        if (has(VIRTIO_NET_F_GUEST_TSO4)) flags |= TUN_F.tso4;
        if (has(VIRTIO_NET_F_GUEST_TSO6)) flags |= TUN_F.tso6;
      }
      this.backend.setOffloads(flags);
    }
    this.notify(TX);
    this.resumeReads();
    this.onReadable();
  }

  reset(): void {
    this.ctx = undefined;
    this.dropHeld();
    this.pauseReads();
  }

  private dropHeld(): void {
    this.heldRx = undefined;
    this.held = [];
    this.heldBytes = 0;
    this.partial = undefined;
  }

  /** Stop for good: the VM is going away. The backend is closed by its owner. */
  close(): void {
    this.reset();
    this.closed = true;
  }

  notify(index: number): void {
    if (index === TX) this.drainTx();
    else if (index === RX) {
      // The guest added receive buffers: take packets again.
      this.resumeReads();
      this.onReadable();
    }
  }

  /**
   * The MAC the guest was told, for a snapshot. A receive buffer held
   * while no packet was waiting goes back to the ring (nothing was written
   * into it), so the saved last_avail_idx is before it; so do the buffers
   * of a packet still waiting for more of them (the packet is lost, as on a
   * wire). Packets in the backend stay there: the backend is the host's,
   * not the snapshot's.
   */
  saveState(_active: boolean): Record<string, unknown> {
    const q = this.ctx?.queues[RX];
    // The buffers not in the used ring are the last ones taken, in order: rewinding gives back exactly them.
    const taken = (this.heldRx ? 1 : 0) + this.held.length + (this.partial?.chains.length ?? 0);
    if (q && taken) q.unpop(taken);
    this.dropHeld();
    return { mac: formatMac(this.config.subarray(0, 6)) };
  }

  /** The NIC must have the MAC the guest saw (its ARP peers and DHCP lease know it). */
  restoreState(state: unknown, path: string, _active: boolean): void {
    const r = new StateReader(path, state);
    const mac = r.string('mac', 17);
    r.done();
    const ours = formatMac(this.config.subarray(0, 6));
    if (mac.toLowerCase() !== ours) throw r.error('mac', `the guest saw ${JSON.stringify(mac)}, this NIC has ${ours}`);
  }

  private pauseReads(): void {
    if (this.readsPaused) return;
    this.readsPaused = true;
    this.backend.pauseReads();
  }

  private resumeReads(): void {
    if (!this.readsPaused || this.closed || !this.ctx?.queues[RX]) return;
    this.readsPaused = false;
    this.backend.resumeReads();
  }

  /** The backend may have packets: move as many as the guest has buffers for. */
  private onReadable(): void {
    const ctx = this.ctx;
    const q = ctx?.queues[RX];
    if (!ctx || !q) {
      this.pauseReads();
      return;
    }
    let delivered = 0;
    try {
      for (let i = 0; i < BATCH; i++) {
        const r = this.mergeable ? this.receiveMerged(ctx.memory, q) : this.receiveOne(ctx.memory, q);
        if (r === 'no-buffers') {
          // Wait for the guest's kick rather than spin on a readable fd.
          this.pauseReads();
          break;
        }
        if (r === 'no-packet') break;
        delivered++;
      }
    } catch (e) {
      if (delivered) ctx.usedBuffers(RX);
      ctx.fail(e);
      return;
    }
    if (delivered) ctx.usedBuffers(RX);
  }

  /** One packet into one receive buffer (no MRG_RXBUF). */
  private receiveOne(mem: GuestMemory, q: SplitQueue): 'done' | 'no-packet' | 'no-buffers' {
    const chain = this.heldRx ?? this.popRx(q);
    if (!chain) return 'no-buffers';
    this.heldRx = undefined;
    const n = this.receiveInto(mem, chain);
    if (n < 0) {
      this.heldRx = chain;
      return 'no-packet';
    }
    q.pushUsed(chain.head, n);
    return 'done';
  }

  /**
   * One packet into as many mergeable buffers as it needs (§5.1.6.4.2).
   * The device first holds buffers for the largest packet (as many as the
   * guest has posted) and reads the packet straight into them; the ones it
   * did not need stay held for the next packet. A packet longer than what
   * the guest had posted continues in placeRest.
   */
  private receiveMerged(mem: GuestMemory, q: SplitQueue): 'done' | 'no-packet' | 'no-buffers' {
    if (this.partial) {
      if (!this.placeRest(mem, q, this.partial)) return 'no-buffers';
      this.partial = undefined;
      return 'done';
    }
    const hdr = this.backend.vnetHdr;
    const skip = hdr ? 0 : VIRTIO_NET_HDR_BYTES;
    // Bounded by the queue size (each chain is one available entry) and by the largest packet.
    while (this.heldBytes - skip < MAX_PACKET_BYTES && this.held.length < q.size) {
      const chain = this.popRx(q);
      if (!chain) break;
      checkRxChain(chain);
      this.held.push(chain);
      this.heldBytes += chain.writableBytes;
    }
    const first = this.held[0];
    if (!first) return 'no-buffers';
    let segs = first.writable;
    if (this.held.length > 1) {
      segs = [];
      for (const c of this.held) for (const seg of c.writable) segs.push(seg);
    }
    const plan = planSegments(mem, segs, skip, true, MAX_PACKET_BYTES);
    plan.buffers.push(this.overflow);
    const n = this.readPacket(plan.buffers);
    if (n < 0) return 'no-packet';
    if (n + skip > MAX_PACKET_BYTES) {
      // Longer than any frame: the first buffer goes back empty (the driver counts a length error).
      this.held.shift();
      this.heldBytes -= first.writableBytes;
      q.pushUsed(first.head, 0);
      this.stats.rxTooBig++;
      return 'done';
    }
    // A packet longer than this has all the held buffers, and its tail is in the overflow buffer.
    const room = Math.min(this.heldBytes - skip, MAX_PACKET_BYTES);
    copyBounces(mem, plan, Math.min(n, room));
    if (!hdr) scatter(mem, first.writable, 0, this.zeroHeader);
    // The buffers the packet's bytes (with the header) landed in, in order.
    const chains: Array<{ head: number; written: number }> = [];
    let left = Math.min(n, room) + skip;
    while (left > 0) {
      const c = this.held[chains.length]!;
      const written = Math.min(c.writableBytes, left);
      chains.push({ head: c.head, written });
      left -= written;
    }
    for (let i = 0; i < chains.length; i++) this.heldBytes -= this.held[i]!.writableBytes;
    this.held.splice(0, chains.length);
    const p: PartialPacket = { first, chains, tailAt: 0, tail: Math.max(0, n - room), frameBytes: hdr ? n - VIRTIO_NET_HDR_BYTES : n };
    if (this.placeRest(mem, q, p)) return 'done';
    this.partial = p;
    return 'no-buffers';
  }

  /** One packet from the backend into `buffers`: its length, or -1 when none waited or the read failed. */
  private readPacket(buffers: Uint8Array[]): number {
    try {
      return this.backend.readv(buffers);
    } catch (e) {
      // A failing read would fail again on every readiness callback: stop until the guest kicks receiveq.
      this.stats.lastBackendError = (e as Error).message;
      this.pauseReads();
      return -1;
    }
  }

  /** Next receive buffer, asking for a kick when there is none (and looking once more after asking). */
  private popRx(q: SplitQueue): VirtqChain | undefined {
    const chain = q.pop();
    if (chain) return chain;
    q.setKicks(true);
    return q.pop();
  }

  /** Read one packet into a receive chain; bytes written into it, or -1 when no packet was waiting. */
  private receiveInto(mem: GuestMemory, chain: VirtqChain): number {
    checkRxChain(chain);
    const hdr = this.backend.vnetHdr;
    // Without backend headers the packet lands after a header we write ourselves.
    // No packet is longer than MAX_PACKET_BYTES: room beyond it is never
    // filled, so the plan (and any bounce buffer) covers no more, however
    // many bytes the chain's descriptors claim. The overflow tail still
    // catches a longer packet, which is then dropped and counted.
    const plan = planSegments(mem, chain.writable, hdr ? 0 : VIRTIO_NET_HDR_BYTES, true, MAX_PACKET_BYTES);
    plan.buffers.push(this.overflow);
    const n = this.readPacket(plan.buffers);
    if (n < 0) return -1;
    const room = Math.min(chain.writableBytes - (hdr ? 0 : VIRTIO_NET_HDR_BYTES), MAX_PACKET_BYTES);
    copyBounces(mem, plan, Math.min(n, room));
    if (n > room) {
      // Longer than the guest's buffer: hand it back empty, which the driver counts as a length error.
      this.stats.rxTooBig++;
      return 0;
    }
    const total = hdr ? n : n + VIRTIO_NET_HDR_BYTES;
    if (!hdr) scatter(mem, chain.writable, 0, this.zeroHeader);
    // num_buffers is 1 without MRG_RXBUF (§5.1.6.4); a TAP leaves those two bytes untouched.
    writeNumBuffers(mem, chain, 1);
    this.stats.rxPackets++;
    this.stats.rxBytes += total - VIRTIO_NET_HDR_BYTES;
    return total;
  }

  /**
   * Place what is left of a packet (its tail in the overflow buffer) into
   * the guest's next receive buffers; true once all of it is in and its
   * buffers are in the used ring (all at once: the driver reads num_buffers
   * from the first and expects the others there, §5.1.6.4.2), false when
   * the ring ran out first (placeRest goes on after the guest's kick). A
   * guest whose whole ring cannot hold the packet gets every buffer back
   * empty and the packet is counted as too big: the walk is bounded by the
   * queue size.
   */
  private placeRest(mem: GuestMemory, q: SplitQueue, p: PartialPacket): boolean {
    while (p.tail > 0) {
      if (p.chains.length >= q.size) {
        for (const c of p.chains) q.pushUsed(c.head, 0, false);
        q.publishUsed();
        this.stats.rxTooBig++;
        return true;
      }
      const chain = this.popRx(q);
      if (!chain) return false;
      checkRxChain(chain);
      const take = Math.min(chain.writableBytes, p.tail);
      scatter(mem, chain.writable, 0, this.overflow.subarray(p.tailAt, p.tailAt + take));
      p.chains.push({ head: chain.head, written: take });
      p.tailAt += take;
      p.tail -= take;
    }
    // §5.1.6.4: num_buffers counts every buffer the packet used.
    const buffers = p.chains.length;
    writeNumBuffers(mem, p.first, buffers);
    for (const c of p.chains) q.pushUsed(c.head, c.written, false);
    q.publishUsed();
    this.stats.rxPackets++;
    if (buffers > 1) this.stats.rxMerged++;
    this.stats.rxBytes += p.frameBytes;
    return true;
  }

  private drainTx(): void {
    const ctx = this.ctx;
    const q = ctx?.queues[TX];
    if (!ctx || !q) return;
    // Take everything (the next kick may only come after more is queued),
    // a queue's worth per pass, the rest on a later turn (see DeferredPass).
    let taken = 0;
    for (; taken < q.size; taken++) {
      const chain = q.pop();
      if (!chain) break;
      if (chain.readableBytes < VIRTIO_NET_HDR_BYTES) throw new VirtioQueueError(`transmit buffer ${chain.head} has ${chain.readableBytes} readable bytes, less than the ${VIRTIO_NET_HDR_BYTES}-byte virtio-net header`);
      this.transmit(ctx.memory, chain);
      q.pushUsed(chain.head, 0);
    }
    if (taken) ctx.usedBuffers(TX);
    if (taken === q.size && q.pending()) this.txPass.schedule();
  }

  private transmit(mem: GuestMemory, chain: VirtqChain): void {
    if (chain.readableBytes > MAX_PACKET_BYTES) {
      this.stats.txTooBig++;
      return;
    }
    const hdr = this.backend.vnetHdr;
    const plan = planSegments(mem, chain.readable, hdr ? 0 : VIRTIO_NET_HDR_BYTES, false, MAX_PACKET_BYTES);
    const bytes = chain.readableBytes - VIRTIO_NET_HDR_BYTES;
    if (plan.buffers.length === 0) {
      // A header with no frame: nothing to send.
      this.stats.txDropped++;
      return;
    }
    try {
      if (this.backend.writev(plan.buffers) < 0) this.stats.txDropped++;
      else {
        this.stats.txPackets++;
        this.stats.txBytes += bytes;
      }
    } catch (e) {
      // The host side refused it (interface down, a header the TAP rejects): the guest's packet is lost, as on a wire.
      this.stats.txDropped++;
      this.stats.lastBackendError = (e as Error).message;
    }
  }
}

/** The header's num_buffers field (little-endian), in place when the first segment holds the whole header. */
function writeNumBuffers(mem: GuestMemory, chain: VirtqChain, buffers: number): void {
  const seg = chain.writable[0]!;
  if (seg.length >= VIRTIO_NET_HDR_BYTES) mem.writeU16(seg.gpa + NUM_BUFFERS_OFFSET, buffers);
  else scatter(mem, chain.writable, NUM_BUFFERS_OFFSET, Uint8Array.of(buffers & 0xff, buffers >> 8));
}

/** §5.1.6.3.1: every receive buffer has room for at least the header (the first one holds it). */
function checkRxChain(chain: VirtqChain): void {
  if (chain.writableBytes < VIRTIO_NET_HDR_BYTES) throw new VirtioQueueError(`receive buffer ${chain.head} has ${chain.writableBytes} writable bytes, less than the ${VIRTIO_NET_HDR_BYTES}-byte virtio-net header`);
}

/**
 * Buffers covering `segs` from byte `skip` on, `limit` bytes at most: views
 * into guest memory, or bounce buffers for ranges that span two mappings or
 * for chains with more segments than one readv/writev takes (filled from
 * guest memory now when `forWrite` is false, copied to it after the read
 * when true). Bounce buffers together hold at most `limit` bytes.
 */
function planSegments(mem: GuestMemory, segs: readonly VirtqSegment[], skip: number, forWrite: boolean, limit: number): IoPlan {
  const parts: VirtqSegment[] = [];
  let left = limit;
  for (const s of segs) {
    if (left === 0) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const length = Math.min(s.length - skip, left);
    parts.push({ gpa: s.gpa + skip, length });
    left -= length;
    skip = 0;
  }
  const plan: IoPlan = { buffers: [], bounces: [] };
  const bounce = (group: VirtqSegment[], bytes: number) => {
    const buffer = forWrite ? new Uint8Array(bytes) : gather(mem, group, 0, bytes);
    plan.buffers.push(buffer);
    if (forWrite) plan.bounces.push({ segs: group, buffer });
  };
  if (parts.length > MAX_IOVECS) {
    bounce(parts, parts.reduce((n, p) => n + p.length, 0));
    return plan;
  }
  for (const p of parts) {
    const view = mem.view(p.gpa, p.length);
    if (view) plan.buffers.push(view);
    else bounce([p], p.length);
  }
  return plan;
}

/** Copy the first `length` bytes the read put into bounce buffers to their guest ranges. */
function copyBounces(mem: GuestMemory, plan: IoPlan, length: number): void {
  if (plan.bounces.length === 0) return;
  let at = 0;
  for (const b of plan.buffers) {
    if (at >= length) return;
    const bounce = plan.bounces.find((x) => x.buffer === b);
    if (bounce) scatter(mem, bounce.segs, 0, b.subarray(0, Math.min(b.length, length - at)));
    at += b.length;
  }
}

/** "52:54:00:12:34:56" to bytes; undefined when it is not six hex pairs. */
export function parseMac(text: string): Uint8Array | undefined {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text)) return undefined;
  return Uint8Array.from(text.split(':').map((h) => parseInt(h, 16)));
}

export function formatMac(mac: Uint8Array): string {
  return [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
}
