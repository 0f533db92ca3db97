import { createHash } from 'node:crypto';
import { parseIgvm } from '../../../lib/igvm/parse';
import { planIgvmLoad } from '../../../lib/loader/igvm/plan';
import { loadIgvm } from '../../../lib/loader/igvm/load';
import { inspectIgvm, formatIgvmSummary } from '../../../lib/igvm/inspect';
import { buildIgvm, igvmFileToBuildInput } from '../../../lib/igvm/build';
import { crc32 } from '../../../lib/igvm/crc32';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import type { IgvmHeader, IgvmParameter } from '../../../lib/igvm/model';

import { REAL_FILE, REAL_FILE_MISSING, realBytes, smallNative } from './helpers';
import { testWhen } from '../../needs';

const test = testWhen(REAL_FILE_MISSING);
// Without the fixture every test skips (or fails under CI); a small build of ours stands in so the module loads.
const bytes = REAL_FILE ? realBytes() : smallNative();
const file = parseIgvm(bytes);
const GiB = 2 ** 30;
const MiB = 2 ** 20;
const params = (k: string) => file.headers.filter((h) => h.kind === k) as IgvmParameter[];
const of = <K extends IgvmHeader['kind']>(k: K) => file.headers.filter((h): h is Extract<IgvmHeader, { kind: K }> => h.kind === k);

test('the test file is the one the README pins', (t) => {
  t.is(createHash('sha256').update(bytes).digest('hex'), '85f244ad18198c8d89b7d054ae245da37cc377ab3d8665c6a82ee6147701559b');
});

test('crc32 matches the standard check value', (t) => {
  t.is(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
});

test('fixed header v2 fields and checksum 0x670B1BFE verify', (t) => {
  t.is(file.version, 2);
  t.is(file.arch, 'x64');
  t.is(file.pageSize, 0x1000);
  t.is(file.variableHeaderOffset, 0x20);
  t.is(file.variableHeaderSize, 0x71f0);
  t.is(file.totalFileSize, 0x37e210);
  t.is(file.fileDataOffset, 0x7210);
  t.is(file.checksum, 0x670b1bfe);
  t.is(file.computedChecksum, 0x670b1bfe);
  t.true(file.crcOk);
  t.is(new DataView(bytes.buffer, bytes.byteOffset).getUint32(20, true), 0x670b1bfe, 'parsing must not zero the caller’s checksum field');
});

test('915 headers: three platforms with their masks, the SNP guest policy and 512 GiB of required memory', (t) => {
  t.is(file.headers.length, 915);
  t.deepEqual(file.skippedOptional, []);
  t.deepEqual(of('SUPPORTED_PLATFORM').map((p) => [p.platform_name, p.compatibility_mask, p.highest_vtl, p.platform_version, p.shared_gpa_boundary]), [
    ['SEV_SNP', 0x1, 2, 1, 0n],
    ['TDX', 0x4, 2, 1, 0n],
    ['NATIVE', 0x2, 2, 1, 0n],
  ]);
  t.deepEqual(of('GUEST_POLICY').map((g) => [g.policy, g.compatibility_mask]), [[0x30000n, 0x1]]);
  t.deepEqual(of('REQUIRED_MEMORY').map((r) => [r.gpa, r.number_of_bytes, r.compatibility_mask, r.flags]), [[512 * GiB, 16 * MiB, 0x7, 0]]);
});

test('parameter areas, parameters and inserts match the README', (t) => {
  t.deepEqual(of('PARAMETER_AREA').map((a) => [a.parameter_area_index, a.number_of_bytes, a.file_offset]), [[1, 4096, 0], [0, 4096, 0]]);
  t.deepEqual(params('VP_COUNT_PARAMETER').map((p) => [p.parameter_area_index, p.byte_offset]), [[0, 0]]);
  t.deepEqual(params('ENVIRONMENT_INFO_PARAMETER').map((p) => [p.parameter_area_index, p.byte_offset]), [[0, 4]]);
  t.deepEqual(params('MEMORY_MAP').map((p) => [p.parameter_area_index, p.byte_offset]), [[1, 0]]);
  t.deepEqual(of('PARAMETER_INSERT').map((i) => [i.parameter_area_index, i.gpa, i.compatibility_mask]), [[1, 0xb7d000, 0x7], [0, 0xb7c000, 0x7]]);
});

test('901 PAGE_DATA with one SNP secrets page, one SNP CPUID page, dedup and zero pages', (t) => {
  const pages = of('PAGE_DATA');
  t.is(pages.length, 901);
  t.true(pages.every((p) => p.flags === 0));
  t.deepEqual(pages.filter((p) => p.data_type_name !== 'NORMAL').map((p) => [p.gpa, p.data_type_name, p.compatibility_mask]), [
    [0x806000, 'SECRETS', 0x1],
    [0x807000, 'CPUID_DATA', 0x1],
  ]);
  t.is(pages.filter((p) => p.file_offset === 0xad210).length, 9);
  t.is(pages.filter((p) => p.file_offset === 0).length, 8);
  t.is(pages.find((p) => p.file_offset !== 0 && p.file_offset % 4096 !== 0)?.file_offset !== undefined, true, 'file data is not page aligned');
});

test('four page-table/stack pages carry mask 0x12 with the undeclared bit 0x10', (t) => {
  t.deepEqual(of('PAGE_DATA').filter((p) => p.compatibility_mask === 0x12).map((p) => p.gpa), [0xf000, 0x10000, 0x11000, 0x805000]);
  t.deepEqual(of('PAGE_DATA').filter((p) => p.gpa === 0x805000).map((p) => p.compatibility_mask).sort(), [0x1, 0x12, 0x4]);
});

test('two VP contexts: NATIVE at 0x7210 and the SNP VMSA at 0xFFFFFFFFF000', (t) => {
  t.deepEqual(of('VP_CONTEXT').map((v) => [v.compatibility_mask, v.gpa, v.vp_index, v.file_offset]), [
    [0x2, 0n, 0, 0x7210],
    [0x1, 0xfffffffff000n, 0, 0x37d210],
  ]);
});

function sparseMemory(): GuestMemory {
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 16 * MiB }, { gpa: 512 * GiB, size: 16 * MiB }]);
  mem.fill(0, 16 * MiB, 0xa5);
  mem.fill(512 * GiB, 16 * MiB, 0xa5);
  return mem;
}

