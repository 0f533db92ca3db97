/**
 * native/guest_ram.cc: the placement of guest RAM in this process. Needs no
 * /dev/kvm (guest RAM is an mmap).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { nativeBinding } from '../../../lib/hv/native';

const b = nativeBinding();

test('guest ram starts on a 2 MiB boundary (what transparent huge pages and large nested-page entries need), anonymous or memfd', (t) => {
  for (const opts of [{}, { memfd: true }]) {
    const r = new b.GuestRam(6 * 1024 * 1024 + 4096, opts);
    t.teardown(() => r.release());
    t.is(r.hostAddress % (2n * 1024n * 1024n), 0n, JSON.stringify(opts));
    const u8 = new Uint8Array(r.views()[0]!);
    u8[0] = 1;
    u8[u8.length - 1] = 2;
    t.is(u8[u8.length - 1], 2);
  }
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
