import test from 'ava';
import { MSR } from '../../../lib/hv/x86-state';
import { NodevmmError } from '../../../lib/errors';
import { apMsrs, buildIdentityPageTables, encodeGdt, linux64BootState, mtrrMask, pvhBootState, variableMtrrs } from '../../../lib/arch/x86_64/cpu';
import { MMIO_GAP_START } from '../../../lib/arch/x86_64/layout';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function msrMap(msrs: { index: number; value: bigint }[]): Map<number, bigint> {
  return new Map(msrs.map((m) => [m.index, m.value]));
}

test('the GDT is null, 64-bit code, flat data, 32-bit code', (t) => {
  const gdt = new DataView(encodeGdt().buffer);
  t.is(gdt.byteLength, 32);
  t.is(gdt.getBigUint64(0, true), 0n); // 0x00 null
  t.is(gdt.getBigUint64(8, true), 0x00a09b000000ffffn); // 0x08 code64: P, S, type 0xB, L, G
  t.is(gdt.getBigUint64(16, true), 0x00cf93000000ffffn); // 0x10 data: P, S, type 3, D/B, G, limit 0xFFFFF
  t.is(gdt.getBigUint64(24, true), 0x00cf9b000000ffffn); // 0x18 code32: P, S, type 0xB, D/B, G, limit 0xFFFFF
});

test('the page tables identity-map 0-4 GiB with 2 MiB pages', (t) => {
  const pt = buildIdentityPageTables();
  t.is(pt.length, 6 * 4096);
  const dv = new DataView(pt.buffer);
  const entry = (gpa: number, i: number) => dv.getBigUint64(gpa - 0x4000 + i * 8, true);
  t.is(entry(0x4000, 0), 0x5000n | 0x23n); // PML4[0] → PDPT
  t.is(entry(0x4000, 1), 0n);
  for (let i = 0; i < 4; i++) t.is(entry(0x5000, i), BigInt(0x6000 + i * 0x1000) | 0x23n); // PDPT[i] → PD i
  t.is(entry(0x5000, 4), 0n);
  t.is(entry(0x6000, 0), 0xe3n); // 0 MiB
  t.is(entry(0x6000, 8), BigInt(16 * MiB) | 0xe3n); // 16 MiB, where vmlinux loads
  t.is(entry(0x9000, 511), 0xffe00000n | 0xe3n); // the last 2 MiB below 4 GiB
  for (let i = 0; i < 2048; i++) t.is(dv.getBigUint64(0x2000 + i * 8, true), (BigInt(i) << 21n) | 0xe3n);
});

test('MTRR masks keep bits from the address width down to the size, plus the valid bit', (t) => {
  t.is(mtrrMask(46, 128 * MiB - 1), 0x3ffff8000800n); // 128 MiB
  t.is(mtrrMask(46, MMIO_GAP_START - 1), 0x3fff00000800n); // reported by Linux as 4096 MB
  t.is(mtrrMask(36, 128 * MiB - 1), 0xff8000800n);
});

test('128 MiB of RAM needs one WB variable MTRR', (t) => {
  const m = msrMap(variableMtrrs({ ramEnd: 128 * MiB, physAddrBits: 46 }));
  t.is(m.size, 2);
  t.is(m.get(0x200), 6n);
  t.is(m.get(0x201), 0x3ffff8000800n);
});

test('1 GiB adds pair 1 based at 128 MiB with the mask of the gap start', (t) => {
  const m = msrMap(variableMtrrs({ ramEnd: GiB, physAddrBits: 46 }));
  t.is(m.size, 4);
  t.is(m.get(0x202), BigInt(128 * MiB) | 6n);
  t.is(m.get(0x203), 0x3fff00000800n);
});

