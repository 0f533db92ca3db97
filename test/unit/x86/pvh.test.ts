import test from 'ava';
import { NodevmmError } from '../../../lib/errors';
import { buildE820 } from '../../../lib/arch/x86_64/e820';
import { ramRangesFor } from '../../../lib/arch/x86_64/layout';
import { buildPvhStartInfo } from '../../../lib/arch/x86_64/pvh';

const e820 = buildE820({ ramRanges: ramRangesFor(512 * 1024 * 1024), acpiRange: { gpa: 0x19000, size: 0x1000 } });

test('start_info v1 with the initrd module and the memory map after it', (t) => {
  const b = buildPvhStartInfo({ startInfoGpa: 0xa000, maxSize: 4096, cmdlineGpa: 0x3000, initrd: { gpa: 0x2000000, size: 0x5000 }, rsdpGpa: 0xe0000, e820 });
  const dv = new DataView(b.buffer);
  t.is(dv.getUint32(0, true), 0x336ec578); // magic
  t.is(dv.getUint32(4, true), 1); // version
  t.is(dv.getUint32(8, true), 0); // flags
  t.is(dv.getUint32(12, true), 1); // nr_modules
  t.is(dv.getBigUint64(16, true), 0xa000n + 56n); // modlist_paddr: right after the 56-byte start_info
  t.is(dv.getBigUint64(24, true), 0x3000n); // cmdline_paddr
  t.is(dv.getBigUint64(32, true), 0xe0000n); // rsdp_paddr
  t.is(dv.getBigUint64(40, true), 0xa000n + 56n + 32n); // memmap_paddr: after one 32-byte modlist entry
  t.is(dv.getUint32(48, true), e820.length); // memmap_entries
  t.is(dv.getUint32(52, true), 0); // reserved
  t.is(dv.getBigUint64(56, true), 0x2000000n); // modlist[0].paddr
  t.is(dv.getBigUint64(64, true), 0x5000n); // modlist[0].size
  e820.forEach((e, i) => {
    const at = 88 + i * 24;
    t.is(dv.getBigUint64(at, true), BigInt(e.addr));
    t.is(dv.getBigUint64(at + 8, true), BigInt(e.size));
    t.is(dv.getUint32(at + 16, true), e.type);
    t.is(dv.getUint32(at + 20, true), 0);
  });
  t.is(b.length, 88 + e820.length * 24);
});

test('without an initrd there are no modules and the memory map follows start_info', (t) => {
  const b = buildPvhStartInfo({ startInfoGpa: 0xa000, maxSize: 4096, cmdlineGpa: 0x3000, e820 });
  const dv = new DataView(b.buffer);
  t.is(dv.getUint32(12, true), 0);
  t.is(dv.getBigUint64(16, true), 0n);
  t.is(dv.getBigUint64(32, true), 0n);
  t.is(dv.getBigUint64(40, true), 0xa000n + 56n);
});

test('a map that does not fit the reserved room is refused', (t) => {
  t.is(t.throws(() => buildPvhStartInfo({ startInfoGpa: 0xa000, maxSize: 100, cmdlineGpa: 0x3000, e820 }), { instanceOf: NodevmmError }).code, 'ERR_PVH_START_INFO_SIZE');
});
