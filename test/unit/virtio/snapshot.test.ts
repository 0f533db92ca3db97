/**
 * Saving and restoring virtio devices: the transport's registers, features
 * and ring indices, and each device's own state. A restored queue resumes at
 * the saved last_avail_idx (the next kick serves only new chains), requests
 * in flight are refused or drained, never lost, and tampered states are
 * refused with one sentence naming the slot and field.
 */
import test from 'ava';
import { BLK_S, BLK_T, VirtioBlk } from '../../../lib/devices/virtio/blk';
import { bounceFileBackend, type DirectFileIo } from '../../../lib/devices/virtio/blk-backends';
import { VirtioConsole } from '../../../lib/devices/virtio/console';
import { REG, STATUS, type VirtioMmioState } from '../../../lib/devices/virtio/mmio';
import { VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VirtioNet, type NetBackend } from '../../../lib/devices/virtio/net';
import { VirtioRng } from '../../../lib/devices/virtio/rng';
import { VirtioVsock } from '../../../lib/devices/virtio/vsock';
import { VirtioFs } from '../../../lib/devices/virtio/fs';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { IoBus } from '../../../lib/hv/io-bus';
import { resolveVmConfig } from '../../../lib/vm/config';
import { attachVirtioDevices, virtioSlots } from '../../../lib/vm/virtio-devices';
import { tempImage } from '../../temp-image';
import { FakeDriver, RAM, type FakeQueue } from './driver';

const viaJson = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;
const tick = () => new Promise((r) => setImmediate(r));

function header(type: number, sector: number): Uint8Array {
  const h = new Uint8Array(16);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, type, true);
  dv.setBigUint64(8, BigInt(sector), true);
  return h;
}

/** Offer one block read of `len` bytes at `sector` (not kicked); where its data and status land. */
function offerRead(d: FakeDriver, q: FakeQueue, sector: number, len = 512): { head: number; data: number; status: number } {
  const h = d.alloc(16, header(BLK_T.in, sector));
  const data = d.alloc(len);
  const status = d.alloc(1, Uint8Array.of(0xff));
  const head = d.chain(q, [
    { gpa: h, len: 16 },
    { gpa: data, len, write: true },
    { gpa: status, len: 1, write: true },
  ]);
  d.offer(q, head);
  return { head, data, status };
}

function image(t: { teardown(f: () => void): void }, sectors = 32) {
  const content = new Uint8Array(sectors * 512);
  for (let i = 0; i < content.length; i++) content[i] = (i * 13 + 5) & 0xff;
  return { img: tempImage(t, content), content };
}

function blkOn(fd: number, mem: GuestMemory, sizeBytes: number): VirtioBlk {
  return new VirtioBlk({ name: 'vda', backend: bounceFileBackend(fd, mem), sizeBytes });
}

test('virtio-blk mid-way: restored into a fresh device, the next kick serves only the new request, from the saved index', async (t) => {
  const { img, content } = image(t);
  const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  const a = blkOn(img.fd, mem, content.length);
  const d = new FakeDriver(a, {}, mem);
  d.up([8], { features: 1n << 29n }); // EVENT_IDX: the device publishes avail_event
  const q = d.queues[0]!;
  for (let i = 0; i < 11; i++) {
    offerRead(d, q, i);
    d.kick(q);
    await a.idle();
    await tick();
  }
  t.is(d.takeUsed(q).length, 11, 'the ring wrapped: 11 requests on an 8-entry queue');
  const state = viaJson(d.t.snapshot());
  t.deepEqual(state.queues[0]!.ring, { lastAvail: 11, usedIdx: 11, signalledUsed: 11 });
  t.is(state.driverFeatures, '0x120000000');

  let b!: VirtioBlk;
  const d2 = d.cloneOnto((m) => (b = blkOn(img.fd, m, content.length)));
  d2.t.restoreState(state, 'virtio.vda');
  t.is(d2.r(REG.status), STATUS.acknowledge | STATUS.driver | STATUS.featuresOk | STATUS.driverOk);
  const q2 = d2.queues[0]!;
  // The same next request on the original and on the restored device.
  const ra = offerRead(d, q, 20);
  const rb = offerRead(d2, q2, 20);
  d.kick(q);
  d2.kick(q2);
  await Promise.all([a.idle(), b.idle()]);
  await tick();
  const usedA = d.takeUsed(q);
  const usedB = d2.takeUsed(q2);
  t.deepEqual(usedB, usedA);
  t.deepEqual(usedB, [[rb.head, 513]], 'only the new chain, nothing served twice');
  t.is(d2.usedIdx(q2), 12);
  t.is(d2.mem.readU8(rb.status), BLK_S.ok);
  t.deepEqual([...d2.mem.read(rb.data, 512)], [...content.subarray(20 * 512, 21 * 512)]);
  t.deepEqual([...d2.mem.read(rb.data, 512)], [...d.mem.read(ra.data, 512)]);
});

