/**
 * `nodevmm igvm inspect`: a JSON-able summary of an IGVM file (platforms,
 * header counts, page ranges per platform, parameter areas, VP contexts,
 * CRC status) and a plain-text rendering of it, in the spirit of the
 * reference crate's dump. It reports a CRC mismatch instead of failing;
 * every other format error still throws.
 */
import { hex } from '../util/bytes';
import { headerTypeLabel } from './defs';
import type { IgvmFile, IgvmSupportedPlatform } from './model';
import { parseIgvm } from './parse';
import { coalesceRanges, type IgvmGpaRange } from './ranges';
import { decodeNativeVpContextX64, decodeVbsVpContext } from './vp-context';

export interface IgvmSummary {
  formatVersion: number;
  architecture: string;
  pageSize: number;
  fileSize: number;
  fileDataOffset: number;
  checksum: string;
  computedChecksum: string;
  crcOk: boolean;
  headerCount: number;
  countsByType: Record<string, number>;
  skippedOptional: { index: number; type: string; length: number }[];
  platforms: { index: number; platform: string; mask: string; highestVtl: number; version: number; sharedGpaBoundary: string }[];
  /** Mask bits used by headers that no platform declares (legal; they simply never apply). */
  undeclaredMaskBits: string;
  /** Per declared platform: coalesced GPA ranges of its PAGE_DATA, with page counts. */
  pageData: { platform: string; pages: number; zeroPages: number; ranges: { start: string; last: string }[] }[];
  requiredMemory: { gpa: string; size: string; mask: string; vtl2Protectable: boolean }[];
  parameterAreas: { index: number; size: string; initialData: string; parameters: { kind: string; byteOffset: string }[]; inserts: { gpa: string; mask: string }[] }[];
  vpContexts: { index: number; mask: string; platforms: string[]; vpIndex: number; gpa: string; fileOffset: string; registers?: Record<string, string> }[];
  /** RELOCATABLE_REGION and PAGE_TABLE_RELOCATION_REGION headers (what `run --igvm-relocate` may move). */
  relocation: {
    index: number; kind: 'region' | 'page-tables'; mask: string; vpIndex: number; vtl: number; gpa: string; size: string;
    /** Regions: alignment, bounds and which registers follow; page tables: used bytes. */
    detail: string;
  }[];
}

function rangesOut(r: IgvmGpaRange[]): { start: string; last: string }[] {
  return r.map((x) => ({ start: hex(x.gpa), last: hex(x.gpa + x.size - 1) }));
}

/** Parse (tolerating only a CRC mismatch) and summarise. */
export function inspectIgvm(bytes: Uint8Array): IgvmSummary {
  return summarizeIgvm(parseIgvm(bytes, { verifyChecksum: false }));
}

