/**
 * native/guest_ram.cc: the placement of guest RAM in this process. Needs no
 * /dev/kvm (guest RAM is an mmap).
 */
import test from 'ava';
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
