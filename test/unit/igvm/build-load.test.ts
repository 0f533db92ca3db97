import test from 'ava';
import { NodevmmError } from '../../../lib/errors';
import { buildIgvm } from '../../../lib/igvm/build';
import { parseIgvm } from '../../../lib/igvm/parse';
import { planIgvmLoad } from '../../../lib/loader/igvm/plan';
import { loadIgvm } from '../../../lib/loader/igvm/load';
import { buildLinuxDirectIgvm, IGVM_MEMORY_MAP_GPA } from '../../../lib/loader/igvm/linux-direct';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { ramRangesFor } from '../../../lib/arch/x86_64/layout';
import { loadLinuxDirectX86 } from '../../../lib/loader/linux-direct';
import { makeBzImage } from '../loader/fixtures';
import { LONG_MODE_CONTEXT, segmentValue, smallNative, smallNativeHeaders, u64Value, vbsEntry, vbsList } from './helpers';

const MiB = 2 ** 20;
const code = (e: unknown) => (e as { code?: string }).code;

test('build then parse returns the headers that went in, 8-byte aligned with file data after them', (t) => {
  const bytes = smallNative();
  const f = parseIgvm(bytes);
  t.true(f.crcOk);
  t.is(f.version, 2);
  t.deepEqual(f.headers.map((h) => h.kind), smallNativeHeaders().map((h) => h.kind));
  t.true(f.headers.every((h) => h.offset % 8 === 0));
  const pages = f.headers.filter((h) => h.kind === 'PAGE_DATA');
  // Identical 0x11 pages are stored once; the missing data is a zero page.
  t.is(pages[0]!.file_offset, pages[1]!.file_offset);
  t.is(pages[2]!.file_offset, 0);
  t.is(f.fileDataOffset, f.variableHeaderOffset + f.variableHeaderSize);
});

test('a small NATIVE load applies its mask, parameters and context', (t) => {
  const f = parseIgvm(smallNative());
  const plan = planIgvmLoad(f);
  t.is(plan.platform.name, 'NATIVE');
  t.is(plan.filteredOut, 2, 'GUEST_POLICY and the SNP-only page are filtered out');
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 4 * MiB }]);
  mem.fill(0, 4 * MiB, 0xa5);
  const r = loadIgvm(mem, f, plan, { vpCount: 2, commandLine: 'console=ttyS0', environmentInfo: 1 });
  t.true(mem.read(0x100000, 0x2000).every((b) => b === 0x11));
  t.true(mem.read(0x102000, 0x1000).every((b) => b === 0));
  t.true(mem.read(0x103000, 0x1000).every((b) => b === 0xa5), 'the SNP secrets page is not loaded');
  t.is(mem.readU32(0x8000), 2);
  t.is(mem.readU32(0x8004), 1);
  t.is(new TextDecoder().decode(mem.read(0x8100, 14)), 'console=ttyS0\0');
  t.is(mem.readU64(0x9000), 0n);
  t.is(mem.readU64(0x9008), 0x400n, 'one 4 MiB RAM entry');
  t.is(r.bootCpu!.regs!.rip, 0x100000n);
  t.like(r.bootCpu!.sregs!.cs!, { l: 1, db: 0 });
});

test('a parameter that does not fit its area fails the load', (t) => {
  const f = parseIgvm(smallNative());
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 4 * MiB }]);
  const e = t.throws(() => loadIgvm(mem, f, planIgvmLoad(f), { vpCount: 1, commandLine: 'x'.repeat(4000) }));
  t.is(code(e), 'ERR_IGVM_PARAMETER_TOO_LARGE');
});

test('MADT is required when asked for and written at its byte offset', (t) => {
  const headers = smallNativeHeaders();
  headers.splice(headers.findIndex((h) => h.kind === 'MEMORY_MAP') + 1, 0, { kind: 'MADT', parameter_area_index: 1, byte_offset: 0x800 });
  const f = parseIgvm(buildIgvm({ headers }));
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 4 * MiB }]);
  t.is(code(t.throws(() => loadIgvm(mem, f, planIgvmLoad(f), { vpCount: 1 }))), 'ERR_IGVM_PARAMETER_MISSING');
  loadIgvm(mem, f, planIgvmLoad(f), { vpCount: 1, madt: new TextEncoder().encode('APIC') });
  t.is(new TextDecoder().decode(mem.read(0x9800, 4)), 'APIC');
});