export function summarizeIgvm(f: IgvmFile): IgvmSummary {
  const platforms = f.headers.filter((h): h is IgvmSupportedPlatform => h.kind === 'SUPPORTED_PLATFORM');
  const declared = platforms.reduce((m, p) => m | p.compatibility_mask, 0);
  const countsByType: Record<string, number> = {};
  let usedMask = 0;
  for (const h of f.headers) {
    countsByType[h.kind] = (countsByType[h.kind] ?? 0) + 1;
    if ('compatibility_mask' in h && h.kind !== 'SUPPORTED_PLATFORM') usedMask |= h.compatibility_mask;
  }
  const namesOf = (mask: number) => platforms.filter((p) => p.compatibility_mask & mask).map((p) => p.platform_name);
  const pageData = platforms.map((p) => {
    const pages = f.headers.filter((h) => h.kind === 'PAGE_DATA' && h.compatibility_mask & p.compatibility_mask) as Extract<IgvmFile['headers'][number], { kind: 'PAGE_DATA' }>[];
    return {
      platform: p.platform_name,
      pages: pages.length,
      zeroPages: pages.filter((h) => h.file_offset === 0).length,
      ranges: rangesOut(coalesceRanges(pages.map((h) => ({ gpa: h.gpa, size: f.pageSize })))),
    };
  });
  const parameterAreas: IgvmSummary['parameterAreas'] = [];
  const vpContexts: IgvmSummary['vpContexts'] = [];
  const requiredMemory: IgvmSummary['requiredMemory'] = [];
  const relocation: IgvmSummary['relocation'] = [];
  for (const h of f.headers) {
    if (h.kind === 'RELOCATABLE_REGION') {
      const follow = [h.flags & 2 ? 'rip' : '', h.flags & 4 ? 'gdtr' : ''].filter(Boolean).join(' and ') || 'no registers';
      relocation.push({ index: h.index, kind: 'region', mask: hex(h.compatibility_mask), vpIndex: h.vp_index, vtl: h.vtl, gpa: hex(h.relocation_region_gpa), size: hex(h.relocation_region_size),
        detail: `alignment ${hex(h.relocation_alignment)}, base from ${hex(h.minimum_relocation_gpa)} to ${hex(h.maximum_relocation_gpa)}, ${follow} follow${h.flags & 1 ? ', VTL2' : ''}` });
    } else if (h.kind === 'PAGE_TABLE_RELOCATION_REGION') {
      relocation.push({ index: h.index, kind: 'page-tables', mask: hex(h.compatibility_mask), vpIndex: h.vp_index, vtl: h.vtl, gpa: hex(h.gpa), size: hex(h.size), detail: `${hex(h.used_size)} bytes used` });
    } else if (h.kind === 'PARAMETER_AREA') {
      parameterAreas.push({ index: h.parameter_area_index, size: hex(h.number_of_bytes), initialData: h.file_offset ? `file ${hex(h.file_offset)}` : 'zero', parameters: [], inserts: [] });
    } else if ('byte_offset' in h) {
      parameterAreas.find((a) => a.index === h.parameter_area_index)?.parameters.push({ kind: h.kind, byteOffset: hex(h.byte_offset) });
    } else if (h.kind === 'PARAMETER_INSERT') {
      parameterAreas.find((a) => a.index === h.parameter_area_index)?.inserts.push({ gpa: hex(h.gpa), mask: hex(h.compatibility_mask) });
    } else if (h.kind === 'REQUIRED_MEMORY') {
      requiredMemory.push({ gpa: hex(h.gpa), size: hex(h.number_of_bytes), mask: hex(h.compatibility_mask), vtl2Protectable: (h.flags & 1) !== 0 });
    } else if (h.kind === 'VP_CONTEXT') {
      const names = namesOf(h.compatibility_mask);
      const entry: IgvmSummary['vpContexts'][number] = { index: h.index, mask: hex(h.compatibility_mask), platforms: names, vpIndex: h.vp_index, gpa: hex(h.gpa), fileOffset: hex(h.file_offset) };
      entry.registers = describeContext(f, h.file_offset, names, h.index);
      vpContexts.push(entry);
    }
  }
  return {
    formatVersion: f.version, architecture: f.arch, pageSize: f.pageSize, fileSize: f.totalFileSize, fileDataOffset: f.fileDataOffset,
    checksum: hex(f.checksum), computedChecksum: hex(f.computedChecksum), crcOk: f.crcOk,
    headerCount: f.headers.length + f.skippedOptional.length, countsByType,
    skippedOptional: f.skippedOptional.map((s) => ({ index: s.index, type: headerTypeLabel(s.type), length: s.length })),
    platforms: platforms.map((p) => ({ index: p.index, platform: p.platform_name, mask: hex(p.compatibility_mask), highestVtl: p.highest_vtl, version: p.platform_version, sharedGpaBoundary: hex(p.shared_gpa_boundary) })),
    undeclaredMaskBits: hex(usedMask & ~declared),
    pageData, requiredMemory, parameterAreas, vpContexts, relocation,
  };
}

