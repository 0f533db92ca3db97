/**
 * The PVH boot information block: struct hvm_start_info (version 1), the
 * module list (one entry, the initrd) and the memory-map table, packed into
 * one blob for a single page at a GPA the layout chose. It returns bytes and
 * does not write guest memory or set registers (cpu.ts does).
 * Spec: Xen xen/include/public/arch-x86/hvm/start_info.h, docs/misc/pvh.pandoc.
 */
import { NodevmmError } from '../../errors';
import type { E820Entry } from './e820';

export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
/** Version 1 adds memmap_paddr/memmap_entries, which Linux needs outside Xen to learn the memory map. */
export const HVM_START_INFO_VERSION = 1;
export const HVM_START_INFO_SIZE = 56;
export const HVM_MODLIST_ENTRY_SIZE = 32;
export const HVM_MEMMAP_ENTRY_SIZE = 24;

/** Offsets in struct hvm_start_info. */
export const SI = {
  magic: 0,
  version: 4,
  flags: 8,
  nr_modules: 12,
  modlist_paddr: 16,
  cmdline_paddr: 24,
  rsdp_paddr: 32,
  memmap_paddr: 40,
  memmap_entries: 48,
  reserved: 52,
} as const;

export interface PvhStartInfoInput {
  /** GPA the returned blob will be written to; the internal pointers are computed from it. */
  startInfoGpa: number;
  /** Room at startInfoGpa (the blob must fit). */
  maxSize: number;
  cmdlineGpa: number;
  initrd?: { gpa: number; size: number } | undefined;
  rsdpGpa?: number | undefined;
  e820: readonly E820Entry[];
}

/** Build start_info, then the modlist, then the memmap, each 8-byte aligned (they are all multiples of 8). */
export function buildPvhStartInfo(input: PvhStartInfoInput): Uint8Array {
  const hasInitrd = !!input.initrd && input.initrd.size > 0;
  const modlistAt = HVM_START_INFO_SIZE;
  const memmapAt = modlistAt + (hasInitrd ? HVM_MODLIST_ENTRY_SIZE : 0);
  const total = memmapAt + input.e820.length * HVM_MEMMAP_ENTRY_SIZE;
  if (total > input.maxSize) {
    throw new NodevmmError('ERR_PVH_START_INFO_SIZE', `pvh start info with ${input.e820.length} memory-map entries needs ${total} bytes, more than the ${input.maxSize} reserved`);
  }
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  const u64 = (at: number, v: number): void => dv.setBigUint64(at, BigInt(v), true);

  dv.setUint32(SI.magic, XEN_HVM_START_MAGIC_VALUE, true);
  dv.setUint32(SI.version, HVM_START_INFO_VERSION, true);
  dv.setUint32(SI.flags, 0, true);
  u64(SI.cmdline_paddr, input.cmdlineGpa);
  u64(SI.rsdp_paddr, input.rsdpGpa ?? 0);
  if (hasInitrd && input.initrd) {
    dv.setUint32(SI.nr_modules, 1, true);
    u64(SI.modlist_paddr, input.startInfoGpa + modlistAt);
    u64(modlistAt, input.initrd.gpa);
    u64(modlistAt + 8, input.initrd.size);
    // The module's own cmdline_paddr stays 0: Linux ignores it for the initrd.
  }
  u64(SI.memmap_paddr, input.startInfoGpa + memmapAt);
  dv.setUint32(SI.memmap_entries, input.e820.length, true);
  input.e820.forEach((e, i) => {
    const at = memmapAt + i * HVM_MEMMAP_ENTRY_SIZE;
    u64(at, e.addr);
    u64(at + 8, e.size);
    dv.setUint32(at + 16, e.type, true);
  });
  return out;
}
