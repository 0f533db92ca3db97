import test from 'ava';
import { NodevmmError } from '../../../lib/errors';
import { DEFAULT_INITRD_ADDR_MAX, ELF_INITRD_ADDR_MAX, placeInitrd } from '../../../lib/loader/initrd';
import { ramRangesFor } from '../../../lib/arch/x86_64/layout';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

test('the initrd goes at the next 2 MiB boundary after the kernel', (t) => {
  const p = placeInitrd({ kernelEnd: 0x3000001, initrdSize: 10 * MiB, ramRanges: ramRangesFor(256 * MiB), initrdAddrMax: 0x7fffffff });
  t.is(p.gpa, 0x3200000);
  t.is(p.size, 10 * MiB);
});

test('a kernel end already on a 2 MiB boundary is used as is', (t) => {
  t.is(placeInitrd({ kernelEnd: 0x3000000, initrdSize: 1, ramRanges: ramRangesFor(256 * MiB), initrdAddrMax: 0x7fffffff }).gpa, 0x3000000);
});

test('an initrd ending exactly at the end of RAM fits; one byte more does not', (t) => {
  const ramRanges = ramRangesFor(256 * MiB);
  t.is(placeInitrd({ kernelEnd: 0x3000000, initrdSize: 256 * MiB - 0x3000000, ramRanges, initrdAddrMax: 0xffffffff }).gpa, 0x3000000);
  const err = t.throws(() => placeInitrd({ kernelEnd: 0x3000000, initrdSize: 256 * MiB - 0x3000000 + 1, ramRanges, initrdAddrMax: 0xffffffff }), { instanceOf: NodevmmError });
  t.is(err.code, 'ERR_INITRD_TOO_LARGE');
});

test('the error names the initrd size, the bound and the RAM size', (t) => {
  const err = t.throws(() => placeInitrd({ kernelEnd: 0x3000000, initrdSize: 300 * MiB, ramRanges: ramRangesFor(256 * MiB), initrdAddrMax: 0x7fffffff }), { instanceOf: NodevmmError });
  t.regex(err.message, /^initrd of 300 MiB does not fit between the kernel end at 0x3000000 and the end of low ram at 0x10000000 \(208 MiB free\) with 256 MiB of ram$/);
});

test('initrd_addr_max (inclusive) binds before the end of RAM', (t) => {
  const ramRanges = ramRangesFor(2 * GiB);
  t.is(placeInitrd({ kernelEnd: 0x3000000, initrdSize: 0x4000000, ramRanges, initrdAddrMax: 0x6ffffff }).gpa, 0x3000000);
  const err = t.throws(() => placeInitrd({ kernelEnd: 0x3000000, initrdSize: 0x4000001, ramRanges, initrdAddrMax: 0x6ffffff }), { instanceOf: NodevmmError });
  t.regex(err.message, /initrd_addr_max 0x6ffffff/);
});

test('an unset initrd_addr_max falls back to 0x37ffffff', (t) => {
  t.is(DEFAULT_INITRD_ADDR_MAX, 0x37ffffff);
  const ramRanges = ramRangesFor(2 * GiB);
  const room = DEFAULT_INITRD_ADDR_MAX + 1 - 0x3000000;
  t.is(placeInitrd({ kernelEnd: 0x3000000, initrdSize: room, ramRanges, initrdAddrMax: 0 }).gpa, 0x3000000);
  t.throws(() => placeInitrd({ kernelEnd: 0x3000000, initrdSize: room + 1, ramRanges, initrdAddrMax: 0 }));
});

test('with RAM above 4 GiB the initrd still has to fit below the MMIO gap', (t) => {
  const ramRanges = ramRangesFor(6 * GiB);
  const err = t.throws(() => placeInitrd({ kernelEnd: 0x3000000, initrdSize: 4 * GiB - 0x3000000, ramRanges, initrdAddrMax: ELF_INITRD_ADDR_MAX }), { instanceOf: NodevmmError });
  t.regex(err.message, /end of low ram at 0xf8000000.*6 GiB of ram/);
});

test('a zero or negative size is an argument error', (t) => {
  t.is(t.throws(() => placeInitrd({ kernelEnd: 0, initrdSize: 0, ramRanges: ramRangesFor(64 * MiB), initrdAddrMax: 0 }), { instanceOf: NodevmmError }).code, 'ERR_INVALID_ARG');
});
