/**
 * The Firmware ACPI Control Structure: 64 bytes of OS/firmware shared state
 * (hardware signature, waking vector, global lock). It has no checksum and no
 * standard header, and it is reached only through the FADT. We supply one
 * because ACPI requires it on hardware that is not HW-reduced; its global
 * lock word lets ACPICA's lock code run normally. Must be 64-byte aligned.
 * Spec: ACPI 6.5 §5.2.10.
 */
import { ByteWriter } from '../util/bytes';

export const FACS_SIZE = 64;
export const FACS_ALIGNMENT = 64;
export const FACS_VERSION = 2;

export function encodeFacs(): Uint8Array {
  return new ByteWriter(FACS_SIZE)
    .ascii('FACS')
    .u32(FACS_SIZE)
    .u32(0) // hardware signature: fixed, since the virtual hardware never changes between boots
    .u32(0) // firmware waking vector: no S3, so no resume path
    .u32(0) // global lock, initially free
    .u32(0) // flags: no S4BIOS, no 64-bit wake
    .u64(0) // X_Firmware_Waking_Vector
    .u8(FACS_VERSION)
    .zeros(3)
    .u32(0) // OSPM flags (written by the OS)
    .zeros(24)
    .finish();
}
