/**
 * native/block_io.cc: preadv/pwritev between a file and guest pages on the
 * thread pool, the block device's data path. Needs no /dev/kvm: guest RAM is
 * an mmap, checked here through its own views.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { nativeBinding, type NativeGuestRam } from '../../../lib/hv/native';
import { sliceBuffers } from '../../../lib/devices/virtio/blk';
import { imageStorage } from '../../../lib/devices/virtio/blk-backends';
import { tempImage } from '../../temp-image';

const b = nativeBinding();

function ram(t: { teardown(f: () => void): void }, size: number): { ram: NativeGuestRam; u8: Uint8Array } {
  const r = new b.GuestRam(size);
  t.teardown(() => r.release());
  return { ram: r, u8: new Uint8Array(r.views()[0]!) };
}

function io(op: 0 | 1 | 2, fd: number, position: number, rams: NativeGuestRam[], segs: number[]): Promise<number> {
  return new Promise((resolve, reject) => b.blockIo(op, fd, position, rams, new Float64Array(segs), (e, n) => (e ? reject(e) : resolve(n))));
}

test('a read scatters file bytes over segments in two rams, in order, and zero-fills past the end of the file', async (t) => {
  const file = new Uint8Array(10_000).map((_, i) => (i * 13 + 1) & 0xff);
  const { fd } = tempImage(t, file);
  const a = ram(t, 65536);
  const c = ram(t, 65536);
  a.u8.fill(0xee);
  c.u8.fill(0xee);
  // 4096 bytes at a+100, 3000 at c+0, 5000 at a+20000: the last 2096 lie past the file's end.
  t.is(await io(0, fd, 0, [a.ram, c.ram], [0, 100, 4096, 1, 0, 3000, 0, 20000, 5000]), 10_000);
  t.deepEqual(a.u8.subarray(100, 4196), file.subarray(0, 4096));
  t.deepEqual(c.u8.subarray(0, 3000), file.subarray(4096, 7096));
  t.deepEqual(a.u8.subarray(20000, 20000 + 2904), file.subarray(7096));
  t.true(a.u8.subarray(20000 + 2904, 25000).every((x) => x === 0), 'past the end of the file reads as zeros');
  t.is(a.u8[99], 0xee, 'nothing outside the segments was touched');
  t.is(a.u8[25000], 0xee);
});

test('a write gathers segments into the file at the position, and fdatasync succeeds', async (t) => {
  const { fd } = tempImage(t, new Uint8Array(8192));
  const a = ram(t, 65536);
  a.u8.set([1, 2, 3, 4], 4096);
  a.u8.set([5, 6], 0);
  t.is(await io(1, fd, 512, [a.ram], [0, 4096, 4, 0, 0, 2]), 6);
  t.is(await io(2, fd, 0, [], []), 0);
  const back = fs.readFileSync(`/proc/self/fd/${fd}`);
  t.deepEqual([...back.subarray(510, 520)], [0, 0, 1, 2, 3, 4, 5, 6, 0, 0]);
});

test('errors: a bad fd reaches the callback with its errno; segments outside the ram or a released ram throw at once', async (t) => {
  const a = ram(t, 4096);
  await t.throwsAsync(io(0, 1 << 20, 0, [a.ram], [0, 0, 512]), { code: 'EBADF', message: /disk preadv failed/ });
  t.throws(() => b.blockIo(0, 0, 0, [a.ram], new Float64Array([0, 4000, 512]), () => {}), { message: /outside its guest ram/ });
  t.throws(() => b.blockIo(0, 0, 0, [a.ram], new Float64Array([1, 0, 512]), () => {}), { message: /ram outside rams/ });
  t.throws(() => b.blockIo(0, 0, 0, [a.ram], new Float64Array([0, 0]), () => {}), { message: /triples/ });
  t.throws(() => b.blockIo(0, 0, 0, [{} as NativeGuestRam], new Float64Array([0, 0, 1]), () => {}));
  const gone = new b.GuestRam(4096);
  gone.release();
  t.throws(() => b.blockIo(0, 0, 0, [gone], new Float64Array([0, 0, 512]), () => {}), { message: /released/ });
});

test('releasing the ram while a read is in flight keeps the process safe: the read finishes first or is cancelled before it starts', async (t) => {
  const { fd } = tempImage(t, new Uint8Array(1 << 20).fill(7));
  const r = new b.GuestRam(1 << 20);
  const view = new Uint8Array(r.views()[0]!);
  const done: Promise<number | string> = io(0, fd, 0, [r], [0, 0, 1 << 20]).catch((e: NodeJS.ErrnoException) => e.code ?? 'error');
  r.release(); // waits for a transfer in progress; one still queued is cancelled
  t.is(view.length, 0, 'the view was detached');
  t.true([1 << 20, 'ECANCELED'].includes(await done), String(await done));
  // The pool thread and the pin are gone; a new ram works as before.
  const again = ram(t, 4096);
  t.is(await io(0, fd, 0, [again.ram], [0, 0, 4096]), 4096);
  t.is(again.u8[4095], 7);
});

test('releasing the ram while disk writes are queued or running never writes bytes nobody wrote: each sector holds its old or its new bytes', async (t) => {
  // The virtio-blk shape: a 16 MiB write of 0xab as 4 KiB guest pages, over an image of 0x11,
  // and the VM destroyed (its RAM released) right after the request was queued. Several at
  // once, so some wait in the pool's queue while others run.
  const MiB = 1 << 20;
  const size = 16 * MiB;
  const requests = 6;
  const { fd, file } = tempImage(t, new Uint8Array(size * requests).fill(0x11));
  const outcomes: Array<number | string> = [];
  for (let round = 0; round < 3; round++) {
    const r = new b.GuestRam(size);
    new Uint8Array(r.views()[0]!).fill(0xab);
    const segs: number[] = [];
    for (let off = 0; off < size; off += 4096) segs.push(0, off, 4096);
    const pending: Array<Promise<number | string>> = [];
    for (let i = 0; i < requests; i++) pending.push(io(1, fd, i * size, [r], segs).catch((e: NodeJS.ErrnoException) => e.code ?? e.message ?? 'error'));
    r.release();
    outcomes.push(...(await Promise.all(pending)));
  }
  for (const o of outcomes) t.true(o === size || o === 'ECANCELED', `a write ended with ${o}`);
  const image = fs.readFileSync(file);
  const counts = { old: 0, new: 0, other: 0 };
  for (let s = 0; s < image.length; s += 512) {
    const sector = image.subarray(s, s + 512);
    if (sector.every((x) => x === 0x11)) counts.old++;
    else if (sector.every((x) => x === 0xab)) counts.new++;
    else counts.other++;
  }
  t.log(`sectors: ${counts.old} old, ${counts.new} new, ${counts.other} neither; writes: ${outcomes.join(' ')}`);
  t.is(counts.other, 0, 'a sector holds bytes nobody wrote (zeros from released pages)');
});

test('sliceBuffers picks the guest buffers behind a byte range of a descriptor chain', (t) => {
  const segs = [
    { gpa: 0x1000, length: 16 },
    { gpa: 0x2000, length: 4096 },
    { gpa: 0x5000, length: 1 },
  ];
  t.deepEqual(sliceBuffers(segs, 16, 4096), [{ gpa: 0x2000, length: 4096 }]);
  t.deepEqual(sliceBuffers(segs, 8, 16), [
    { gpa: 0x1008, length: 8 },
    { gpa: 0x2000, length: 8 },
  ]);
  t.deepEqual(sliceBuffers(segs, 0, 4096 + 16), [
    { gpa: 0x1000, length: 16 },
    { gpa: 0x2000, length: 4096 },
  ]);
  t.deepEqual(sliceBuffers(segs, 4112, 0), []);
  // On descriptor boundaries the descriptors themselves come back (no copy per page).
  t.is(sliceBuffers(segs, 16, 4096)[0], segs[1]);
  t.is(sliceBuffers(segs, 0, 4113), segs);
  // A zero-length descriptor inside, and a range ending inside the last one.
  const withEmpty = [{ gpa: 0x1000, length: 16 }, { gpa: 0x9000, length: 0 }, { gpa: 0x2000, length: 4096 }];
  t.deepEqual(sliceBuffers(withEmpty, 16, 4096), [{ gpa: 0x2000, length: 4096 }]);
  t.deepEqual(sliceBuffers(withEmpty, 16, 100), [{ gpa: 0x2000, length: 100 }]);
  t.deepEqual(sliceBuffers(withEmpty, 20, 100), [{ gpa: 0x2004, length: 100 }]);
});

test('blockIoNow does the same transfer on the calling thread: scatter, zero-fill past the end, gather, errors thrown', (t) => {
  const file = new Uint8Array(6000).map((_, i) => (i * 5 + 3) & 0xff);
  const { fd } = tempImage(t, file);
  const a = ram(t, 65536);
  a.u8.fill(0xee);
  // 4096 at a+0 and 4096 at a+8192: the last 2192 lie past the end of the file.
  t.is(b.blockIoNow(0, fd, 0, [a.ram], new Float64Array([0, 0, 4096, 0, 8192, 4096]), false), 6000);
  t.deepEqual(a.u8.subarray(0, 4096), file.subarray(0, 4096));
  t.deepEqual(a.u8.subarray(8192, 8192 + 1904), file.subarray(4096));
  t.true(a.u8.subarray(8192 + 1904, 12288).every((x) => x === 0));
  t.is(a.u8[4096], 0xee);
  a.u8.set([9, 8, 7], 100);
  t.is(b.blockIoNow(1, fd, 10, [a.ram], new Float64Array([0, 100, 3]), false), 3);
  t.deepEqual([...fs.readFileSync(`/proc/self/fd/${fd}`).subarray(9, 14)], [file[9], 9, 8, 7, file[13]]);
  t.throws(() => b.blockIoNow(0, 1 << 20, 0, [a.ram], new Float64Array([0, 0, 512]), false), { code: 'EBADF', message: /disk preadv failed/ });
  t.throws(() => b.blockIoNow(2 as 0, fd, 0, [], new Float64Array(0), false), { message: /blockIoNow/ }, 'fdatasync is not offered inline');
  t.throws(() => b.blockIoNow(0, fd, 0, [a.ram], new Float64Array([0, 65000, 1000]), false), { message: /outside its guest ram/ });
});

test('blockIoNow with nowait reads a cached file at once, or says -2 where the filesystem has no RWF_NOWAIT', (t) => {
  const file = new Uint8Array(8192).map((_, i) => (i * 3) & 0xff);
  // Written just now: its pages are in the page cache.
  for (const dir of [undefined, '/dev/shm']) {
    if (dir && !fs.existsSync(dir)) continue;
    const { fd } = tempImage(t, file, dir);
    const a = ram(t, 8192);
    const n = b.blockIoNow(0, fd, 0, [a.ram], new Float64Array([0, 0, 8192]), true);
    t.true(n === 8192 || n === -2, `${dir ?? 'tmpdir'}: ${n}`);
    if (n === 8192) t.deepEqual(a.u8, file);
  }
});

test('imageStorage: tmpfs is memory, a regular disk folder and a missing path are disk', (t) => {
  if (fs.existsSync('/dev/shm')) t.is(imageStorage('/dev/shm'), 'memory');
  t.is(imageStorage('/nonexistent/nodevmm/image'), 'disk');
  const statfsType = fs.statfsSync(__dirname).type;
  t.is(imageStorage(__dirname), statfsType === 0x01021994 || statfsType === 0x858458f6 ? 'memory' : 'disk');
});
