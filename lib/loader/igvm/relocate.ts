/**
 * IGVM relocation: moving a RELOCATABLE_REGION to another base and rebuilding
 * the identity-mapped page tables of a PAGE_TABLE_RELOCATION_REGION so they
 * map the moved range at its new place. Pure: GPAs and page bytes in, GPAs
 * and page bytes out. The rules are those of the IGVM spec (`igvm_defs`
 * IGVM_VHS_RELOCATABLE_REGION / IGVM_VHS_PAGE_TABLE_RELOCATION) as OpenVMM
 * applies them: every GPA a directive gives inside the region moves by the
 * same delta; RIP and the GDTR base move when the region's flags say so; a
 * page-table leaf whose mapping the move carries further than its own size
 * moves to the new address (identity mapping: VA = PA), and a move shorter
 * than a leaf's size stays inside that leaf and changes nothing.
 */
import { NodevmmError } from '../../errors';
import { hex } from '../../util/bytes';
import { IGVM_MAX_GPA, RELOCATION_FLAG_APPLY_GDTR, RELOCATION_FLAG_APPLY_RIP } from '../../igvm/defs';
import type { IgvmPageTableRelocation, IgvmRelocatableRegion } from '../../igvm/model';

const PAGE = 4096;
const PTE_PRESENT = 1n;
const PTE_LARGE = 1n << 7n;
const PTE_ADDRESS = 0x000f_ffff_ffff_f000n;
/** Flags of a page-table entry we create to link a new table: present, writable, accessed. */
const PTE_LINK = 0x23n;
const CR4_LA57 = 1n << 12n;
/** Bytes one entry maps at each level (0 = PTE, 3 = PML4E). */
const MAPPING_SIZE = [PAGE, 2 ** 21, 2 ** 30, 2 ** 39] as const;

/** One region moved: `gpa` in the file becomes `gpa + delta` in the guest. */
export interface IgvmRelocation {
  header: number;
  from: number;
  size: number;
  to: number;
  delta: number;
  vpIndex: number;
  vtl: number;
  applyRip: boolean;
  applyGdtr: boolean;
}

function relocationError(message: string): NodevmmError {
  return new NodevmmError('ERR_IGVM_RELOCATION', `igvm: ${message}`);
}

/** Check a new base against the region's alignment and bounds; the result drives every GPA of the load. */
export function relocateRegion(region: IgvmRelocatableRegion, base: number): IgvmRelocation {
  const where = `header ${region.index} (RELOCATABLE_REGION)`;
  if (!Number.isSafeInteger(base) || base < 0) throw relocationError(`${where}: relocation base ${base} is not a guest physical address`);
  if (base % region.relocation_alignment !== 0) {
    throw relocationError(`${where}: relocation base ${hex(base)} is not a multiple of relocation_alignment ${hex(region.relocation_alignment)}`);
  }
  if (base < region.minimum_relocation_gpa || base > region.maximum_relocation_gpa) {
    throw relocationError(`${where}: relocation base ${hex(base)} is outside [minimum_relocation_gpa ${hex(region.minimum_relocation_gpa)}, maximum_relocation_gpa ${hex(region.maximum_relocation_gpa)}]`);
  }
  if (base + region.relocation_region_size > IGVM_MAX_GPA) throw relocationError(`${where}: relocation base ${hex(base)} takes the ${hex(region.relocation_region_size)}-byte region past 2^52`);
  return {
    header: region.index,
    from: region.relocation_region_gpa,
    size: region.relocation_region_size,
    to: base,
    delta: base - region.relocation_region_gpa,
    vpIndex: region.vp_index,
    vtl: region.vtl,
    applyRip: (region.flags & RELOCATION_FLAG_APPLY_RIP) !== 0,
    applyGdtr: (region.flags & RELOCATION_FLAG_APPLY_GDTR) !== 0,
  };
}

/** Where `gpa` lands: moved when it lies inside a relocated region. */
export function relocatedGpa(moves: readonly IgvmRelocation[], gpa: number): number {
  for (const m of moves) if (gpa >= m.from && gpa < m.from + m.size) return gpa + m.delta;
  return gpa;
}

export interface PageTableRebuildInput {
  region: IgvmPageTableRelocation;
  /** The region's first `used_size` bytes as the file loads them (missing pages are zero). */
  tables: Uint8Array;
  /** How far the page-table region itself moves (0 unless it lies in a relocated region). */
  tableDelta: number;
  cr3: bigint;
  cr4: bigint;
  moves: readonly IgvmRelocation[];
}

/**
 * Rewrite the identity-mapped tables: links into the region follow the
 * region's own move, leaves of moved ranges are cleared and re-entered at
 * their new address (allocating tables from the region's spare pages).
 * Returns the tables to load at `region.gpa + tableDelta`.
 */
