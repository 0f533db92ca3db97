/**
 * IGVM serializer: headers in, file bytes out (fixed header v1/v2, CRC-32,
 * 8-byte aligned TLVs with zero padding, file data deduplicated so equal
 * pages are stored once). Headers that reference file data carry the bytes
 * in `data`; the serializer assigns the file offsets. It does not validate
 * beyond what encoding needs: parse the result to check it.
 */
import { FormatError } from '../errors';
import { ByteWriter } from '../util/bytes';
import { crc32Update } from './crc32';
import {
  IGVM_CHECKSUM_OFFSET,
  IGVM_FIXED_HEADER_SIZE_V1,
  IGVM_FIXED_HEADER_SIZE_V2,
  IGVM_HEADER_BODY_SIZE,
  IGVM_MAGIC,
  IgvmVariableHeaderType,
  PAGE_SIZE_4K,
  PARAMETER_TYPES,
  type IgvmParameterTypeName,
} from './defs';
import type { IgvmFile } from './model';

export type IgvmBuildHeader =
  | { kind: 'SUPPORTED_PLATFORM'; compatibility_mask: number; highest_vtl?: number; platform_type: number; platform_version?: number; shared_gpa_boundary?: bigint }
  | { kind: 'GUEST_POLICY'; policy: bigint; compatibility_mask: number }
  /** `data` (at most number_of_bytes) is the initial content; none means zeroed. */
  | { kind: 'PARAMETER_AREA'; number_of_bytes: number; parameter_area_index: number; data?: Uint8Array }
  /** `data` shorter than a page is zero-padded; none (or all zeros, with zeroPageAsOffsetZero) means file_offset 0. */
  | { kind: 'PAGE_DATA'; gpa: number; compatibility_mask: number; flags?: number; data_type?: number; data?: Uint8Array }
  | { kind: 'PARAMETER_INSERT'; gpa: number; compatibility_mask: number; parameter_area_index: number }
  | { kind: 'VP_CONTEXT'; gpa?: bigint; compatibility_mask: number; vp_index?: number; data: Uint8Array }
  | { kind: 'REQUIRED_MEMORY'; gpa: number; compatibility_mask: number; number_of_bytes: number; flags?: number }
  | {
      kind: 'RELOCATABLE_REGION'; compatibility_mask: number; vp_index?: number; vtl?: number; flags?: number;
      relocation_alignment: number; relocation_region_gpa: number; relocation_region_size: number; minimum_relocation_gpa: number; maximum_relocation_gpa: number;
    }
  | { kind: 'PAGE_TABLE_RELOCATION_REGION'; compatibility_mask: number; vp_index?: number; vtl?: number; gpa: number; size: number; used_size: number }
  | { kind: IgvmParameterTypeName; parameter_area_index: number; byte_offset: number }
  /** Any type with a ready-made body (no file data): unknown or optional types, or fields the kinds above lack. */
  | { kind: 'RAW'; type: number; body: Uint8Array };

export interface IgvmBuildInput {
  /** Default 2 (the NATIVE VP context needs v2). */
  version?: 1 | 2;
  arch?: 'x64' | 'aarch64';
  headers: readonly IgvmBuildHeader[];
}

const PARAMETER_KINDS = new Set<string>(PARAMETER_TYPES);

function bodyLength(h: IgvmBuildHeader): number {
  return h.kind === 'RAW' ? h.body.length : IGVM_HEADER_BODY_SIZE[h.kind];
}