/** Ranges of bytes that no longer hold the sentinel, or differ from it page-wise. */
function touchedPages(mem: GuestMemory, gpa: number, size: number): [number, number][] {
  const out: [number, number][] = [];
  for (let p = gpa; p < gpa + size; p += 4096) {
    const page = mem.read(p, 4096);
    if (page.some((b) => b !== 0xa5)) {
      const last = out[out.length - 1];
      if (last && last[1] === p - 1) last[1] = p + 4095;
      else out.push([p, p + 4095]);
    }
  }
  return out;
}

test('a NATIVE load writes exactly the README ranges and no SNP- or TDX-only page', (t) => {
  const plan = planIgvmLoad(file);
  t.is(plan.platform.name, 'NATIVE');
  t.is(plan.platform.mask, 0x2);
  t.is(plan.steps.filter((s) => s.op === 'page').length, 893);
  t.is(plan.steps.filter((s) => s.op === 'page' && s.fileOffset === 0).length, 5);
  t.deepEqual(plan.requiredRam, [
    { gpa: 0xf000, size: 0x3000 },
    { gpa: 0x800000, size: 0x6000 },
    { gpa: 0x808000, size: 0x376000 },
    { gpa: 512 * GiB, size: 16 * MiB },
  ]);
  const mem = sparseMemory();
  const result = loadIgvm(mem, file, plan, { vpCount: 4 });
  t.is(result.pagesWritten, 893);
  t.deepEqual(result.writtenRanges, [
    { gpa: 0xf000, size: 0x3000 },
    { gpa: 0x800000, size: 0x6000 },
    { gpa: 0x808000, size: 0x376000 },
  ]);
  t.deepEqual(touchedPages(mem, 0, 16 * MiB), [[0xf000, 0x11fff], [0x800000, 0x805fff], [0x808000, 0xb7dfff]]);
  t.deepEqual(touchedPages(mem, 512 * GiB, 16 * MiB), [], 'REQUIRED_MEMORY is checked, not written');
  // SNP secrets/CPUID pages at 0x806000/0x807000 keep the sentinel.
  t.true(mem.read(0x806000, 0x2000).every((b) => b === 0xa5));
  // Page contents come from the file: the NATIVE copy of 0x805000 (mask 0x12), not the SNP or TDX copy.
  const native805 = of('PAGE_DATA').find((p) => p.gpa === 0x805000 && p.compatibility_mask === 0x12)!;
  const expected = native805.file_offset === 0 ? new Uint8Array(4096) : bytes.subarray(native805.file_offset, native805.file_offset + 4096);
  t.deepEqual(mem.read(0x805000, 4096), new Uint8Array(expected));
});

test('a load without the TDX reset-vector pages present still succeeds: they are filtered out by mask', (t) => {
  const tdx = of('PAGE_DATA').filter((p) => p.gpa >= 0xffffe000);
  t.deepEqual(tdx.map((p) => p.compatibility_mask), [0x4, 0x4]);
  t.false(planIgvmLoad(file).requiredRam.some((r) => r.gpa < 0x100000000 && r.gpa + r.size > 0xffffe000));
});

