/**
 * CRC-32 (IEEE 802.3: reflected polynomial 0xEDB88320, init and final xor
 * 0xFFFFFFFF), the checksum the IGVM fixed header carries. Same values as
 * zlib `crc32`. Incremental so the parser can hash the zeroed fixed header
 * and the variable header section without concatenating them.
 */

const TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Continue a CRC over `bytes`; pass the previous result (0 to start). */
export function crc32Update(crc: number, bytes: Uint8Array): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** CRC-32 of one buffer. */
export function crc32(bytes: Uint8Array): number {
  return crc32Update(0, bytes);
}
