/**
 * IGVM relocation: the page-table rebuild on hand-made identity maps (4 KiB,
 * 2 MiB and new tables from spare pages), and a whole relocated load of the
 * tiny relocatable image: pages, parameter GPAs, RIP, GDTR and page tables
 * all follow the region, and every bad base or file is one sentence.
 */
import test from 'ava';
import { buildIgvm, igvmFileToBuildInput, type IgvmBuildHeader } from '../../../lib/igvm/build';
import { parseIgvm } from '../../../lib/igvm/parse';
import { planIgvmLoad } from '../../../lib/loader/igvm/plan';
import { loadIgvm } from '../../../lib/loader/igvm/load';
import { rebuildPageTables, type IgvmRelocation } from '../../../lib/loader/igvm/relocate';
import type { IgvmPageTableRelocation } from '../../../lib/igvm/model';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { GDT_ENTRIES } from '../../../lib/arch/x86_64/cpu';
import { RELOCATABLE_IGVM as L, relocatableTestIgvm } from '../../../lib/testing/relocatable-igvm';
import { formatIgvmSummary, inspectIgvm } from '../../../lib/igvm/inspect';
import { parseRunArgs } from '../../../lib/cli/args';
import { resolveVmConfig } from '../../../lib/vm/config';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const LINK = 0x23n;
const LEAF_4K = 0x63n;
const LEAF_2M = 0xe3n;

function ptRegion(gpa: number, pages: number, used: number): IgvmPageTableRelocation {
  return { kind: 'PAGE_TABLE_RELOCATION_REGION', index: 7, type: 0x103, offset: 0, length: 32, compatibility_mask: 1, vp_index: 0, vtl: 0, gpa, size: pages * 4096, used_size: used * 4096 } as IgvmPageTableRelocation;
}
const move = (from: number, size: number, delta: number): IgvmRelocation => ({ header: 3, from, size, to: from + delta, delta, vpIndex: 0, vtl: 0, applyRip: true, applyGdtr: true });

/** PML4, PDPT, PD at `base`; PD[0] -> a PT of 4 KiB pages for 0-8 KiB, PD[1..2] 2 MiB leaves. */
function tables(base: number): Uint8Array {
  const t = new Uint8Array(4 * 4096);
  const dv = new DataView(t.buffer);
  dv.setBigUint64(0, BigInt(base + 0x1000) | LINK, true);
  dv.setBigUint64(0x1000, BigInt(base + 0x2000) | LINK, true);
  dv.setBigUint64(0x2000, BigInt(base + 0x3000) | LINK, true);
  dv.setBigUint64(0x2008, 0x20_0000n | LEAF_2M, true);
  dv.setBigUint64(0x2010, 0x40_0000n | LEAF_2M, true);
  dv.setBigUint64(0x3000, 0x0n | LEAF_4K, true);
  dv.setBigUint64(0x3008, 0x1000n | LEAF_4K, true);
  return t;
}
const entry = (t: Uint8Array, at: number) => new DataView(t.buffer, t.byteOffset).getBigUint64(at, true);

test('a 2 MiB leaf moved by 1 GiB is cleared and re-entered through a new PD from the spare pages', (t) => {
  const base = 0x10_0000;
  const out = rebuildPageTables({ region: ptRegion(base, 6, 4), tables: tables(base), tableDelta: 0, cr3: BigInt(base), cr4: 0x20n, moves: [move(0x20_0000, 0x20_0000, GiB)] });
  t.is(out.length, 5 * 4096, 'one new table');
  t.is(entry(out, 0x2008), 0n, 'the old mapping is gone');
  t.is(entry(out, 0x2010), 0x40_0000n | LEAF_2M, 'the neighbour stays');
  t.is(entry(out, 0x1008), BigInt(base + 0x4000) | LINK, 'PDPT[1] links the new PD');
  t.is(entry(out, 0x4000 + 8), 0x4020_0000n | LEAF_2M, 'identity mapping at the new address, flags kept');
});

test('4 KiB leaves move page by page; a move shorter than a leaf leaves that leaf alone', (t) => {
  const base = 0x10_0000;
  const out = rebuildPageTables({ region: ptRegion(base, 4, 4), tables: tables(base), tableDelta: 0, cr3: BigInt(base), cr4: 0n, moves: [move(0, 0x1000, 0x3000), move(0x40_0000, 0x20_0000, 0x1000)] });
  t.is(entry(out, 0x3000), 0n);
  t.is(entry(out, 0x3018), 0x3000n | LEAF_4K);
  t.is(entry(out, 0x3008), 0x1000n | LEAF_4K);
  t.is(entry(out, 0x2010), 0x40_0000n | LEAF_2M, 'a 4 KiB move inside a 2 MiB leaf changes nothing');
});