test('a 64-bit code segment without long mode is refused as KVM would', (t) => {
  const bad = { ...LONG_MODE_CONTEXT, cr4: 0n };
  const e = t.throws(() => planIgvmLoad(parseIgvm(smallNative(bad))));
  t.is(code(e), 'ERR_IGVM_VP_CONTEXT');
  t.regex(e!.message, /cr4 0x0 lacks PAE/);
  const noLme = { ...LONG_MODE_CONTEXT, efer: 0n };
  t.regex(t.throws(() => planIgvmLoad(parseIgvm(smallNative(noLme))))!.message, /64-bit code segment \(L=1\) but long mode is off/);
  const pgNoPe = { ...LONG_MODE_CONTEXT, cr0: 0x80000000n };
  t.regex(t.throws(() => planIgvmLoad(parseIgvm(smallNative(pgNoPe))))!.message, /sets PG without PE/);
});

test('an SNP- and TDX-only file is refused naming the hardware it needs', (t) => {
  const f = parseIgvm(buildIgvm({ headers: [
    { kind: 'SUPPORTED_PLATFORM', compatibility_mask: 1, platform_type: 2, highest_vtl: 2 },
    { kind: 'SUPPORTED_PLATFORM', compatibility_mask: 2, platform_type: 3, highest_vtl: 2 },
    { kind: 'PAGE_DATA', gpa: 0xfffff000, compatibility_mask: 3 },
  ] }));
  const e = t.throws(() => planIgvmLoad(f), { instanceOf: NodevmmError });
  t.is(e!.code, 'ERR_IGVM_PLATFORM_UNSUPPORTED');
  t.is(e!.message, 'igvm: this file supports only SEV-SNP and TDX, which need AMD SEV-SNP and Intel TDX hardware and a confidential-computing backend; the KVM backend can run NATIVE or VSM VTL0');
});

function vsmFile(vtl: number, highestVtl: number): Uint8Array {
  const list = vbsList([
    vbsEntry(vtl, 0x20010, u64Value(0x100000n)),
    vbsEntry(vtl, 0x20011, u64Value(2n)),
    vbsEntry(vtl, 0x40000, u64Value(0x11n)),
    vbsEntry(vtl, 0x60001, segmentValue(0n, 0xffffffff, 0x8, 0xc09b)),
    vbsEntry(vtl, 0x60003, segmentValue(0n, 0xffffffff, 0x10, 0xc093)),
    vbsEntry(vtl, 0x80004, u64Value(0x0007040600070406n)),
  ]);
  return buildIgvm({ headers: [
    { kind: 'SUPPORTED_PLATFORM', compatibility_mask: 1, platform_type: 1, highest_vtl: highestVtl },
    { kind: 'PAGE_DATA', gpa: 0x100000, compatibility_mask: 1, data: new Uint8Array([0xf4]) },
    { kind: 'VP_CONTEXT', compatibility_mask: 1, data: list },
  ] });
}

test('a VSM VTL0 file loads its VBS register list onto the boot CPU', (t) => {
  const plan = planIgvmLoad(parseIgvm(vsmFile(0, 0)));
  t.is(plan.platform.name, 'VSM_ISOLATION');
  const s = plan.bootContext!.state;
  t.is(s.regs!.rip, 0x100000n);
  t.is(s.sregs!.cr0, 0x11n);
  t.like(s.sregs!.cs!, { selector: 8, db: 1, type: 0xb });
  t.like(s.sregs!.ds!, { selector: 0x10, type: 3 });
  t.deepEqual(s.msrs, [{ index: 0x277, value: 0x0007040600070406n }]);
});

test('a VSM file that boots in VTL2 is refused without VTL support and accepted with it', (t) => {
  const f = parseIgvm(vsmFile(2, 2));
  const e = t.throws(() => planIgvmLoad(f));
  t.is(code(e), 'ERR_IGVM_VTL2_UNSUPPORTED');
  t.regex(e!.message, /VTL2.*no virtual trust levels/);
  t.is(planIgvmLoad(f, { hostSupportsVtl2: true }).bootContext!.vtl, 2);
});

test('a VBS register the loader cannot apply is refused by name', (t) => {
  const f = parseIgvm(buildIgvm({ headers: [
    { kind: 'SUPPORTED_PLATFORM', compatibility_mask: 1, platform_type: 1 },
    { kind: 'VP_CONTEXT', compatibility_mask: 1, data: vbsList([vbsEntry(0, 0x50000, u64Value(1n))]) },
  ] }));
  t.regex(t.throws(() => planIgvmLoad(f))!.message, /register_name 0x50000 is not an x64 register/);
});

