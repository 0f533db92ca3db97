import test from 'ava';
import * as fs from 'node:fs';
import { BLK_S, BLK_T, VirtioBlk, VIRTIO_BLK_F_RO } from '../../../lib/devices/virtio/blk';
import { REG } from '../../../lib/devices/virtio/mmio';
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

test('a request without a status byte puts the device in needs-reset', (t) => {
  const { d, q } = setup(t);
  d.offer(q, d.chain(q, [{ gpa: d.alloc(16, header(BLK_T.in, 0)), len: 16 }]));
  d.kick(q);
  t.truthy(d.r(REG.status) & 64);
});
