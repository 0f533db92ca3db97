import test from 'ava';
import { NodevmmError } from '../../../lib/errors';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { ramRangesFor } from '../../../lib/arch/x86_64/layout';
import { loadLinuxDirectX86 } from '../../../lib/loader/linux-direct';
import { makeBzImage, makeVmlinux, pattern } from './fixtures';

const MiB = 1024 * 1024;

function memFor(bytes: number): GuestMemory {
  return GuestMemory.anonymous(ramRangesFor(bytes));
}

test('bzImage boot writes GDT, page tables, zero page, cmdline and initrd where the BSP state points', (t) => {
  const mem = memFor(256 * MiB);
  const initrd = pattern(3 * MiB + 5, 7);
  const r = loadLinuxDirectX86(mem, {
    kernel: makeBzImage({ prefAddress: 0x1000000n, initSize: 0x2100000 }),
    initrd,
    cmdline: 'console=ttyS0 panic=-1',
    ramRanges: ramRangesFor(256 * MiB),
    acpi: { rsdpGpa: 0xe0000 },
    acpiRange: { gpa: 0x19000, size: 0x1800 },
    physAddrBits: 46,
  });
  t.is(r.protocol, 'linux64');
  t.is(r.entry, 0x100200);
  t.is(r.bsp.regs?.rip, 0x100200n);
  t.is(r.bsp.regs?.rsi, 0x2000n);
  t.is(mem.readU64(0x1008), 0x00a09b000000ffffn); // GDT[1] at 0x1000
  t.is(mem.readU64(0x4000), 0x5023n); // PML4[0]
  t.is(mem.readU64(0x9ff8), 0xffe000e3n); // last PD entry
  // Kernel end is 16 MiB + 33 MiB = 0x3100000; the initrd goes at the next 2 MiB boundary.
  t.is(r.initrdGpa, 0x3200000);
  t.deepEqual(mem.read(0x3200000, initrd.length), initrd);
  t.is(mem.readU32(0x2000 + 0x218), 0x3200000); // ramdisk_image
  t.is(mem.readU32(0x2000 + 0x21c), initrd.length); // ramdisk_size
  t.is(mem.readU32(0x2000 + 0x228), 0x3000); // cmd_line_ptr
  t.is(new TextDecoder().decode(mem.read(0x3000, 23)), 'console=ttyS0 panic=-1\0');
  t.is(mem.readU64(0x2000 + 0x070), 0xe0000n); // acpi_rsdp_addr
  t.is(mem.readU8(0x2000 + 0x1e8), r.e820.length); // e820_entries
  t.is(mem.readU32(0x2000 + 0x2d0 + 20 + 16), 3); // e820_table[1] is the ACPI range
  t.is(mem.readU16(0x2000 + 0x206), 0x020f); // setup header copied from the image
  t.deepEqual(r.apMsrs, r.bsp.msrs);
});

test('the layout report lists non-overlapping items in address order', (t) => {
  const r = loadLinuxDirectX86(memFor(128 * MiB), { kernel: makeBzImage(), initrd: pattern(4096, 1), cmdline: 'x', ramRanges: ramRangesFor(128 * MiB), acpiRange: { gpa: 0x19000, size: 0x1000 } });
  const items = r.layoutReport;
  for (let i = 1; i < items.length; i++) t.true(items[i]!.gpa >= items[i - 1]!.gpa + items[i - 1]!.size, `${items[i]!.name} overlaps ${items[i - 1]!.name}`);
  t.truthy(items.find((i) => i.name === 'mmio gap' && i.gpa === 0xf8000000));
});

test('a vmlinux boots through linux64 with a synthesised zero page header', (t) => {
  const mem = memFor(64 * MiB);
  const r = loadLinuxDirectX86(mem, { kernel: makeVmlinux({ linuxNote: 'Linux' }), cmdline: 'quiet', ramRanges: ramRangesFor(64 * MiB) });
  t.is(r.protocol, 'linux64');
  t.is(r.entry, 0x1000000);
  t.is(mem.readU16(0x2000 + 0x1fe), 0xaa55);
  t.is(mem.readU32(0x2000 + 0x230), 0x100000);
  t.is(r.initrdGpa, undefined);
});