test('virtio-blk: a chain made available but not kicked before the snapshot is served once, at restore', async (t) => {
  const { img, content } = image(t);
  const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  const a = blkOn(img.fd, mem, content.length);
  const d = new FakeDriver(a, {}, mem);
  d.up([8]);
  const q = d.queues[0]!;
  offerRead(d, q, 1);
  d.kick(q);
  await a.idle();
  await tick();
  d.takeUsed(q);
  const waiting = offerRead(d, q, 3); // the vCPU paused before its kick
  const state = viaJson(d.t.snapshot());
  t.deepEqual(state.queues[0]!.ring, { lastAvail: 1, usedIdx: 1, signalledUsed: 1 });
  let b!: VirtioBlk;
  const d2 = d.cloneOnto((m) => (b = blkOn(img.fd, m, content.length)));
  d2.t.restoreState(state, 'virtio.vda');
  await b.idle();
  await tick();
  t.deepEqual(d2.takeUsed(d2.queues[0]!), [[waiting.head, 513]]);
  t.deepEqual([...d2.mem.read(waiting.data, 512)], [...content.subarray(3 * 512, 4 * 512)]);
  d2.kick(d2.queues[0]!);
  await tick();
  t.deepEqual(d2.takeUsed(d2.queues[0]!), [], 'a later kick serves nothing again');
});

/** A DirectFileIo whose pool requests wait until released: a disk stuck mid-request. */
function stuckIo() {
  const waiting: Array<() => void> = [];
  const io: DirectFileIo = {
    fileIo: () => new Promise<number>((resolve) => waiting.push(() => resolve(0))),
    fileIoNow: () => -1,
    fileSync: async () => {},
  };
  return { io, release: () => waiting.splice(0).forEach((f) => f()) };
}

test('virtio-blk: a request in flight is refused by snapshot, awaited by quiesce (bounded), and saved once it completed', async (t) => {
  const { img } = image(t, 64);
  const cfg = resolveVmConfig({ kernel: 'k', disks: [{ path: img.file }], rng: true });
  const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  const stuck = stuckIo();
  const v = attachVirtioDevices({ cfg, slots: virtioSlots(cfg), memory: mem, mmio: new IoBus('mmio'), irq: () => ({ set: () => {}, pulse: () => {} }), directIo: stuck.io });
  t.teardown(() => v.dispose());
  const d = new FakeDriver(v.transports[0]!, {}, mem);
  d.up([8]);
  const q = d.queues[0]!;
  offerRead(d, q, 2);
  d.kick(q);
  t.is(v.disks[0]!.requestsInFlight, 1);
  t.throws(() => v.snapshot(), { code: 'ERR_SNAPSHOT', message: 'vda has 1 requests in flight, which a snapshot cannot hold: let the disks go idle first (quiesce)' });
  await t.throwsAsync(v.quiesce(30), { code: 'ERR_SNAPSHOT', message: 'vda still has 1 requests in flight after 30 ms, so no snapshot was taken (a stuck disk?)' });
  const drained = v.quiesce(10_000);
  stuck.release();
  await drained;
  await tick();
  const saved = viaJson(v.snapshot());
  t.deepEqual(
    saved.map((s) => s.name),
    ['vda', 'rng'],
  );
  t.deepEqual(saved[0]!.disk, { path: img.file, readonly: false, overlay: 'none' });
  t.deepEqual(saved[0]!.transport.queues[0]!.ring, { lastAvail: 1, usedIdx: 1, signalledUsed: 1 });
  t.deepEqual(d.takeUsed(q).length, 1, 'the request completed to the guest before the snapshot');
});

