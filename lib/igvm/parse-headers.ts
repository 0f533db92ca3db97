/**
 * Decoding of one IGVM variable-header body into its model type, with the
 * checks that need only that body: reserved fields, enum values, page
 * alignment, GPA range and file offsets inside the file data. Cross-header
 * rules live in validate.ts. Spec: `igvm_defs` IGVM_VHS_* structs.
 */
import { FormatError } from '../errors';
import { ByteReader, hex } from '../util/bytes';
import {
  IGVM_MAX_GPA,
  IGVM_PAGE_DATA_FLAGS_KNOWN,
  IGVM_PAGE_DATA_FLAG_IS_2MB_PAGE,
  IGVM_REQUIRED_MEMORY_FLAG_VTL2_PROTECTABLE,
  PAGE_DATA_TYPE_NAMES,
  PAGE_SIZE_2M,
  PARAMETER_TYPES,
  RELOCATION_FLAGS_KNOWN,
  platformTypeName,
  type IgvmHeaderTypeName,
  type IgvmParameterTypeName,
} from './defs';
import type { IgvmHeader } from './model';

export interface IgvmHeaderContext {
  r: ByteReader;
  index: number;
  offset: number;
  type: number;
  name: IgvmHeaderTypeName;
  /** File offset of the body (after the 8-byte prefix). */
  body: number;
  arch: 'x64' | 'aarch64';
  pageSize: number;
  fileDataOffset: number;
  totalFileSize: number;
}

/** A FormatError naming header index, type, field and value. */
export function headerError(
  code: string,
  h: { index: number; offset: number; kind?: string; name?: string },
  field: string,
  message: string,
  details: { offset?: number; expected?: string; actual?: string } = {},
): FormatError {
  const name = h.kind ?? h.name ?? 'header';
  return new FormatError(code, `igvm header ${h.index} (${name}) at ${hex(h.offset)}: ${field} ${message}`, {
    format: 'igvm',
    field: `${name}[${h.index}].${field}`,
    offset: details.offset ?? h.offset,
    expected: details.expected,
    actual: details.actual,
  });
}

class BodyReader {
  constructor(private readonly c: IgvmHeaderContext) {}
  private f(field: string): string {
    return `${this.c.name}[${this.c.index}].${field}`;
  }
  u8(off: number, field: string): number {
    return this.c.r.u8(this.c.body + off, this.f(field));
  }
  u16(off: number, field: string): number {
    return this.c.r.u16(this.c.body + off, this.f(field));
  }
  u32(off: number, field: string): number {
    return this.c.r.u32(this.c.body + off, this.f(field));
  }
  u64(off: number, field: string): bigint {
    return this.c.r.u64(this.c.body + off, this.f(field));
  }
  fail(code: string, off: number, field: string, message: string, expected?: string, actual?: string): never {
    throw headerError(code, this.c, field, message, { offset: this.c.body + off, expected, actual });
  }
  zero(off: number, size: 1 | 2 | 4 | 8, field: string): void {
    const v = size === 8 ? this.u64(off, field) : BigInt(size === 4 ? this.u32(off, field) : size === 2 ? this.u16(off, field) : this.u8(off, field));
    if (v !== 0n) this.fail('ERR_IGVM_FIELD', off, field, `is ${hex(v)}, must be 0`, '0', hex(v));
  }
  /** A u64 GPA or size: below 2^52 and aligned to `align`. */
  address(off: number, field: string, align: number): number {
    const v = this.u64(off, field);
    if (v >= BigInt(IGVM_MAX_GPA)) this.fail('ERR_IGVM_GPA_RANGE', off, field, `${hex(v)} is beyond the 52-bit physical address space`, `< ${hex(IGVM_MAX_GPA)}`, hex(v));
    const n = Number(v);
    if (align > 0 && n % align !== 0) this.fail('ERR_IGVM_UNALIGNED', off, field, `${hex(n)} is not aligned to ${hex(align)}`, `multiple of ${hex(align)}`, hex(n));
    return n;
  }
  /** A u32 size that must be a page multiple. */
  pages32(off: number, field: string): number {
    const n = this.u32(off, field);
    if (n % this.c.pageSize !== 0) this.fail('ERR_IGVM_UNALIGNED', off, field, `${hex(n)} is not a multiple of the page size ${hex(this.c.pageSize)}`, `multiple of ${hex(this.c.pageSize)}`, hex(n));
    return n;
  }
  /** Check [file_offset, +length) lies in the file data section; 0 means "no data" when allowed. */
  fileRange(fileOffset: number, length: number, off: number, field: string, zeroMeansNone: boolean): void {
    if (zeroMeansNone && fileOffset === 0) return;
    const { fileDataOffset, totalFileSize } = this.c;
    if (fileOffset < fileDataOffset || fileOffset + length > totalFileSize) {
      this.fail('ERR_IGVM_FILE_OFFSET', off, field, `${hex(fileOffset)} (+${hex(length)} bytes) lies outside the file data [${hex(fileDataOffset)}, ${hex(totalFileSize)})`,
        `[${hex(fileDataOffset)}, ${hex(totalFileSize)})`, hex(fileOffset));
    }
  }
}

