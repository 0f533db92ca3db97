import test from 'ava';
import { REG, STATUS, type VirtioDevice } from '../../../lib/devices/virtio/mmio';
import { VirtioRng } from '../../../lib/devices/virtio/rng';
import { VirtioConsole } from '../../../lib/devices/virtio/console';
import { VirtioNet, type NetBackend } from '../../../lib/devices/virtio/net';
import { VirtioBlk, type BlockBackend } from '../../../lib/devices/virtio/blk';
import { FakeDriver, type Buf, type FakeQueue } from './driver';

/**
 * A driver on another vCPU that keeps one more chain available whenever the
 * device looks at avail.idx, `limit` times: without a bound, one kick would
 * take all of them in one pass of the event loop (forever, for a guest that
 * never stops).
 */
function endlessGuest(d: FakeDriver, q: FakeQueue, head: number, limit: number): { bumps: () => number } {
  const read = d.mem.readU16.bind(d.mem);
  let bumps = 0;
  d.mem.readU16 = (gpa: number) => {
    // Like a real driver, never more outstanding than the ring holds.
    if (gpa === q.avail + 2 && bumps < limit && ((q.availIdx - read(q.used + 2)) & 0xffff) < q.size) {
      bumps++;
      d.offer(q, head);
    }
    return read(gpa);
  };
  return { bumps: () => bumps };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

interface Case {
  name: string;
  make(): { device: VirtioDevice; sizes: number[]; queue: number; bufs: (d: FakeDriver) => Buf[]; done: () => number };
}

const cases: Case[] = [
  {
    name: 'virtio-rng',
    make() {
      const device = new VirtioRng();
      return { device, sizes: [8], queue: 0, bufs: (d) => [{ gpa: d.alloc(8), len: 8, write: true }], done: () => device.bytesServed / 8 };
    },
  },
  {
    name: 'virtio-console transmit',
    make() {
      let n = 0;
      const device = new VirtioConsole({ sink: { write: () => void n++ } });
      return { device, sizes: [8, 8], queue: 1, bufs: (d) => [{ gpa: d.alloc(4), len: 4 }], done: () => n };
    },
  },
  {
    name: 'virtio-net transmit',
    make() {
      let n = 0;
      const backend: NetBackend = { vnetHdr: false, readv: () => -1, writev: (b) => (n++, b.reduce((s, x) => s + x.length, 0)), watch: () => undefined, pauseReads: () => undefined, resumeReads: () => undefined, setOffloads: () => undefined, close: () => undefined };
      const device = new VirtioNet({ backend, mac: new Uint8Array(6), queueSize: 8 });
      return { device, sizes: [8, 8], queue: 1, bufs: (d) => [{ gpa: d.alloc(72), len: 72 }], done: () => n };
    },
  },
  {
    name: 'virtio-blk',
    make() {
      let n = 0;
      // Completes at once (an image in memory): each request is used before the next is taken, so the ring never fills.
      const backend: BlockBackend = { read: async () => void n++, write: async () => undefined, writeZeroes: async () => undefined, datasync: async () => undefined, transferNow: () => (n++, true) };
      const device = new VirtioBlk({ backend, sizeBytes: 1 << 20, queueSize: 8 });
      return {
        device,
        sizes: [8],
        queue: 0,
        bufs: (d) => {
          const h = d.alloc(16);
          d.mem.writeU32(h, 0); // read sector 0
          return [{ gpa: h, len: 16 }, { gpa: d.alloc(512), len: 512, write: true }, { gpa: d.alloc(1), len: 1, write: true }];
        },
        // Started reads: the backend is called when a request is taken.
        done: () => n,
      };
    },
  },
];

for (const c of cases) {
  test(`${c.name}: one kick takes at most a queue's worth of chains, and the rest on later turns of the event loop`, async (t) => {
    const { device, sizes, queue, bufs, done } = c.make();
    const d = new FakeDriver(device);
    d.up(sizes);
    const q = d.queues[queue]!;
    const head = d.chain(q, bufs(d));
    d.offer(q, head);
    const guest = endlessGuest(d, q, head, 100);
    d.kick(q);
    await Promise.resolve(); // blk starts requests in a microtask
    t.true(done() <= q.size, `one kick took ${done()} chains from a queue of ${q.size}`);
    // The guest goes on kicking now and then (blk completes asynchronously, so its ring drains between kicks).
    for (let i = 0; i < 100 && done() < 101; i++) {
      await turn();
      if (i % 4 === 3) d.kick(q);
    }
    t.is(guest.bumps(), 100);
    t.is(done(), 101);
    t.is(d.r(REG.status) & STATUS.needsReset, 0, d.t.lastError);
  });
}
