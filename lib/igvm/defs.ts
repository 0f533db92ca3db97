/**
 * IGVM wire constants: type numbers, struct sizes, platform types, flags,
 * named as in the IGVM spec (microsoft/igvm `igvm_defs`, 0.4.0). Values only;
 * parsing lives in parse.ts. Layout notes that matter to callers are next to
 * the constants they qualify.
 */

export const IGVM_MAGIC = 0x4d564749; // "IGVM" as a LE u32
export const IGVM_FIXED_HEADER_SIZE_V1 = 24;
export const IGVM_FIXED_HEADER_SIZE_V2 = 32;
export const IGVM_CHECKSUM_OFFSET = 20;
export const IGVM_VHS_VARIABLE_HEADER_SIZE = 8;
/** Every variable header starts on this boundary; padding must be zero. */
export const IGVM_VARIABLE_HEADER_ALIGNMENT = 8;
export const PAGE_SIZE_4K = 4096;
export const PAGE_SIZE_2M = 2 * 1024 * 1024;
/** Set on a header type a loader may skip when it does not know it. */
export const IGVM_VHT_OPTIONAL_BIT = 0x8000_0000;
export const IGVM_VHT_TYPE_MASK = 0x7fff_ffff;

export const IgvmArchitecture = { X64: 0, AARCH64: 1 } as const;

export const IgvmVariableHeaderType = {
  INVALID: 0x000,
  SUPPORTED_PLATFORM: 0x001,
  GUEST_POLICY: 0x101,
  RELOCATABLE_REGION: 0x102,
  PAGE_TABLE_RELOCATION_REGION: 0x103,
  CORIM_DOCUMENT: 0x104,
  CORIM_SIGNATURE: 0x105,
  CCA_POLICY: 0x106,
  PARAMETER_AREA: 0x301,
  PAGE_DATA: 0x302,
  PARAMETER_INSERT: 0x303,
  VP_CONTEXT: 0x304,
  REQUIRED_MEMORY: 0x305,
  /** Formerly SHARED_BOUNDARY_GPA; must not appear in a file. */
  RESERVED_DO_NOT_USE: 0x306,
  VP_COUNT_PARAMETER: 0x307,
  SRAT: 0x308,
  MADT: 0x309,
  MMIO_RANGES: 0x30a,
  SNP_ID_BLOCK: 0x30b,
  MEMORY_MAP: 0x30c,
  ERROR_RANGE: 0x30d,
  COMMAND_LINE: 0x30e,
  SLIT: 0x30f,
  PPTT: 0x310,
  VBS_MEASUREMENT: 0x311,
  DEVICE_TREE: 0x312,
  ENVIRONMENT_INFO_PARAMETER: 0x313,
} as const;

export type IgvmHeaderTypeName = Exclude<keyof typeof IgvmVariableHeaderType, 'INVALID' | 'RESERVED_DO_NOT_USE'>;

/** Exact body size (the `length` field) for every known type. */
export const IGVM_HEADER_BODY_SIZE: Readonly<Record<IgvmHeaderTypeName, number>> = {
  SUPPORTED_PLATFORM: 16,
  GUEST_POLICY: 16,
  RELOCATABLE_REGION: 48,
  PAGE_TABLE_RELOCATION_REGION: 32,
  CORIM_DOCUMENT: 16,
  CORIM_SIGNATURE: 16,
  CCA_POLICY: 32,
  PARAMETER_AREA: 16,
  PAGE_DATA: 24,
  PARAMETER_INSERT: 16,
  // The only body that is not a multiple of 8: it is padded to 24 in the file.
  VP_CONTEXT: 20,
  REQUIRED_MEMORY: 24,
  VP_COUNT_PARAMETER: 8,
  SRAT: 8,
  MADT: 8,
  MMIO_RANGES: 8,
  SNP_ID_BLOCK: 696,
  MEMORY_MAP: 8,
  ERROR_RANGE: 16,
  COMMAND_LINE: 8,
  SLIT: 8,
  PPTT: 8,
  VBS_MEASUREMENT: 864,
  DEVICE_TREE: 8,
  ENVIRONMENT_INFO_PARAMETER: 8,
};

const TYPE_NAMES = new Map<number, IgvmHeaderTypeName>(
  (Object.keys(IGVM_HEADER_BODY_SIZE) as IgvmHeaderTypeName[]).map((n) => [IgvmVariableHeaderType[n], n]),
);

/** Spec name of a type number (optional bit ignored), or undefined when unknown. */
export function headerTypeName(type: number): IgvmHeaderTypeName | undefined {
  return TYPE_NAMES.get(type & IGVM_VHT_TYPE_MASK);
}

