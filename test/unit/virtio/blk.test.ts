import test from 'ava';
import * as fs from 'node:fs';
import { BLK_S, BLK_T, VirtioBlk, VIRTIO_BLK_F_RO, type BlockBackend } from '../../../lib/devices/virtio/blk';
import { INT_USED_BUFFER, REG } from '../../../lib/devices/virtio/mmio';
import { bounceFileBackend } from '../../../lib/devices/virtio/blk-backends';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { FakeDriver, RAM, type FakeQueue } from './driver';
import { tempImage } from '../../temp-image';

function header(type: number, sector: number): Uint8Array {
  const h = new Uint8Array(16);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, type, true);
  dv.setBigUint64(8, BigInt(sector), true);
  return h;
}

/** Submit one request and wait until it is used; returns [status, used length]. */
async function request(d: FakeDriver, q: FakeQueue, blk: VirtioBlk, type: number, sector: number, out?: Uint8Array, inLen = 0): Promise<{ status: number; len: number; data: Uint8Array }> {
  const h = d.alloc(16, header(type, sector));
  const bufs = [{ gpa: h, len: 16 }];
  if (out) bufs.push({ gpa: d.alloc(out.length, out), len: out.length });
  const inGpa = inLen ? d.alloc(inLen) : 0;
  if (inLen) bufs.push({ gpa: inGpa, len: inLen, write: true } as never);
  const st = d.alloc(1, new Uint8Array([0xff]));
  bufs.push({ gpa: st, len: 1, write: true } as never);
  d.offer(q, d.chain(q, bufs));
  d.kick(q);
  await blk.idle();
  await new Promise((r) => setImmediate(r));
  const used = d.takeUsed(q);
  if (used.length !== 1) throw new Error(`expected one used element, got ${used.length}`);
  return { status: d.mem.readU8(st), len: used[0]![1], data: inLen ? d.mem.read(inGpa, inLen) : new Uint8Array() };
}

function setup(t: { teardown(f: () => void): void }, opts: { readonly?: boolean; sectors?: number } = {}) {
  const content = new Uint8Array((opts.sectors ?? 16) * 512);
  for (let i = 0; i < content.length; i++) content[i] = (i * 7 + 3) & 0xff;
  const img = tempImage(t, content);
  const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  const blk = new VirtioBlk({ backend: bounceFileBackend(img.fd, mem), sizeBytes: content.length, readonly: !!opts.readonly, serial: 'disk-serial-1' });
  const d = new FakeDriver(blk, {}, mem);
  d.up([16]);
  return { blk, d, q: d.queues[0]!, img, content };
}

test('config space reports the capacity in sectors and the read-only feature when asked', (t) => {
  const { d } = setup(t, { sectors: 40 });
  t.is(d.t.read(0x100, 4), 40);
  t.is(d.t.read(0x104, 4), 0);
  // A 512-entry queue and seg_max 510: a 1 MiB request of 4 KiB pages (256 + header + status) is one chain.
  d.w(REG.queueSel, 0);
  t.is(d.r(REG.queueNumMax), 512);
  t.is(d.t.read(0x100 + 12, 4), 510);
  const ro = setup(t, { readonly: true });
  ro.d.w(REG.deviceFeaturesSel, 0);
  t.truthy(ro.d.r(REG.deviceFeatures) & (1 << Number(VIRTIO_BLK_F_RO)));
});

test('a read returns the image bytes and the used length counts data plus the status byte', async (t) => {
  const { d, q, blk, content } = setup(t);
  const r = await request(d, q, blk, BLK_T.in, 2, undefined, 1024);
  t.is(r.status, BLK_S.ok);
  t.is(r.len, 1025);
  t.deepEqual([...r.data], [...content.subarray(1024, 2048)]);
});

test('a write lands in the image file and a flush succeeds', async (t) => {
  const { d, q, blk, img } = setup(t);
  const data = new Uint8Array(512).fill(0xab);
  const w = await request(d, q, blk, BLK_T.out, 3, data);
  t.is(w.status, BLK_S.ok);
  const f = await request(d, q, blk, BLK_T.flush, 0);
  t.is(f.status, BLK_S.ok);
  t.true(fs.readFileSync(img.file).subarray(3 * 512, 4 * 512).every((b) => b === 0xab));
  t.is(blk.stats.flushes, 1);
});

test('a read-only disk refuses writes with IOERR and leaves the file untouched', async (t) => {
  const { d, q, blk, img, content } = setup(t, { readonly: true });
  const w = await request(d, q, blk, BLK_T.out, 0, new Uint8Array(512));
  t.is(w.status, BLK_S.ioerr);
  t.deepEqual([...fs.readFileSync(img.file)], [...content]);
});

test('requests past the end of the disk and partial sectors fail with IOERR', async (t) => {
  const { d, q, blk } = setup(t, { sectors: 4 });
  t.is((await request(d, q, blk, BLK_T.in, 3, undefined, 1024)).status, BLK_S.ioerr);
  t.is((await request(d, q, blk, BLK_T.in, 0, undefined, 100)).status, BLK_S.ioerr);
});

