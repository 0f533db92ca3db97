import test from 'ava';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { INT_CONFIG_CHANGE, INT_USED_BUFFER, REG, STATUS } from '../../../lib/devices/virtio/mmio';
import {
  MAX_PACKET_BYTES,
  TUN_F,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_BYTES,
  VirtioNet,
  formatMac,
  parseMac,
  type NetBackend,
} from '../../../lib/devices/virtio/net';
import { FakeDriver, RAM, type FakeQueue } from './driver';

/** An in-memory backend: `inbound` is what the "TAP" has for the guest, `sent` what the guest transmitted. */
class FakeBackend implements NetBackend {
  readonly inbound: Uint8Array[] = [];
  readonly sent: Uint8Array[] = [];
  paused = false;
  offloads = -1;
  failWrites: Error | 'eagain' | undefined;
  private onReadable: (() => void) | undefined;
  constructor(readonly vnetHdr: boolean) {}
  readv(buffers: Uint8Array[]): number {
    if (buffers.length > 1024) throw new Error('readv takes at most IOV_MAX (1024) buffers');
    const p = this.inbound.shift();
    if (!p) return -1;
    let at = 0;
    for (const b of buffers) {
      const n = Math.min(b.length, p.length - at);
      b.set(p.subarray(at, at + n));
      at += n;
      if (at === p.length) break;
    }
    return p.length;
  }
  writev(buffers: Uint8Array[]): number {
    if (buffers.length > 1024) throw new Error('writev takes at most IOV_MAX (1024) buffers');
    if (this.failWrites === 'eagain') return -1;
    if (this.failWrites) throw this.failWrites;
    this.sent.push(Buffer.concat(buffers.map((b) => Buffer.from(b))));
    return this.sent.at(-1)!.length;
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
  setOffloads(flags: number): void {
    this.offloads = flags;
  }
  close(): void {}
  /** A packet arrives; the watcher fires unless paused, as a level-triggered poll would. */
  arrive(packet: Uint8Array): void {
    this.inbound.push(packet);
    if (!this.paused) this.onReadable?.();
  }
}

const MAC = Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56);
const NO_OFFLOADS = (1n << VIRTIO_NET_F_MAC) | (1n << VIRTIO_NET_F_STATUS);

function setup(opts: { vnetHdr?: boolean; features?: bigint; mem?: GuestMemory; queueSize?: number } = {}) {
  const backend = new FakeBackend(opts.vnetHdr ?? false);
  const size = opts.queueSize ?? 16;
  const nic = new VirtioNet({ backend, mac: MAC, queueSize: size });
  const d = new FakeDriver(nic, {}, opts.mem);
  d.up([size, size], { features: opts.features ?? NO_OFFLOADS });
  return { backend, nic, d, rx: d.queues[0]!, tx: d.queues[1]! };
}

function frame(len: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (i * 7 + seed) & 0xff);
}

function postRx(d: FakeDriver, rx: FakeQueue, len = 1526): number {
  const gpa = d.alloc(len);
  d.offer(rx, d.chain(rx, [{ gpa, len, write: true }]));
  return gpa;
}

test('device ID 1, MAC and link-up status in config space, MAC and STATUS features, no offloads without backend headers', (t) => {
  const { d, nic } = setup();
  t.is(d.r(REG.deviceId), 1);
  t.deepEqual([0, 1, 2, 3, 4, 5].map((i) => d.t.read(0x100 + i, 1)), [...MAC]);
  t.is(d.t.read(0x106, 2), 1, 'VIRTIO_NET_S_LINK_UP');
  t.is(nic.features & ((1n << VIRTIO_NET_F_MAC) | (1n << VIRTIO_NET_F_STATUS)), (1n << VIRTIO_NET_F_MAC) | (1n << VIRTIO_NET_F_STATUS));
  t.is(nic.features & (1n << VIRTIO_NET_F_CSUM), 0n);
  t.is(d.r(REG.status) & STATUS.needsReset, 0);
  const withHdr = new VirtioNet({ backend: new FakeBackend(true), mac: MAC });
  t.not(withHdr.features & (1n << VIRTIO_NET_F_CSUM), 0n);
  t.throws(() => new VirtioNet({ backend: new FakeBackend(false), mac: new Uint8Array(5) }), { message: /6 bytes, got 5/ });
});

