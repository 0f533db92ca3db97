/**
 * native/guest_ram.cc: the placement of guest RAM in this process. Needs no
 * /dev/kvm (guest RAM is an mmap).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { nativeBinding } from '../../../lib/hv/native';

const b = nativeBinding();

test('guest ram starts on a 2 MiB boundary (what transparent huge pages and large nested-page entries need)', (t) => {
  const r0 = new b.GuestRam(6 * 1024 * 1024 + 4096);
  t.teardown(() => r0.release());
  t.is(r0.hostAddress % (2n * 1024n * 1024n), 0n);
  const u8 = new Uint8Array(r0.views()[0]!);
  u8[0] = 1;
  u8[u8.length - 1] = 2;
  t.is(u8[u8.length - 1], 2);
  // The hugepage advice is accepted on both kinds (or refused with an error, never a crash).
  const r = new b.GuestRam(4 * 1024 * 1024);
  t.teardown(() => r.release());
  t.notThrows(() => {
    try {
      r.advise('hugepage');
    } catch (e) {
      if (!(e as { code?: string }).code) throw e;
    }
  });
});

test('guest ram is not counted as memory a GC could free: making and releasing 4 GiB of it starts no mark-compact', (t) => {
  // V8 starts a mark-compact for every 64 MiB of external buffers made since
  // the last one; guest RAM is freed by release(), so each of its views takes
  // its length back out of that count (native/guest_ram.cc). Before, every
  // 64 MiB VM of a churning process paid a mark-compact. The child prints
  // each start of marking (`--trace-incremental-marking`) and why.
  const script = `const b = require(${JSON.stringify(require.resolve('../../../lib/hv/native'))}).nativeBinding();
const MiB = 1024 * 1024;
for (let i = 0; i < 8; i++) { const r = new b.GuestRam(256 * MiB); r.views(); r.release(); }
const kept = [];
for (let i = 0; i < 8; i++) { const r = new b.GuestRam(256 * MiB); kept.push({ r, views: r.views() }); }
const lengths = kept[0].views.map((v) => v.byteLength);
for (const k of kept) k.r.release();
console.log('DONE', lengths.join(','));`;
  const out = execFileSync(process.execPath, ['--trace-incremental-marking', '-e', script], { encoding: 'utf8' });
  t.regex(out, /^DONE (33554432,){7}33554432$/m, 'each 256 MiB ram comes as eight 32 MiB views');
  t.deepEqual(out.split('\n').filter((l) => l.includes('external memory pressure')), []);
});

test('guest ram is a memfd that another mapping of the fd sees byte for byte (what a vhost-user backend maps)', (t) => {
  const r = new b.GuestRam(2 * 1024 * 1024, { name: 'shared-test' });
  t.teardown(() => r.release());
  t.true(r.fd >= 0);
  t.regex(fs.readlinkSync(`/proc/self/fd/${r.fd}`), /^\/memfd:shared-test/);
  const u8 = new Uint8Array(r.views()[0]!);
  u8.set([1, 2, 3], 4096);
  // Read the same pages through the fd, as another process mapping it would.
  const back = Buffer.alloc(3);
  fs.readSync(r.fd, back, 0, 3, 4096);
  t.deepEqual([...back], [1, 2, 3]);
  fs.writeSync(r.fd, Buffer.from([9]), 0, 1, 8192);
  t.is(u8[8192], 9);
  r.release();
  t.is(r.fd, -1);
});

test("advise('dontneed') frees a range of the memfd and leaves zeros (MADV_DONTNEED alone would keep the pages in the file)", (t) => {
  const r = new b.GuestRam(4 * 1024 * 1024);
  t.teardown(() => r.release());
  const u8 = new Uint8Array(r.views()[0]!);
  u8.fill(7, 0, 2 * 1024 * 1024);
  r.advise('dontneed', 0, 2 * 1024 * 1024);
  t.is(u8[0], 0);
  t.is(u8[2 * 1024 * 1024 - 1], 0);
  // The file agrees: the pages are gone from it, not only from this mapping.
  const back = Buffer.alloc(1);
  fs.readSync(r.fd, back, 0, 1, 4096);
  t.is(back[0], 0);
});
