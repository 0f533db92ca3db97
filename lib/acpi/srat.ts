/**
 * The System Resource Affinity Table: which NUMA proximity domain each
 * processor and each RAM range belongs to. We emit xAPIC affinity entries for
 * APIC IDs up to 0xFF and x2APIC entries above, as Linux accepts both, and one
 * memory affinity entry per range. The IGVM SRAT parameter takes this table
 * whole (OpenHCL reads its VTL2 topology from it). Spec: ACPI 6.5 §5.2.16.
 */
import { FormatError } from '../errors';
import { ByteWriter } from '../util/bytes';
import { checkUint } from './checks';
import { encodeSdt } from './sdt';

export const SRAT_REVISION = 3;
export const SRAT_TYPE = { LOCAL_APIC_AFFINITY: 0, MEMORY_AFFINITY: 1, X2APIC_AFFINITY: 2 } as const;
export const SRAT_LOCAL_APIC_AFFINITY_SIZE = 16;
export const SRAT_MEMORY_AFFINITY_SIZE = 40;
export const SRAT_X2APIC_AFFINITY_SIZE = 24;
/** Flag bit 0 of every affinity entry: the entry is in use. */
export const SRAT_ENABLED = 1;
export const SRAT_MEMORY_HOT_PLUGGABLE = 1 << 1;

export interface SratProcessor {
  apicId: number;
  /** Proximity domain (NUMA node). */
  node: number;
}

export interface SratMemoryRange {
  gpa: number;
  size: number;
  node: number;
  hotPluggable?: boolean;
}

export interface SratOptions {
  processors: readonly SratProcessor[];
  memory: readonly SratMemoryRange[];
}

function bad(field: string, message: string, actual: string): FormatError {
  return new FormatError('ERR_ACPI_VALUE', `srat: ${message}`, { format: 'acpi', field, expected: 'see message', actual });
}

export function encodeSrat(opts: SratOptions): Uint8Array {
  if (opts.processors.length === 0) throw bad('processors', 'at least one processor is needed', '0');
  if (opts.memory.length === 0) throw bad('memory', 'at least one memory range is needed', '0');
  const seen = new Set<number>();
  const w = new ByteWriter(12 + opts.processors.length * SRAT_X2APIC_AFFINITY_SIZE + opts.memory.length * SRAT_MEMORY_AFFINITY_SIZE);
  // "Reserved, must be 1" for compatibility with the table's first revision, then 8 reserved bytes.
  w.u32(1).u64(0n);
  opts.processors.forEach((p, i) => {
    checkUint(p.apicId, 32, `srat processors[${i}].apicId`);
    checkUint(p.node, 32, `srat processors[${i}].node`);
    if (seen.has(p.apicId)) throw bad(`processors[${i}].apicId`, `apic id ${p.apicId} of processor ${i} is given twice`, String(p.apicId));
    seen.add(p.apicId);
    if (p.apicId <= 0xff) {
      // Proximity domain bits 7:0 sit at offset 2, bits 31:8 at offset 9 (the table grew them later).
      w.u8(SRAT_TYPE.LOCAL_APIC_AFFINITY).u8(SRAT_LOCAL_APIC_AFFINITY_SIZE).u8(p.node & 0xff).u8(p.apicId).u32(SRAT_ENABLED);
      w.u8(0); // local SAPIC EID (Itanium only)
      w.u8((p.node >>> 8) & 0xff).u8((p.node >>> 16) & 0xff).u8((p.node >>> 24) & 0xff);
      w.u32(0); // clock domain
    } else {
      w.u8(SRAT_TYPE.X2APIC_AFFINITY).u8(SRAT_X2APIC_AFFINITY_SIZE).u16(0).u32(p.node).u32(p.apicId).u32(SRAT_ENABLED).u32(0).u32(0);
    }
  });
  const sorted = [...opts.memory].sort((a, b) => a.gpa - b.gpa);
  sorted.forEach((m, i) => {
    checkUint(m.gpa, 64, `srat memory[${i}].gpa`);
    checkUint(m.size, 64, `srat memory[${i}].size`);
    checkUint(m.node, 32, `srat memory[${i}].node`);
    if (m.size === 0) throw bad(`memory[${i}].size`, `memory range at ${m.gpa} is empty`, '0');
    const prev = sorted[i - 1];
    if (prev && prev.gpa + prev.size > m.gpa) throw bad(`memory[${i}].gpa`, `memory ranges at ${prev.gpa} and ${m.gpa} overlap`, String(m.gpa));
    const base = BigInt(m.gpa);
    const size = BigInt(m.size);
    w.u8(SRAT_TYPE.MEMORY_AFFINITY).u8(SRAT_MEMORY_AFFINITY_SIZE).u32(m.node).u16(0);
    w.u32(Number(base & 0xffffffffn)).u32(Number(base >> 32n)).u32(Number(size & 0xffffffffn)).u32(Number(size >> 32n));
    w.u32(0).u32(SRAT_ENABLED | (m.hotPluggable ? SRAT_MEMORY_HOT_PLUGGABLE : 0)).u64(0n);
  });
  return encodeSdt({ signature: 'SRAT', revision: SRAT_REVISION }, w.finish());
}