type HeaderBase = { index: number; offset: number; type: number };
type HeaderDecoder = (b: BodyReader, c: IgvmHeaderContext, base: HeaderBase) => IgvmHeader;

/** IGVM_VHS_SUPPORTED_PLATFORM: one platform the file can boot on. */
function decodeSupportedPlatform(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const compatibility_mask = b.u32(0, 'compatibility_mask');
  const highest_vtl = b.u8(4, 'highest_vtl');
  const platform_type = b.u8(5, 'platform_type');
  const platform_version = b.u16(6, 'platform_version');
  const shared_gpa_boundary = b.u64(8, 'shared_gpa_boundary');
  const platform_name = platformTypeName(platform_type);
  if (!platform_name) b.fail('ERR_IGVM_FIELD', 5, 'platform_type', `${hex(platform_type)} is unknown`, '0..6', hex(platform_type));
  if (compatibility_mask === 0 || (compatibility_mask & (compatibility_mask - 1)) !== 0) {
    b.fail('ERR_IGVM_PLATFORM_MASK', 0, 'compatibility_mask', `${hex(compatibility_mask)} must have exactly one bit set`, 'one bit', hex(compatibility_mask));
  }
  if (highest_vtl !== 0 && highest_vtl !== 2) b.fail('ERR_IGVM_FIELD', 4, 'highest_vtl', `${highest_vtl} is not 0 or 2`, '0 or 2', String(highest_vtl));
  if (platform_version !== 1) b.fail('ERR_IGVM_FIELD', 6, 'platform_version', `${platform_version} is not 1`, '1', String(platform_version));
  if ((platform_name === 'NATIVE' || platform_name === 'VSM_ISOLATION') && shared_gpa_boundary !== 0n) {
    b.fail('ERR_IGVM_FIELD', 8, 'shared_gpa_boundary', `${hex(shared_gpa_boundary)} must be 0 on ${platform_name}`, '0', hex(shared_gpa_boundary));
  }
  return { ...base, kind: 'SUPPORTED_PLATFORM', compatibility_mask, highest_vtl, platform_type, platform_name, platform_version, shared_gpa_boundary };
}

/** IGVM_VHS_GUEST_POLICY. */
function decodeGuestPolicy(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const policy = b.u64(0, 'policy');
  const compatibility_mask = b.u32(8, 'compatibility_mask');
  b.zero(12, 4, 'reserved');
  return { ...base, kind: 'GUEST_POLICY', policy, compatibility_mask };
}

