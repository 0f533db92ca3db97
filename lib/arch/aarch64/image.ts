/**
 * Decoder for the 64-byte arm64 Linux `Image` header, and the check that an
 * image can be direct-booted the way OpenVMM does it (little-endian, 4 KiB
 * pages, may be placed anywhere in RAM). It recognises a gzip file up front
 * so an `Image.gz` gets a "decompress it first" error instead of "bad magic".
 * It does not place the image; see linux-direct.ts.
 * Spec: Linux Documentation/arch/arm64/booting.rst, section 4 ("Call the kernel image").
 */
import { FormatError } from '../../errors';
import { ByteReader, hex } from '../../util/bytes';

export const ARM64_IMAGE_HEADER_SIZE = 64;
export const ARM64_IMAGE_MAGIC_OFFSET = 0x38;
/** "ARM\x64" read as a little-endian u32. */
export const ARM64_IMAGE_MAGIC = 0x644d5241;
/** flags bit 0: kernel endianness, 1 = big-endian. */
export const ARM64_IMAGE_FLAG_BE_BIT = 1n << 0n;
/** flags bits 1-2: kernel page size; 0 = unspecified, 1 = 4K, 2 = 16K, 3 = 64K. */
export const ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT = 1n;
/** flags bit 3: 1 = the 2 MiB aligned base may be anywhere in physical memory. */
export const ARM64_IMAGE_FLAG_PHYS_ANYWHERE_BIT = 1n << 3n;

const PAGE_SIZES: Record<number, number | undefined> = { 0: undefined, 1: 4096, 2: 16384, 3: 65536 };

export interface Arm64ImageHeader {
  code0: number;
  code1: number;
  text_offset: number;
  image_size: number;
  flags: bigint;
  bigEndian: boolean;
  /** Page size from flags bits 1-2; undefined when the field is 0 ("unspecified"). */
  pageSize: 4096 | 16384 | 65536 | undefined;
  /** flags bit 3: the kernel may sit anywhere, not just near the base of DRAM. */
  physAnywhere: boolean;
}

function fail(code: string, message: string, field: string, offset: number, expected?: string, actual?: string): never {
  throw new FormatError(code, `arm64 image: ${message}`, { format: 'arm64-image', field, offset, ...(expected ? { expected } : {}), ...(actual ? { actual } : {}) });
}

/** Decodes the header; throws FormatError for gzip input, short input or bad magic. */
export function parseArm64Image(bytes: Uint8Array): Arm64ImageHeader {
  // Distros ship arm64 kernels as Image.gz (vmlinuz); the kernel has no
  // self-decompressor on arm64, so the bytes must be inflated by the host.
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    fail('ERR_ARM64_IMAGE_GZIP', 'this is Image.gz; decompress it (gunzip) first', 'magic', 0, 'ARM\\x64 at 0x38', 'gzip magic 1f 8b');
  }
  const r = new ByteReader(bytes, 'arm64-image');
  r.need(0, ARM64_IMAGE_HEADER_SIZE, 'header');
  const magic = r.u32(ARM64_IMAGE_MAGIC_OFFSET, 'magic');
  if (magic !== ARM64_IMAGE_MAGIC) {
    fail('ERR_ARM64_IMAGE_MAGIC', `magic at 0x38 is ${hex(magic)}, expected 0x644d5241 ("ARM\\x64"); is this an arm64 Image?`, 'magic', ARM64_IMAGE_MAGIC_OFFSET, hex(ARM64_IMAGE_MAGIC), hex(magic));
  }
  const flags = r.u64(0x18, 'flags');
  const pageField = Number((flags >> ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT) & 3n);
  return {
    code0: r.u32(0x00, 'code0'),
    code1: r.u32(0x04, 'code1'),
    text_offset: r.u64n(0x08, 'text_offset'),
    image_size: r.u64n(0x10, 'image_size'),
    flags,
    bigEndian: (flags & ARM64_IMAGE_FLAG_BE_BIT) !== 0n,
    pageSize: PAGE_SIZES[pageField] as Arm64ImageHeader['pageSize'],
    physAnywhere: (flags & ARM64_IMAGE_FLAG_PHYS_ANYWHERE_BIT) !== 0n,
  };
}

/**
 * Throws unless the image can be booted with our placement: little-endian,
 * 4 KiB pages (or unspecified, which only 4K kernels leave), and flags bit 3.
 */
export function checkArm64ImageBootable(h: Arm64ImageHeader): void {
  if (h.bigEndian) {
    fail('ERR_ARM64_IMAGE_BIG_ENDIAN', 'flags bit 0 says the kernel is big-endian; only little-endian kernels are supported', 'flags', 0x18, 'bit 0 clear', hex(h.flags));
  }
  if (h.pageSize !== undefined && h.pageSize !== 4096) {
    fail('ERR_ARM64_IMAGE_PAGE_SIZE', `flags bits 1-2 say the kernel uses ${h.pageSize / 1024}K pages; only 4K-page kernels are supported`, 'flags', 0x18, '4K', `${h.pageSize / 1024}K`);
  }
  // Without bit 3 the kernel cannot map memory below its own base, and we put
  // the initrd below the kernel, so such a kernel would lose its initrd.
  if (!h.physAnywhere) {
    fail('ERR_ARM64_IMAGE_PLACEMENT', 'flags bit 3 is clear, so the kernel must sit at the base of ram; kernels from linux 4.6 on set it', 'flags', 0x18, 'bit 3 set', hex(h.flags));
  }
  if (h.text_offset % 4096 !== 0 || h.text_offset >= 2 * 1024 * 1024) {
    fail('ERR_ARM64_IMAGE_TEXT_OFFSET', `text_offset ${hex(h.text_offset)} must be page aligned and below 2 MiB`, 'text_offset', 0x08, '< 0x200000, 4K aligned', hex(h.text_offset));
  }
}
