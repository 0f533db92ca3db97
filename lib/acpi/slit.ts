/**
 * The System Locality Distance Information Table: the relative memory
 * latency between every pair of NUMA proximity domains, as an N x N byte
 * matrix. The spec fixes the diagonal at 10 (local), makes 255 mean
 * "unreachable" and forbids other values below 10. Spec: ACPI 6.5 §5.2.17.
 */
import { FormatError } from '../errors';
import { ByteWriter } from '../util/bytes';
import { encodeSdt } from './sdt';

export const SLIT_REVISION = 1;
export const SLIT_LOCAL_DISTANCE = 10;
export const SLIT_UNREACHABLE = 255;

function bad(field: string, message: string, actual: string): FormatError {
  return new FormatError('ERR_ACPI_VALUE', `slit: ${message}`, { format: 'acpi', field, expected: 'see message', actual });
}

/** `distances[i][j]`: distance from domain i to domain j. Default: one domain. */
export function encodeSlit(distances: readonly (readonly number[])[] = [[SLIT_LOCAL_DISTANCE]]): Uint8Array {
  const n = distances.length;
  if (n === 0) throw bad('distances', 'at least one locality is needed', '0');
  const w = new ByteWriter(8 + n * n);
  w.u64(BigInt(n));
  distances.forEach((row, i) => {
    if (row.length !== n) throw bad(`distances[${i}]`, `row ${i} has ${row.length} entries, the matrix is ${n} x ${n}`, String(row.length));
    row.forEach((d, j) => {
      const field = `distances[${i}][${j}]`;
      if (i === j && d !== SLIT_LOCAL_DISTANCE) throw bad(field, `the distance of locality ${i} to itself must be ${SLIT_LOCAL_DISTANCE}, not ${d}`, String(d));
      if (i !== j && (!Number.isInteger(d) || d <= SLIT_LOCAL_DISTANCE || d > SLIT_UNREACHABLE)) {
        throw bad(field, `distance ${d} from locality ${i} to ${j} must be an integer from 11 to 255`, String(d));
      }
      w.u8(d);
    });
  });
  return encodeSdt({ signature: 'SLIT', revision: SLIT_REVISION }, w.finish());
}