/** Serialize headers into an IGVM file. */
export function buildIgvm(input: IgvmBuildInput): Uint8Array {
  const version = input.version ?? 2;
  const fixedSize = version === 1 ? IGVM_FIXED_HEADER_SIZE_V1 : IGVM_FIXED_HEADER_SIZE_V2;
  const page = PAGE_SIZE_4K;
  const vhsSize = input.headers.reduce((n, h) => n + 8 + Math.ceil(bodyLength(h) / 8) * 8, 0);
  const dataStart = fixedSize + vhsSize;

  // File data with deduplication: identical chunks share one offset (the reference serializer does the same).
  const chunks: Uint8Array[] = [];
  const seen = new Map<string, number>();
  let dataEnd = dataStart;
  const place = (bytes: Uint8Array): number => {
    const key = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
    const known = seen.get(key);
    if (known !== undefined) return known;
    const at = dataEnd;
    chunks.push(bytes);
    seen.set(key, at);
    dataEnd += bytes.length;
    return at;
  };
  const padded = (d: Uint8Array, size: number, what: string): Uint8Array => {
    if (d.length > size) throw new FormatError('ERR_IGVM_BUILD', `igvm build: ${what} has ${d.length} bytes, more than ${size}`, { format: 'igvm', field: what });
    const out = new Uint8Array(size);
    out.set(d);
    return out;
  };

  // Sized up front so the writer never grows (ByteWriter.bytes() loses data when it has to grow mid-call).
  const w = new ByteWriter(dataStart + 8);
  w.u32(IGVM_MAGIC).u32(version).u32(fixedSize).u32(vhsSize).u32(0).u32(0);
  if (version === 2) w.u32(input.arch === 'aarch64' ? 1 : 0).u32(page);
  input.headers.forEach((h, i) => {
    const type = h.kind === 'RAW' ? h.type : IgvmVariableHeaderType[h.kind];
    w.u32(type).u32(bodyLength(h));
    const start = w.length;
    switch (h.kind) {
      case 'SUPPORTED_PLATFORM':
        w.u32(h.compatibility_mask).u8(h.highest_vtl ?? 0).u8(h.platform_type).u16(h.platform_version ?? 1).u64(h.shared_gpa_boundary ?? 0n);
        break;
      case 'GUEST_POLICY':
        w.u64(h.policy).u32(h.compatibility_mask).u32(0);
        break;
      case 'PARAMETER_AREA':
        w.u64(h.number_of_bytes).u32(h.parameter_area_index).u32(h.data ? place(padded(h.data, h.number_of_bytes, `headers[${i}].data`)) : 0);
        break;
      case 'PAGE_DATA': {
        const data = h.data ? padded(h.data, page, `headers[${i}].data`) : undefined;
        w.u64(h.gpa).u32(h.compatibility_mask).u32(data ? place(data) : 0).u32(h.flags ?? 0).u16(h.data_type ?? 0).u16(0);
        break;
      }
      case 'PARAMETER_INSERT':
        w.u64(h.gpa).u32(h.compatibility_mask).u32(h.parameter_area_index);
        break;
      case 'VP_CONTEXT':
        w.u64(h.gpa ?? 0n).u32(h.compatibility_mask).u32(place(h.data)).u16(h.vp_index ?? 0).u16(0);
        break;
      case 'REQUIRED_MEMORY':
        w.u64(h.gpa).u32(h.compatibility_mask).u32(h.number_of_bytes).u32(h.flags ?? 0).u32(0);
        break;
      case 'RELOCATABLE_REGION':
        w.u32(h.compatibility_mask).u16(h.vp_index ?? 0).u8(h.vtl ?? 0).u8(h.flags ?? 0);
        w.u64(h.relocation_alignment).u64(h.relocation_region_gpa).u64(h.relocation_region_size).u64(h.minimum_relocation_gpa).u64(h.maximum_relocation_gpa);
        break;
      case 'PAGE_TABLE_RELOCATION_REGION':
        w.u32(h.compatibility_mask).u16(h.vp_index ?? 0).u8(h.vtl ?? 0).u8(0).u64(h.gpa).u64(h.size).u64(h.used_size);
        break;
      case 'RAW':
        w.bytes(h.body);
        break;
      default:
        if (!PARAMETER_KINDS.has(h.kind)) throw new FormatError('ERR_IGVM_BUILD', `igvm build: headers[${i}] kind ${String((h as { kind: unknown }).kind)} cannot be built`, { format: 'igvm' });
        w.u32(h.parameter_area_index).u32(h.byte_offset);
    }
    if (w.length - start !== bodyLength(h)) throw new Error(`igvm build: ${h.kind} body encoded as ${w.length - start} bytes`);
    w.align(8);
  });
  const file = new Uint8Array(dataEnd);
  file.set(w.finish());
  let at = dataStart;
  for (const c of chunks) {
    file.set(c, at);
    at += c.length;
  }
  const dv = new DataView(file.buffer);
  dv.setUint32(16, file.length, true);
  const crc = crc32Update(crc32Update(0, file.subarray(0, fixedSize)), file.subarray(fixedSize, dataStart));
  dv.setUint32(IGVM_CHECKSUM_OFFSET, crc, true);
  return file;
}

/**
 * The build input that reproduces a parsed file: headers with file data get
 * their bytes attached, everything else is copied as a RAW body. Used for
 * round-trip tests and for rewriting files.
 */
export function igvmFileToBuildInput(file: IgvmFile): IgvmBuildInput {
  const page = file.pageSize;
  const platformOf = new Map(file.headers.flatMap((h) => (h.kind === 'SUPPORTED_PLATFORM' ? [[h.compatibility_mask, h.platform_name] as const] : [])));
  const headers: IgvmBuildHeader[] = file.headers.map((h) => {
    switch (h.kind) {
      case 'PAGE_DATA':
        return { kind: 'PAGE_DATA', gpa: h.gpa, compatibility_mask: h.compatibility_mask, flags: h.flags, data_type: h.data_type, ...(h.file_offset ? { data: file.bytes.slice(h.file_offset, h.file_offset + page) } : {}) };
      case 'PARAMETER_AREA':
        return { kind: 'PARAMETER_AREA', number_of_bytes: h.number_of_bytes, parameter_area_index: h.parameter_area_index, ...(h.file_offset ? { data: file.bytes.slice(h.file_offset, h.file_offset + h.number_of_bytes) } : {}) };
      case 'VP_CONTEXT': {
        // VBS lists are sized by their count; every other context is one page.
        const vbs = platformOf.get(h.compatibility_mask) === 'VSM_ISOLATION';
        const length = vbs ? 4 + 32 * new DataView(file.bytes.buffer, file.bytes.byteOffset).getUint32(h.file_offset, true) : page;
        return { kind: 'VP_CONTEXT', gpa: h.gpa, compatibility_mask: h.compatibility_mask, vp_index: h.vp_index, data: file.bytes.slice(h.file_offset, h.file_offset + length) };
      }
      case 'CORIM_DOCUMENT':
      case 'CORIM_SIGNATURE':
        throw new FormatError('ERR_IGVM_BUILD', `igvm build: header ${h.index} (${h.kind}) references file data the builder cannot re-emit`, { format: 'igvm' });
      default: {
        const len = IGVM_HEADER_BODY_SIZE[h.kind];
        return { kind: 'RAW', type: h.type, body: file.bytes.slice(h.offset + 8, h.offset + 8 + len) };
      }
    }
  });
  return { version: file.version, arch: file.arch, headers };
}

