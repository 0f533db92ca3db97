/**
 * The Processor Properties Topology Table: the processor hierarchy (packages,
 * cores, threads) as a tree of nodes, each pointing at its parent by byte
 * offset from the start of the table. Leaves carry the ACPI processor UID,
 * which is the vCPU index, the same UID the MADT gives entry i. No cache
 * nodes: an x86 guest reads its caches from CPUID. Spec: ACPI 6.5 §5.2.30.
 */
import { FormatError } from '../errors';
import { ByteWriter } from '../util/bytes';
import { encodeSdt, SDT_HEADER_SIZE } from './sdt';

/** Revision 2 (ACPI 6.3) is the first with the thread, leaf and identical-implementation flags. */
export const PPTT_REVISION = 2;
export const PPTT_PROCESSOR_NODE = 0;
export const PPTT_PROCESSOR_NODE_SIZE = 20;
export const PPTT_FLAGS = {
  PHYSICAL_PACKAGE: 1 << 0,
  ACPI_ID_VALID: 1 << 1,
  THREAD: 1 << 2,
  LEAF: 1 << 3,
  IDENTICAL: 1 << 4,
} as const;

export interface PpttTopology {
  sockets: number;
  coresPerSocket: number;
  threadsPerCore: number;
}

function bad(field: string, message: string, actual: string): FormatError {
  return new FormatError('ERR_ACPI_VALUE', `pptt: ${message}`, { format: 'acpi', field, expected: 'see message', actual });
}

export function encodePptt(t: PpttTopology): Uint8Array {
  for (const key of ['sockets', 'coresPerSocket', 'threadsPerCore'] as const) {
    const v = t[key];
    if (!Number.isInteger(v) || v < 1 || v > 0xffff) throw bad(key, `${key} is ${v}, expected an integer from 1 to 65535`, String(v));
  }
  const total = t.sockets * t.coresPerSocket * t.threadsPerCore;
  if (total > 0xffffffff) throw bad('sockets', `${total} processors do not fit a 32-bit processor id`, String(total));
  const w = new ByteWriter(PPTT_PROCESSOR_NODE_SIZE * (t.sockets * (1 + t.coresPerSocket * (1 + t.threadsPerCore))));
  // Parents are referenced by their offset in the whole table, header included.
  const node = (flags: number, parent: number, acpiId: number): number => {
    const at = SDT_HEADER_SIZE + w.length;
    w.u8(PPTT_PROCESSOR_NODE).u8(PPTT_PROCESSOR_NODE_SIZE).u16(0).u32(flags).u32(parent).u32(acpiId).u32(0);
    return at;
  };
  const smt = t.threadsPerCore > 1;
  let uid = 0;
  for (let s = 0; s < t.sockets; s++) {
    const pkg = node(PPTT_FLAGS.PHYSICAL_PACKAGE | PPTT_FLAGS.ACPI_ID_VALID | PPTT_FLAGS.IDENTICAL, 0, s);
    for (let c = 0; c < t.coresPerSocket; c++) {
      if (!smt) {
        node(PPTT_FLAGS.ACPI_ID_VALID | PPTT_FLAGS.LEAF | PPTT_FLAGS.IDENTICAL, pkg, uid++);
        continue;
      }
      const core = node(PPTT_FLAGS.IDENTICAL, pkg, 0);
      for (let th = 0; th < t.threadsPerCore; th++) node(PPTT_FLAGS.ACPI_ID_VALID | PPTT_FLAGS.THREAD | PPTT_FLAGS.LEAF | PPTT_FLAGS.IDENTICAL, core, uid++);
    }
  }
  return encodeSdt({ signature: 'PPTT', revision: PPTT_REVISION }, w.finish());
}
