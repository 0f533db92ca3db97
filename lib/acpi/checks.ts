/**
 * Input checks shared by the ACPI encoders. Encoders take plain values from
 * the layout and the config; a value that does not fit its wire field becomes
 * a FormatError naming the field, never a silent truncation by DataView.
 * Not a parser: nothing here reads bytes.
 */
import { FormatError } from '../errors';
import { hex } from '../util/bytes';

/** Throws ERR_ACPI_VALUE unless `value` is an integer in [0, 2^bits). */
export function checkUint(value: number | bigint, bits: number, field: string, format = 'acpi'): void {
  const ok =
    typeof value === 'bigint'
      ? value >= 0n && value < 1n << BigInt(bits)
      : Number.isSafeInteger(value) && value >= 0 && BigInt(value) < 1n << BigInt(bits);
  if (!ok) {
    const actual = typeof value === 'bigint' || Number.isFinite(value) ? hex(value as number | bigint) : String(value);
    throw new FormatError('ERR_ACPI_VALUE', `${format}: ${field} is ${actual}, which does not fit in ${bits} bits`, {
      format,
      field,
      expected: `unsigned ${bits}-bit integer`,
      actual,
    });
  }
}

/**
 * Fixed-width ASCII field (OEMID, table IDs), padded with spaces as ACPICA
 * does when it prints them. Only printable ASCII is allowed because Linux
 * prints these fields verbatim in dmesg.
 */
export function fixedAscii(value: string, size: number, field: string, format = 'acpi'): Uint8Array {
  if (value.length > size || !/^[\x20-\x7e]*$/.test(value)) {
    throw new FormatError('ERR_ACPI_VALUE', `${format}: ${field} "${value}" must be at most ${size} printable ascii characters`, {
      format,
      field,
      expected: `<= ${size} printable ascii characters`,
      actual: JSON.stringify(value),
    });
  }
  const out = new Uint8Array(size).fill(0x20);
  for (let i = 0; i < value.length; i++) out[i] = value.charCodeAt(i);
  return out;
}

/** A 4-character table signature; exactly four upper-case letters or digits. */
export function signatureBytes(signature: string): Uint8Array {
  if (!/^[A-Z0-9]{4}$/.test(signature)) {
    throw new FormatError('ERR_ACPI_VALUE', `acpi: table signature "${signature}" must be four upper-case letters or digits`, {
      format: 'acpi',
      field: 'signature',
      expected: '4 characters [A-Z0-9]',
      actual: JSON.stringify(signature),
    });
  }
  return fixedAscii(signature, 4, 'signature');
}