function describeContext(f: IgvmFile, fileOffset: number, names: string[], index: number): Record<string, string> | undefined {
  const where = `igvm header ${index} (VP_CONTEXT)`;
  try {
    if (names.includes('NATIVE')) {
      const c = decodeNativeVpContextX64(f.bytes, fileOffset, f.pageSize, where);
      return {
        rip: hex(c.rip), rsp: hex(c.rsp), rflags: hex(c.rflags),
        cs: `sel ${hex(c.code_selector)} attr ${hex(c.code_attributes)} base ${hex(c.code_base)} limit ${hex(c.code_limit)}`,
        data: `sel ${hex(c.data_selector)} attr ${hex(c.data_attributes)} base ${hex(c.data_base)} limit ${hex(c.data_limit)}`,
        gdtr: `${hex(c.gdtr_base)}/${hex(c.gdtr_limit)}`, idtr: `${hex(c.idtr_base)}/${hex(c.idtr_limit)}`,
        cr0: hex(c.cr0), cr3: hex(c.cr3), cr4: hex(c.cr4), efer: hex(c.efer),
      };
    }
    if (names.includes('VSM_ISOLATION')) {
      const list = decodeVbsVpContext(f.bytes, fileOffset, where);
      return Object.fromEntries(list.map((r) => [`vtl${r.vtl}:${hex(r.name)}`, '0x' + Buffer.from(r.value).reverse().toString('hex').replace(/^0+(?=.)/, '')]));
    }
  } catch (e) {
    return { error: (e as Error).message };
  }
  return undefined;
}

/** Human-readable rendering of a summary. */
export function formatIgvmSummary(s: IgvmSummary): string {
  const out: string[] = [];
  out.push(`IGVM v${s.formatVersion} ${s.architecture}, page size ${hex(s.pageSize)}, ${s.fileSize} bytes (file data at ${hex(s.fileDataOffset)})`);
  out.push(`checksum ${s.checksum}: ${s.crcOk ? 'ok' : `MISMATCH (computed ${s.computedChecksum})`}`);
  out.push('', 'platforms:');
  for (const p of s.platforms) out.push(`  ${p.platform.padEnd(14)} mask ${p.mask}  highest_vtl ${p.highestVtl}  version ${p.version}  shared_gpa_boundary ${p.sharedGpaBoundary}`);
  if (s.undeclaredMaskBits !== '0x0') out.push(`  (headers also use mask bits ${s.undeclaredMaskBits}, which no platform declares)`);
  out.push('', `headers: ${s.headerCount}`);
  for (const [k, n] of Object.entries(s.countsByType)) out.push(`  ${k.padEnd(28)} ${n}`);
  for (const k of s.skippedOptional) out.push(`  skipped optional header ${k.index}: ${k.type} (${k.length} bytes)`);
  out.push('', 'page data:');
  for (const p of s.pageData) {
    out.push(`  ${p.platform}: ${p.pages} pages (${p.zeroPages} zero)`);
    for (const r of p.ranges) out.push(`    ${r.start} - ${r.last}`);
  }
  if (s.requiredMemory.length) {
    out.push('', 'required memory:');
    for (const r of s.requiredMemory) out.push(`  ${r.gpa} size ${r.size} mask ${r.mask}${r.vtl2Protectable ? ' vtl2-protectable' : ''}`);
  }
  if (s.relocation.length) {
    out.push('', 'relocation:');
    for (const r of s.relocation) out.push(`  header ${r.index}: ${r.kind === 'region' ? 'relocatable region' : 'page tables'} ${r.gpa} size ${r.size} mask ${r.mask} vp ${r.vpIndex} vtl ${r.vtl}: ${r.detail}`);
  }
  if (s.parameterAreas.length) {
    out.push('', 'parameter areas:');
    for (const a of s.parameterAreas) {
      out.push(`  area ${a.index}: ${a.size} bytes, initial data ${a.initialData}`);
      for (const p of a.parameters) out.push(`    ${p.kind} at ${p.byteOffset}`);
      for (const i of a.inserts) out.push(`    inserted at ${i.gpa} (mask ${i.mask})`);
    }
  }
  if (s.vpContexts.length) {
    out.push('', 'vp contexts:');
    for (const v of s.vpContexts) {
      out.push(`  header ${v.index}: vp ${v.vpIndex} mask ${v.mask} (${v.platforms.join(', ') || 'no declared platform'}) gpa ${v.gpa} data at ${v.fileOffset}`);
      for (const [k, val] of Object.entries(v.registers ?? {})) out.push(`    ${k.padEnd(7)} ${val}`);
    }
  }
  return out.join('\n') + '\n';
}
