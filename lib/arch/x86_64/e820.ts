/**
 * The x86 E820 memory map for a Linux Direct guest: RAM ranges with the ACPI
 * tables and the legacy 0xA0000-0xFFFFF hole carved out, in ascending order,
 * plus the 20-byte wire encoding used by boot_params.e820_table. The MMIO
 * gap is simply absent (not RAM). It does not decide where RAM is (layout.ts).
 * Spec: Linux arch/x86/include/uapi/asm/setup_data.h (struct boot_e820_entry),
 * ACPI 6.5 §15 "System Address Map Interfaces" for the type values.
 */
import { NodevmmError } from '../../errors';
import { alignUp, hex } from '../../util/bytes';
import { HIGH_MEMORY_START, LEGACY_HOLE_SIZE, LEGACY_HOLE_START, PAGE_SIZE, type RamRange } from './layout';

export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;
export const E820_NVS = 4;
export const E820_UNUSABLE = 5;

export const E820_ENTRY_SIZE = 20;
/** boot_params.e820_table has room for 128 entries (E820_MAX_ENTRIES_ZEROPAGE). */
export const E820_MAX_ENTRIES = 128;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

export interface E820Input {
  ramRanges: readonly RamRange[];
  /** ACPI tables (reported as type 3, ACPI reclaimable); rounded up to a page. */
  acpiRange?: { gpa: number; size: number } | undefined;
}

/**
 * Build the map. The first RAM range must start at 0 and reach past 1 MiB,
 * because the boot structures and the kernel live there.
 */
export function buildE820({ ramRanges, acpiRange }: E820Input): E820Entry[] {
  const first = ramRanges[0];
  if (!first || first.gpa !== 0 || first.size <= HIGH_MEMORY_START) {
    throw new NodevmmError('ERR_E820_LAYOUT', `the first ram range must start at 0 and extend past 1 MiB, got ${first ? `[${hex(first.gpa)}, ${hex(first.gpa + first.size)})` : 'none'}`);
  }
  const carve: E820Entry[] = [];
  if (acpiRange && acpiRange.size > 0) {
    const size = alignUp(acpiRange.size, PAGE_SIZE);
    if (acpiRange.gpa % PAGE_SIZE !== 0 || acpiRange.gpa + size > LEGACY_HOLE_START) {
      throw new NodevmmError('ERR_E820_LAYOUT', `acpi range [${hex(acpiRange.gpa)}, ${hex(acpiRange.gpa + size)}) must be page aligned and end below ${hex(LEGACY_HOLE_START)}`);
    }
    carve.push({ addr: acpiRange.gpa, size, type: E820_ACPI });
  }
  carve.push({ addr: LEGACY_HOLE_START, size: LEGACY_HOLE_SIZE, type: E820_RESERVED });

  const out: E820Entry[] = [...carve];
  for (const r of ramRanges) {
    let at = r.gpa;
    const end = r.gpa + r.size;
    for (const c of carve) {
      if (c.addr >= end || c.addr + c.size <= at) continue;
      if (c.addr > at) out.push({ addr: at, size: c.addr - at, type: E820_RAM });
      at = Math.max(at, c.addr + c.size);
    }
    if (end > at) out.push({ addr: at, size: end - at, type: E820_RAM });
  }
  out.sort((a, b) => a.addr - b.addr);
  if (out.length > E820_MAX_ENTRIES) {
    throw new NodevmmError('ERR_E820_LAYOUT', `the memory map has ${out.length} entries, more than the ${E820_MAX_ENTRIES} the zero page holds`);
  }
  return out;
}

/** Encode entries as struct boot_e820_entry {u64 addr; u64 size; u32 type} (packed, 20 bytes). */
export function encodeE820Table(entries: readonly E820Entry[]): Uint8Array {
  const out = new Uint8Array(entries.length * E820_ENTRY_SIZE);
  const dv = new DataView(out.buffer);
  entries.forEach((e, i) => {
    dv.setBigUint64(i * E820_ENTRY_SIZE, BigInt(e.addr), true);
    dv.setBigUint64(i * E820_ENTRY_SIZE + 8, BigInt(e.size), true);
    dv.setUint32(i * E820_ENTRY_SIZE + 16, e.type, true);
  });
  return out;
}