test('rx: a packet lands after a zeroed header with num_buffers 1, and the guest is interrupted', (t) => {
  const { backend, nic, d, rx } = setup();
  const gpa = postRx(d, rx);
  d.kick(rx);
  const p = frame(60);
  backend.arrive(p);
  t.deepEqual(d.takeUsed(rx), [[0, VIRTIO_NET_HDR_BYTES + 60]]);
  t.deepEqual([...d.mem.read(gpa, VIRTIO_NET_HDR_BYTES)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
  t.deepEqual(d.mem.read(gpa + VIRTIO_NET_HDR_BYTES, 60), p);
  t.true(d.irq.level);
  t.is(d.r(REG.interruptStatus) & INT_USED_BUFFER, INT_USED_BUFFER);
  t.is(nic.stats.rxPackets, 1);
  t.is(nic.stats.rxBytes, 60);
});

test('rx with backend headers: the header passes through, num_buffers is set to 1, across a split chain', (t) => {
  const { backend, d, rx } = setup({ vnetHdr: true });
  const h = d.alloc(12);
  const body = d.alloc(1514);
  d.offer(rx, d.chain(rx, [{ gpa: h, len: 12, write: true }, { gpa: body, len: 1514, write: true }]));
  d.kick(rx);
  const hdr = Uint8Array.of(1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0xee, 0xee); // NEEDS_CSUM, csum 34/16; the TAP leaves the last two bytes alone
  const p = frame(100, 3);
  backend.arrive(Buffer.concat([hdr, p]));
  t.deepEqual(d.takeUsed(rx), [[0, 112]]);
  t.deepEqual([...d.mem.read(h, 12)], [1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 1, 0]);
  t.deepEqual(d.mem.read(body, 100), p);
});

test('rx without guest buffers pauses the backend; the rx kick resumes it and the waiting packet is delivered', (t) => {
  const { backend, d, rx } = setup();
  backend.arrive(frame(42));
  t.true(backend.paused, 'no buffers: stop watching rather than spin');
  t.is(backend.inbound.length, 1, 'the packet stays with the backend, not dropped');
  const gpa = postRx(d, rx);
  d.kick(rx);
  t.deepEqual(d.takeUsed(rx), [[0, 54]]);
  t.deepEqual(d.mem.read(gpa + 12, 42), frame(42));
  t.true(backend.paused, 'that was the only buffer');
  // A kick with no packet waiting keeps the buffer for the next packet and keeps watching.
  postRx(d, rx);
  d.kick(rx);
  t.false(backend.paused);
  t.deepEqual(d.takeUsed(rx), []);
  backend.arrive(frame(10, 9));
  t.deepEqual(d.takeUsed(rx), [[1, 22]]);
});

test('rx: a packet longer than the guest buffer comes back as a 0-byte buffer and is counted', (t) => {
  const { backend, nic, d, rx } = setup();
  postRx(d, rx, 100);
  d.kick(rx);
  backend.arrive(frame(500));
  t.deepEqual(d.takeUsed(rx), [[0, 0]]);
  t.is(nic.stats.rxTooBig, 1);
  t.is(nic.stats.rxPackets, 0);
});

test('rx into a buffer that spans two memory regions goes through a bounce buffer', (t) => {
  const mem = GuestMemory.anonymous([
    { gpa: 0, size: 0x9_0000 },
    { gpa: 0x9_0000, size: RAM - 0x9_0000 },
  ]);
  const { backend, d, rx } = setup({ mem });
  const gpa = 0x9_0000 - 20; // header and 8 bytes below the boundary, the rest above
  d.offer(rx, d.chain(rx, [{ gpa, len: 1526, write: true }]));
  d.kick(rx);
  t.is(mem.view(gpa, 1526), undefined);
  backend.arrive(frame(64, 5));
  t.deepEqual(d.takeUsed(rx), [[0, 76]]);
  t.deepEqual(mem.read(gpa + 12, 64), frame(64, 5));
  t.is(mem.readU16(gpa + 10), 1);
});

test('tx: header and frame gathered from several descriptors; the header is stripped unless the backend takes it', (t) => {
  for (const vnetHdr of [false, true]) {
    const { backend, nic, d, tx } = setup({ vnetHdr });
    const hdr = new Uint8Array(12);
    const a = frame(30, 1);
    const b = frame(70, 2);
    d.offer(tx, d.chain(tx, [{ gpa: d.alloc(12, hdr), len: 12 }, { gpa: d.alloc(30, a), len: 30 }, { gpa: d.alloc(70, b), len: 70 }]));
    d.kick(tx);
    t.deepEqual(d.takeUsed(tx), [[0, 0]]);
    t.is(backend.sent.length, 1);
    t.deepEqual(Buffer.from(backend.sent[0]!), vnetHdr ? Buffer.concat([hdr, a, b]) : Buffer.concat([a, b]));
    t.is(nic.stats.txPackets, 1);
    t.is(nic.stats.txBytes, 100);
  }
});

test('tx: a backend that refuses a packet counts it as dropped and the device keeps working', (t) => {
  const { backend, nic, d, tx } = setup();
  backend.failWrites = Object.assign(new Error('write to fd 9 failed: Input/output error (EIO)'), { code: 'EIO' });
  d.offer(tx, d.chain(tx, [{ gpa: d.alloc(80), len: 80 }]));
  d.kick(tx);
  backend.failWrites = 'eagain';
  d.offer(tx, d.chain(tx, [{ gpa: d.alloc(80), len: 80 }]));
  d.kick(tx);
  t.is(nic.stats.txDropped, 2);
  t.regex(nic.stats.lastBackendError ?? '', /EIO/);
  t.is(d.takeUsed(tx).length, 2);
  t.is(d.r(REG.status) & STATUS.needsReset, 0);
  backend.failWrites = undefined;
  d.offer(tx, d.chain(tx, [{ gpa: d.alloc(80), len: 80 }]));
  d.kick(tx);
  t.is(backend.sent.length, 1);
});

test('tx: a chain larger than any frame is dropped and counted, not sent', (t) => {
  const { backend, nic, d, tx } = setup();
  d.offer(tx, d.chain(tx, [{ gpa: d.alloc(MAX_PACKET_BYTES + 1), len: MAX_PACKET_BYTES + 1 }]));
  d.kick(tx);
  t.is(nic.stats.txTooBig, 1);
  t.is(backend.sent.length, 0);
});

test('malformed chains put the device in needs-reset with a config interrupt; a reset brings it back', (t) => {
  const cases: Array<[string, (s: ReturnType<typeof setup>) => void, RegExp]> = [
    ['tx shorter than the header', ({ d, tx }) => (d.offer(tx, d.chain(tx, [{ gpa: d.alloc(8), len: 8 }])), d.kick(tx)), /less than the 12-byte virtio-net header/],
    ['rx buffer not writable', ({ d, rx }) => (d.offer(rx, d.chain(rx, [{ gpa: d.alloc(1526), len: 1526 }])), d.kick(rx)), /less than the 12-byte/],
    ['rx buffer outside RAM', ({ d, rx }) => (d.offer(rx, d.chain(rx, [{ gpa: RAM - 8, len: 1526, write: true }])), d.kick(rx)), /outside guest ram/],
    ['tx head outside the table', ({ d, tx }) => (d.offer(tx, 99), d.kick(tx)), /outside a queue of size 16/],
  ];
  for (const [name, breakIt, why] of cases) {
    const s = setup();
    breakIt(s);
    t.not(s.d.r(REG.status) & STATUS.needsReset, 0, name);
    t.is(s.d.r(REG.interruptStatus) & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE, name);
    t.regex(s.d.t.lastError ?? '', why, name);
    t.true(s.backend.paused, `${name}: reads stop while broken`);
    // The driver resets and starts over: the device works again.
    s.d.queues.length = 0;
    s.d.up([16, 16], { features: NO_OFFLOADS });
    const gpa = postRx(s.d, s.d.queues[0]!);
    s.d.kick(s.d.queues[0]!);
    s.backend.arrive(frame(20));
    t.deepEqual(s.d.mem.read(gpa + 12, 20), frame(20), name);
  }
});

test('offloads the guest accepts are passed to the backend at activation', (t) => {
  const { backend } = setup({ vnetHdr: true, features: NO_OFFLOADS | (1n << VIRTIO_NET_F_GUEST_CSUM) | (1n << VIRTIO_NET_F_GUEST_TSO4) });
  t.is(backend.offloads, TUN_F.csum | TUN_F.tso4);
  const none = setup({ vnetHdr: true });
  t.is(none.backend.offloads, 0);
});

test('reset stops reads until the next activation', (t) => {
  const { backend, d, rx } = setup();
  postRx(d, rx);
  d.kick(rx);
  t.false(backend.paused, 'watching with a buffer posted');
  d.w(REG.status, 0);
  t.true(backend.paused);
  backend.arrive(frame(20));
  t.is(backend.inbound.length, 1, 'nothing is taken while reset');
});

test('parseMac and formatMac', (t) => {
  t.deepEqual(parseMac('52:54:00:AB:cd:0f'), Uint8Array.of(0x52, 0x54, 0, 0xab, 0xcd, 0x0f));
  t.is(parseMac('52:54:00:ab:cd'), undefined);
  t.is(parseMac('52-54-00-ab-cd-ef'), undefined);
  t.is(formatMac(MAC), '52:54:00:12:34:56');
});

test('tx and rx chains with more segments than one writev/readv takes go through one bounce buffer', (t) => {
  const INDIRECT = 28n;
  // A chain may be as long as its queue (§2.7.5.3.1), so only a queue of more than 1000 entries can carry one.
  const { backend, d, tx, rx } = setup({ features: NO_OFFLOADS | (1n << INDIRECT), queueSize: 2048 });
  const n = 1100;
  const indirectChain = (q: FakeQueue, write: boolean, fill: (i: number) => number): { table: number; data: number } => {
    const data = d.alloc(2 * n);
    const table = d.alloc(16 * n);
    for (let i = 0; i < n; i++) {
      d.mem.writeU8(data + 2 * i, fill(i));
      d.mem.writeU8(data + 2 * i + 1, fill(i) ^ 0xff);
      const at = table + 16 * i;
      d.mem.writeU64(at, BigInt(data + 2 * i));
      d.mem.writeU32(at + 8, 2);
      d.mem.writeU16(at + 12, (write ? 2 : 0) | (i < n - 1 ? 1 : 0));
      d.mem.writeU16(at + 14, i + 1);
    }
    d.writeDesc(q, q.nextDesc, table, 16 * n, 4, 0);
    d.offer(q, q.nextDesc);
    q.nextDesc++;
    return { table, data };
  };
  const sent = indirectChain(tx, false, (i) => i & 0xff);
  d.kick(tx);
  t.is(d.r(REG.status) & STATUS.needsReset, 0, d.t.lastError);
  t.deepEqual(Buffer.from(backend.sent[0]!), Buffer.from(d.mem.read(sent.data + 12, 2 * n - 12)));
  const recv = indirectChain(rx, true, () => 0);
  d.kick(rx);
  const p = frame(2000, 4);
  backend.arrive(p);
  t.deepEqual(d.takeUsed(rx), [[0, 2012]]);
  t.deepEqual(d.mem.read(recv.data + 12, 2000), p);
});

test('a backend read that fails pauses reads and keeps the buffer; the next rx kick tries again', (t) => {
  const { backend, nic, d, rx } = setup();
  postRx(d, rx);
  d.kick(rx);
  const readv = backend.readv.bind(backend);
  backend.readv = () => {
    throw new Error('read from fd 9 failed: File descriptor in bad state (EBADFD)');
  };
  backend.arrive(frame(30));
  t.true(backend.paused);
  t.regex(nic.stats.lastBackendError ?? '', /EBADFD/);
  t.deepEqual(d.takeUsed(rx), []);
  backend.readv = readv;
  d.kick(rx);
  t.deepEqual(d.takeUsed(rx), [[0, 42]]);
});

test('a receive chain of 1001 aliased 64 KiB descriptors gets no bounce buffer the size of the chain: readv sees at most one frame plus the overflow tail', (t) => {
  const INDIRECT = 28n;
  const { backend, d, rx } = setup({ features: NO_OFFLOADS | (1n << INDIRECT), queueSize: 2048 });
  const n = 1001;
  const seg = 64 * 1024;
  const data = d.alloc(seg);
  const table = d.alloc(16 * n);
  for (let i = 0; i < n; i++) {
    const at = table + 16 * i;
    d.mem.writeU64(at, BigInt(data));
    d.mem.writeU32(at + 8, seg);
    d.mem.writeU16(at + 12, 2 | (i < n - 1 ? 1 : 0));
    d.mem.writeU16(at + 14, i + 1);
  }
  d.writeDesc(rx, 0, table, 16 * n, 4, 0);
  d.offer(rx, 0);
  const offered: number[] = [];
  const readv = backend.readv.bind(backend);
  backend.readv = (buffers) => {
    offered.push(buffers.reduce((sum, b) => sum + b.length, 0));
    return readv(buffers);
  };
  d.kick(rx);
  const p = frame(1500, 3);
  backend.arrive(p);
  t.is(d.r(REG.status) & STATUS.needsReset, 0, d.t.lastError);
  t.true(offered.length > 0);
  // The chain claims 62.6 MiB; the buffers cover one largest frame, then the overflow tail.
  for (const bytes of offered) t.true(bytes <= 2 * MAX_PACKET_BYTES, `readv offered ${bytes} bytes`);
  t.deepEqual(d.takeUsed(rx), [[0, 1500 + VIRTIO_NET_HDR_BYTES]]);
  t.deepEqual(d.mem.read(data + VIRTIO_NET_HDR_BYTES, 1500), p);
});

const MRG = NO_OFFLOADS | (1n << VIRTIO_NET_F_MRG_RXBUF);

/** A TAP packet: its virtio-net header (num_buffers left as the TAP leaves it) and `len` frame bytes. */
function tapPacket(len: number, seed = 1): Uint8Array {
  return Buffer.concat([Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xee, 0xee), frame(len, seed)]);
}

test('mergeable receive buffers are offered with the offloads (backend headers) only', (t) => {
  t.not(new VirtioNet({ backend: new FakeBackend(true), mac: MAC }).features & (1n << VIRTIO_NET_F_MRG_RXBUF), 0n);
  t.is(new VirtioNet({ backend: new FakeBackend(false), mac: MAC }).features & (1n << VIRTIO_NET_F_MRG_RXBUF), 0n);
  t.is(new VirtioNet({ backend: new FakeBackend(true), mac: MAC, offloads: false }).features & (1n << VIRTIO_NET_F_MRG_RXBUF), 0n);
});

test('rx with mergeable buffers: a packet longer than one buffer spreads over the next ones, num_buffers counts them, and all appear in the used ring at once', (t) => {
  const { backend, nic, d, rx } = setup({ vnetHdr: true, features: MRG });
  const bufs = [0, 1, 2, 3].map(() => postRx(d, rx, 1024));
  d.kick(rx);
  const packet = tapPacket(2500, 5);
  backend.arrive(packet);
  // 2512 bytes: 1024 + 1024 + 464.
  t.deepEqual(d.takeUsed(rx), [
    [0, 1024],
    [1, 1024],
    [2, 464],
  ]);
  t.deepEqual([...d.mem.read(bufs[0]!, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0], 'num_buffers 3');
  const got = Buffer.concat([d.mem.read(bufs[0]!, 1024), d.mem.read(bufs[1]!, 1024), d.mem.read(bufs[2]!, 464)]);
  t.deepEqual(got.subarray(12), Buffer.from(frame(2500, 5)));
  t.is(nic.stats.rxPackets, 1);
  t.is(nic.stats.rxMerged, 1);
  t.is(nic.stats.rxBytes, 2500);
  // A short packet takes one buffer, num_buffers 1.
  backend.arrive(tapPacket(100, 6));
  t.deepEqual(d.takeUsed(rx), [[3, 112]]);
  t.is(d.mem.readU16(bufs[3]! + 10), 1);
});

test('rx with mergeable buffers: when the ring runs out mid-packet nothing is used until the guest posts more; no other packet is read meanwhile', (t) => {
  const { backend, d, rx } = setup({ vnetHdr: true, features: MRG });
  const first = postRx(d, rx, 1024);
  d.kick(rx);
  backend.arrive(tapPacket(1500, 7));
  backend.inbound.push(tapPacket(20, 8));
  t.deepEqual(d.takeUsed(rx), [], 'the first buffer is not shown alone: the driver would look for num_buffers of them');
  t.true(backend.paused, 'waiting for buffers, not reading');
  t.is(backend.inbound.length, 1, 'the next packet stays with the backend');
  const second = postRx(d, rx, 1024);
  const third = postRx(d, rx, 1024);
  d.kick(rx);
  t.deepEqual(d.takeUsed(rx), [
    [0, 1024],
    [1, 1512 - 1024],
    [2, 32],
  ]);
  t.is(d.mem.readU16(first + 10), 2);
  t.deepEqual(Buffer.concat([d.mem.read(first + 12, 1012), d.mem.read(second, 488)]), Buffer.from(frame(1500, 7)));
  t.deepEqual(d.mem.read(third + 12, 20), frame(20, 8));
  t.is(d.mem.readU16(third + 10), 1);
});

test('rx with mergeable buffers: a ring too small for a packet gets every buffer back empty and the packet is counted too big', (t) => {
  const { backend, nic, d, rx } = setup({ vnetHdr: true, features: MRG, queueSize: 4 });
  for (let i = 0; i < 4; i++) postRx(d, rx, 16);
  d.kick(rx);
  backend.arrive(tapPacket(1000, 9));
  t.deepEqual(d.takeUsed(rx), [
    [0, 0],
    [1, 0],
    [2, 0],
    [3, 0],
  ]);
  t.is(nic.stats.rxTooBig, 1);
  t.is(nic.stats.rxPackets, 0);
  t.is(d.r(REG.status) & STATUS.needsReset, 0);
  postRx(d, rx, 1024);
  d.kick(rx);
  backend.arrive(tapPacket(50, 10));
  t.deepEqual(d.takeUsed(rx), [[0, 62]]);
});

test('rx with mergeable buffers: a later buffer smaller than the header puts the device in needs-reset', (t) => {
  const { backend, d, rx } = setup({ vnetHdr: true, features: MRG });
  postRx(d, rx, 64);
  postRx(d, rx, 8);
  d.kick(rx);
  backend.arrive(tapPacket(200, 11));
  t.is(d.r(REG.status) & STATUS.needsReset, STATUS.needsReset);
  t.regex(d.t.lastError ?? '', /8 writable bytes, less than the 12-byte/);
});

test('a snapshot while a packet waits for more mergeable buffers gives all its buffers back to the ring', (t) => {
  const { backend, d, rx } = setup({ vnetHdr: true, features: MRG });
  postRx(d, rx, 1024);
  postRx(d, rx, 1024);
  d.kick(rx);
  backend.arrive(tapPacket(3000, 12));
  t.deepEqual(d.takeUsed(rx), [], 'both buffers are taken by the packet, which waits for a third');
  const saved = d.t.snapshot();
  t.deepEqual(saved.queues[0]?.ring, { lastAvail: 0, usedIdx: 0, signalledUsed: 0 }, 'both given back: the restored device takes them again');
});

test('rx with mergeable buffers: the packet is read straight into every buffer the device holds; the ones it did not fill serve the next packets, and a snapshot gives them back', (t) => {
  const { backend, d, rx } = setup({ vnetHdr: true, features: MRG });
  const bufs = Array.from({ length: 8 }, () => postRx(d, rx, 1024));
  d.kick(rx);
  const offered: number[][] = [];
  const readv = backend.readv.bind(backend);
  backend.readv = (buffers) => {
    offered.push(buffers.map((b) => b.length));
    return readv(buffers);
  };
  backend.arrive(tapPacket(2500, 13));
  // Eight guest buffers (views of guest memory, no copy) and the overflow tail.
  t.deepEqual(offered[0], [1024, 1024, 1024, 1024, 1024, 1024, 1024, 1024, MAX_PACKET_BYTES]);
  t.deepEqual(d.takeUsed(rx), [
    [0, 1024],
    [1, 1024],
    [2, 464],
  ]);
  t.deepEqual(Buffer.concat([d.mem.read(bufs[0]! + 12, 1012), d.mem.read(bufs[1]!, 1024), d.mem.read(bufs[2]!, 464)]), Buffer.from(frame(2500, 13)));
  backend.arrive(tapPacket(30, 14));
  t.deepEqual(d.takeUsed(rx), [[3, 42]], 'the next packet goes into the next held buffer');
  t.deepEqual(offered[1], [1024, 1024, 1024, 1024, 1024, MAX_PACKET_BYTES], 'the five buffers still held');
  t.deepEqual(d.t.snapshot().queues[0]?.ring, { lastAvail: 4, usedIdx: 4, signalledUsed: 4 }, 'the four held buffers go back to the ring');
});

test('rx with mergeable buffers: a packet longer than any frame gives its first buffer back empty and is counted; the device goes on', (t) => {
  const { backend, nic, d, rx } = setup({ vnetHdr: true, features: MRG, queueSize: 32 });
  for (let i = 0; i < 20; i++) postRx(d, rx, 4096);
  d.kick(rx);
  backend.arrive(new Uint8Array(MAX_PACKET_BYTES + 100));
  t.deepEqual(d.takeUsed(rx), [[0, 0]]);
  t.is(nic.stats.rxTooBig, 1);
  backend.arrive(tapPacket(5000, 15));
  t.deepEqual(d.takeUsed(rx), [
    [1, 4096],
    [2, 5012 - 4096],
  ]);
  t.is(d.r(REG.status) & STATUS.needsReset, 0);
});