test('attached virtio: slot states restore into a fresh attachment; a slot in the wrong place is refused before any device takes state', async (t) => {
  const { img } = image(t, 64);
  const cfg = resolveVmConfig({ kernel: 'k', disks: [{ path: img.file }], rng: true, virtioConsole: true });
  const irq = () => ({ set: () => {}, pulse: () => {} });
  const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  const v = attachVirtioDevices({ cfg, slots: virtioSlots(cfg), memory: mem, mmio: new IoBus('mmio'), irq });
  t.teardown(() => v.dispose());
  const rngDriver = new FakeDriver(v.transports[1]!, {}, mem);
  rngDriver.up([4]);
  const rq = rngDriver.queues[0]!;
  rngDriver.offer(rq, rngDriver.chain(rq, [{ gpa: rngDriver.alloc(32), len: 32, write: true }]));
  rngDriver.kick(rq);
  t.is(rngDriver.takeUsed(rq).length, 1);
  const saved = viaJson(v.snapshot());

  const mem2 = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  mem2.write(0, mem.read(0, RAM));
  const v2 = attachVirtioDevices({ cfg, slots: virtioSlots(cfg), memory: mem2, mmio: new IoBus('mmio'), irq });
  t.teardown(() => v2.dispose());
  t.throws(() => v2.restore([saved[1], saved[0], saved[2]], 'virtio'), { message: 'snapshot device state virtio[0].name: the snapshot has "rng" in slot 0, this machine vda' });
  t.throws(() => v2.restore([{ ...saved[0]!, base: 0x1000 }, saved[1], saved[2]], 'virtio'), { message: /^snapshot device state virtio\[0\]\.base: the snapshot has vda at 0x1000, this machine at 0x/ });
  t.throws(() => v2.restore(saved.slice(0, 2), 'virtio'), { message: 'snapshot device state virtio: the snapshot has 2 virtio slots, this machine 3' });
  t.throws(() => v2.restore([saved[0], { ...saved[1]!, disk: saved[0]!.disk }, saved[2]], 'virtio'), { message: 'snapshot device state virtio[1].disk: only a disk slot records an image, rng is not one' });
  t.false(v2.transports.some((tr) => tr.deviceStatus !== 0), 'nothing was taken by a refused restore');
  v2.restore(saved, 'virtio');
  t.true(v2.transports[1]!.isActive);
  const d2 = new FakeDriver(v2.transports[1]!, {}, mem2);
  d2.queues.push({ ...rq });
  const q2 = d2.queues[0]!;
  const head = d2.chain(q2, [{ gpa: 0x9_0000, len: 16, write: true }]);
  d2.offer(q2, head);
  d2.kick(q2);
  t.deepEqual(d2.takeUsed(q2), [[head, 16]]);
  t.is(d2.usedIdx(q2), 2);
});