test('parameter pages hold the VP count, environment info and a memory map including the 512 GiB range', (t) => {
  const mem = sparseMemory();
  loadIgvm(mem, file, planIgvmLoad(file), { vpCount: 3, memoryMap: [{ gpa: 0, size: 16 * MiB }] });
  t.is(mem.readU32(0xb7c000), 3);
  t.is(mem.readU32(0xb7c004), 0);
  t.true(mem.read(0xb7c008, 4096 - 8).every((b) => b === 0));
  const entry = (i: number) => [mem.readU64(0xb7d000 + i * 24), mem.readU64(0xb7d000 + i * 24 + 8), mem.readU16(0xb7d000 + i * 24 + 16)];
  t.deepEqual(entry(0), [0n, 0x1000n, 0]);
  t.deepEqual(entry(1), [BigInt(512 * GiB / 4096), 0x1000n, 0]);
  t.deepEqual(entry(2), [0n, 0n, 0], 'terminator');
});

test('the NATIVE VP context becomes long mode with a 32-bit compatibility code segment', (t) => {
  const cpu = planIgvmLoad(file).bootContext!;
  t.is(cpu.format, 'native');
  const { regs, sregs } = cpu.state;
  t.is(regs!.rip, 0x808000n);
  t.is(regs!.rsp, 0x805fd0n);
  t.is(regs!.rflags, 2n);
  t.is(sregs!.cr0, 0x80000031n);
  t.is(sregs!.cr3, 0x10000n);
  t.is(sregs!.cr4, 0x60n);
  t.is(sregs!.efer, 0x500n);
  t.like(sregs!.cs!, { selector: 8, limit: 0xffffffff, type: 0xb, s: 1, present: 1, l: 0, db: 1, g: 1 });
  for (const seg of ['ds', 'es', 'fs', 'gs', 'ss'] as const) t.like(sregs![seg]!, { selector: 0x10, limit: 0xffffffff, type: 3, s: 1, present: 1, g: 1 });
  t.like(sregs!.tr!, { type: 11, present: 1, unusable: 0 });
  t.like(sregs!.ldt!, { unusable: 1 });
});

test('asking for SEV-SNP or TDX is refused naming the hardware', (t) => {
  const snp = t.throws(() => planIgvmLoad(file, { platform: 'snp' }));
  t.is((snp as { code?: string }).code, 'ERR_IGVM_PLATFORM_UNSUPPORTED');
  t.regex(snp!.message, /AMD SEV-SNP hardware/);
  const vsm = t.throws(() => planIgvmLoad(file, { platform: 'vsm' }));
  t.is((vsm as { code?: string }).code, 'ERR_IGVM_PLATFORM_MISSING');
  t.regex(vsm!.message, /declares SEV-SNP, TDX and NATIVE/);
});

test('a VM without RAM at 512 GiB is refused before anything is written', (t) => {
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 16 * MiB }]);
  mem.fill(0, 16 * MiB, 0xa5);
  const e = t.throws(() => loadIgvm(mem, file, planIgvmLoad(file), { vpCount: 1 }));
  t.is((e as { code?: string }).code, 'ERR_IGVM_MISSING_MEMORY');
  t.regex(e!.message, /0x8000000000/);
  t.true(mem.read(0, 16 * MiB).every((b) => b === 0xa5));
});

test('build(parse(file)) reproduces the real file byte for byte', (t) => {
  const out = buildIgvm(igvmFileToBuildInput(file));
  t.is(out.length, bytes.length);
  t.true(Buffer.from(out).equals(Buffer.from(bytes)));
});

test('inspect reports platforms, counts, NATIVE ranges, the undeclared mask bit and CRC status', (t) => {
  const s = inspectIgvm(bytes);
  t.true(s.crcOk);
  t.is(s.headerCount, 915);
  t.is(s.countsByType.PAGE_DATA, 901);
  t.is(s.undeclaredMaskBits, '0x10');
  t.deepEqual(s.pageData.find((p) => p.platform === 'NATIVE')!.ranges, [
    { start: '0xf000', last: '0x11fff' }, { start: '0x800000', last: '0x805fff' }, { start: '0x808000', last: '0xb7bfff' },
  ]);
  t.is(s.vpContexts[0]!.registers!.rip, '0x808000');
  const text = formatIgvmSummary(s);
  t.regex(text, /checksum 0x670b1bfe: ok/);
  t.regex(text, /NATIVE: 893 pages \(5 zero\)/);
  const broken = bytes.slice();
  broken[20] = broken[20]! ^ 1;
  const bad = inspectIgvm(broken);
  t.false(bad.crcOk);
  t.regex(formatIgvmSummary(bad), /MISMATCH \(computed 0x670b1bfe\)/);
});
