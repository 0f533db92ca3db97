/**
 * native/guest_ram.cc: the placement of guest RAM in this process. Needs no
 * /dev/kvm (guest RAM is an mmap).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { nativeBinding } from '../../../lib/hv/native';
import type { RamAllocation } from '../../../lib/hv/backend';
import { hostRamFor } from '../../../lib/hv/ram-slots';
import { NodevmmError } from '../../../lib/errors';
import { anonymousThpAvailable, hostMappingAt, pagesInMemoryOrSwap } from '../../../lib/testing/host-mapping';

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

test('shared guest ram is a memfd that another mapping of the fd sees byte for byte (what a vhost-user backend maps)', (t) => {
  const r = new b.GuestRam(2 * 1024 * 1024, { name: 'shared-test', shared: true });
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
  const r = new b.GuestRam(4 * 1024 * 1024, { shared: true });
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

const MiB = 1024 * 1024;

test('guest ram is private anonymous memory unless asked to be shared: no fd, no file behind the mapping, eligible for transparent huge pages', (t) => {
  const r = new b.GuestRam(4 * MiB, { name: 'private-test' });
  t.teardown(() => r.release());
  t.is(r.fd, -1);
  r.advise('hugepage');
  const m = hostMappingAt(r.hostAddress);
  t.truthy(m, 'the ram is a mapping of its own');
  t.is(m!.perms, 'rw-p');
  t.is(m!.path, '');
  // A memfd is shmem, which THP's `shmem_enabled` (usually never) governs instead.
  if (anonymousThpAvailable() && 'THPeligible' in m!.fields) t.is(m!.fields.THPeligible, 1);
  const shared = new b.GuestRam(4 * MiB, { name: 'private-test-shared', shared: true });
  t.teardown(() => shared.release());
  t.regex(hostMappingAt(shared.hostAddress)!.path, /^\/memfd:private-test-shared/);
  t.is(hostMappingAt(shared.hostAddress)!.perms, 'rw-s');
  // Neither is copied into a forked child (Node forks for every helper it spawns) nor dumped.
  for (const ram of [m!, hostMappingAt(shared.hostAddress)!]) {
    t.true(ram.vmFlags.includes('dc'), `VmFlags ${ram.vmFlags.join(' ')} without dc (MADV_DONTFORK)`);
    t.true(ram.vmFlags.includes('dd'), `VmFlags ${ram.vmFlags.join(' ')} without dd (MADV_DONTDUMP)`);
  }
});

test("advise('dontneed') frees a range of anonymous ram and leaves zeros", (t) => {
  const r = new b.GuestRam(4 * MiB);
  t.teardown(() => r.release());
  const u8 = new Uint8Array(r.view(0, 4 * MiB));
  u8.fill(7, 0, 2 * MiB);
  u8[3 * MiB] = 5;
  t.is(pagesInMemoryOrSwap(r.hostAddress, 512), 512);
  r.advise('dontneed', 0, 2 * MiB);
  t.is(pagesInMemoryOrSwap(r.hostAddress, 512), 0, 'the pages are gone');
  t.is(u8[0], 0);
  t.is(u8[2 * MiB - 1], 0);
  t.is(u8[3 * MiB], 5, 'the rest is kept');
});

test('writeTo saves anonymous ram byte for byte into a sparse file without touching the pages the guest never used', (t) => {
  const r = new b.GuestRam(8 * MiB);
  t.teardown(() => r.release());
  const u8 = new Uint8Array(r.view(0, 8 * MiB));
  u8.set([1, 2, 3], 4096);
  u8[2 * MiB + 17] = 9;
  u8.fill(0, 3 * MiB, 3 * MiB + 8192); // touched, but zeros: left as a hole
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-ram-')), 'ram');
  t.teardown(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }));
  const fd = fs.openSync(file, 'w');
  try {
    t.is(r.writeTo(fd), 2 * 4096);
  } finally {
    fs.closeSync(fd);
  }
  // [4 MiB, 8 MiB) was never touched: reading it to look for data would have mapped pages there.
  t.is(pagesInMemoryOrSwap(r.hostAddress + BigInt(4 * MiB), 1024), 0);
  t.true(fs.statSync(file).blocks * 512 <= 64 * 1024, `${fs.statSync(file).blocks * 512} bytes allocated`);
  t.true(fs.readFileSync(file).equals(Buffer.from(u8)), 'the file holds the ram byte for byte');
});

test('guest ram cannot be both shared and a private file mapping', (t) => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-ram-')), 'ram');
  t.teardown(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }));
  fs.writeFileSync(file, Buffer.alloc(4096));
  const fd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(fd));
  t.throws(() => new b.GuestRam(4096, { privateFile: fd, shared: true }), { message: /either shared .* or a private file mapping/ });
});

test('addRam options that ask for both a memfd and a snapshot file are refused naming the region, before any memory is allocated', (t) => {
  const asked: RamAllocation[] = [];
  const backend = { allocateRam: (size: number, o: RamAllocation) => (asked.push(o), new b.GuestRam(size, o)) };
  const e = t.throws(() => hostRamFor(backend, { gpa: 0, size: 4096, shared: true, privateFile: 3 }, 'ram-low'), { instanceOf: NodevmmError });
  t.is(e?.code, 'ERR_INVALID_ARG');
  t.is(e?.message, "guest ram ram-low cannot be both shared (a memfd) and a snapshot's file mapped private (privateFile)");
  t.deepEqual(asked, []);
  // Each kind alone is passed on as asked: shared, or plain (anonymous).
  for (const [opts, expected] of [[{ shared: true }, { name: 'ram-low', shared: true }], [{}, { name: 'ram-low' }]] as const) {
    hostRamFor(backend, { gpa: 0, size: 4096, ...opts }, 'ram-low').release();
    t.deepEqual(asked.pop(), expected);
  }
});
