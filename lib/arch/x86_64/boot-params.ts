/**
 * The zero page (struct boot_params, exactly 4096 bytes) for the Linux 64-bit
 * boot protocol: the bzImage's own setup header copied in (or a minimal one
 * synthesised for a vmlinux ELF), then the loader-owned fields filled in.
 * It returns bytes; it does not choose addresses or write guest memory.
 * Spec: Linux Documentation/arch/x86/boot.rst and zero-page.rst,
 * arch/x86/include/uapi/asm/bootparam.h.
 */
import { NodevmmError } from '../../errors';
import { E820_MAX_ENTRIES, encodeE820Table, type E820Entry } from './e820';

export const BOOT_PARAMS_SIZE = 4096;

/** Offsets inside boot_params, with the kernel's field names. */
export const BP = {
  acpi_rsdp_addr: 0x070,
  ext_ramdisk_image: 0x0c0,
  ext_ramdisk_size: 0x0c4,
  ext_cmd_line_ptr: 0x0c8,
  e820_entries: 0x1e8,
  sentinel: 0x1ef,
  hdr: 0x1f1,
  boot_flag: 0x1fe,
  header: 0x202,
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  heap_end_ptr: 0x224,
  cmd_line_ptr: 0x228,
  kernel_alignment: 0x230,
  cmdline_size: 0x238,
  e820_table: 0x2d0,
} as const;

/** boot_params reserves 0x1F1..0x290 for the header; anything longer would clobber edd_mbr_sig_buffer. */
const HDR_LIMIT = 0x290;
/** boot.rst: 0xFF means "undefined" loader, the right value for a loader without an assigned ID. */
export const TYPE_OF_LOADER_UNDEFINED = 0xff;

export interface BootParamsInput {
  /** Bytes 0x1F1.. of a bzImage; absent for an ELF vmlinux, which gets a synthesised header. */
  setupHeader?: Uint8Array | undefined;
  cmdlineGpa: number;
  /** Command-line length in bytes, NUL excluded. */
  cmdlineLength: number;
  initrd?: { gpa: number; size: number } | undefined;
  e820: readonly E820Entry[];
  rsdpGpa?: number | undefined;
}

/**
 * Build the zero page.
 *
 * Fields deliberately left alone:
 * - loadflags CAN_USE_HEAP (0x80) and heap_end_ptr: boot.rst ties them to the
 *   real-mode setup code's heap, which never runs when we enter at the 64-bit
 *   entry point, so we keep the image's loadflags unchanged (as OpenVMM does).
 * - sentinel (0x1EF) stays 0: the kernel wipes fields it considers stale when
 *   the sentinel is set, and we only copy the header from 0x1F1 on.
 */
export function buildBootParams(input: BootParamsInput): Uint8Array {
  const zp = new Uint8Array(BOOT_PARAMS_SIZE);
  const dv = new DataView(zp.buffer);
  if (input.setupHeader) {
    zp.set(input.setupHeader.subarray(0, HDR_LIMIT - BP.hdr), BP.hdr);
  } else {
    // A vmlinux has no header; the 64-bit entry only needs the magic values
    // to recognise boot_params, and kernel_alignment for its own checks.
    dv.setUint16(BP.boot_flag, 0xaa55, true);
    dv.setUint32(BP.header, 0x53726448, true);
    dv.setUint32(BP.kernel_alignment, 0x100000, true);
  }
  zp[BP.type_of_loader] = TYPE_OF_LOADER_UNDEFINED;

  setSplit(dv, BP.cmd_line_ptr, BP.ext_cmd_line_ptr, input.cmdlineGpa, 'cmd_line_ptr');
  // OpenVMM writes the actual length here; the kernel copies up to its own COMMAND_LINE_SIZE and stops at the NUL either way.
  dv.setUint32(BP.cmdline_size, input.cmdlineLength, true);
  if (input.initrd && input.initrd.size > 0) {
    setSplit(dv, BP.ramdisk_image, BP.ext_ramdisk_image, input.initrd.gpa, 'ramdisk_image');
    setSplit(dv, BP.ramdisk_size, BP.ext_ramdisk_size, input.initrd.size, 'ramdisk_size');
  }
  if (input.rsdpGpa !== undefined) dv.setBigUint64(BP.acpi_rsdp_addr, BigInt(input.rsdpGpa), true);

  if (input.e820.length > E820_MAX_ENTRIES) {
    throw new NodevmmError('ERR_E820_LAYOUT', `the memory map has ${input.e820.length} entries, more than the ${E820_MAX_ENTRIES} the zero page holds`);
  }
  zp[BP.e820_entries] = input.e820.length;
  zp.set(encodeE820Table(input.e820), BP.e820_table);
  return zp;
}

/** The 64-bit value is split: low 32 bits in the legacy field, high 32 bits in the ext_ field (protocol 2.12+). */
function setSplit(dv: DataView, lowAt: number, highAt: number, value: number, field: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new NodevmmError('ERR_INVALID_ARG', `${field} ${value} is not a valid address or size`);
  dv.setUint32(lowAt, value % 2 ** 32, true);
  dv.setUint32(highAt, Math.floor(value / 2 ** 32), true);
}