test('get-id returns the serial, unknown types are UNSUPP', async (t) => {
  const { d, q, blk } = setup(t);
  const r = await request(d, q, blk, BLK_T.getId, 0, undefined, 20);
  t.is(r.status, BLK_S.ok);
  t.is(Buffer.from(r.data).toString().replace(/\0+$/, ''), 'disk-serial-1');
  t.is((await request(d, q, blk, 99, 0)).status, BLK_S.unsupp);
});

test('write-zeroes zeroes the range in the file', async (t) => {
  const { d, q, blk, img } = setup(t);
  const seg = new Uint8Array(16);
  new DataView(seg.buffer).setBigUint64(0, 4n, true);
  new DataView(seg.buffer).setUint32(8, 2, true);
  t.is((await request(d, q, blk, BLK_T.writeZeroes, 0, seg)).status, BLK_S.ok);
  const file = fs.readFileSync(img.file);
  t.true(file.subarray(4 * 512, 6 * 512).every((b) => b === 0));
  t.false(file.subarray(6 * 512, 7 * 512).every((b) => b === 0));
});

test('several requests in one kick complete in the order they were made available', async (t) => {
  const { d, q, blk } = setup(t);
  const heads: number[] = [];
  for (let s = 0; s < 4; s++) {
    const h = d.alloc(16, header(BLK_T.in, s));
    const head = d.chain(q, [{ gpa: h, len: 16 }, { gpa: d.alloc(512), len: 512, write: true }, { gpa: d.alloc(1), len: 1, write: true }]);
    heads.push(head);
    d.offer(q, head);
  }
  d.kick(q);
  await blk.idle();
  await new Promise((r) => setImmediate(r));
  t.deepEqual(d.takeUsed(q).map(([h]) => h), heads);
});

/**
 * A backend that can also transfer at once (as directFileBackend does for an
 * image in memory): `refuse(position)` makes transferNow answer false (the
 * request must wait), `fail` makes it throw. `calls` counts each path.
 */
function nowBackend(fd: number, mem: GuestMemory, opts: { refuse?: (position: number) => boolean; fail?: boolean } = {}) {
  const calls = { now: 0, async: 0 };
  const bounce = bounceFileBackend(fd, mem);
  const backend: BlockBackend = {
    read: (b, p) => (calls.async++, bounce.read(b, p)),
    write: (b, p) => (calls.async++, bounce.write(b, p)),
    writeZeroes: bounce.writeZeroes,
    datasync: bounce.datasync,
    transferNow: (op, buffers, position) => {
      if (opts.fail) throw new Error('EIO');
      if (opts.refuse?.(position)) return false;
      calls.now++;
      for (const b of buffers) {
        if (op === 'read') {
          const buf = new Uint8Array(b.length);
          fs.readSync(fd, buf, 0, b.length, position);
          mem.write(b.gpa, buf);
        } else fs.writeSync(fd, mem.read(b.gpa, b.length), 0, b.length, position);
        position += b.length;
      }
      return true;
    },
  };
  return { backend, calls };
}

function setupNow(t: { teardown(f: () => void): void }, opts: { refuse?: (position: number) => boolean; fail?: boolean; trigger?: 'edge' } = {}) {
  const content = new Uint8Array(16 * 512).map((_, i) => (i * 7 + 3) & 0xff);
  const img = tempImage(t, content);
  const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  const { backend, calls } = nowBackend(img.fd, mem, opts);
  const blk = new VirtioBlk({ backend, sizeBytes: content.length });
  const d = new FakeDriver(blk, opts.trigger ? { trigger: opts.trigger } : {}, mem);
  d.up([16]);
  return { blk, d, q: d.queues[0]!, img, content, calls };
}

/** Make a read of one sector available; returns its head and where its data and status go. */
function offerRead(d: FakeDriver, q: FakeQueue, sector: number): { head: number; data: number; st: number } {
  const data = d.alloc(512);
  const st = d.alloc(1, new Uint8Array([0xff]));
  const head = d.chain(q, [{ gpa: d.alloc(16, header(BLK_T.in, sector)), len: 16 }, { gpa: data, len: 512, write: true }, { gpa: st, len: 1, write: true }]);
  d.offer(q, head);
  return { head, data, st };
}

test('with a backend that can transfer at once, a read and a write complete before the kick returns', async (t) => {
  const { d, q, img, content, calls } = setupNow(t);
  const r = offerRead(d, q, 3);
  d.kick(q);
  t.deepEqual(d.takeUsed(q), [[r.head, 513]], 'used before any await');
  t.is(d.mem.readU8(r.st), BLK_S.ok);
  t.deepEqual(d.mem.read(r.data, 512), content.subarray(3 * 512, 4 * 512));
  const out = new Uint8Array(512).fill(0x5a);
  const st = d.alloc(1, new Uint8Array([0xff]));
  const head = d.chain(q, [{ gpa: d.alloc(16, header(BLK_T.out, 5)), len: 16 }, { gpa: d.alloc(512, out), len: 512 }, { gpa: st, len: 1, write: true }]);
  d.offer(q, head);
  d.kick(q);
  t.deepEqual(d.takeUsed(q), [[head, 1]]);
  t.is(d.mem.readU8(st), BLK_S.ok);
  t.deepEqual(new Uint8Array(fs.readFileSync(img.file).subarray(5 * 512, 6 * 512)), out);
  t.deepEqual(calls, { now: 2, async: 0 });
});