test('links into the region follow the region when it moves itself', (t) => {
  const base = 0x10_0000;
  const out = rebuildPageTables({ region: ptRegion(base, 4, 4), tables: tables(base), tableDelta: 0x10_0000, cr3: BigInt(base), cr4: 0n, moves: [] });
  t.is(entry(out, 0), BigInt(base + 0x10_0000 + 0x1000) | LINK);
  t.is(entry(out, 0x2000), BigInt(base + 0x10_0000 + 0x3000) | LINK);
  t.is(entry(out, 0x2008), 0x20_0000n | LEAF_2M, 'leaves outside moved ranges keep their address');
});

test('impossible rebuilds are refused in one sentence each', (t) => {
  const base = 0x10_0000;
  const input = { region: ptRegion(base, 4, 4), tables: tables(base), tableDelta: 0, cr3: BigInt(base), cr4: 0n, moves: [] as IgvmRelocation[] };
  t.throws(() => rebuildPageTables({ ...input, moves: [move(0x20_0000, 0x20_0000, 0x30_0000)] }), { code: 'ERR_IGVM_RELOCATION', message: /the 0x200000-byte mapping at 0x200000 cannot move by 0x300000 .*not aligned/ });
  t.throws(() => rebuildPageTables({ ...input, moves: [move(0x20_0000, 0x20_0000, GiB)] }), { message: /0 spare pages are not enough/ });
  t.throws(() => rebuildPageTables({ ...input, cr3: 0x9000n }), { message: /CR3 0x9000 is not inside the region's used pages/ });
  t.throws(() => rebuildPageTables({ ...input, cr4: 0x1000n }), { message: /5-level paging/ });
  const loop = tables(base);
  new DataView(loop.buffer).setBigUint64(0x1008, BigInt(base + 0x1000) | LINK, true);
  t.throws(() => rebuildPageTables({ ...input, tables: loop }), { message: /reached twice/ });
});

const relocatedPlan = (to: number) => planIgvmLoad(parseIgvm(relocatableTestIgvm()), { relocateTo: to });

test('a relocated load moves pages, RIP, GDTR and the page tables with the region', (t) => {
  const to = GiB;
  const delta = to - L.regionGpa;
  const file = parseIgvm(relocatableTestIgvm('HI\n'));
  const plan = planIgvmLoad(file, { relocateTo: to });
  t.deepEqual(plan.relocations.map((r) => ({ from: r.from, to: r.to, delta: r.delta })), [{ from: L.regionGpa, to, delta }]);
  t.deepEqual(plan.requiredRam, [{ gpa: L.pageTablesGpa, size: L.pageTablesPages * 4096 }, { gpa: to, size: L.regionSize }]);
  const ctx = plan.bootContext!.state;
  t.is(ctx.regs!.rip, BigInt(to + L.codeOffset));
  t.is(ctx.sregs!.gdt!.base, BigInt(to + L.gdtOffset));
  t.is(ctx.sregs!.cr3, BigInt(L.pageTablesGpa), 'the page-table region does not move');
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 4 * MiB }, { gpa: GiB, size: 2 * MiB }]);
  mem.fill(0, 4 * MiB, 0xa5);
  const r = loadIgvm(mem, file, plan, { vpCount: 1 });
  t.true(mem.read(L.regionGpa, 0x3000).every((b) => b === 0xa5), 'nothing is written at the file address');
  t.deepEqual([...mem.read(to, 6)], [0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8]);
  t.is(mem.readU64(to + L.gdtOffset + 8), GDT_ENTRIES[1], 'the GDT moved with the region');
  const pt = L.pageTablesGpa;
  t.is(mem.readU64(pt + 0x2000 + 8), 0n, 'PD[1] (the old region) is unmapped');
  t.is(mem.readU64(pt + 0x1000 + 8), BigInt(pt + 0x3000) | LINK, 'PDPT[1] links a PD taken from the spare page');
  t.is(mem.readU64(pt + 0x3000), BigInt(to) | LEAF_2M);
  t.is(mem.readU64(pt + 0x2000), LEAF_2M, 'the low 2 MiB stay mapped');
  t.true(r.writtenRanges.some((w) => w.gpa === pt && w.size === 4 * 4096));
});

