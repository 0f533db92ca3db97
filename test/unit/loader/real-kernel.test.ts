/**
 * Parses a real Debian kernel when another task has cached one in
 * /root/.cache/nodevmm/ (vmlinuz-*). Skipped, with the reason, otherwise.
 */
import test from 'ava';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseBzImage } from '../../../lib/loader/bzimage';
import { detectKernelFormat, loadX86Kernel } from '../../../lib/loader/kernel';
import { GuestMemory } from '../../../lib/memory/guest-memory';

const CACHE = '/root/.cache/nodevmm';
const kernels = existsSync(CACHE) ? readdirSync(CACHE).filter((f) => f.startsWith('vmlinuz-') && !/arm64|aarch64/.test(f)) : [];

if (kernels.length === 0) {
  // A skipped test with the reason in its title, so the report shows why instead of a silent pass.
  test.skip(`real Debian vmlinuz parses as a 64-bit bzImage (skipped: no vmlinuz-* in ${CACHE})`, (t) => {
    t.pass();
  });
} else {
  for (const name of kernels) {
    test(`real kernel ${name} parses as a 64-bit bzImage and loads at 1 MiB`, (t) => {
      const bytes = new Uint8Array(readFileSync(join(CACHE, name)));
      t.is(detectKernelFormat(bytes).format, 'bzimage');
      const bz = parseBzImage(bytes);
      t.true(bz.header.version >= 0x020c);
      t.is(bz.header.xloadflags & 1, 1);
      t.true(bz.header.init_size > bz.payload.length);
      const mem = GuestMemory.anonymous([{ gpa: 0, size: 512 * 1024 * 1024 }]);
      const r = loadX86Kernel(mem, bytes, { protocol: 'auto' });
      t.is(r.entry, 0x100200);
      t.true(r.kernelEnd >= Number(bz.header.pref_address) + bz.header.init_size);
    });
  }
}
