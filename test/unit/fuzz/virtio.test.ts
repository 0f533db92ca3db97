/**
 * The userspace virtio devices (rng, console, net, blk, vsock's userspace
 * part) driven through the real virtio-mmio transport by a hostile driver:
 * random register writes and reads, random bring-ups, and random rings and
 * descriptor chains in guest memory (loops, aliasing, huge lengths,
 * addresses outside RAM or across two mappings, indirect tables of any
 * claimed size), resets in the middle of requests, and host-side input.
 *
 * Invariants checked for every case, each failure naming the seed that
 * replays it (`NODEVMM_FUZZ_SEED=<seed>` runs that case alone):
 * - no exception escapes any call into the transport or device;
 * - no call holds the event loop over CALL_LIMIT_MS (each call timed; a
 *   slow case is replayed twice and fails only when slow every time, so a
 *   GC pause or a loaded machine alone does not fail it);
 * - no call grows ArrayBuffer memory by more than ALLOC_LIMIT, and what
 *   the devices hand their backends stays within the documented caps;
 * - after a driver reset and a clean bring-up, a well-formed request works.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { REG, STATUS, VIRTIO_MMIO_CONFIG, type VirtioDevice } from '../../../lib/devices/virtio/mmio';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../../lib/devices/virtio/queue';
import { VirtioRng } from '../../../lib/devices/virtio/rng';
import { MAX_TX_CHAIN_BYTES, VirtioConsole } from '../../../lib/devices/virtio/console';
import { MAX_PACKET_BYTES, VIRTIO_NET_HDR_BYTES, VirtioNet, type NetBackend } from '../../../lib/devices/virtio/net';
import { BLK_S, BLK_T, VirtioBlk } from '../../../lib/devices/virtio/blk';
import { bounceFileBackend } from '../../../lib/devices/virtio/blk-backends';
import { VirtioVsock, VIRTIO_VSOCK_F_SEQPACKET, type VhostVsockOps } from '../../../lib/devices/virtio/vsock';
import type { NotifyOps } from '../../../lib/hv/partition';
import { FakeDriver, type FakeQueue } from '../virtio/driver';
import { tempImage } from '../../temp-image';
import { CALL_LIMIT_MS, caseSeed, prng, type Rng } from './prng';

const KiB = 1024;
const MiB = 1024 * KiB;
/** Growth of ArrayBuffer memory one call may cause (the largest legitimate buffer is a 64 KiB frame). */
const ALLOC_LIMIT = 8 * MiB;
/** Low RAM: two 512 KiB buffers, so a range across 0x80000 spans two mappings (the bounce paths). */
const RAM_LOW = 1 * MiB;
/** High RAM after a 1 MiB hole. */
const RAM_HIGH = { gpa: 2 * MiB, size: 256 * KiB };
const SLOT = { base: 0xd000_0000, gsi: 5 };
const FEATURE_INDIRECT = 28n;
const FEATURE_EVENT_IDX = 29n;
const FEATURE_VERSION_1 = 32n;
const ONLY_SEED = process.env.NODEVMM_FUZZ_SEED ? Number(process.env.NODEVMM_FUZZ_SEED) : undefined;

function fuzzMemory(): GuestMemory {
  const m = new GuestMemory();
  const half = RAM_LOW / 2;
  m.addRegion({ gpa: 0, size: RAM_LOW, name: 'low', views: [{ gpa: 0, buffer: new ArrayBuffer(half) }, { gpa: half, buffer: new ArrayBuffer(half) }] });
  m.addRegion({ gpa: RAM_HIGH.gpa, size: RAM_HIGH.size, name: 'high', views: [{ gpa: RAM_HIGH.gpa, buffer: new ArrayBuffer(RAM_HIGH.size) }] });
  return m;
}

/** A broken invariant: ends the case and names it. */
class Violation extends Error {}

