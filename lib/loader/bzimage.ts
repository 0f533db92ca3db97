/**
 * bzImage setup-header decoder: reads the header at file offset 0x1F1 and
 * validates that the image can be entered through the 64-bit boot protocol
 * (boot_flag, "HdrS", version >= 2.12, LOADED_HIGH, XLF_KERNEL_64).
 * It does not load anything and does not decompress the payload.
 * Spec: Linux Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header"
 * and "Details of Header Fields".
 */
import { FormatError } from '../errors';
import { ByteReader, hex } from '../util/bytes';

/** File offset of `struct setup_header` (and of hdr inside boot_params). */
export const SETUP_HEADER_OFFSET = 0x1f1;
/** boot_params reserves 0x1F1..0x290 for the header; bytes past this belong to other fields. */
export const SETUP_HEADER_LIMIT = 0x290;
export const BOOT_FLAG_MAGIC = 0xaa55;
/** "HdrS" read as a little-endian u32. */
export const HDRS_MAGIC = 0x53726448;
/** 2.12 is the first version with xloadflags, which is how XLF_KERNEL_64 is advertised. */
export const MIN_BOOT_PROTOCOL = 0x020c;

export const LOADED_HIGH = 0x01;
export const KEEP_SEGMENTS = 0x40;
export const CAN_USE_HEAP = 0x80;
export const XLF_KERNEL_64 = 0x01;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 0x02;

/** Header fields the loader uses, with the boot.rst names. */
export interface BzImageHeader {
  setup_sects: number;
  syssize: number;
  boot_flag: number;
  version: number;
  loadflags: number;
  initrd_addr_max: number;
  kernel_alignment: number;
  relocatable_kernel: number;
  xloadflags: number;
  cmdline_size: number;
  pref_address: bigint;
  init_size: number;
}

export interface BzImage {
  header: BzImageHeader;
  /** File offset of the protected-mode payload: (setup_sects + 1) * 512. */
  payloadOffset: number;
  /** The protected-mode payload, which the loader copies to 1 MiB. */
  payload: Uint8Array;
  /** Raw header bytes from 0x1F1 to the end the image declares (0x202 + byte at 0x201), for the zero page. */
  setupHeader: Uint8Array;
}

/** Cheap check used by format detection: boot_flag and "HdrS" are both present. */
export function looksLikeBzImage(bytes: Uint8Array): boolean {
  if (bytes.length < 0x206) return false;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return dv.getUint16(0x1fe, true) === BOOT_FLAG_MAGIC && dv.getUint32(0x202, true) === HDRS_MAGIC;
}

function fail(code: string, message: string, field: string, offset: number, expected: string, actual: string): never {
  throw new FormatError(code, message, { format: 'bzimage', field, offset, expected, actual });
}

/** Parse and validate a bzImage; throws FormatError with ERR_BZIMAGE_* codes. */
export function parseBzImage(bytes: Uint8Array): BzImage {
  const r = new ByteReader(bytes, 'bzimage');
  const boot_flag = r.u16(0x1fe, 'boot_flag');
  if (boot_flag !== BOOT_FLAG_MAGIC) {
    fail('ERR_BZIMAGE_MAGIC', `bzimage: boot_flag at 0x1fe is ${hex(boot_flag)}, expected 0xaa55`, 'boot_flag', 0x1fe, '0xaa55', hex(boot_flag));
  }
  const magic = r.u32(0x202, 'header');
  if (magic !== HDRS_MAGIC) {
    fail('ERR_BZIMAGE_MAGIC', `bzimage: header at 0x202 is ${hex(magic)}, expected "HdrS" (0x53726448)`, 'header', 0x202, hex(HDRS_MAGIC), hex(magic));
  }
  const version = r.u16(0x206, 'version');
  if (version < MIN_BOOT_PROTOCOL) {
    fail(
      'ERR_BZIMAGE_VERSION',
      `bzimage: boot protocol version ${fmtVersion(version)} is older than 2.12, the first with a 64-bit entry point`,
      'version',
      0x206,
      '>= 2.12',
      fmtVersion(version),
    );
  }
  const header = readHeader(r, version);
  if (!(header.loadflags & LOADED_HIGH)) {
    fail('ERR_BZIMAGE_LOADFLAGS', `bzimage: loadflags ${hex(header.loadflags)} lacks LOADED_HIGH (0x01); a zImage cannot be loaded at 1 MiB`, 'loadflags', 0x211, 'bit 0 set', hex(header.loadflags));
  }
  if (!(header.xloadflags & XLF_KERNEL_64)) {
    fail('ERR_BZIMAGE_NOT_64BIT', `bzimage: xloadflags ${hex(header.xloadflags)} lacks XLF_KERNEL_64 (0x01); the image has no 64-bit entry point`, 'xloadflags', 0x236, 'bit 0 set', hex(header.xloadflags));
  }

  const payloadOffset = (header.setup_sects + 1) * 512;
  // syssize counts 16-byte paragraphs; 0 appears in hand-built images, where the rest of the file is the payload.
  const declared = header.syssize * 16;
  if (payloadOffset > bytes.length || (declared > 0 && payloadOffset + declared > bytes.length)) {
    const want = payloadOffset + declared;
    fail(
      'ERR_BZIMAGE_TRUNCATED',
      `bzimage: the file is ${bytes.length} bytes but setup_sects ${header.setup_sects} and syssize ${header.syssize} place the payload end at ${want}`,
      'syssize',
      0x1f4,
      `<= ${bytes.length}`,
      String(want),
    );
  }
  const payloadLength = declared > 0 ? declared : bytes.length - payloadOffset;
  if (payloadLength === 0) fail('ERR_BZIMAGE_TRUNCATED', 'bzimage: the protected-mode payload is empty', 'syssize', 0x1f4, '> 0', '0');

  const headerEnd = Math.min(0x202 + r.u8(0x201, 'jump'), SETUP_HEADER_LIMIT);
  return {
    header,
    payloadOffset,
    payload: bytes.subarray(payloadOffset, payloadOffset + payloadLength),
    setupHeader: bytes.slice(SETUP_HEADER_OFFSET, Math.max(headerEnd, SETUP_HEADER_OFFSET)),
  };
}

function readHeader(r: ByteReader, version: number): BzImageHeader {
  const raw = r.u8(0x1f1, 'setup_sects');
  return {
    // boot.rst: "If this field is 0, the real value is 4."
    setup_sects: raw === 0 ? 4 : raw,
    syssize: r.u32(0x1f4, 'syssize'),
    boot_flag: r.u16(0x1fe, 'boot_flag'),
    version,
    loadflags: r.u8(0x211, 'loadflags'),
    initrd_addr_max: r.u32(0x22c, 'initrd_addr_max'),
    kernel_alignment: r.u32(0x230, 'kernel_alignment'),
    relocatable_kernel: r.u8(0x234, 'relocatable_kernel'),
    xloadflags: r.u16(0x236, 'xloadflags'),
    cmdline_size: r.u32(0x238, 'cmdline_size'),
    pref_address: r.u64(0x258, 'pref_address'),
    init_size: r.u32(0x260, 'init_size'),
  };
}

export function fmtVersion(v: number): string {
  return `${v >> 8}.${(v & 0xff).toString().padStart(2, '0')}`;
}