/** Printable name, `UNKNOWN(0x...)` for anything not in the spec. */
export function headerTypeLabel(type: number): string {
  return headerTypeName(type) ?? `UNKNOWN(0x${(type >>> 0).toString(16)})`;
}

export type IgvmSection = 'platform' | 'initialization' | 'directive';

/** The section a type belongs to; 0x201-0x300 and 0 are in none. */
export function sectionOf(type: number): IgvmSection | undefined {
  const t = type & IGVM_VHT_TYPE_MASK;
  if (t >= 0x001 && t <= 0x100) return 'platform';
  if (t >= 0x101 && t <= 0x200) return 'initialization';
  if (t >= 0x301 && t <= 0x400) return 'directive';
  return undefined;
}

export const SECTION_ORDER: Readonly<Record<IgvmSection, number>> = { platform: 0, initialization: 1, directive: 2 };

/** Types whose body is IGVM_VHS_PARAMETER {parameter_area_index, byte_offset}. */
export const PARAMETER_TYPES = [
  'VP_COUNT_PARAMETER',
  'SRAT',
  'MADT',
  'MMIO_RANGES',
  'MEMORY_MAP',
  'COMMAND_LINE',
  'SLIT',
  'PPTT',
  'DEVICE_TREE',
  'ENVIRONMENT_INFO_PARAMETER',
] as const;
export type IgvmParameterTypeName = (typeof PARAMETER_TYPES)[number];

export const IgvmPlatformType = {
  NATIVE: 0x00,
  VSM_ISOLATION: 0x01,
  SEV_SNP: 0x02,
  TDX: 0x03,
  SEV: 0x04,
  SEV_ES: 0x05,
  CCA: 0x06,
} as const;
export type IgvmPlatformTypeName = keyof typeof IgvmPlatformType;

export function platformTypeName(t: number): IgvmPlatformTypeName | undefined {
  for (const [k, v] of Object.entries(IgvmPlatformType)) if (v === t) return k as IgvmPlatformTypeName;
  return undefined;
}

/** Platforms that exist only on x64; CCA only on AArch64; VSM on both. */
export const X64_ONLY_PLATFORMS: readonly IgvmPlatformTypeName[] = ['NATIVE', 'SEV_SNP', 'TDX', 'SEV', 'SEV_ES'];
export const AARCH64_ONLY_PLATFORMS: readonly IgvmPlatformTypeName[] = ['CCA'];

export const IGVM_PAGE_DATA_FLAG_IS_2MB_PAGE = 0x1;
export const IGVM_PAGE_DATA_FLAG_UNMEASURED = 0x2;
export const IGVM_PAGE_DATA_FLAG_SHARED = 0x4;
export const IGVM_PAGE_DATA_FLAGS_KNOWN = 0x7;

export const IgvmPageDataType = { NORMAL: 0, SECRETS: 1, CPUID_DATA: 2, CPUID_XF: 3 } as const;
export type IgvmPageDataTypeName = keyof typeof IgvmPageDataType;
export const PAGE_DATA_TYPE_NAMES: readonly IgvmPageDataTypeName[] = ['NORMAL', 'SECRETS', 'CPUID_DATA', 'CPUID_XF'];

export const IGVM_REQUIRED_MEMORY_FLAG_VTL2_PROTECTABLE = 0x1;

export const RELOCATION_FLAG_IS_VTL2 = 0x1;
export const RELOCATION_FLAG_APPLY_RIP = 0x2;
export const RELOCATION_FLAG_APPLY_GDTR = 0x4;
export const RELOCATION_FLAGS_KNOWN = 0x7;

export const MemoryMapEntryType = {
  MEMORY: 0,
  PLATFORM_RESERVED: 1,
  PERSISTENT: 2,
  VTL2_PROTECTABLE: 3,
  SPECIFIC_PURPOSE: 4,
  HIDDEN: 5,
} as const;
export const IGVM_VHS_MEMORY_MAP_ENTRY_SIZE = 24;
export const IGVM_VHS_MMIO_RANGES_SIZE = 32;

/** Bit 0 of the ENVIRONMENT_INFO u32. */
export const IGVM_ENVIRONMENT_INFO_MEMORY_IS_SHARED = 0x1;

/** IgvmNativeVpContextX64; the file holds it at the start of a zero-padded page. */
export const IGVM_NATIVE_VP_CONTEXT_X64_SIZE = 232;
/** VbsVpContextHeader (u32 register_count), then 32-byte VbsVpContextRegister entries. */
export const VBS_VP_CONTEXT_HEADER_SIZE = 4;
export const VBS_VP_CONTEXT_REGISTER_SIZE = 32;

/** Highest GPA bit x86 can address; larger GPAs are file errors, and keep GPAs safe JS numbers. */
export const IGVM_MAX_GPA = 2 ** 52;