/** IGVM_VHS_RELOCATABLE_REGION: a region the loader may move, with its bounds. */
function decodeRelocatableRegion(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const page = c.pageSize;
  const compatibility_mask = b.u32(0, 'compatibility_mask');
  const vp_index = b.u16(4, 'vp_index');
  const vtl = b.u8(6, 'vtl');
  const flags = b.u8(7, 'flags');
  if (flags & ~RELOCATION_FLAGS_KNOWN) b.fail('ERR_IGVM_FIELD', 7, 'flags', `${hex(flags)} has reserved bits set`, `bits of ${hex(RELOCATION_FLAGS_KNOWN)}`, hex(flags));
  const relocation_alignment = b.address(8, 'relocation_alignment', page);
  if (relocation_alignment === 0) b.fail('ERR_IGVM_FIELD', 8, 'relocation_alignment', 'is 0, must be a non-zero page multiple', `multiple of ${hex(page)}`, '0x0');
  const relocation_region_gpa = b.address(16, 'relocation_region_gpa', relocation_alignment);
  const relocation_region_size = b.address(24, 'relocation_region_size', page);
  const minimum_relocation_gpa = b.address(32, 'minimum_relocation_gpa', relocation_alignment);
  const maximum_relocation_gpa = b.address(40, 'maximum_relocation_gpa', relocation_alignment);
  if (relocation_region_gpa + relocation_region_size > IGVM_MAX_GPA) b.fail('ERR_IGVM_GPA_RANGE', 24, 'relocation_region_size', `${hex(relocation_region_size)} takes the region past 2^52`);
  if (minimum_relocation_gpa > maximum_relocation_gpa) {
    b.fail('ERR_IGVM_FIELD', 32, 'minimum_relocation_gpa', `${hex(minimum_relocation_gpa)} is above maximum_relocation_gpa ${hex(maximum_relocation_gpa)}`);
  }
  return { ...base, kind: 'RELOCATABLE_REGION', compatibility_mask, vp_index, vtl, flags, relocation_alignment, relocation_region_gpa, relocation_region_size, minimum_relocation_gpa, maximum_relocation_gpa };
}

/** IGVM_VHS_PAGE_TABLE_RELOCATION: the identity page tables a relocation rebuilds. */
function decodePageTableRelocationRegion(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const page = c.pageSize;
  const compatibility_mask = b.u32(0, 'compatibility_mask');
  const vp_index = b.u16(4, 'vp_index');
  const vtl = b.u8(6, 'vtl');
  b.zero(7, 1, 'reserved');
  const gpa = b.address(8, 'gpa', page);
  const size = b.address(16, 'size', page);
  const used_size = b.address(24, 'used_size', page);
  if (used_size > size) b.fail('ERR_IGVM_FIELD', 24, 'used_size', `${hex(used_size)} exceeds size ${hex(size)}`, `<= ${hex(size)}`, hex(used_size));
  if (gpa + size > IGVM_MAX_GPA) b.fail('ERR_IGVM_GPA_RANGE', 16, 'size', `${hex(size)} takes the region past 2^52`);
  return { ...base, kind: 'PAGE_TABLE_RELOCATION_REGION', compatibility_mask, vp_index, vtl, gpa, size, used_size };
}

/** IGVM_VHS_CORIM_DOCUMENT / _SIGNATURE: a blob in the file data. */
function decodeCorim(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const kind = c.name === 'CORIM_DOCUMENT' ? 'CORIM_DOCUMENT' : 'CORIM_SIGNATURE';
  const compatibility_mask = b.u32(0, 'compatibility_mask');
  const file_offset = b.u32(4, 'file_offset');
  const size_bytes = b.u32(8, 'size_bytes');
  b.zero(12, 4, 'reserved');
  b.fileRange(file_offset, size_bytes, 4, 'file_offset', false);
  return { ...base, kind, compatibility_mask, file_offset, size_bytes };
}

/** IGVM_VHS_CCA_POLICY (AArch64 only). */
function decodeCcaPolicy(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const compatibility_mask = b.u32(0, 'compatibility_mask');
  b.zero(4, 4, 'reserved');
  const attributes_required_zeroes = b.u64(8, 'attributes_required_zeroes');
  const attributes_required_ones = b.u64(16, 'attributes_required_ones');
  const hash_algorithm = b.u8(24, 'hash_algorithm');
  const lfa_policy = b.u8(25, 'lfa_policy');
  for (let i = 26; i < 32; i++) b.zero(i, 1, 'reserved');
  if (c.arch !== 'aarch64') b.fail('ERR_IGVM_FIELD', 0, 'compatibility_mask', 'belongs to a CCA_POLICY, which is only valid in AArch64 files');
  if (attributes_required_zeroes & attributes_required_ones) b.fail('ERR_IGVM_FIELD', 16, 'attributes_required_ones', `${hex(attributes_required_ones)} overlaps attributes_required_zeroes ${hex(attributes_required_zeroes)}`);
  if (hash_algorithm > 2) b.fail('ERR_IGVM_FIELD', 24, 'hash_algorithm', `${hash_algorithm} is unknown`, '0..2', String(hash_algorithm));
  if (lfa_policy > 1) b.fail('ERR_IGVM_FIELD', 25, 'lfa_policy', `${lfa_policy} is unknown`, '0 or 1', String(lfa_policy));
  return { ...base, kind: 'CCA_POLICY', compatibility_mask, attributes_required_zeroes, attributes_required_ones, hash_algorithm, lfa_policy };
}