test('pvh boot writes start_info and points EBX at it; no zero page is written', (t) => {
  const mem = memFor(64 * MiB);
  const r = loadLinuxDirectX86(mem, { kernel: makeVmlinux(), initrd: pattern(100, 3), cmdline: 'quiet', ramRanges: ramRangesFor(64 * MiB), protocol: 'pvh', acpi: { rsdpGpa: 0xe0000 } });
  t.is(r.protocol, 'pvh');
  t.is(r.entry, 0x1000400);
  const si = Number(r.bsp.regs?.rbx);
  t.is(mem.readU32(si), 0x336ec578);
  t.is(mem.readU64(si + 24), 0x3000n); // cmdline_paddr
  t.is(mem.readU64(si + 32), 0xe0000n); // rsdp_paddr
  t.is(mem.readU64(Number(mem.readU64(si + 16))), BigInt(r.initrdGpa!)); // modlist[0].paddr
  // The vmlinux ends at 0x1205000, so the initrd starts at 0x1400000.
  t.is(r.initrdGpa, 0x1400000);
  t.is(mem.readU16(0x2000 + 0x1fe), 0);
});

test('a command line over one page moves to the long-cmdline area when the kernel allows it', (t) => {
  const mem = memFor(64 * MiB);
  const line = 'a'.repeat(6000);
  const r = loadLinuxDirectX86(mem, { kernel: makeBzImage({ cmdlineSize: 8191 }), cmdline: line, ramRanges: ramRangesFor(64 * MiB) });
  t.is(r.cmdlineGpa, 0xb000);
  t.is(mem.readU32(0x2000 + 0x228), 0xb000);
  t.is(mem.readU8(0xb000 + 6000), 0);
});

test('a command line longer than the kernel cmdline_size names length and limit', (t) => {
  const err = t.throws(() => loadLinuxDirectX86(memFor(64 * MiB), { kernel: makeBzImage({ cmdlineSize: 255 }), cmdline: 'b'.repeat(256), ramRanges: ramRangesFor(64 * MiB) }), { instanceOf: NodevmmError });
  t.is(err.code, 'ERR_CMDLINE_TOO_LONG');
  t.regex(err.message, /256 bytes .* limit of 256 bytes/);
});

test('an initrd too large for RAM fails with the sizes in the message', (t) => {
  const err = t.throws(() => loadLinuxDirectX86(memFor(64 * MiB), { kernel: makeVmlinux(), initrd: new Uint8Array(60 * MiB), cmdline: '', ramRanges: ramRangesFor(64 * MiB) }), { instanceOf: NodevmmError });
  t.is(err.code, 'ERR_INITRD_TOO_LARGE');
  t.regex(err.message, /initrd of 60 MiB .* with 64 MiB of ram/);
});

test('memory that does not back the RAM layout is refused', (t) => {
  const err = t.throws(() => loadLinuxDirectX86(memFor(64 * MiB), { kernel: makeVmlinux(), cmdline: '', ramRanges: ramRangesFor(128 * MiB) }), { instanceOf: NodevmmError });
  t.is(err.code, 'ERR_GUEST_MEMORY_LAYOUT');
});

test('no ram ranges at all are refused in one sentence', (t) => {
  t.throws(() => loadLinuxDirectX86(memFor(64 * MiB), { kernel: makeVmlinux(), cmdline: '', ramRanges: [] }), { code: 'ERR_GUEST_MEMORY_LAYOUT', message: /at least one ram range/ });
});

test('a reload clears stale bytes in the loader pages', (t) => {
  const mem = memFor(64 * MiB);
  loadLinuxDirectX86(mem, { kernel: makeBzImage({ cmdlineSize: 8191 }), cmdline: 'c'.repeat(5000), ramRanges: ramRangesFor(64 * MiB) });
  loadLinuxDirectX86(mem, { kernel: makeBzImage(), cmdline: 'short', ramRanges: ramRangesFor(64 * MiB) });
  t.true(mem.read(0xb000, 5000).every((b) => b === 0));
});
