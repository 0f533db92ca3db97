/**
 * Whole-file IGVM rules that span headers: platforms present, unique and
 * suited to the architecture; parameter areas declared once, written before
 * their insert and inserted at most once per platform; no two page or VP
 * context directives for the same target on the same platform; relocation
 * regions that do not overlap; VP-context data inside the file for every
 * platform that can select it. Spec: `igvm_defs` docs and `igvm` validation.
 */
import { hex } from '../util/bytes';
import {
  AARCH64_ONLY_PLATFORMS,
  PARAMETER_TYPES,
  VBS_VP_CONTEXT_HEADER_SIZE,
  VBS_VP_CONTEXT_REGISTER_SIZE,
  X64_ONLY_PLATFORMS,
} from './defs';
import { headerError } from './parse-headers';
import type { IgvmHeader, IgvmParameterArea, IgvmSupportedPlatform, IgvmVpContext } from './model';
import { FormatError } from '../errors';

interface FileFacts {
  arch: 'x64' | 'aarch64';
  pageSize: number;
  fileDataOffset: number;
  totalFileSize: number;
  bytes: Uint8Array;
}

const PARAMETER_KINDS = new Set<string>(PARAMETER_TYPES);

interface AreaState {
  header: IgvmParameterArea;
  insertedMask: number;
}

export function validateDirectives(headers: readonly IgvmHeader[], file: FileFacts): void {
  const platforms = validatePlatforms(headers, file);
  const areas = new Map<number, AreaState>();
  const pageMasks = new Map<number, number>();
  const vpMasks = new Map<number, number>();
  const regions: { gpa: number; size: number; mask: number; index: number; vpIndex: number; pageTables: boolean }[] = [];
  const ptRegionMasks = { used: 0 };
  for (const h of headers) {
    switch (h.kind) {
      case 'RELOCATABLE_REGION':
      case 'PAGE_TABLE_RELOCATION_REGION': {
        const gpa = h.kind === 'RELOCATABLE_REGION' ? h.relocation_region_gpa : h.gpa;
        const size = h.kind === 'RELOCATABLE_REGION' ? h.relocation_region_size : h.size;
        if (h.kind === 'PAGE_TABLE_RELOCATION_REGION') {
          if (ptRegionMasks.used & h.compatibility_mask) {
            throw headerError('ERR_IGVM_DUPLICATE_DIRECTIVE', h, 'compatibility_mask', `${hex(h.compatibility_mask)} already has a page-table relocation region`);
          }
          ptRegionMasks.used |= h.compatibility_mask;
        }
        const clash = regions.find((o) => o.mask & h.compatibility_mask && gpa < o.gpa + o.size && o.gpa < gpa + size);
        if (clash) {
          throw headerError('ERR_IGVM_DUPLICATE_DIRECTIVE', h, 'gpa', `region [${hex(gpa)}, ${hex(gpa + size)}) overlaps the region of header ${clash.index}`);
        }
        regions.push({ gpa, size, mask: h.compatibility_mask, index: h.index, vpIndex: h.vp_index, pageTables: h.kind === 'PAGE_TABLE_RELOCATION_REGION' });
        break;
      }
      case 'PARAMETER_AREA':
        if (areas.has(h.parameter_area_index)) {
          throw headerError('ERR_IGVM_DUPLICATE_AREA', h, 'parameter_area_index', `${h.parameter_area_index} is already declared`, { actual: String(h.parameter_area_index) });
        }
        areas.set(h.parameter_area_index, { header: h, insertedMask: 0 });
        break;
      case 'PARAMETER_INSERT': {
        const area = areas.get(h.parameter_area_index);
        if (!area) throw headerError('ERR_IGVM_PARAMETER_AREA', h, 'parameter_area_index', `${h.parameter_area_index} names no declared parameter area`, { actual: String(h.parameter_area_index) });
        if (area.insertedMask & h.compatibility_mask) {
          throw headerError('ERR_IGVM_DUPLICATE_INSERT', h, 'parameter_area_index', `${h.parameter_area_index} is already inserted for mask ${hex(area.insertedMask & h.compatibility_mask)}`);
        }
        if (h.gpa + area.header.number_of_bytes > 2 ** 52) throw headerError('ERR_IGVM_GPA_RANGE', h, 'gpa', `${hex(h.gpa)} plus the area size runs past 2^52`);
        // A relocating loader rebuilds that region from its page tables; parameters there would be lost.
        const pt = regions.find((r) => r.pageTables && r.mask & h.compatibility_mask && h.gpa < r.gpa + r.size && r.gpa < h.gpa + area.header.number_of_bytes);
        if (pt) throw headerError('ERR_IGVM_FIELD', h, 'gpa', `${hex(h.gpa)} inserts into the page-table relocation region of header ${pt.index}`, { actual: hex(h.gpa) });
        area.insertedMask |= h.compatibility_mask;
        break;
      }
      case 'PAGE_DATA': {
        const seen = pageMasks.get(h.gpa) ?? 0;
        if (seen & h.compatibility_mask) {
          throw headerError('ERR_IGVM_DUPLICATE_DIRECTIVE', h, 'gpa', `${hex(h.gpa)} is already loaded for mask ${hex(seen & h.compatibility_mask)}`, { actual: hex(h.gpa) });
        }
        pageMasks.set(h.gpa, seen | h.compatibility_mask);
        break;
      }
      case 'VP_CONTEXT': {
        const seen = vpMasks.get(h.vp_index) ?? 0;
        if (seen & h.compatibility_mask) {
          throw headerError('ERR_IGVM_DUPLICATE_DIRECTIVE', h, 'vp_index', `${h.vp_index} already has a context for mask ${hex(seen & h.compatibility_mask)}`);
        }
        vpMasks.set(h.vp_index, seen | h.compatibility_mask);
        validateVpContextData(h, platforms, file);
        break;
      }
      default:
        if (PARAMETER_KINDS.has(h.kind) && 'byte_offset' in h) {
          const area = areas.get(h.parameter_area_index);
          if (!area) throw headerError('ERR_IGVM_PARAMETER_AREA', h, 'parameter_area_index', `${h.parameter_area_index} names no declared parameter area`, { actual: String(h.parameter_area_index) });
          if (area.insertedMask !== 0) throw headerError('ERR_IGVM_PARAMETER_AFTER_INSERT', h, 'parameter_area_index', `${h.parameter_area_index} was already inserted into the guest`);
          // Scalars need 4 bytes; tables and strings need at least one.
          const need = h.kind === 'VP_COUNT_PARAMETER' || h.kind === 'ENVIRONMENT_INFO_PARAMETER' ? 4 : 1;
          if (h.byte_offset + need > area.header.number_of_bytes) {
            throw headerError('ERR_IGVM_PARAMETER_OFFSET', h, 'byte_offset', `${hex(h.byte_offset)} does not leave ${need} bytes in the ${hex(area.header.number_of_bytes)}-byte area ${h.parameter_area_index}`,
              { expected: `<= ${hex(area.header.number_of_bytes - need)}`, actual: hex(h.byte_offset) });
          }
        }
    }
  }
  // The region's flags and page tables adjust that VP's registers, so it must have a context wherever the region applies.
  for (const r of regions) {
    const missing = r.mask & ~(vpMasks.get(r.vpIndex) ?? 0);
    if (missing) {
      const h = headers.find((x) => x.index === r.index)!;
      throw headerError('ERR_IGVM_FIELD', h, 'vp_index', `${r.vpIndex} has no VP_CONTEXT for mask ${hex(missing)}`, { actual: String(r.vpIndex) });
    }
  }
}

