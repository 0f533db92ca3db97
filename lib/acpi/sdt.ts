/**
 * The 36-byte System Description Table header shared by every ACPI table
 * except the RSDP and FACS, the 8-bit checksum rule, and the 12-byte Generic
 * Address Structure. Tables hand over their body; the header's length and
 * checksum are derived from the final bytes, so they cannot drift from them.
 * Spec: ACPI 6.5 §5.2.6 (header), §5.2.3.2 (GAS), §5.2.5.3/§5.2.6 (checksums).
 */
import { ByteWriter } from '../util/bytes';
import { checkUint, fixedAscii, signatureBytes } from './checks';

export const SDT_HEADER_SIZE = 36;
export const SDT_CHECKSUM_OFFSET = 9;
export const SDT_LENGTH_OFFSET = 4;
export const GAS_SIZE = 12;

/** Identity stamped into every table; Linux prints it in the "ACPI: XSDT 0x... (v01 NODVMM ...)" lines. */
export const OEM_ID = 'NODVMM';
export const CREATOR_ID = 'NVMM';
export const OEM_REVISION = 1;
export const CREATOR_REVISION = 1;

export interface SdtHeader {
  /** Four ASCII characters, e.g. "FACP" for the FADT. */
  signature: string;
  revision: number;
  /** Defaults to "NVMM" followed by the signature, so each table is recognisable by its ID alone. */
  oemTableId?: string;
}

/** Sum of all bytes mod 256; a valid table sums to 0. */
export function sum8(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s = (s + b) & 0xff;
  return s;
}

/** The byte that, added to `bytes` (whose checksum byte is still 0), makes the total 0 mod 256. */
export function checksum8(bytes: Uint8Array): number {
  return (0x100 - sum8(bytes)) & 0xff;
}

/** Header plus body, with Length and Checksum computed over the finished table. */
export function encodeSdt(header: SdtHeader, body: Uint8Array): Uint8Array {
  checkUint(header.revision, 8, `${header.signature} revision`);
  const w = new ByteWriter(SDT_HEADER_SIZE + body.length);
  w.bytes(signatureBytes(header.signature));
  w.u32(SDT_HEADER_SIZE + body.length);
  w.u8(header.revision);
  w.u8(0); // checksum, patched below
  w.bytes(fixedAscii(OEM_ID, 6, 'oem_id'));
  w.bytes(fixedAscii(header.oemTableId ?? CREATOR_ID + header.signature, 8, 'oem_table_id'));
  w.u32(OEM_REVISION);
  w.bytes(fixedAscii(CREATOR_ID, 4, 'creator_id'));
  w.u32(CREATOR_REVISION);
  w.bytes(body);
  const table = w.finish();
  table[SDT_CHECKSUM_OFFSET] = checksum8(table);
  return table;
}

/** Address_Space_ID values we use (ACPI 6.5 Table 5.25). */
export const AddressSpace = {
  SystemMemory: 0,
  SystemIo: 1,
} as const;

/** Access_Size values (ACPI 6.5 Table 5.25): the width of each individual access. */
export const AccessSize = {
  Undefined: 0,
  Byte: 1,
  Word: 2,
  Dword: 3,
  Qword: 4,
} as const;

/** Generic Address Structure: where a register lives and how wide it is. */
export interface Gas {
  space_id: number;
  bit_width: number;
  bit_offset: number;
  access_size: number;
  address: number | bigint;
}

/** A GAS whose fields are all zero means "not present" to ACPICA. */
export const GAS_NONE: Gas = { space_id: 0, bit_width: 0, bit_offset: 0, access_size: 0, address: 0 };

/** Shorthand for a register block in system I/O space. */
export function ioGas(port: number, bitWidth: number, accessSize: number): Gas {
  return { space_id: AddressSpace.SystemIo, bit_width: bitWidth, bit_offset: 0, access_size: accessSize, address: port };
}

export function encodeGas(gas: Gas): Uint8Array {
  checkUint(gas.space_id, 8, 'gas space_id');
  checkUint(gas.bit_width, 8, 'gas bit_width');
  checkUint(gas.bit_offset, 8, 'gas bit_offset');
  checkUint(gas.access_size, 8, 'gas access_size');
  checkUint(gas.address, 64, 'gas address');
  return new ByteWriter(GAS_SIZE)
    .u8(gas.space_id)
    .u8(gas.bit_width)
    .u8(gas.bit_offset)
    .u8(gas.access_size)
    .u64(gas.address)
    .finish();
}
