/**
 * Parses the real Debian kernel from the guest artifact cache (built by
 * scripts/guest-artifacts.js, which CI runs before the tests): the bzImage
 * and the vmlinux ELF extracted from it. Skipped, with the reason, when the
 * cache is absent.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { parseBzImage } from '../../../lib/loader/bzimage';
import { isLinuxElf, parseElf64 } from '../../../lib/loader/elf';
import { detectKernelFormat, loadX86Kernel } from '../../../lib/loader/kernel';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { findGuestArtifacts, guestCacheRoot } from '../../../lib/testing/artifacts';

const a = findGuestArtifacts('x86_64');

if (!a) {
  // A skipped test with the reason in its title, so the report shows why instead of a silent pass.
  test.skip(`real Debian kernel tests (skipped: no guest artifacts in ${guestCacheRoot()}; node scripts/guest-artifacts.js)`, (t) => {
    t.pass();
  });
} else {
  test(`Debian ${a.kernelVersion} vmlinuz parses as a 64-bit bzImage and loads at 1 MiB`, (t) => {
    const bytes = new Uint8Array(readFileSync(a.vmlinuz));
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

  test(`Debian ${a.kernelVersion} vmlinux is an x86_64 ELF with PT_LOADs and a PVH entry, and loads both ways`, (t) => {
    const bytes = new Uint8Array(readFileSync(a.vmlinux));
    const elf = parseElf64(bytes);
    t.true(elf.loads.length >= 1);
    t.is(`0x${elf.pvhEntry!.toString(16)}`, a.versions.pvhEntry);
    const mem = GuestMemory.anonymous([{ gpa: 0, size: 512 * 1024 * 1024 }]);
    const pvh = loadX86Kernel(mem, bytes, { protocol: 'pvh' });
    t.is(pvh.protocol, 'pvh');
    t.is(pvh.entry, elf.pvhEntry!);
    // It carries both the PVH note and Linux's own notes: auto keeps the 64-bit entry (docs/linux-direct.md).
    t.true(isLinuxElf(elf.notes));
    const l64 = loadX86Kernel(mem, bytes, { protocol: 'auto' });
    t.is(l64.protocol, 'linux64');
  });
}