/** IGVM_VHS_PARAMETER_AREA: host-filled pages, optionally with initial file data. */
function decodeParameterArea(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const page = c.pageSize;
  const number_of_bytes = b.address(0, 'number_of_bytes', page);
  if (number_of_bytes === 0) b.fail('ERR_IGVM_FIELD', 0, 'number_of_bytes', 'is 0, an area needs at least one page', `multiple of ${hex(page)}`, '0x0');
  const parameter_area_index = b.u32(8, 'parameter_area_index');
  const file_offset = b.u32(12, 'file_offset');
  b.fileRange(file_offset, number_of_bytes, 12, 'file_offset', true);
  return { ...base, kind: 'PARAMETER_AREA', number_of_bytes, parameter_area_index, file_offset };
}

/** IGVM_VHS_PAGE_DATA: one 4 KiB (or 2 MiB) page of the image. */
function decodePageData(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const page = c.pageSize;
  const flags = b.u32(16, 'flags');
  if (flags & ~IGVM_PAGE_DATA_FLAGS_KNOWN) b.fail('ERR_IGVM_FIELD', 16, 'flags', `${hex(flags)} has reserved bits set`, `bits of ${hex(IGVM_PAGE_DATA_FLAGS_KNOWN)}`, hex(flags));
  const gpa = b.address(0, 'gpa', flags & IGVM_PAGE_DATA_FLAG_IS_2MB_PAGE ? PAGE_SIZE_2M : page);
  const compatibility_mask = b.u32(8, 'compatibility_mask');
  const file_offset = b.u32(12, 'file_offset');
  const data_type = b.u16(20, 'data_type');
  const data_type_name = PAGE_DATA_TYPE_NAMES[data_type];
  if (!data_type_name) b.fail('ERR_IGVM_FIELD', 20, 'data_type', `${data_type} is unknown`, '0..3', String(data_type));
  b.zero(22, 2, 'reserved');
  // The reference parser reads one page of data even for 2 MiB pages.
  b.fileRange(file_offset, page, 12, 'file_offset', true);
  return { ...base, kind: 'PAGE_DATA', gpa, compatibility_mask, file_offset, flags, data_type, data_type_name };
}

/** IGVM_VHS_PARAMETER_INSERT: where a parameter area lands in the guest. */
function decodeParameterInsert(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const page = c.pageSize;
  const gpa = b.address(0, 'gpa', page);
  const compatibility_mask = b.u32(8, 'compatibility_mask');
  const parameter_area_index = b.u32(12, 'parameter_area_index');
  return { ...base, kind: 'PARAMETER_INSERT', gpa, compatibility_mask, parameter_area_index };
}

/** IGVM_VHS_VP_CONTEXT: a vCPU's initial registers (checked per platform in validate.ts). */
function decodeVpContext(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const gpa = b.u64(0, 'gpa');
  const compatibility_mask = b.u32(8, 'compatibility_mask');
  const file_offset = b.u32(12, 'file_offset');
  const vp_index = b.u16(16, 'vp_index');
  b.zero(18, 2, 'reserved');
  // The data length depends on the platform; validate.ts checks it per declared platform.
  b.fileRange(file_offset, 4, 12, 'file_offset', false);
  return { ...base, kind: 'VP_CONTEXT', gpa, compatibility_mask, file_offset, vp_index };
}