test('requests of one kick that complete at once raise one interrupt for the kick, not one each', (t) => {
  // Interrupts on every used buffer (no EVENT_IDX, no NO_INTERRUPT flag), one
  // edge per raise: what the guest would take without the batching.
  const { d, q, content } = setupNow(t, { trigger: 'edge' });
  const reads = [1, 4, 9, 2].map((sector) => ({ sector, ...offerRead(d, q, sector) }));
  d.kick(q);
  t.deepEqual(
    d.takeUsed(q),
    reads.map((r) => [r.head, 513]),
  );
  for (const r of reads) t.deepEqual(d.mem.read(r.data, 512), content.subarray(r.sector * 512, (r.sector + 1) * 512));
  t.is(d.irq.pulses, 1);
  // The next kick's request gets its own interrupt, once the driver ACKed the first.
  d.w(REG.interruptAck, INT_USED_BUFFER);
  offerRead(d, q, 5);
  d.kick(q);
  t.is(d.takeUsed(q).length, 1);
  t.is(d.irq.pulses, 2);
});

test('when the backend cannot transfer at once, the request runs the asynchronous way with the same result', async (t) => {
  const { d, q, blk, content, calls } = setupNow(t, { refuse: () => true });
  const r = offerRead(d, q, 2);
  d.kick(q);
  t.deepEqual(d.takeUsed(q), [], 'not done yet');
  await blk.idle();
  await new Promise((res) => setImmediate(res));
  t.deepEqual(d.takeUsed(q), [[r.head, 513]]);
  t.deepEqual(d.mem.read(r.data, 512), content.subarray(2 * 512, 3 * 512));
  t.deepEqual(calls, { now: 0, async: 1 });
});

test('an error of the immediate transfer completes the request with IOERR', (t) => {
  const { d, q, blk } = setupNow(t, { fail: true });
  const r = offerRead(d, q, 0);
  d.kick(q);
  t.deepEqual(d.takeUsed(q), [[r.head, 1]]);
  t.is(d.mem.readU8(r.st), BLK_S.ioerr);
  t.is(blk.stats.errors, 1);
});

test('a request that could complete at once still waits for an earlier one in flight, so completions stay in order', async (t) => {
  // Sector 0 must wait (async); sector 1 could complete at once, but must not overtake it.
  const { d, q, blk, calls } = setupNow(t, { refuse: (position) => position === 0 });
  const first = offerRead(d, q, 0);
  const second = offerRead(d, q, 1);
  d.kick(q);
  t.deepEqual(d.takeUsed(q), []);
  await blk.idle();
  await new Promise((res) => setImmediate(res));
  t.deepEqual(d.takeUsed(q).map(([h]) => h), [first.head, second.head]);
  t.deepEqual(calls, { now: 0, async: 2 });
});

test('a request without a status byte puts the device in needs-reset', (t) => {
  const { d, q } = setup(t);
  d.offer(q, d.chain(q, [{ gpa: d.alloc(16, header(BLK_T.in, 0)), len: 16 }]));
  d.kick(q);
  t.truthy(d.r(REG.status) & 64);
});

test('the bounce backend copies a guest buffer of many MiB through bounces of at most 1 MiB, both ways', async (t) => {
  const size = 8 << 20;
  const content = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) content[i] = (i >> 12) & 0xff;
  const img = tempImage(t, content);
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 16 << 20 }]);
  // Records the largest copy the backend asks of guest memory: each is one host bounce buffer.
  let largest = 0;
  const spy = {
    ...mem,
    read: (gpa: number, length: number) => ((largest = Math.max(largest, length)), mem.read(gpa, length)),
    write: (gpa: number, data: Uint8Array) => ((largest = Math.max(largest, data.length)), mem.write(gpa, data)),
  } as unknown as GuestMemory;
  const backend = bounceFileBackend(img.fd, spy);
  // One 8 MiB guest buffer named twice, as an aliasing chain would.
  await backend.read([{ gpa: 0x10_0000, length: size }, { gpa: 0x10_0000, length: 4096 }], 0);
  t.deepEqual(mem.read(0x10_0000 + 4096 * 5, 1), Uint8Array.of(5));
  t.true(largest <= 1 << 20, `largest bounce ${largest} bytes`);
  largest = 0;
  mem.fill(0x10_0000, size, 0x5a);
  await backend.write([{ gpa: 0x10_0000, length: size }], 0);
  t.true(largest <= 1 << 20, `largest bounce ${largest} bytes`);
  t.is(fs.readFileSync(img.file)[size - 1], 0x5a);
});
