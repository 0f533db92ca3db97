import test from 'ava';
import { BOOT_PARAMS_SIZE, buildBootParams } from '../../../lib/arch/x86_64/boot-params';
import { buildE820 } from '../../../lib/arch/x86_64/e820';
import { ramRangesFor } from '../../../lib/arch/x86_64/layout';
import { parseBzImage } from '../../../lib/loader/bzimage';
import { makeBzImage } from '../loader/fixtures';

const e820 = buildE820({ ramRanges: ramRangesFor(256 * 1024 * 1024), acpiRange: { gpa: 0x19000, size: 0x2000 } });

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

test('the zero page is exactly 4096 bytes', (t) => {
  t.is(BOOT_PARAMS_SIZE, 4096);
  t.is(buildBootParams({ cmdlineGpa: 0x3000, cmdlineLength: 0, e820 }).length, 4096);
});

test('loader fields sit at their bootparam.h offsets', (t) => {
  const zp = buildBootParams({ cmdlineGpa: 0x3000, cmdlineLength: 27, initrd: { gpa: 0x4000000, size: 0x123456 }, e820, rsdpGpa: 0xe0000 });
  const dv = view(zp);
  t.is(dv.getBigUint64(0x070, true), 0xe0000n); // acpi_rsdp_addr
  t.is(zp[0x1e8], e820.length); // e820_entries
  t.is(zp[0x210], 0xff); // type_of_loader
  t.is(dv.getUint32(0x218, true), 0x4000000); // ramdisk_image
  t.is(dv.getUint32(0x21c, true), 0x123456); // ramdisk_size
  t.is(dv.getUint32(0x228, true), 0x3000); // cmd_line_ptr
  t.is(dv.getUint32(0x238, true), 27); // cmdline_size
  t.is(dv.getUint32(0x0c0, true), 0); // ext_ramdisk_image
  t.is(dv.getUint32(0x0c8, true), 0); // ext_cmd_line_ptr
  // e820_table at 0x2d0, 20 bytes per entry
  e820.forEach((e, i) => {
    t.is(dv.getBigUint64(0x2d0 + i * 20, true), BigInt(e.addr));
    t.is(dv.getBigUint64(0x2d0 + i * 20 + 8, true), BigInt(e.size));
    t.is(dv.getUint32(0x2d0 + i * 20 + 16, true), e.type);
  });
});

test('addresses above 4 GiB are split into the legacy and ext_ fields', (t) => {
  const zp = buildBootParams({ cmdlineGpa: 0x1_0000_3000, cmdlineLength: 1, initrd: { gpa: 0x2_0020_0000, size: 0x1_0000_0010 }, e820 });
  const dv = view(zp);
  t.is(dv.getUint32(0x228, true), 0x3000);
  t.is(dv.getUint32(0x0c8, true), 1);
  t.is(dv.getUint32(0x218, true), 0x0020_0000);
  t.is(dv.getUint32(0x0c0, true), 2);
  t.is(dv.getUint32(0x21c, true), 0x10);
  t.is(dv.getUint32(0x0c4, true), 1);
});

test('a bzImage header is copied from 0x1f1, keeping its loadflags and fields we do not own', (t) => {
  const bz = parseBzImage(makeBzImage({ initSize: 0x2340000, cmdlineSize: 2047 }));
  const zp = buildBootParams({ setupHeader: bz.setupHeader, cmdlineGpa: 0x3000, cmdlineLength: 5, e820 });
  const dv = view(zp);
  t.is(dv.getUint16(0x1fe, true), 0xaa55);
  t.is(dv.getUint32(0x202, true), 0x53726448);
  t.is(dv.getUint16(0x206, true), 0x020f); // version kept
  t.is(dv.getUint32(0x260, true), 0x2340000); // init_size kept
  t.is(zp[0x211], 0x01); // loadflags: LOADED_HIGH only; CAN_USE_HEAP (0x80) not added
  t.is(zp[0x1ef], 0); // sentinel stays clear
  t.is(zp[0x210], 0xff); // type_of_loader overwritten
});

test('a vmlinux gets a synthesised header: boot_flag, HdrS and kernel_alignment only', (t) => {
  const zp = buildBootParams({ cmdlineGpa: 0x3000, cmdlineLength: 0, e820 });
  const dv = view(zp);
  t.is(dv.getUint16(0x1fe, true), 0xaa55);
  t.is(dv.getUint32(0x202, true), 0x53726448);
  t.is(dv.getUint32(0x230, true), 0x100000);
  t.is(dv.getUint16(0x206, true), 0);
  t.is(dv.getUint32(0x218, true), 0); // no initrd
  t.is(dv.getBigUint64(0x070, true), 0n); // no rsdp given
});