/** IGVM_VHS_REQUIRED_MEMORY: RAM the host must provide. */
function decodeRequiredMemory(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const page = c.pageSize;
  const gpa = b.address(0, 'gpa', page);
  const compatibility_mask = b.u32(8, 'compatibility_mask');
  const number_of_bytes = b.pages32(12, 'number_of_bytes');
  const flags = b.u32(16, 'flags');
  if (flags & ~IGVM_REQUIRED_MEMORY_FLAG_VTL2_PROTECTABLE) b.fail('ERR_IGVM_FIELD', 16, 'flags', `${hex(flags)} has reserved bits set`, '0x0 or 0x1', hex(flags));
  b.zero(20, 4, 'reserved');
  if (gpa + number_of_bytes > IGVM_MAX_GPA) b.fail('ERR_IGVM_GPA_RANGE', 12, 'number_of_bytes', `${hex(number_of_bytes)} takes the range past 2^52`);
  return { ...base, kind: 'REQUIRED_MEMORY', gpa, compatibility_mask, number_of_bytes, flags };
}

/** IGVM_VHS_ERROR_RANGE: where the guest may report a boot failure. */
function decodeErrorRange(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const page = c.pageSize;
  const gpa = b.address(0, 'gpa', page);
  const compatibility_mask = b.u32(8, 'compatibility_mask');
  const size_bytes = b.pages32(12, 'size_bytes');
  return { ...base, kind: 'ERROR_RANGE', gpa, compatibility_mask, size_bytes };
}

/** SNP_ID_BLOCK / VBS_MEASUREMENT: kept as bytes (measurement is not ours to do). */
function decodeOpaqueBody(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const kind = c.name === 'SNP_ID_BLOCK' ? 'SNP_ID_BLOCK' : 'VBS_MEASUREMENT';
  const compatibility_mask = b.u32(0, 'compatibility_mask');
  const body = c.r.slice(c.body, kind === 'SNP_ID_BLOCK' ? 696 : 864, `${kind}[${c.index}]`).slice();
  return { ...base, kind, compatibility_mask, body };
}

/** The parameter headers (VP count, memory map, command line, ...): one area and a byte offset in it. */
function decodeParameter(b: BodyReader, c: IgvmHeaderContext, base: HeaderBase): IgvmHeader {
  const kind = c.name;
  if (!isParameterType(kind)) throw headerError('ERR_IGVM_UNKNOWN_HEADER', c, 'type', `${hex(c.type)} has no decoder`);
  const parameter_area_index = b.u32(0, 'parameter_area_index');
  const byte_offset = b.u32(4, 'byte_offset');
  return { ...base, kind, parameter_area_index, byte_offset };
}

function isParameterType(name: string): name is IgvmParameterTypeName {
  return (PARAMETER_TYPES as readonly string[]).includes(name);
}

const DECODERS: Partial<Record<IgvmHeaderTypeName, HeaderDecoder>> = {
  SUPPORTED_PLATFORM: decodeSupportedPlatform,
  GUEST_POLICY: decodeGuestPolicy,
  RELOCATABLE_REGION: decodeRelocatableRegion,
  PAGE_TABLE_RELOCATION_REGION: decodePageTableRelocationRegion,
  CORIM_DOCUMENT: decodeCorim,
  CORIM_SIGNATURE: decodeCorim,
  CCA_POLICY: decodeCcaPolicy,
  PARAMETER_AREA: decodeParameterArea,
  PAGE_DATA: decodePageData,
  PARAMETER_INSERT: decodeParameterInsert,
  VP_CONTEXT: decodeVpContext,
  REQUIRED_MEMORY: decodeRequiredMemory,
  ERROR_RANGE: decodeErrorRange,
  SNP_ID_BLOCK: decodeOpaqueBody,
  VBS_MEASUREMENT: decodeOpaqueBody,
};

/** Decode the body of a known header type (its length has been checked already). */
export function decodeHeaderBody(c: IgvmHeaderContext): IgvmHeader {
  const decode = DECODERS[c.name] ?? decodeParameter;
  return decode(new BodyReader(c), c, { index: c.index, offset: c.offset, type: c.type });
}
