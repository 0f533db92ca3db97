/**
 * Initrd placement: the first 2 MiB boundary after the memory the kernel
 * needs, which keeps it clear of the bzImage decompressor's buffer. It must
 * end within initrd_addr_max and within the RAM range the kernel sits in.
 * It computes an address only; the caller copies the bytes.
 * Spec: Linux boot.rst "initrd_addr_max", "ramdisk_image".
 */
import { NodevmmError } from '../errors';
import { alignUp, hex } from '../util/bytes';
import { formatSize } from './format-size';

/** boot.rst: kernels of protocol < 2.03 leave initrd_addr_max unset; the limit is then 0x37FFFFFF. */
export const DEFAULT_INITRD_ADDR_MAX = 0x37ffffff;
/**
 * For a vmlinux (ELF or PVH) there is no header to state a limit; the legacy
 * ramdisk_image field is 32 bits, so the initrd must end below 4 GiB.
 */
export const ELF_INITRD_ADDR_MAX = 0xffffffff;
export const INITRD_ALIGNMENT = 2 * 1024 * 1024;

export interface InitrdPlacementInput {
  /** One past the last byte the kernel needs (for a bzImage: max(load, pref_address) + init_size). */
  kernelEnd: number;
  initrdSize: number;
  ramRanges: readonly { gpa: number; size: number }[];
  /** Highest address the initrd may occupy (inclusive), from the kernel header; 0 means "unset". */
  initrdAddrMax: number;
}

export interface InitrdPlacement {
  gpa: number;
  size: number;
}

export function placeInitrd(input: InitrdPlacementInput): InitrdPlacement {
  const { kernelEnd, initrdSize, ramRanges } = input;
  if (!Number.isSafeInteger(initrdSize) || initrdSize <= 0) {
    throw new NodevmmError('ERR_INVALID_ARG', `initrd size ${initrdSize} must be a positive integer`);
  }
  const addrMax = input.initrdAddrMax > 0 ? input.initrdAddrMax : DEFAULT_INITRD_ADDR_MAX;
  const gpa = alignUp(kernelEnd, INITRD_ALIGNMENT);
  const ram = ramRanges.find((r) => kernelEnd > r.gpa && kernelEnd <= r.gpa + r.size) ?? ramRanges[0];
  const ramEnd = ram ? ram.gpa + ram.size : 0;
  const limit = Math.min(ramEnd, addrMax + 1);
  if (gpa + initrdSize > limit) {
    const totalRam = ramRanges.reduce((s, r) => s + r.size, 0);
    const available = Math.max(0, limit - gpa);
    const bound = limit === ramEnd ? `the end of low ram at ${hex(ramEnd)}` : `initrd_addr_max ${hex(addrMax)}`;
    throw new NodevmmError(
      'ERR_INITRD_TOO_LARGE',
      `initrd of ${formatSize(initrdSize)} does not fit between the kernel end at ${hex(gpa)} and ${bound} (${formatSize(available)} free) with ${formatSize(totalRam)} of ram`,
    );
  }
  return { gpa, size: initrdSize };
}
