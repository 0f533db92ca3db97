/**
 * The Root System Description Pointer, revision 2: the 36-byte structure the
 * kernel finds by scanning 0xE0000-0xFFFFF for "RSD PTR ". It points only at
 * the XSDT; the RSDT address is 0 because every pointer we hand out is 64-bit.
 * It holds an absolute address and no self-pointer, so the caller may place it
 * anywhere on a 16-byte boundary. Spec: ACPI 6.5 §5.2.5.3.
 */
import { ByteWriter } from '../util/bytes';
import { checkUint, fixedAscii } from './checks';
import { checksum8, OEM_ID } from './sdt';

export const RSDP_SIZE = 36;
/** The first checksum covers only the ACPI 1.0 part of the structure. */
export const RSDP_V1_SIZE = 20;
export const RSDP_REVISION = 2;
export const RSDP_CHECKSUM_OFFSET = 8;
export const RSDP_EXTENDED_CHECKSUM_OFFSET = 32;

export function encodeRsdp(xsdtGpa: number): Uint8Array {
  checkUint(xsdtGpa, 64, 'XsdtAddress');
  const w = new ByteWriter(RSDP_SIZE)
    .ascii('RSD PTR ')
    .u8(0) // checksum
    .bytes(fixedAscii(OEM_ID, 6, 'oem_id'))
    .u8(RSDP_REVISION)
    .u32(0) // RsdtAddress: no RSDT
    .u32(RSDP_SIZE)
    .u64(xsdtGpa)
    .u8(0) // extended checksum
    .zeros(3);
  const rsdp = w.finish();
  rsdp[RSDP_CHECKSUM_OFFSET] = checksum8(rsdp.subarray(0, RSDP_V1_SIZE));
  rsdp[RSDP_EXTENDED_CHECKSUM_OFFSET] = checksum8(rsdp);
  return rsdp;
}
