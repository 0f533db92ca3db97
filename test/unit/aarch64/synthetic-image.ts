/**
 * Builds synthetic arm64 Image headers for tests (booting.rst §4 layout):
 * only the 64-byte header is meaningful, the rest is filler we can recognise.
 */
export interface SyntheticImageOptions {
  textOffset?: bigint;
  imageSize?: bigint;
  flags?: bigint;
  fileSize?: number;
}

/** Flags of a modern kernel: little-endian, 4K pages (bits 1-2 = 1), placement anywhere (bit 3). */
export const MODERN_FLAGS = (1n << 1n) | (1n << 3n);

export function syntheticImage(o: SyntheticImageOptions = {}): Uint8Array {
  const b = new Uint8Array(o.fileSize ?? 0x3000);
  const dv = new DataView(b.buffer);
  dv.setUint32(0x00, 0x91005a4d, true); // code0: "MZ" + add x13, x18, #0x16 (EFI stub convention)
  dv.setUint32(0x04, 0x14000000, true); // code1: b <stext>
  dv.setBigUint64(0x08, o.textOffset ?? 0n, true); // text_offset
  dv.setBigUint64(0x10, o.imageSize ?? 0x20000n, true); // image_size
  dv.setBigUint64(0x18, o.flags ?? MODERN_FLAGS, true); // flags
  b.set([0x41, 0x52, 0x4d, 0x64], 0x38); // magic "ARM\x64"
  for (let i = 0x40; i < b.length; i++) b[i] = 0xa5;
  return b;
}