test('6 GiB adds pair 2 from 4 GiB sized by the end of RAM', (t) => {
  const ramEnd = 4 * GiB + (6 * GiB - MMIO_GAP_START);
  const m = msrMap(variableMtrrs({ ramEnd, physAddrBits: 46 }));
  t.is(m.size, 6);
  t.is(m.get(0x204), BigInt(4 * GiB) | 6n);
  // RAM ends at 0x1_8800_0000; end - 1 < 2^33, so bits 12..32 clear and the mask spans 8 GiB.
  t.is(ramEnd, 0x1_8800_0000);
  t.is(m.get(0x205), 0x3ffe00000800n);
});

test('a physical address width outside 36..52 is refused', (t) => {
  t.is(t.throws(() => variableMtrrs({ ramEnd: GiB, physAddrBits: 64 }), { instanceOf: NodevmmError }).code, 'ERR_INVALID_ARG');
});

test('AP MSRs carry PAT, the MTRR default type, the fixed ranges and the same variable MTRRs', (t) => {
  const layout = { ramEnd: GiB, physAddrBits: 39 };
  const m = msrMap(apMsrs(layout));
  t.is(m.get(MSR.IA32_PAT), 0x0007040600070406n);
  t.is(m.get(MSR.IA32_MTRR_DEF_TYPE), 0xc00n);
  t.is(m.get(MSR.IA32_MTRR_FIX64K_00000), 0x0606060606060606n);
  t.is(m.get(MSR.IA32_MTRR_FIX16K_80000), 0x0606060606060606n);
  t.false(m.has(MSR.IA32_MTRR_FIX16K_A0000)); // A0000-BFFFF stays UC
  for (const v of variableMtrrs(layout)) t.is(m.get(v.index), v.value);
});

test('linux64 state: long mode, paging with CR3 at the PML4, RSI at the zero page', (t) => {
  const s = linux64BootState({ entry: 0x100200, zeroPage: 0x2000, mtrr: { ramEnd: GiB, physAddrBits: 46 } });
  t.is(s.regs?.rip, 0x100200n);
  t.is(s.regs?.rsi, 0x2000n);
  t.is(s.regs?.rflags, 2n);
  t.is(s.regs?.rsp, 0n);
  t.is(s.sregs?.cr0, 0x80000011n);
  t.is(s.sregs?.cr3, 0x4000n);
  t.is(s.sregs?.cr4, 0x20n);
  t.is(s.sregs?.efer, 0xd01n);
  t.deepEqual(s.sregs?.gdt, { base: 0x1000n, limit: 31 });
  t.like(s.sregs?.cs, { selector: 0x08, l: 1, db: 0, type: 0xb, s: 1, present: 1, g: 1, limit: 0xffffffff, base: 0n });
  for (const seg of [s.sregs?.ds, s.sregs?.es, s.sregs?.ss, s.sregs?.fs, s.sregs?.gs]) t.like(seg, { selector: 0x10, type: 3, db: 1, present: 1, unusable: 0 });
  t.deepEqual(s.msrs, apMsrs({ ramEnd: GiB, physAddrBits: 46 }));
});

test('pvh state: 32-bit protected mode, paging off, EBX at start_info, flat 32-bit CS', (t) => {
  const s = pvhBootState({ entry: 0x1000400, startInfo: 0xa000, mtrr: { ramEnd: GiB, physAddrBits: 46 } });
  t.is(s.regs?.rip, 0x1000400n);
  t.is(s.regs?.rbx, 0xa000n);
  t.is(s.regs?.rflags, 2n);
  t.is(s.sregs?.cr0, 0x11n);
  t.is(s.sregs?.cr4, 0n);
  t.is(s.sregs?.efer, 0n);
  t.like(s.sregs?.cs, { selector: 0x18, l: 0, db: 1, type: 0xb, limit: 0xffffffff, base: 0n });
  t.like(s.sregs?.ds, { selector: 0x10, db: 1, type: 3 });
  t.like(s.sregs?.tr, { base: 0n, limit: 0x67, type: 0xb, s: 0, present: 1 });
});