test('virtio-console: host input waiting for guest buffers is saved and reaches the guest after restore', (t) => {
  const out: number[] = [];
  const a = new VirtioConsole({ sink: { write: (b) => out.push(...b) } });
  const d = new FakeDriver(a);
  d.up([4, 4]);
  t.is(a.enqueue(new TextEncoder().encode('hello')), 5, 'kept: the guest has no receive buffer yet');
  const state = viaJson(d.t.snapshot());
  t.deepEqual(state.device, { input: Buffer.from('hello').toString('base64') });
  const b = new VirtioConsole({ sink: { write: () => {} } });
  const d2 = d.cloneOnto(b);
  d2.t.restoreState(state, 'virtio.console');
  const rx = d2.queues[0]!;
  const buf = d2.alloc(64);
  const head = d2.chain(rx, [{ gpa: buf, len: 64, write: true }]);
  d2.offer(rx, head);
  d2.kick(rx);
  t.deepEqual(d2.takeUsed(rx), [[head, 5]]);
  t.is(new TextDecoder().decode(d2.mem.read(buf, 5)), 'hello');
  t.throws(() => new FakeDriver(new VirtioConsole({ sink: { write: () => {} }, inputLimit: 4 })).cloneOnto(new VirtioConsole({ sink: { write: () => {} }, inputLimit: 4 })).t.restoreState(state, 'virtio.console'), {
    message: 'snapshot device state virtio.console.device.input: expected at most 4 bytes, got 5',
  });
});

test('virtio-rng: restored mid-way, the next request is served from the saved index', (t) => {
  const d = new FakeDriver(new VirtioRng());
  d.up([4]);
  const q = d.queues[0]!;
  for (let i = 0; i < 6; i++) {
    d.offer(q, d.chain(q, [{ gpa: d.alloc(8), len: 8, write: true }]));
    d.kick(q);
  }
  t.is(d.takeUsed(q).length, 6);
  const state = viaJson(d.t.snapshot());
  const d2 = d.cloneOnto(new VirtioRng());
  d2.t.restoreState(state, 'virtio.rng');
  const q2 = d2.queues[0]!;
  const head = d2.chain(q2, [{ gpa: d2.alloc(8), len: 8, write: true }]);
  d2.offer(q2, head);
  d2.kick(q2);
  t.deepEqual(d2.takeUsed(q2), [[head, 8]]);
  t.is(d2.usedIdx(q2), 7);
});

class LoopNet implements NetBackend {
  readonly vnetHdr = false;
  readonly inbound: Uint8Array[] = [];
  private onReadable: (() => void) | undefined;
  paused = false;
  readv(buffers: Uint8Array[]): number {
    const p = this.inbound.shift();
    if (!p) return -1;
    let at = 0;
    for (const b of buffers) {
      const n = Math.min(b.length, p.length - at);
      b.set(p.subarray(at, at + n));
      at += n;
    }
    return p.length;
  }
  writev(buffers: Uint8Array[]): number {
    return buffers.reduce((n, b) => n + b.length, 0);
  }
  watch(f: () => void): void {
    this.onReadable = f;
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
    this.inbound.push(p);
    if (!this.paused) this.onReadable?.();
  }
}

const MAC = Uint8Array.of(0x52, 0x54, 0, 1, 2, 3);

test('virtio-net: a receive buffer held while no packet waited goes back to the ring, and the first packet after restore lands in it', (t) => {
  const backA = new LoopNet();
  const a = new VirtioNet({ backend: backA, mac: MAC, queueSize: 8 });
  const d = new FakeDriver(a);
  d.up([8, 8], { features: (1n << VIRTIO_NET_F_MAC) | (1n << VIRTIO_NET_F_STATUS) });
  const rx = d.queues[0]!;
  const buf = d.alloc(2048);
  const head = d.chain(rx, [{ gpa: buf, len: 2048, write: true }]);
  d.offer(rx, head);
  d.kick(rx); // no packet: the device holds the buffer
  const state = viaJson(d.t.snapshot());
  t.deepEqual(state.queues[0]!.ring, { lastAvail: 0, usedIdx: 0, signalledUsed: 0 }, 'saved before the held buffer');
  t.deepEqual(state.device, { mac: '52:54:00:01:02:03' });
  const backB = new LoopNet();
  const d2 = d.cloneOnto(new VirtioNet({ backend: backB, mac: MAC, queueSize: 8 }));
  d2.t.restoreState(state, 'virtio.net0');
  const other = d.cloneOnto(new VirtioNet({ backend: new LoopNet(), mac: Uint8Array.of(0x52, 0x54, 0, 9, 9, 9), queueSize: 8 }));
  const packet = Uint8Array.from({ length: 60 }, (_, i) => i);
  backB.arrive(packet);
  backA.arrive(packet);
  const rx2 = d2.queues[0]!;
  t.deepEqual(d2.takeUsed(rx2), [[head, 72]]);
  t.deepEqual([...d2.mem.read(buf + 12, 60)], [...packet]);
  t.deepEqual(d.takeUsed(rx), [[head, 72]], 'the original, which gave its buffer back, still receives into it');
  t.throws(() => other.t.restoreState(state, 'virtio.net0'), { message: 'snapshot device state virtio.net0.device.mac: the guest saw "52:54:00:01:02:03", this NIC has 52:54:00:09:09:09' });
});