test('relocating to the file address loads exactly what an unrelocated load does', (t) => {
  const bytes = relocatableTestIgvm();
  const load = (plan: ReturnType<typeof planIgvmLoad>) => {
    const mem = GuestMemory.anonymous([{ gpa: 0, size: 4 * MiB }]);
    const r = loadIgvm(mem, parseIgvm(bytes), plan, { vpCount: 1 });
    return { bytes: Buffer.from(mem.read(0, 4 * MiB)).toString('base64'), cpu: r.bootCpu };
  };
  t.deepEqual(load(relocatedPlan(L.regionGpa)), load(planIgvmLoad(parseIgvm(bytes))));
  t.deepEqual(relocatedPlan(L.regionGpa).relocations, []);
});

test('a base the region does not allow, or a file without one region, is refused naming the header and value', (t) => {
  t.throws(() => relocatedPlan(0x30_0000), { code: 'ERR_IGVM_RELOCATION', message: /header 1 \(RELOCATABLE_REGION\): relocation base 0x300000 is not a multiple of relocation_alignment 0x200000/ });
  t.throws(() => relocatedPlan(0), { message: /relocation base 0x0 is outside \[minimum_relocation_gpa 0x200000, maximum_relocation_gpa 0x100000000\]/ });
  t.throws(() => relocatedPlan(0x1_0020_0000), { message: /outside/ });
  const noRegion = buildIgvm({ headers: igvmFileToBuildInput(parseIgvm(relocatableTestIgvm())).headers.filter((h) => h.kind !== 'RAW' || (h.type !== 0x102 && h.type !== 0x103)) });
  t.throws(() => planIgvmLoad(parseIgvm(noRegion), { relocateTo: GiB }), { message: /the file has no RELOCATABLE_REGION for this platform/ });
});

test('the parser refuses an insert into the page-table region and a region whose vp has no context', (t) => {
  const headers = igvmFileToBuildInput(parseIgvm(relocatableTestIgvm())).headers;
  const insert: IgvmBuildHeader[] = [
    { kind: 'PARAMETER_AREA', number_of_bytes: 4096, parameter_area_index: 0 },
    { kind: 'VP_COUNT_PARAMETER', parameter_area_index: 0, byte_offset: 0 },
    { kind: 'PARAMETER_INSERT', gpa: L.pageTablesGpa + 0x3000, compatibility_mask: 1, parameter_area_index: 0 },
  ];
  const withInsert = [...headers.slice(0, -1), ...insert, headers[headers.length - 1]!];
  t.throws(() => parseIgvm(buildIgvm({ headers: withInsert })), { message: /PARAMETER_INSERT.*gpa 0x83000 inserts into the page-table relocation region of header 2/ });
  t.throws(() => parseIgvm(buildIgvm({ headers: headers.slice(0, -1) })), { message: /RELOCATABLE_REGION.*vp_index 0 has no VP_CONTEXT for mask 0x1/ });
});

test('inspect lists the relocation headers, and --igvm-relocate reaches the config as a checked address', (t) => {
  const s = inspectIgvm(relocatableTestIgvm());
  t.deepEqual(s.relocation.map((r) => [r.index, r.kind, r.gpa, r.size]), [[1, 'region', '0x200000', '0x200000'], [2, 'page-tables', '0x80000', '0x4000']]);
  t.regex(formatIgvmSummary(s), /header 1: relocatable region 0x200000 size 0x200000 .*rip and gdtr follow/);
  t.is(resolveVmConfig(parseRunArgs(['--igvm', 'x.igvm', '--igvm-relocate', '0x40000000']).config).igvmRelocateTo, GiB);
  t.is(resolveVmConfig(parseRunArgs(['--igvm', 'x.igvm', '--igvm-relocate', '1G']).config).igvmRelocateTo, GiB);
  t.throws(() => resolveVmConfig(parseRunArgs(['--igvm', 'x.igvm', '--igvm-relocate', '0x1001']).config), { message: /igvmRelocateTo: "0x1001" is not a page-aligned guest physical address/ });
  t.throws(() => resolveVmConfig({ kernel: 'k', igvmRelocateTo: GiB }), { message: /igvmRelocateTo: needs igvm/ });
});