test('the Linux Direct IGVM reproduces the direct loader’s memory and boot CPU', (t) => {
  const kernel = makeBzImage();
  const initrd = new Uint8Array(70000).map((_, i) => (i * 7) & 0xff);
  const cmdline = 'console=ttyS0 panic=-1';
  const memoryBytes = 64 * MiB;
  const built = buildLinuxDirectIgvm({ kernel, initrd, cmdline, memoryBytes });
  const f = parseIgvm(built.file);
  t.is(f.version, 2);
  const plan = planIgvmLoad(f);
  t.is(plan.platform.name, 'NATIVE');

  const ram = ramRangesFor(memoryBytes);
  const viaIgvm = GuestMemory.anonymous(ram);
  const result = loadIgvm(viaIgvm, f, plan, { vpCount: 1 });
  const direct = GuestMemory.anonymous(ram);
  const boot = loadLinuxDirectX86(direct, { kernel, initrd, cmdline, ramRanges: ram });

  for (const r of ram) {
    for (let p = r.gpa; p < r.gpa + r.size; p += 4096) {
      if (p === IGVM_MEMORY_MAP_GPA) continue;
      const a = viaIgvm.read(p, 4096);
      const b = direct.read(p, 4096);
      if (!Buffer.from(a).equals(Buffer.from(b))) return t.fail(`page ${p.toString(16)} differs`);
    }
  }
  t.is(viaIgvm.readU64(IGVM_MEMORY_MAP_GPA + 8), BigInt(ram[0]!.size / 4096));
  const got = result.bootCpu!;
  t.deepEqual(got.regs, boot.bsp.regs);
  for (const k of ['cr0', 'cr3', 'cr4', 'efer', 'gdt'] as const) t.deepEqual(got.sregs![k], boot.bsp.sregs![k], k);
  t.like(got.sregs!.cs!, { ...boot.bsp.sregs!.cs!, unusable: 0 });
  t.true(built.pageCount > 0);
});

test('a host command line overrides the one built into a Linux Direct IGVM', (t) => {
  const built = buildLinuxDirectIgvm({ kernel: makeBzImage(), cmdline: 'quiet', memoryBytes: 64 * MiB });
  const f = parseIgvm(built.file);
  const plan = planIgvmLoad(f);
  const area = plan.steps.find((s) => s.op === 'insert')!;
  const mem = GuestMemory.anonymous(ramRangesFor(64 * MiB));
  loadIgvm(mem, f, plan, { vpCount: 1 });
  t.is(new TextDecoder().decode(mem.read(area.gpa, 6)), 'quiet\0');
  loadIgvm(mem, f, plan, { vpCount: 1, commandLine: 'debug' });
  t.is(new TextDecoder().decode(mem.read(area.gpa, 6)), 'debug\0');
});

test('the igvm cli builds a file that its inspect command then describes', (t) => {
  const { runIgvmCommand } = require('../../../lib/cli/igvm') as typeof import('../../../lib/cli/igvm');
  const files = new Map<string, Uint8Array>([['bzImage', makeBzImage()]]);
  let out = '';
  const io = { readFile: (p: string) => files.get(p)!, writeFile: (p: string, d: Uint8Array) => void files.set(p, d), stdout: (s: string) => void (out += s) };
  t.is(runIgvmCommand(['build', '--kernel', 'bzImage', '--cmdline', 'quiet', '--memory', '64', '-o', 'out.igvm'], io), 0);
  t.true(parseIgvm(files.get('out.igvm')!).crcOk);
  out = '';
  runIgvmCommand(['inspect', 'out.igvm', '--json'], io);
  t.is(JSON.parse(out).platforms[0].platform, 'NATIVE');
  t.is(code(t.throws(() => runIgvmCommand(['build', '--kernel', 'bzImage'], io))), 'ERR_CONFIG');
});

test('a version 1 file (24-byte fixed header) parses and loads; a NATIVE context in it is refused as needing version 2', (t) => {
  const headers = smallNativeHeaders();
  const withoutContext = headers.filter((h) => h.kind !== 'VP_CONTEXT');
  const v1 = buildIgvm({ version: 1, headers: withoutContext });
  const f = parseIgvm(v1);
  t.is(f.version, 1);
  t.is(f.variableHeaderOffset, 24);
  t.true(f.crcOk);
  t.is(f.arch, 'x64');
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 4 * MiB }]);
  const r = loadIgvm(mem, f, planIgvmLoad(f), { vpCount: 1 });
  t.is(r.bootCpu, undefined, 'no context: the boot cpu starts from reset');
  t.true(mem.read(0x100000, 0x1000).every((b) => b === 0x11));
  const e = t.throws(() => planIgvmLoad(parseIgvm(buildIgvm({ version: 1, headers }))));
  t.regex(e!.message, /VP_CONTEXT\): a NATIVE vp context needs format_version 2, the file is version 1/);
});