function validatePlatforms(headers: readonly IgvmHeader[], file: FileFacts): IgvmSupportedPlatform[] {
  const platforms = headers.filter((h): h is IgvmSupportedPlatform => h.kind === 'SUPPORTED_PLATFORM');
  if (platforms.length === 0) {
    throw new FormatError('ERR_IGVM_NO_PLATFORM', 'igvm: the file declares no SUPPORTED_PLATFORM header', { format: 'igvm', field: 'SUPPORTED_PLATFORM', expected: 'at least 1', actual: '0' });
  }
  for (let i = 0; i < platforms.length; i++) {
    const p = platforms[i]!;
    for (const q of platforms.slice(0, i)) {
      if (q.platform_type === p.platform_type) {
        throw headerError('ERR_IGVM_DUPLICATE_PLATFORM', p, 'platform_type', `${p.platform_name} is already declared by header ${q.index}`, { actual: p.platform_name });
      }
      if (q.compatibility_mask === p.compatibility_mask) {
        throw headerError('ERR_IGVM_DUPLICATE_PLATFORM', p, 'compatibility_mask', `${hex(p.compatibility_mask)} is already used by header ${q.index} (${q.platform_name})`, { actual: hex(p.compatibility_mask) });
      }
    }
    const wrongArch = file.arch === 'x64' ? AARCH64_ONLY_PLATFORMS.includes(p.platform_name) : X64_ONLY_PLATFORMS.includes(p.platform_name);
    if (wrongArch) throw headerError('ERR_IGVM_PLATFORM_ARCH', p, 'platform_type', `${p.platform_name} is not valid in a ${file.arch} file`, { actual: p.platform_name });
  }
  return platforms;
}

function validateVpContextData(h: IgvmVpContext, platforms: readonly IgvmSupportedPlatform[], file: FileFacts): void {
  for (const p of platforms) {
    if (!(p.compatibility_mask & h.compatibility_mask)) continue;
    let length = file.pageSize;
    if (p.platform_name === 'TDX') throw headerError('ERR_IGVM_FIELD', h, 'compatibility_mask', `${hex(h.compatibility_mask)} selects TDX, which takes no VP context`);
    if (p.platform_name === 'VSM_ISOLATION') {
      const view = new DataView(file.bytes.buffer, file.bytes.byteOffset, file.bytes.byteLength);
      const count = view.getUint32(h.file_offset, true);
      length = VBS_VP_CONTEXT_HEADER_SIZE + count * VBS_VP_CONTEXT_REGISTER_SIZE;
    }
    if ((p.platform_name === 'NATIVE' || p.platform_name === 'VSM_ISOLATION' || p.platform_name === 'SEV') && h.gpa !== 0n) {
      throw headerError('ERR_IGVM_FIELD', h, 'gpa', `${hex(h.gpa)} must be 0 for a ${p.platform_name} context`, { expected: '0', actual: hex(h.gpa) });
    }
    if (h.file_offset + length > file.totalFileSize) {
      throw headerError('ERR_IGVM_FILE_OFFSET', h, 'file_offset', `${hex(h.file_offset)} (+${hex(length)} bytes of ${p.platform_name} context) runs past the end of the file ${hex(file.totalFileSize)}`,
        { expected: `<= ${hex(file.totalFileSize - length)}`, actual: hex(h.file_offset) });
    }
  }
}
