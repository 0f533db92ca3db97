/**
 * The Extended System Description Table: the header followed by one 64-bit
 * physical address per table. It lists every table except the DSDT (reached
 * through the FADT), the FACS (also reached through the FADT) and itself.
 * Spec: ACPI 6.5 §5.2.8.
 */
import { ByteWriter } from '../util/bytes';
import { checkUint } from './checks';
import { encodeSdt } from './sdt';

export const XSDT_REVISION = 1;

export function encodeXsdt(tableGpas: readonly number[]): Uint8Array {
  const body = new ByteWriter(8 * tableGpas.length);
  tableGpas.forEach((gpa, i) => {
    checkUint(gpa, 64, `xsdt entry ${i}`);
    body.u64(gpa);
  });
  return encodeSdt({ signature: 'XSDT', revision: XSDT_REVISION }, body.finish());
}