/** Times and guards every call a case makes into the transport or a device. */
class Calls {
  slowest = 0;
  slowestWhat = '';
  call<T>(what: string, fn: () => T): T {
    const ab = process.memoryUsage().arrayBuffers;
    const t0 = performance.now();
    let r: T;
    try {
      r = fn();
    } catch (e) {
      throw new Violation(`${what} threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
    }
    const ms = performance.now() - t0;
    if (ms > this.slowest) {
      this.slowest = ms;
      this.slowestWhat = what;
    }
    const grown = process.memoryUsage().arrayBuffers - ab;
    if (grown > ALLOC_LIMIT) throw new Violation(`${what} grew ArrayBuffer memory by ${(grown / MiB).toFixed(1)} MiB`);
    return r;
  }
}

/** One device under fuzz, with its host side and what a working device does. */
interface Subject {
  device: VirtioDevice;
  /** Sizes and features of a clean bring-up. */
  clean: { sizes: number[]; features: bigint };
  /** Host-side input: console keys, a packet arriving. */
  hostEvent?(rnd: Rng, calls: Calls): void;
  /** Make the first readable buffer of a chain look like a request, to get past header checks. */
  dress?(d: FakeDriver, gpa: number, rnd: Rng): void;
  /** What went over a cap since the last look; undefined when nothing did. */
  overCap(): string | undefined;
  /** Let asynchronous work finish (blk requests). */
  settle?(): Promise<void>;
  /** After reset and a clean bring-up: one well-formed request. A complaint, or undefined when it worked. */
  wellFormed(d: FakeDriver, calls: Calls): Promise<string | undefined>;
  /** Cleanup between cases. */
  dispose?(): void;
}

interface Kind {
  name: string;
  cases: number;
  seed: number;
  make(mem: GuestMemory, rnd: Rng): Subject;
}

// --- random guest values -----------------------------------------------------

function randomAddress(rnd: Rng): number | bigint {
  switch (rnd.int(10)) {
    case 0:
      return 0;
    case 1:
      return RAM_LOW / 2 - rnd.int(64); // across the two mappings
    case 2:
      return RAM_HIGH.gpa + rnd.int(RAM_HIGH.size);
    case 3:
      return RAM_LOW - rnd.int(32); // runs into the hole
    case 4:
      return rnd.pick([RAM_LOW + rnd.int(MiB), 2 ** 40, 2 ** 52 - 4096]);
    case 5:
      return rnd.pick([0xffff_ffff_ffff_f000n, 0x20_0000_0000_0000n, BigInt(rnd.int(2 ** 32)) << 32n]);
    case 6:
      return 0x4_0000; // the hot spot every aliasing chain reuses
    default:
      return rnd.int(RAM_LOW);
  }
}

function randomLength(rnd: Rng): number {
  switch (rnd.int(12)) {
    case 0:
      return 0;
    case 1:
      return rnd.pick([1, 12, 16, 17, 44, 512, 513]);
    case 2:
      return rnd.pick([MAX_PACKET_BYTES, MAX_PACKET_BYTES + 1, 64 * KiB, 64 * KiB + 1]);
    case 3:
      return rnd.pick([RAM_LOW / 2, RAM_LOW - 0x4_0000, RAM_LOW]);
    case 4:
      return rnd.pick([0xffff_ffff, 0x8000_0000, 16 * MiB]);
    case 5:
      return rnd.int(2 ** 32);
    default:
      return 1 + rnd.int(4 * KiB);
  }
}

function writeDesc(mem: GuestMemory, at: number, gpa: number | bigint, len: number, flags: number, next: number): boolean {
  if (!mem.isRam(at, 16)) return false;
  mem.writeU64(at, BigInt(gpa));
  mem.writeU32(at + 8, len >>> 0);
  mem.writeU16(at + 12, flags & 0xffff);
  mem.writeU16(at + 14, next & 0xffff);
  return true;
}

/** A chain of random descriptors (readable ones first, mostly) from a random head, maybe ending in an indirect table. */
function randomChain(d: FakeDriver, s: Subject, q: FakeQueue, rnd: Rng): number {
  const n = rnd.chance(0.1) ? 1 + rnd.int(q.size + 2) : 1 + rnd.int(Math.min(q.size, 6));
  const head = rnd.int(q.size);
  const split = rnd.int(n + 1);
  let firstReadable: number | bigint | undefined;
  for (let k = 0; k < n; k++) {
    const slot = (head + k) % q.size;
    const last = k === n - 1;
    let next = (slot + 1) % q.size;
    if (rnd.chance(0.1)) next = rnd.chance(0.5) ? rnd.int(q.size) : rnd.int(0x10000);
    let flags = (k >= split ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
    if (rnd.chance(0.08)) flags = rnd.int(0x10000);
    let gpa = randomAddress(rnd);
    let len = randomLength(rnd);
    if (last && rnd.chance(0.2)) {
      // An indirect table in low RAM (or anywhere), with random entries and a claimed length that may lie.
      const entries = 1 + rnd.int(rnd.chance(0.1) ? 300 : 8);
      const table = rnd.chance(0.85) ? 0xc_0000 + 16 * rnd.int(64) : Number(randomAddress(rnd)) & ~7;
      const isplit = rnd.int(entries + 1);
      for (let e = 0; e < entries; e++) {
        let f = (e >= isplit ? VIRTQ_DESC_F_WRITE : 0) | (e < entries - 1 ? VIRTQ_DESC_F_NEXT : 0);
        if (rnd.chance(0.05)) f = rnd.int(0x10000);
        writeDesc(d.mem, table + 16 * e, randomAddress(rnd), randomLength(rnd), f, rnd.chance(0.9) ? e + 1 : rnd.int(0x10000));
      }
      gpa = table;
      len = rnd.pick([16 * entries, 16 * entries, 16 * entries + 8, 0, 16 * 65_537, 0xffff_fff0]);
      flags = VIRTQ_DESC_F_INDIRECT | (rnd.chance(0.1) ? VIRTQ_DESC_F_NEXT : 0) | (rnd.chance(0.2) ? VIRTQ_DESC_F_WRITE : 0);
    }
    if (k < split && firstReadable === undefined) firstReadable = gpa;
    if (!writeDesc(d.mem, q.desc + 16 * slot, gpa, len, flags, next)) break;
  }
  if (s.dress && typeof firstReadable === 'number' && d.mem.isRam(firstReadable, 16) && rnd.chance(0.7)) s.dress(d, firstReadable, rnd);
  return head;
}

/** Make `head` available the way a driver does, if the ring is in RAM. */
function offer(d: FakeDriver, q: FakeQueue, head: number): void {
  const slot = q.avail + 4 + 2 * (q.availIdx % q.size);
  if (!d.mem.isRam(slot, 2) || !d.mem.isRam(q.avail, 4)) return;
  d.mem.writeU16(slot, head);
  q.availIdx = (q.availIdx + 1) & 0xffff;
  d.mem.writeU16(q.avail + 2, q.availIdx);
}

/** A bring-up with whatever a hostile driver may write: any size, any ring address, any features. */
function randomBringUp(d: FakeDriver, s: Subject, rnd: Rng, calls: Calls): void {
  const w = (reg: number, v: number) => calls.call(`write ${reg.toString(16)}=${v >>> 0}`, () => d.w(reg, v));
  w(REG.status, 0);
  w(REG.status, STATUS.acknowledge | STATUS.driver);
  const offered = (s.device.features | (1n << FEATURE_INDIRECT) | (1n << FEATURE_EVENT_IDX) | (1n << FEATURE_VERSION_1)) & ~(rnd.chance(0.1) ? 1n << FEATURE_VERSION_1 : 0n);
  const f = rnd.chance(0.1) ? BigInt(rnd.int(2 ** 32)) << 32n | BigInt(rnd.int(2 ** 32)) : offered & (BigInt(rnd.int(2 ** 32)) | (BigInt(rnd.int(2 ** 32)) << 32n) | (1n << FEATURE_VERSION_1));
  w(REG.driverFeaturesSel, 0);
  w(REG.driverFeatures, Number(f & 0xffff_ffffn));
  w(REG.driverFeaturesSel, 1);
  w(REG.driverFeatures, Number((f >> 32n) & 0xffff_ffffn));
  w(REG.status, STATUS.acknowledge | STATUS.driver | STATUS.featuresOk);
  d.queues.length = 0;
  const count = s.device.queueMaxSizes.length;
  for (let index = 0; index < count + (rnd.chance(0.1) ? 1 : 0); index++) {
    const max = s.device.queueMaxSizes[index] ?? 8;
    const size = rnd.chance(0.9) ? 2 ** rnd.int(Math.log2(max) + 1) : rnd.pick([0, 3, max * 2, 65_536, rnd.int(2 ** 32)]);
    const sane = size >= 1 && size <= 2048;
    const base = 0x1_0000 + 0x1_0000 * index;
    const desc = rnd.chance(0.9) ? base : Number(randomAddress(rnd)) >>> 0;
    const avail = rnd.chance(0.9) ? base + (sane ? 16 * size : 0x8000) : Number(randomAddress(rnd)) >>> 0;
    const used = rnd.chance(0.9) ? base + 0xc000 : (Number(randomAddress(rnd)) >>> 0) + rnd.int(4);
    const q: FakeQueue = { index, size: sane ? size : 1, desc, avail, used, nextDesc: 0, availIdx: 0, usedSeen: 0 };
    w(REG.queueSel, index);
    w(REG.queueNum, size);
    w(REG.queueDescLow, desc);
    w(REG.queueDescHigh, rnd.chance(0.05) ? rnd.int(2 ** 32) : 0);
    w(REG.queueDriverLow, avail);
    w(REG.queueDriverHigh, 0);
    w(REG.queueDeviceLow, used);
    w(REG.queueDeviceHigh, 0);
    if (rnd.chance(0.95)) w(REG.queueReady, 1);
    d.queues.push(q);
  }
  w(REG.status, STATUS.acknowledge | STATUS.driver | STATUS.featuresOk | STATUS.driverOk);
}

/** The clean bring-up a working driver does (FakeDriver lays the rings out). */
function cleanBringUp(d: FakeDriver, s: Subject, calls: Calls, features = s.clean.features): void {
  d.queues.length = 0;
  calls.call('clean bring-up', () => d.up(s.clean.sizes, { features }));
}

function randomStep(d: FakeDriver, s: Subject, rnd: Rng, calls: Calls): void {
  const k = rnd();
  const queue = (): FakeQueue | undefined => (d.queues.length ? rnd.pick(d.queues) : undefined);
  if (k < 0.1) {
    const offset = rnd.chance(0.8) ? 4 * rnd.int(0x40) : VIRTIO_MMIO_CONFIG + rnd.int(0x40);
    const size = rnd.chance(0.8) ? 4 : rnd.pick([1, 2, 8]);
    const value = rnd.chance(0.5) ? rnd.int(2 ** 32) : rnd.int(8);
    calls.call(`write ${offset.toString(16)}/${size}=${value}`, () => d.t.write(offset, size, value));
  } else if (k < 0.16) {
    const offset = rnd.chance(0.7) ? 4 * rnd.int(0x40) : VIRTIO_MMIO_CONFIG + rnd.int(0x80);
    calls.call(`read ${offset.toString(16)}`, () => d.t.read(offset, rnd.pick([1, 2, 4, 4, 8])));
  } else if (k < 0.62) {
    const q = queue();
    if (!q) return;
    const chains = 1 + rnd.int(rnd.chance(0.1) ? q.size + 1 : 3);
    for (let c = 0; c < chains; c++) offer(d, q, randomChain(d, s, q, rnd));
    const index = rnd.chance(0.9) ? q.index : rnd.int(0x10000);
    calls.call(`kick ${index}`, () => d.w(REG.queueNotify, index));
  } else if (k < 0.7) {
    // Scribble on a ring: indices, flags, event fields.
    const q = queue();
    if (!q) return;
    const at = rnd.pick([q.avail, q.avail + 2, q.used, q.used + 2, q.avail + 4 + 2 * q.size, q.used + 4 + 8 * q.size, q.avail + 4 + 2 * rnd.int(q.size)]);
    if (d.mem.isRam(at, 2)) d.mem.writeU16(at, rnd.chance(0.5) ? rnd.int(0x10000) : (d.mem.readU16(at) + rnd.int(3)) & 0xffff);
    if (rnd.chance(0.5)) calls.call(`kick ${q.index} after scribble`, () => d.w(REG.queueNotify, q.index));
  } else if (k < 0.76) {
    // Reset, maybe in the middle of a request, then maybe start again.
    calls.call('reset', () => d.w(REG.status, 0));
    if (rnd.chance(0.6)) cleanBringUp(d, s, calls, s.clean.features | (rnd.chance(0.5) ? 1n << FEATURE_INDIRECT : 0n) | (rnd.chance(0.5) ? 1n << FEATURE_EVENT_IDX : 0n));
  } else if (k < 0.8) {
    randomBringUp(d, s, rnd, calls);
  } else if (k < 0.9) {
    s.hostEvent?.(rnd, calls);
  } else if (k < 0.95) {
    calls.call('interrupt ack', () => d.w(REG.interruptAck, rnd.int(4)));
    calls.call('interrupt status', () => d.r(REG.interruptStatus));
  } else {
    const value = rnd.pick([STATUS.needsReset, STATUS.failed, STATUS.driverOk, STATUS.featuresOk | STATUS.driverOk, rnd.int(256)]);
    calls.call(`status ${value}`, () => d.w(REG.status, value));
  }
}

interface CaseResult {
  failure?: string;
  slowest: number;
  slowestWhat: string;
}

async function runCase(kind: Kind, mem: GuestMemory, seed: number): Promise<CaseResult> {
  const rnd = prng(seed);
  mem.fill(0, RAM_LOW);
  mem.fill(RAM_HIGH.gpa, RAM_HIGH.size);
  const calls = new Calls();
  let s: Subject | undefined;
  try {
    s = kind.make(mem, rnd);
    const d = new FakeDriver(s.device, { slot: SLOT }, mem);
    if (rnd.chance(0.7)) cleanBringUp(d, s, calls, s.clean.features | (rnd.chance(0.5) ? 1n << FEATURE_INDIRECT : 0n) | (rnd.chance(0.5) ? 1n << FEATURE_EVENT_IDX : 0n));
    else randomBringUp(d, s, rnd, calls);
    const steps = 1 + rnd.int(24);
    for (let i = 0; i < steps; i++) {
      randomStep(d, s, rnd, calls);
      const over = s.overCap();
      if (over) throw new Violation(over);
      if (rnd.chance(0.05)) await s.settle?.();
    }
    await s.settle?.();
    const over = s.overCap();
    if (over) throw new Violation(over);
    // Whatever happened, a reset brings the device back.
    calls.call('recovery reset', () => d.w(REG.status, 0));
    await s.settle?.();
    cleanBringUp(d, s, calls);
    if (d.r(REG.status) & STATUS.needsReset) throw new Violation(`after reset and a clean bring-up the device is in needs-reset (${d.t.lastError})`);
    const complaint = await s.wellFormed(d, calls);
    if (complaint) throw new Violation(`after reset, a well-formed request failed: ${complaint} (${d.t.lastError ?? 'no queue error'})`);
    calls.call('final reset', () => d.w(REG.status, 0));
    await s.settle?.();
    return { slowest: calls.slowest, slowestWhat: calls.slowestWhat };
  } catch (e) {
    await s?.settle?.().catch(() => undefined);
    const what = e instanceof Violation ? e.message : `the harness threw ${(e as Error).stack}`;
    return { failure: what, slowest: calls.slowest, slowestWhat: calls.slowestWhat };
  } finally {
    s?.dispose?.();
  }
}

async function fuzz(t: import('ava').ExecutionContext, kind: Kind): Promise<void> {
  const mem = fuzzMemory();
  let slowest = 0;
  let slowestWhat = '';
  let replays = 0;
  const seeds = ONLY_SEED !== undefined ? [ONLY_SEED] : Array.from({ length: kind.cases }, (_, i) => caseSeed(kind.seed, i));
  for (const seed of seeds) {
    let r = await runCase(kind, mem, seed);
    // A GC pause or a busy machine (two cores shared by many) can stretch one
    // call; a real stall is work the case repeats. Replay up to twice, and
    // fail only a case that is slow every time.
    for (let attempt = 1; !r.failure && r.slowest > CALL_LIMIT_MS; attempt++) {
      if (attempt === 3) {
        r = { ...r, failure: `${r.slowestWhat} took ${r.slowest.toFixed(1)} ms in each of 3 runs, over ${CALL_LIMIT_MS} ms` };
        break;
      }
      replays++;
      r = await runCase(kind, mem, seed);
    }
    if (r.failure) return t.fail(`${kind.name}: case with seed ${seed} (replay: NODEVMM_FUZZ_SEED=${seed}): ${r.failure}`);
    if (r.slowest > slowest) {
      slowest = r.slowest;
      slowestWhat = r.slowestWhat;
    }
  }
  t.log(`${kind.name}: ${seeds.length} cases, slowest call ${slowest.toFixed(1)} ms (${slowestWhat}), ${replays} replayed`);
  t.pass();
}

// --- the devices ---------------------------------------------------------------

/** Used elements of queue `q` published since the last look. */
function used(d: FakeDriver, q: FakeQueue): Array<[number, number]> {
  return d.takeUsed(q);
}

const rngKind: Kind = {
  name: 'virtio-rng',
  cases: 2500,
  seed: 0x7a11,
  make() {
    const device = new VirtioRng();
    return {
      device,
      clean: { sizes: [8], features: 0n },
      overCap: () => undefined,
      async wellFormed(d, calls) {
        const q = d.queues[0]!;
        const buf = d.alloc(32);
        d.offer(q, d.chain(q, [{ gpa: buf, len: 32, write: true }]));
        calls.call('well-formed kick', () => d.kick(q));
        const u = used(d, q);
        return u.length === 1 && u[0]![1] === 32 ? undefined : `used ${JSON.stringify(u)}`;
      },
    };
  },
};

const consoleKind: Kind = {
  name: 'virtio-console',
  cases: 2500,
  seed: 0xc0de,
  make() {
    let over: string | undefined;
    let last: Uint8Array | undefined;
    const device = new VirtioConsole({
      sink: {
        write: (b) => {
          if (b.length > MAX_TX_CHAIN_BYTES) over = `the console handed its sink ${b.length} bytes of one chain`;
          last = b;
        },
      },
    });
    return {
      device,
      clean: { sizes: [64, 64], features: 0n },
      hostEvent: (rnd, calls) => void calls.call('console input', () => device.enqueue(rnd.bytes(rnd.int(rnd.chance(0.1) ? 70 * KiB : 256)))),
      overCap: () => over,
      async wellFormed(d, calls) {
        const tx = d.queues[1]!;
        const text = Uint8Array.of(0x6f, 0x6b, 0x0a);
        d.offer(tx, d.chain(tx, [{ gpa: d.alloc(3, text), len: 3 }]));
        calls.call('well-formed kick', () => d.kick(tx));
        if (!last || Buffer.compare(Buffer.from(last), Buffer.from(text)) !== 0) return 'the sink did not get the bytes';
        const rx = d.queues[0]!;
        const buf = d.alloc(16);
        d.offer(rx, d.chain(rx, [{ gpa: buf, len: 16, write: true }]));
        calls.call('rx kick', () => d.kick(rx));
        // Input may have been waiting since before the reset; it lands in this buffer, and so must ours.
        calls.call('console input', () => device.enqueue(Uint8Array.of(7)));
        return used(d, tx).length === 1 && used(d, rx).length >= 1 ? undefined : 'buffers were not used';
      },
    };
  },
};

/** An in-memory packet pipe that checks what the device hands it. */
class PipeBackend implements NetBackend {
  readonly inbound: Uint8Array[] = [];
  sent = 0;
  lastSent = 0;
  over: string | undefined;
  paused = false;
  private onReadable: (() => void) | undefined;
  constructor(readonly vnetHdr: boolean) {}
  readv(buffers: Uint8Array[]): number {
    const total = buffers.reduce((n, b) => n + b.length, 0);
    if (buffers.length > 1024) this.over = `readv got ${buffers.length} buffers, more than IOV_MAX`;
    if (total > 2 * MAX_PACKET_BYTES) this.over = `readv got ${total} bytes of buffers for one frame`;
    const p = this.inbound.shift();
    if (!p) return -1;
    let at = 0;
    for (const b of buffers) {
      if (at >= p.length) break;
      const n = Math.min(b.length, p.length - at);
      b.set(p.subarray(at, at + n));
      at += n;
    }
    return p.length;
  }
  writev(buffers: Uint8Array[]): number {
    const total = buffers.reduce((n, b) => n + b.length, 0);
    if (buffers.length > 1024) this.over = `writev got ${buffers.length} buffers, more than IOV_MAX`;
    if (total > MAX_PACKET_BYTES) this.over = `writev got a ${total}-byte frame`;
    this.sent++;
    this.lastSent = total;
    return total;
  }
  watch(onReadable: () => void): void {
    this.onReadable = onReadable;
  }
  pauseReads(): void {
    this.paused = true;
  }
  resumeReads(): void {
    this.paused = false;
  }
  setOffloads(): void {}
  close(): void {}
  arrive(p: Uint8Array): void {
    this.inbound.splice(0, this.inbound.length - 8); // a TAP queue holds a few frames, not all of them
    this.inbound.push(p);
    if (!this.paused) this.onReadable?.();
  }
}

const netKind: Kind = {
  name: 'virtio-net',
  cases: 2500,
  seed: 0x4e7,
  make(_mem, rnd) {
    const backend = new PipeBackend(rnd.chance(0.5));
    const device = new VirtioNet({ backend, mac: Uint8Array.of(0x52, 0x54, 0, 1, 2, 3), queueSize: rnd.pick([16, 256]) });
    return {
      device,
      // Half the NICs with headers also take mergeable receive buffers (MRG_RXBUF, bit 15) when brought up cleanly.
      clean: { sizes: [16, 16], features: backend.vnetHdr && rnd.chance(0.5) ? 1n << 15n : 0n },
      hostEvent: (r, calls) => {
        const len = r.pick([0, 14, 60, 1514, MAX_PACKET_BYTES - VIRTIO_NET_HDR_BYTES, MAX_PACKET_BYTES, r.int(MAX_PACKET_BYTES)]);
        calls.call(`packet of ${len} bytes arrives`, () => backend.arrive(new Uint8Array(len)));
      },
      overCap: () => backend.over,
      async wellFormed(d, calls) {
        const tx = d.queues[1]!;
        const before = backend.sent;
        d.offer(tx, d.chain(tx, [{ gpa: d.alloc(72), len: 72 }]));
        calls.call('well-formed tx kick', () => d.kick(tx));
        if (backend.sent !== before + 1 || backend.lastSent !== (backend.vnetHdr ? 72 : 60)) return `tx: sent ${backend.sent - before}, last ${backend.lastSent} bytes`;
        const rx = d.queues[0]!;
        backend.inbound.length = 0;
        d.offer(rx, d.chain(rx, [{ gpa: d.alloc(1526), len: 1526, write: true }]));
        calls.call('rx kick', () => d.kick(rx));
        calls.call('packet arrives', () => backend.arrive(new Uint8Array(backend.vnetHdr ? 112 : 100)));
        const u = used(d, rx);
        return u.length === 1 && u[0]![1] === 112 ? undefined : `rx used ${JSON.stringify(u)}`;
      },
      dispose: () => device.close(),
    };
  },
};

function blkKind(t: { teardown(f: () => void): void }): Kind {
  const sectors = 128;
  const img = tempImage(t, new Uint8Array(sectors * 512).fill(0x33));
  return {
    name: 'virtio-blk',
    cases: 1500,
    seed: 0xb10c,
    make(mem, rnd) {
      let over: string | undefined;
      // The bounce backend's copies are its host allocations: each must stay within its 1 MiB bounce.
      const spy = {
        read: (gpa: number, length: number) => {
          if (length > MiB) over = `the block backend copied ${length} bytes at once`;
          return mem.read(gpa, length);
        },
        write: (gpa: number, data: Uint8Array) => {
          if (data.length > MiB) over = `the block backend copied ${data.length} bytes at once`;
          mem.write(gpa, data);
        },
      } as unknown as GuestMemory;
      const device = new VirtioBlk({ backend: bounceFileBackend(img.fd, spy), sizeBytes: sectors * 512, readonly: rnd.chance(0.2), queueSize: rnd.pick([16, 512]) });
      return {
        device,
        clean: { sizes: [16], features: 0n },
        dress(d, gpa, r) {
          d.mem.writeU32(gpa, r.pick([BLK_T.in, BLK_T.out, BLK_T.flush, BLK_T.getId, BLK_T.discard, BLK_T.writeZeroes, r.int(2 ** 32)]));
          d.mem.writeU32(gpa + 4, 0);
          d.mem.writeU64(gpa + 8, BigInt(r.chance(0.8) ? r.int(sectors + 2) : r.int(2 ** 32)));
        },
        overCap: () => over,
        settle: async () => {
          await device.idle();
          await new Promise((resolve) => setImmediate(resolve));
        },
        async wellFormed(d, calls) {
          const q = d.queues[0]!;
          const h = d.alloc(16);
          d.mem.writeU32(h, BLK_T.in);
          d.mem.writeU64(h + 8, 1n);
          const data = d.alloc(512);
          const st = d.alloc(1, Uint8Array.of(0xff));
          d.offer(q, d.chain(q, [{ gpa: h, len: 16 }, { gpa: data, len: 512, write: true }, { gpa: st, len: 1, write: true }]));
          calls.call('well-formed kick', () => d.kick(q));
          await device.idle();
          await new Promise((resolve) => setImmediate(resolve));
          const expect = Buffer.alloc(512);
          fs.readSync(img.fd, expect, 0, 512, 512);
          const u = used(d, q);
          if (u.length !== 1 || u[0]![1] !== 513 || d.mem.readU8(st) !== BLK_S.ok) return `used ${JSON.stringify(u)}, status ${d.mem.readU8(st)}`;
          return Buffer.compare(Buffer.from(d.mem.read(data, 512)), expect) === 0 ? undefined : 'read returned other bytes than the image holds';
        },
      };
    },
  };
}

const vsockKind: Kind = {
  name: 'virtio-vsock (userspace part)',
  cases: 1500,
  seed: 0x50c,
  make(mem) {
    const open = new Set<number>();
    let nextFd = 100;
    let running = false;
    const ok = () => undefined;
    const vhost: VhostVsockOps = {
      features: (1n << FEATURE_VERSION_1) | (1n << FEATURE_INDIRECT) | (1n << FEATURE_EVENT_IDX) | (1n << VIRTIO_VSOCK_F_SEQPACKET),
      setFeatures: ok,
      setMemTable: ok,
      setVringNum: ok,
      setVringBase: ok,
      setVringAddr: ok,
      getVringBase: () => 0,
      setVringKick: ok,
      setVringCall: ok,
      setRunning: (r) => void (running = r),
    };
    const notify: NotifyOps = {
      eventfd: () => (open.add(nextFd), nextFd++),
      signal: (fd) => {
        if (!open.has(fd)) throw new Error(`signal of closed fd ${fd}`);
      },
      close: (fd) => {
        if (!open.delete(fd)) throw new Error(`double close of fd ${fd}`);
      },
      ioeventfd: ok,
      irqfd: ok,
      drain: () => 0,
      watch: () => ({ close: ok }),
    };
    const ranges = mem.ranges();
    const device = new VirtioVsock({ cid: 3, vhost, notify, ram: () => ranges.map((r, i) => ({ gpa: r.gpa, size: r.size, hostAddress: BigInt(0x7f00_0000_0000 + i * 0x1000_0000) })) });
    return {
      device,
      clean: { sizes: [8, 8, 8], features: 0n },
      overCap: () => (!device.vhostRunning && (open.size || running) ? `${open.size} eventfds open, vhost running ${running}, while the device is not active` : undefined),
      async wellFormed(d, calls) {
        if (!device.vhostRunning || !running) return 'vhost did not get the rings';
        const ev = d.queues[2]!;
        d.offer(ev, d.chain(ev, [{ gpa: d.alloc(8), len: 8, write: true }]));
        calls.call('event queue kick', () => d.kick(ev));
        calls.call('rx kick', () => d.kick(d.queues[0]!));
        calls.call('reset', () => d.w(REG.status, 0));
        return open.size || running ? `after reset ${open.size} eventfds open, vhost running ${running}` : undefined;
      },
    };
  },
};

for (const kind of [rngKind, consoleKind, netKind, vsockKind]) {
  test(`${kind.name}: random registers, rings and chains never escape, stall or over-allocate, and a reset always recovers`, (t) => fuzz(t, kind));
}

test('virtio-blk: random registers, rings and chains never escape, stall or over-allocate, and a reset always recovers', (t) => fuzz(t, blkKind(t)));
