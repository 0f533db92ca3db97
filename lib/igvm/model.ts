/**
 * The typed model `parseIgvm` returns: the fixed header plus one entry per
 * variable header, discriminated by `kind` (the spec's type name). Wire
 * fields keep the spec's snake_case names; GPAs are numbers (the parser
 * refuses GPAs at or above 2^52), opaque 64-bit values are bigints.
 */
import type { IgvmPageDataTypeName, IgvmParameterTypeName, IgvmPlatformTypeName } from './defs';

interface HeaderBase {
  /** Position in the variable header section, counting skipped optional headers. */
  index: number;
  /** File offset of the 8-byte type/length prefix. */
  offset: number;
  /** Raw type number as stored (optional bit included). */
  type: number;
}

export interface IgvmSupportedPlatform extends HeaderBase {
  kind: 'SUPPORTED_PLATFORM';
  compatibility_mask: number;
  highest_vtl: number;
  platform_type: number;
  platform_name: IgvmPlatformTypeName;
  platform_version: number;
  shared_gpa_boundary: bigint;
}

export interface IgvmGuestPolicy extends HeaderBase {
  kind: 'GUEST_POLICY';
  policy: bigint;
  compatibility_mask: number;
}

export interface IgvmRelocatableRegion extends HeaderBase {
  kind: 'RELOCATABLE_REGION';
  compatibility_mask: number;
  vp_index: number;
  vtl: number;
  flags: number;
  relocation_alignment: number;
  relocation_region_gpa: number;
  relocation_region_size: number;
  minimum_relocation_gpa: number;
  maximum_relocation_gpa: number;
}

export interface IgvmPageTableRelocation extends HeaderBase {
  kind: 'PAGE_TABLE_RELOCATION_REGION';
  compatibility_mask: number;
  vp_index: number;
  vtl: number;
  gpa: number;
  size: number;
  used_size: number;
}

export interface IgvmCorimData extends HeaderBase {
  kind: 'CORIM_DOCUMENT' | 'CORIM_SIGNATURE';
  compatibility_mask: number;
  file_offset: number;
  size_bytes: number;
}

export interface IgvmCcaPolicy extends HeaderBase {
  kind: 'CCA_POLICY';
  compatibility_mask: number;
  attributes_required_zeroes: bigint;
  attributes_required_ones: bigint;
  hash_algorithm: number;
  lfa_policy: number;
}

export interface IgvmParameterArea extends HeaderBase {
  kind: 'PARAMETER_AREA';
  number_of_bytes: number;
  parameter_area_index: number;
  /** 0 means the area starts zeroed. */
  file_offset: number;
}

export interface IgvmPageData extends HeaderBase {
  kind: 'PAGE_DATA';
  gpa: number;
  compatibility_mask: number;
  /** 0 means a page of zeros. */
  file_offset: number;
  flags: number;
  data_type: number;
  data_type_name: IgvmPageDataTypeName;
}

export interface IgvmParameterInsert extends HeaderBase {
  kind: 'PARAMETER_INSERT';
  gpa: number;
  compatibility_mask: number;
  parameter_area_index: number;
}

export interface IgvmVpContext extends HeaderBase {
  kind: 'VP_CONTEXT';
  /** The VMSA GPA on SEV-ES/SNP; 0 elsewhere. Kept as bigint since it is only byte-aligned data. */
  gpa: bigint;
  compatibility_mask: number;
  file_offset: number;
  vp_index: number;
}

export interface IgvmRequiredMemory extends HeaderBase {
  kind: 'REQUIRED_MEMORY';
  gpa: number;
  compatibility_mask: number;
  number_of_bytes: number;
  flags: number;
}

export interface IgvmParameter extends HeaderBase {
  kind: IgvmParameterTypeName;
  parameter_area_index: number;
  byte_offset: number;
}

export interface IgvmErrorRange extends HeaderBase {
  kind: 'ERROR_RANGE';
  gpa: number;
  compatibility_mask: number;
  size_bytes: number;
}

/** SNP_ID_BLOCK and VBS_MEASUREMENT: attestation metadata we never apply; kept whole. */
export interface IgvmOpaqueDirective extends HeaderBase {
  kind: 'SNP_ID_BLOCK' | 'VBS_MEASUREMENT';
  compatibility_mask: number;
  body: Uint8Array;
}

export type IgvmHeader =
  | IgvmSupportedPlatform
  | IgvmGuestPolicy
  | IgvmRelocatableRegion
  | IgvmPageTableRelocation
  | IgvmCorimData
  | IgvmCcaPolicy
  | IgvmParameterArea
  | IgvmPageData
  | IgvmParameterInsert
  | IgvmVpContext
  | IgvmRequiredMemory
  | IgvmParameter
  | IgvmErrorRange
  | IgvmOpaqueDirective;

/** An unknown header with the optional bit set, skipped as the spec allows. */
export interface IgvmSkippedHeader {
  index: number;
  offset: number;
  type: number;
  length: number;
}

export interface IgvmFile {
  version: 1 | 2;
  arch: 'x64' | 'aarch64';
  pageSize: number;
  variableHeaderOffset: number;
  variableHeaderSize: number;
  totalFileSize: number;
  /** Offset where file data starts (end of the variable header section). */
  fileDataOffset: number;
  checksum: number;
  computedChecksum: number;
  crcOk: boolean;
  headers: IgvmHeader[];
  skippedOptional: IgvmSkippedHeader[];
  /** The file itself: page data and contexts are read from it at load time. */
  bytes: Uint8Array;
}