const RING_FEATURES = (1n << 32n) | (1n << 28n) | (1n << 29n);

test('vhost-vsock and virtio-fs: refused with one sentence once the driver handed over the rings, saved before', (t) => {
  const vsock = new VirtioVsock({ cid: 3, vhost: { features: RING_FEATURES } as never, notify: {} as never, ram: () => [] });
  t.deepEqual(vsock.saveState(false), {});
  t.throws(() => vsock.saveState(true), {
    code: 'ERR_SNAPSHOT_UNSUPPORTED',
    message: 'vsock: the guest driver handed its rings to the host kernel (vhost-vsock), whose connection state cannot be saved: snapshot without vsock, or before the guest loads its driver',
  });
  t.notThrows(() => vsock.restoreState({}, 'virtio.vsock.device', false));
  t.throws(() => vsock.restoreState({}, 'virtio.vsock.device', true), { code: 'ERR_DEVICE_STATE' });
  const fs = new VirtioFs({ tag: 'share', backend: { features: RING_FEATURES } as never, notify: {} as never, ram: () => [] });
  t.deepEqual(fs.saveState(false), {});
  t.throws(() => fs.saveState(true), { code: 'ERR_SNAPSHOT_UNSUPPORTED', message: /^virtio-fs share: the share's state lives in its vhost-user daemon/ });
  t.throws(() => fs.restoreState({}, 'virtio.fs0.device', true), { code: 'ERR_DEVICE_STATE' });
});

/** A blk transport with two requests done, saved; and a clone of its memory to restore into. */
async function savedBlk(t: { teardown(f: () => void): void }) {
  const { img, content } = image(t);
  const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  const a = blkOn(img.fd, mem, content.length);
  const d = new FakeDriver(a, {}, mem);
  d.up([8]);
  const q = d.queues[0]!;
  for (let i = 0; i < 2; i++) {
    offerRead(d, q, i);
    d.kick(q);
    await a.idle();
    await tick();
  }
  const state = viaJson(d.t.snapshot());
  const fresh = () => d.cloneOnto((m) => blkOn(img.fd, m, content.length));
  return { state, fresh, d, img, content };
}

type Mutator = (s: VirtioMmioState) => void;

test('tampered transport states are refused with one sentence, never a crash and never taken', async (t) => {
  const { state, fresh } = await savedBlk(t);
  const cases: Array<[string, Mutator, string | RegExp]> = [
    ['size not a power of two', (s) => (s.queues[0]!.num = 12), 'snapshot device state virtio.vda.queues[0].num: queue size 12 is not a power of two from 1 to 32768'],
    ['size above the maximum', (s) => (s.queues[0]!.num = 1024), "snapshot device state virtio.vda.queues[0].num: queue size 1024 is larger than this queue's maximum 512"],
    ['ring outside RAM', (s) => (s.queues[0]!.desc = RAM + 0x1000), 'snapshot device state virtio.vda.queues[0]: descriptor table at 0x101000 with 128 bytes is outside guest ram'],
    ['misaligned ring', (s) => (s.queues[0]!.device += 2), /^snapshot device state virtio\.vda\.queues\[0\]: used ring address 0x[0-9a-f]+ is not 4-byte aligned$/],
    ['chains taken and not returned', (s) => (s.queues[0]!.ring!.lastAvail += 2), 'snapshot device state virtio.vda.queues[0].ring.lastAvail: 2 chains were taken and not returned (last_avail_idx 4, used idx 2), which cannot be resumed'],
    [
      'indices that disagree with memory',
      (s) => {
        s.queues[0]!.ring!.lastAvail = 7;
        s.queues[0]!.ring!.usedIdx = 7;
      },
      "snapshot device state virtio.vda.queues[0].ring.usedIdx: the device's used idx 7 is not the 2 guest memory holds (memory from another snapshot?)",
    ],
    ['index out of range', (s) => (s.queues[0]!.ring!.usedIdx = 65536), 'snapshot device state virtio.vda.queues[0].ring.usedIdx: expected 0 to 65535, got 65536'],
    ['a feature never offered', (s) => (s.driverFeatures = '0x10100000000'), 'snapshot device state virtio.vda.driverFeatures: the driver accepted bits 0x10000000000 this device does not offer (another backend, a read-only disk?)'],
    ['features as a number', (s) => ((s as unknown as Record<string, unknown>).driverFeatures = 4294967296), 'snapshot device state virtio.vda.driverFeatures: expected a hex string like "0x1f" of at most 16 digits, got 4294967296'],
    ['another device', (s) => (s.deviceId = 4), 'snapshot device state virtio.vda.deviceId: the snapshot has device 4 where this machine has vda (2)'],
    ['an unknown status bit', (s) => (s.status |= 0x10), 'snapshot device state virtio.vda.status: has bits no status has: 0x1f'],
    ['DRIVER_OK without FEATURES_OK', (s) => (s.status = STATUS.acknowledge | STATUS.driver | STATUS.driverOk), 'snapshot device state virtio.vda.status: DRIVER_OK without FEATURES_OK is never live (the device would need a reset)'],
    ['a queue too many', (s) => s.queues.push({ ...s.queues[0]! }), 'snapshot device state virtio.vda.queues: expected exactly 1 entries, got 2'],
    ['ready as a string', (s) => ((s.queues[0] as unknown as Record<string, unknown>).ready = 'yes'), 'snapshot device state virtio.vda.queues[0].ready: expected true or false, got "yes"'],
    ['ring indices of an inactive device', (s) => (s.status = STATUS.acknowledge | STATUS.driver | STATUS.featuresOk), 'snapshot device state virtio.vda.queues[0].ring: ring indices are saved only for a ready queue of an active device'],
    ['an active queue without indices', (s) => delete s.queues[0]!.ring, 'snapshot device state virtio.vda.queues[0].ring: expected an object, got undefined'],
    ['an interrupt status bit that does not exist', (s) => (s.interruptStatus = 4), 'snapshot device state virtio.vda.interruptStatus: expected 0 to 3, got 4'],
    ['a disk of another size', (s) => (s.device.capacitySectors = 64), 'snapshot device state virtio.vda.device.capacitySectors: the guest saw 64 sectors, the attached image has 32'],
    ['an address beyond 2^53', (s) => (s.queues[0]!.driver = 2 ** 60), /^snapshot device state virtio\.vda\.queues\[0\]\.driver: expected 0 to \d+, got 1152921504606847000$/],
  ];
  for (const [what, mutate, message] of cases) {
    const s = viaJson(state);
    mutate(s);
    const d2 = fresh();
    const e = t.throws(() => d2.t.restoreState(s, 'virtio.vda'), undefined, what);
    t.is((e as { code?: string } | undefined)?.code, 'ERR_DEVICE_STATE', what);
    if (typeof message === 'string') t.is(e?.message, message, what);
    else t.regex(e?.message ?? '', message, what);
    t.is(d2.t.deviceStatus, 0, `${what}: nothing taken`);
    t.false(d2.t.isActive, what);
  }
});

test('an available index more than a queue ahead of the saved last_avail_idx is refused', async (t) => {
  const { state, fresh } = await savedBlk(t);
  const d2 = fresh();
  d2.mem.writeU16(d2.queues[0]!.avail + 2, 2 + 9);
  t.throws(() => d2.t.restoreState(state, 'virtio.vda'), {
    message: 'snapshot device state virtio.vda.queues[0].ring.lastAvail: available index moved 9 entries ahead of the device, more than the queue size 8',
  });
});

test('a device in DEVICE_NEEDS_RESET is saved as such and restored inert until the driver resets it', async (t) => {
  const { d, fresh } = await savedBlk(t);
  const q = d.queues[0]!;
  // A chain naming a descriptor outside the queue: the device goes to needs-reset.
  d.mem.writeU16(q.avail + 4 + 2 * (q.availIdx % q.size), 99);
  q.availIdx++;
  d.mem.writeU16(q.avail + 2, q.availIdx);
  d.kick(q);
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  const state = viaJson(d.t.snapshot());
  t.false('ring' in state.queues[0]!);
  const d2 = fresh();
  d2.t.restoreState(state, 'virtio.vda');
  t.false(d2.t.isActive);
  t.is(d2.r(REG.status), d.r(REG.status));
  t.is(d2.r(REG.interruptStatus), d.r(REG.interruptStatus));
});

test('a device without saved state cannot be snapshotted', (t) => {
  const dev = { name: 'odd', deviceId: 99, features: 0n, queueMaxSizes: [4], readConfig: () => 0, activate: () => {}, notify: () => {}, reset: () => {} };
  const d = new FakeDriver(dev);
  t.throws(() => d.t.snapshot(), { code: 'ERR_SNAPSHOT_UNSUPPORTED', message: 'virtio-odd: this device has no saved state, so a VM with it cannot be snapshotted' });
});

test('a disk with a throwaway overlay is saved while unwritten and refused once the guest wrote into the overlay', async (t) => {
  const { img } = image(t, 64);
  const cfg = resolveVmConfig({ kernel: 'k', disks: [{ path: img.file, overlay: 'temp' }] });
  const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  const v = attachVirtioDevices({ cfg, slots: virtioSlots(cfg), memory: mem, mmio: new IoBus('mmio'), irq: () => ({ set: () => {}, pulse: () => {} }) });
  t.teardown(() => v.dispose());
  const d = new FakeDriver(v.transports[0]!, {}, mem);
  d.up([8]);
  t.deepEqual(v.snapshot()[0]!.disk, { path: img.file, readonly: false, overlay: 'temp' });
  const q = d.queues[0]!;
  const h = d.alloc(16, header(BLK_T.out, 4));
  d.offer(q, d.chain(q, [{ gpa: h, len: 16 }, { gpa: d.alloc(512, new Uint8Array(512).fill(1)), len: 512 }, { gpa: d.alloc(1), len: 1, write: true }]));
  d.kick(q);
  await v.quiesce(10_000);
  t.is(d.takeUsed(q).length, 1);
  t.throws(() => v.snapshot(), { code: 'ERR_SNAPSHOT_UNSUPPORTED', message: "vda: the guest wrote 1 clusters into its throwaway overlay, which a snapshot cannot keep: snapshot before writing, or without overlay: 'temp'" });
});

test('restoring into a transport that already ran resets the device before it takes state (what its activation made is let go)', (t) => {
  const events: string[] = [];
  const device = {
    name: 'rec',
    deviceId: 42,
    features: 0n,
    queueMaxSizes: [4],
    readConfig: () => 0,
    activate: () => void events.push('activate'),
    notify: () => {},
    reset: () => void events.push('reset'),
    saveState: () => ({}),
    restoreState: () => void events.push('restore'),
  };
  const d = new FakeDriver(device);
  d.up([4]);
  const state = viaJson(d.t.snapshot());
  events.length = 0;
  d.t.restoreState(state, 'virtio.rec');
  t.deepEqual(events, ['reset', 'restore', 'activate']);
  const fresh = new FakeDriver({ ...device });
  events.length = 0;
  fresh.t.restoreState(state, 'virtio.rec');
  t.deepEqual(events, ['restore', 'activate'], 'a fresh transport has nothing to let go of');
});
