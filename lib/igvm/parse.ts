/**
 * IGVM file parser: fixed header v1/v2, CRC-32, and every variable header
 * type in the spec, with the cross-header rules (section order, unique
 * platforms and parameter areas, inserts after declarations, no conflicting
 * page or VP-context directives). It does not choose a platform or touch
 * guest memory (plan.ts and load.ts do). Spec: microsoft/igvm `igvm_defs`
 * (IGVM_FIXED_HEADER, IGVM_VHS_*), checked in the order the spec lists.
 */
import { FormatError } from '../errors';
import { ByteReader, hex } from '../util/bytes';
import { crc32Update } from './crc32';
import {
  IGVM_CHECKSUM_OFFSET,
  IGVM_FIXED_HEADER_SIZE_V1,
  IGVM_FIXED_HEADER_SIZE_V2,
  IGVM_HEADER_BODY_SIZE,
  IGVM_MAGIC,
  IGVM_VARIABLE_HEADER_ALIGNMENT,
  IGVM_VHS_VARIABLE_HEADER_SIZE,
  IGVM_VHT_OPTIONAL_BIT,
  PAGE_SIZE_4K,
  SECTION_ORDER,
  headerTypeLabel,
  headerTypeName,
  sectionOf,
  type IgvmSection,
} from './defs';
import { decodeHeaderBody, IgvmHeaderContext } from './parse-headers';
import { validateDirectives } from './validate';
import type { IgvmFile, IgvmHeader, IgvmSkippedHeader } from './model';

export interface ParseIgvmOptions {
  /** When false a checksum mismatch is recorded in `crcOk` instead of thrown (inspect uses this). Default true. */
  verifyChecksum?: boolean;
}

function fixedError(code: string, field: string, offset: number, message: string, expected?: string, actual?: string): FormatError {
  return new FormatError(code, `igvm: ${message}`, { format: 'igvm', field, offset, expected, actual });
}

/** Parse and validate an IGVM file; throws FormatError (`ERR_IGVM_*`) on the first violation. */
export function parseIgvm(input: Uint8Array, options: ParseIgvmOptions = {}): IgvmFile {
  // A Node Buffer's slice() is a view, not a copy; a plain Uint8Array view makes every slice() below a real copy.
  const bytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  const r = new ByteReader(bytes, 'igvm');
  const magic = r.u32(0, 'magic');
  if (magic !== IGVM_MAGIC) {
    throw fixedError('ERR_IGVM_MAGIC', 'magic', 0, `magic is ${hex(magic)}, expected ${hex(IGVM_MAGIC)} ("IGVM")`, hex(IGVM_MAGIC), hex(magic));
  }
  const version = r.u32(4, 'format_version');
  if (version !== 1 && version !== 2) {
    throw fixedError('ERR_IGVM_VERSION', 'format_version', 4, `format_version ${version} is not supported (this loader knows 1 and 2)`, '1 or 2', String(version));
  }
  const fixedSize = version === 1 ? IGVM_FIXED_HEADER_SIZE_V1 : IGVM_FIXED_HEADER_SIZE_V2;
  r.need(0, fixedSize, 'fixed header');
  const variableHeaderOffset = r.u32(8, 'variable_header_offset');
  const variableHeaderSize = r.u32(12, 'variable_header_size');
  const totalFileSize = r.u32(16, 'total_file_size');
  const checksum = r.u32(IGVM_CHECKSUM_OFFSET, 'checksum');
  let arch: 'x64' | 'aarch64' = 'x64';
  let pageSize = PAGE_SIZE_4K;
  if (version === 2) {
    const archCode = r.u32(24, 'architecture');
    if (archCode !== 0 && archCode !== 1) {
      throw fixedError('ERR_IGVM_ARCH', 'architecture', 24, `architecture ${archCode} is unknown (0 = X64, 1 = AARCH64)`, '0 or 1', String(archCode));
    }
    arch = archCode === 0 ? 'x64' : 'aarch64';
    pageSize = r.u32(28, 'page_size');
    if (pageSize !== PAGE_SIZE_4K) {
      throw fixedError('ERR_IGVM_PAGE_SIZE', 'page_size', 28, `page_size ${hex(pageSize)} is not supported (only 0x1000)`, '0x1000', hex(pageSize));
    }
  }
  if (totalFileSize !== bytes.length) {
    throw fixedError('ERR_IGVM_FILE_SIZE', 'total_file_size', 16, `total_file_size ${hex(totalFileSize)} does not match the ${hex(bytes.length)}-byte file`, hex(bytes.length), hex(totalFileSize));
  }
  if (variableHeaderOffset < fixedSize || variableHeaderOffset % IGVM_VARIABLE_HEADER_ALIGNMENT !== 0) {
    throw fixedError('ERR_IGVM_HEADER_ALIGNMENT', 'variable_header_offset', 8,
      `variable_header_offset ${hex(variableHeaderOffset)} must be 8-byte aligned and at least the ${fixedSize}-byte fixed header`, `>= ${fixedSize}, 8-aligned`, hex(variableHeaderOffset));
  }
  const fileDataOffset = variableHeaderOffset + variableHeaderSize;
  if (variableHeaderSize === 0 || fileDataOffset > bytes.length) {
    throw fixedError('ERR_IGVM_HEADER_SECTION', 'variable_header_size', 12,
      `variable header section [${hex(variableHeaderOffset)}, ${hex(fileDataOffset)}) is empty or runs past the ${hex(bytes.length)}-byte file`, `<= ${hex(bytes.length)}`, hex(fileDataOffset));
  }

  // The CRC covers the fixed header with its checksum zeroed, then the variable section; file data is not covered.
  const fixed = bytes.slice(0, fixedSize);
  fixed.fill(0, IGVM_CHECKSUM_OFFSET, IGVM_CHECKSUM_OFFSET + 4);
  const computedChecksum = crc32Update(crc32Update(0, fixed), bytes.subarray(variableHeaderOffset, fileDataOffset));
  const crcOk = computedChecksum === checksum;
  if (!crcOk && options.verifyChecksum !== false) {
    throw fixedError('ERR_IGVM_CHECKSUM', 'checksum', IGVM_CHECKSUM_OFFSET, `checksum ${hex(checksum)} does not match the computed crc32 ${hex(computedChecksum)}`, hex(computedChecksum), hex(checksum));
  }

  const { headers, skippedOptional } = parseVariableHeaders(r, { version, arch, pageSize, variableHeaderOffset, fileDataOffset, totalFileSize });
  validateDirectives(headers, { arch, pageSize, fileDataOffset, totalFileSize, bytes });
  return {
    version, arch, pageSize, variableHeaderOffset, variableHeaderSize, totalFileSize, fileDataOffset,
    checksum, computedChecksum, crcOk, headers, skippedOptional, bytes,
  };
}