export function rebuildPageTables(input: PageTableRebuildInput): Uint8Array {
  const { region, tableDelta, moves } = input;
  const where = `header ${region.index} (PAGE_TABLE_RELOCATION_REGION)`;
  if (input.cr4 & CR4_LA57) throw relocationError(`${where}: the boot cpu uses 5-level paging (CR4.LA57), which relocation does not support`);
  const cr3 = Number(input.cr3 & PTE_ADDRESS);
  const used = region.used_size / PAGE;
  const capacity = region.size / PAGE;
  const inRegion = (gpa: number) => gpa >= region.gpa && gpa < region.gpa + region.used_size;
  if (!inRegion(cr3)) throw relocationError(`${where}: CR3 ${hex(cr3)} is not inside the region's used pages [${hex(region.gpa)}, ${hex(region.gpa + region.used_size)})`);
  const pages = new Uint8Array(capacity * PAGE);
  pages.set(input.tables.subarray(0, region.used_size));
  const dv = new DataView(pages.buffer);
  const entryAt = (table: number, index: number) => table * PAGE + index * 8;
  const indexOf = (va: number, level: number) => Math.floor(va / MAPPING_SIZE[level]!) % 512;

  // Pass 1: walk from CR3, fix links into the region and take out the leaves that move.
  const relocatedLeaves: { va: number; level: number; entry: bigint }[] = [];
  const visited = new Set<number>();
  const walk = (table: number, level: number, baseVa: number): void => {
    if (visited.has(table)) throw relocationError(`${where}: the table at ${hex(region.gpa + table * PAGE)} is reached twice; relocation needs a tree of tables`);
    visited.add(table);
    for (let i = 0; i < 512; i++) {
      const at = entryAt(table, i);
      const entry = dv.getBigUint64(at, true);
      if (!(entry & PTE_PRESENT)) continue;
      const va = baseVa + i * MAPPING_SIZE[level]!;
      const link = level === 3 || (level > 0 && !(entry & PTE_LARGE));
      if (link) {
        const next = Number(entry & PTE_ADDRESS);
        if (!inRegion(next)) continue; // a table outside the region is left as it is
        dv.setBigUint64(at, (entry & ~PTE_ADDRESS) | BigInt(next + tableDelta), true);
        walk((next - region.gpa) / PAGE, level - 1, va);
        continue;
      }
      const size = MAPPING_SIZE[level]!;
      const move = moves.find((m) => va < m.from + m.size && m.from < va + size);
      if (!move || Math.abs(move.delta) < size) continue;
      const newVa = va + move.delta;
      if (newVa % size !== 0) {
        throw relocationError(`${where}: the ${hex(size)}-byte mapping at ${hex(va)} cannot move by ${hex(move.delta)} (region of header ${move.header}): the new address is not aligned to the mapping size`);
      }
      relocatedLeaves.push({ va: newVa, level, entry: (entry & ~PTE_ADDRESS) | BigInt(newVa) });
      dv.setBigUint64(at, 0n, true);
    }
  };
  const root = (cr3 - region.gpa) / PAGE;
  walk(root, 3, 0);

  // Pass 2: enter the moved leaves, allocating tables from the spare pages.
  let next = used;
  for (const leaf of relocatedLeaves) {
    let table = root;
    for (let level = 3; ; level--) {
      const at = entryAt(table, indexOf(leaf.va, level));
      const entry = dv.getBigUint64(at, true);
      if (level === leaf.level) {
        if (entry & PTE_PRESENT && entry !== leaf.entry) {
          throw relocationError(`${where}: the moved mapping of ${hex(leaf.va)} collides with a different mapping already there`);
        }
        dv.setBigUint64(at, leaf.entry, true);
        break;
      }
      if (entry & PTE_PRESENT) {
        if (level < 3 && entry & PTE_LARGE) throw relocationError(`${where}: the moved mapping of ${hex(leaf.va)} lands inside a large page already mapped there`);
        const target = Number(entry & PTE_ADDRESS) - tableDelta;
        if (!inRegion(target) && !(target >= region.gpa + region.used_size && target < region.gpa + next * PAGE)) {
          throw relocationError(`${where}: the moved mapping of ${hex(leaf.va)} needs the table at ${hex(target)}, outside the region`);
        }
        table = (target - region.gpa) / PAGE;
        continue;
      }
      if (next === capacity) throw relocationError(`${where}: the region's ${capacity - used} spare pages are not enough for the tables the moved mappings need`);
      const fresh = next++;
      dv.setBigUint64(at, PTE_LINK | BigInt(region.gpa + tableDelta + fresh * PAGE), true);
      table = fresh;
    }
  }
  return pages.slice(0, next * PAGE);
}