interface SectionLayout {
  version: number;
  arch: 'x64' | 'aarch64';
  pageSize: number;
  variableHeaderOffset: number;
  fileDataOffset: number;
  totalFileSize: number;
}

function parseVariableHeaders(r: ByteReader, layout: SectionLayout): { headers: IgvmHeader[]; skippedOptional: IgvmSkippedHeader[] } {
  const headers: IgvmHeader[] = [];
  const skippedOptional: IgvmSkippedHeader[] = [];
  const end = layout.fileDataOffset;
  let section: IgvmSection = 'platform';
  let offset = layout.variableHeaderOffset;
  for (let index = 0; offset < end; index++) {
    const where = `igvm header ${index} at ${hex(offset)}`;
    if (offset + IGVM_VHS_VARIABLE_HEADER_SIZE > end) {
      throw new FormatError('ERR_IGVM_HEADER_BOUNDS', `${where}: type/length prefix runs past the variable header section end ${hex(end)}`,
        { format: 'igvm', field: `headers[${index}]`, offset, expected: `<= ${hex(end)}`, actual: hex(offset + IGVM_VHS_VARIABLE_HEADER_SIZE) });
    }
    const type = r.u32(offset, `headers[${index}].type`);
    const length = r.u32(offset + 4, `headers[${index}].length`);
    const label = headerTypeLabel(type);
    const bodyEnd = offset + IGVM_VHS_VARIABLE_HEADER_SIZE + length;
    const next = offset + IGVM_VHS_VARIABLE_HEADER_SIZE + Math.ceil(length / IGVM_VARIABLE_HEADER_ALIGNMENT) * IGVM_VARIABLE_HEADER_ALIGNMENT;
    if (next > end) {
      throw new FormatError('ERR_IGVM_HEADER_BOUNDS', `igvm header ${index} (${label}) at ${hex(offset)}: length ${hex(length)} runs past the variable header section end ${hex(end)}`,
        { format: 'igvm', field: `${label}[${index}].length`, offset: offset + 4, expected: `<= ${hex(end - offset - IGVM_VHS_VARIABLE_HEADER_SIZE)}`, actual: hex(length) });
    }
    for (let p = bodyEnd; p < next; p++) {
      if (r.bytes[p] !== 0) {
        throw new FormatError('ERR_IGVM_HEADER_PADDING', `igvm header ${index} (${label}) at ${hex(offset)}: padding byte at ${hex(p)} is ${hex(r.bytes[p]!)}, must be 0`,
          { format: 'igvm', field: `${label}[${index}].padding`, offset: p, expected: '0', actual: hex(r.bytes[p]!) });
      }
    }
    const name = headerTypeName(type);
    const sec = sectionOf(type);
    if (!name || !sec) {
      if ((type & IGVM_VHT_OPTIONAL_BIT) !== 0) {
        skippedOptional.push({ index, offset, type, length });
        offset = next;
        continue;
      }
      throw new FormatError('ERR_IGVM_UNKNOWN_HEADER', `igvm header ${index} at ${hex(offset)}: type ${hex(type)} is unknown and not marked optional`,
        { format: 'igvm', field: `headers[${index}].type`, offset, actual: hex(type) });
    }
    if (SECTION_ORDER[sec] < SECTION_ORDER[section]) {
      throw new FormatError('ERR_IGVM_PHASE_ORDER', `igvm header ${index} (${name}) at ${hex(offset)}: a ${sec} header cannot follow a ${section} header`,
        { format: 'igvm', field: `${name}[${index}].type`, offset, expected: `${section} section or later`, actual: sec });
    }
    section = sec;
    const expectedLength = IGVM_HEADER_BODY_SIZE[name];
    if (length !== expectedLength) {
      throw new FormatError('ERR_IGVM_HEADER_LENGTH', `igvm header ${index} (${name}) at ${hex(offset)}: length ${length} must be ${expectedLength}`,
        { format: 'igvm', field: `${name}[${index}].length`, offset: offset + 4, expected: String(expectedLength), actual: String(length) });
    }
    const ctx: IgvmHeaderContext = { r, index, offset, type, name, body: offset + IGVM_VHS_VARIABLE_HEADER_SIZE, ...layout };
    headers.push(decodeHeaderBody(ctx));
    offset = next;
  }
  return { headers, skippedOptional };
}
