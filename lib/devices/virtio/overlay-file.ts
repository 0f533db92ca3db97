/**
 * The file of a kept copy-on-write overlay (`overlay: PATH`): the guest's
 * clusters at the base's own offsets, then the cluster map, then a header in
 * the file's last 4 KiB (at the end, since the data area starts at offset 0):
 *
 *   [0, baseSize)                      data, sparse; a cluster counts only when its map bit is set
 *   [mapOffset, mapOffset + mapBytes)  cluster map, bit (c & 7) of byte (c >> 3) for cluster c
 *   [fileSize - 4096, fileSize)        header (encodeOverlayHeader)
 *
 * with mapOffset = baseSize rounded up to 4 KiB and the map padded to 4 KiB.
 *
 * Header, little-endian, at the start of the last 4 KiB:
 *
 *   0x00  8  magic           "NVMMOVL1"
 *   0x08  4  version         1
 *   0x0c  4  cluster_bytes   a power of two from 4 KiB to 1 MiB
 *   0x10  8  base_size       bytes of the base image
 *   0x18  4  flags           bit 0 COMMITTING: a commit into the base began and has not finished
 *   0x1c  4  base_path_len   bytes of base_path
 *   0x20  n  base_path       UTF-8 absolute path of the base (at most MAX_BASE_PATH_BYTES)
 *
 * Crash rule (why a map bit may be trusted): a bit reaches the file only
 * after its cluster's data was written and synced (OverlayBackend.datasync:
 * snapshot the map, sync the data, write the snapshot, sync again), so a set
 * bit never points at bytes nobody wrote. Bits not yet saved when Node dies
 * lose the guest's unflushed writes to those clusters, as a disk's volatile
 * cache would; flushed writes survive.
 */
import { FormatError, type FormatErrorDetails } from '../../errors';

export const OVERLAY_MAGIC = 'NVMMOVL1';
export const OVERLAY_VERSION = 1;
export const OVERLAY_HEADER_BYTES = 4096;
export const OVERLAY_FLAG_COMMITTING = 1;
export const MAX_BASE_PATH_BYTES = OVERLAY_HEADER_BYTES - 0x20;
const MIN_CLUSTER_BYTES = 4096;
const MAX_CLUSTER_BYTES = 1 << 20;
const ALIGN = 4096;

export interface OverlayHeader {
  clusterBytes: number;
  baseSize: number;
  /** The base image, as an absolute path. */
  basePath: string;
  committing: boolean;
}

/** Where the parts of an overlay file over a base of `baseSize` bytes lie. */
export interface OverlayLayout {
  mapOffset: number;
  mapBytes: number;
  headerOffset: number;
  fileSize: number;
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

export function overlayLayout(baseSize: number, clusterBytes: number): OverlayLayout {
  const mapBytes = Math.ceil(Math.ceil(baseSize / clusterBytes) / 8);
  const mapOffset = alignUp(baseSize, ALIGN);
  const headerOffset = mapOffset + alignUp(Math.max(mapBytes, 1), ALIGN);
  return { mapOffset, mapBytes, headerOffset, fileSize: headerOffset + OVERLAY_HEADER_BYTES };
}

/** The 4 KiB header block. Throws on a base path too long for it. */
export function encodeOverlayHeader(h: OverlayHeader): Uint8Array {
  const out = new Uint8Array(OVERLAY_HEADER_BYTES);
  const dv = new DataView(out.buffer);
  out.set(new TextEncoder().encode(OVERLAY_MAGIC), 0);
  dv.setUint32(0x08, OVERLAY_VERSION, true);
  dv.setUint32(0x0c, h.clusterBytes, true);
  dv.setBigUint64(0x10, BigInt(h.baseSize), true);
  dv.setUint32(0x18, h.committing ? OVERLAY_FLAG_COMMITTING : 0, true);
  const p = new TextEncoder().encode(h.basePath);
  if (p.length > MAX_BASE_PATH_BYTES) throw new RangeError(`the base path ${h.basePath} is ${p.length} bytes, more than an overlay header holds (${MAX_BASE_PATH_BYTES})`);
  dv.setUint32(0x1c, p.length, true);
  out.set(p, 0x20);
  return out;
}

/**
 * Decode and check a header block read from the end of an overlay file of
 * `fileSize` bytes; FormatError (ERR_OVERLAY_FORMAT) names the file, field and
 * value of the first thing wrong.
 */
export function parseOverlayHeader(bytes: Uint8Array, fileSize: number, file: string): OverlayHeader {
  const fail = (field: string, offset: number, expected: string, actual: string, why: string): never => {
    const details: FormatErrorDetails = { format: 'nodevmm overlay', field, offset, expected, actual };
    const e = new FormatError('ERR_OVERLAY_FORMAT', `overlay ${file}: ${why}`, details);
    e.file = file;
    throw e;
  };
  if (bytes.length < OVERLAY_HEADER_BYTES) fail('size', 0, `at least ${OVERLAY_HEADER_BYTES} bytes`, String(fileSize), `is ${fileSize} bytes, too short to be a nodevmm overlay (no header)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = new TextDecoder('latin1').decode(bytes.subarray(0, 8));
  if (magic !== OVERLAY_MAGIC) fail('magic', 0, OVERLAY_MAGIC, JSON.stringify(magic), `is not a nodevmm overlay (its last 4 KiB do not start with ${OVERLAY_MAGIC})`);
  const version = dv.getUint32(0x08, true);
  if (version !== OVERLAY_VERSION) fail('version', 0x08, String(OVERLAY_VERSION), String(version), `has header version ${version}; this nodevmm reads version ${OVERLAY_VERSION}`);
  const clusterBytes = dv.getUint32(0x0c, true);
  if (clusterBytes < MIN_CLUSTER_BYTES || clusterBytes > MAX_CLUSTER_BYTES || (clusterBytes & (clusterBytes - 1)) !== 0) {
    fail('cluster_bytes', 0x0c, `a power of two from ${MIN_CLUSTER_BYTES} to ${MAX_CLUSTER_BYTES}`, String(clusterBytes), `has cluster_bytes ${clusterBytes}, not a power of two from ${MIN_CLUSTER_BYTES} to ${MAX_CLUSTER_BYTES}`);
  }
  const baseSize64 = dv.getBigUint64(0x10, true);
  if (baseSize64 < 512n || baseSize64 > BigInt(Number.MAX_SAFE_INTEGER)) fail('base_size', 0x10, 'at least 512', String(baseSize64), `has base_size ${baseSize64}, not a disk size`);
  const baseSize = Number(baseSize64);
  const flags = dv.getUint32(0x18, true);
  if (flags & ~OVERLAY_FLAG_COMMITTING) fail('flags', 0x18, `bits of ${OVERLAY_FLAG_COMMITTING}`, `0x${flags.toString(16)}`, `has unknown flags 0x${flags.toString(16)}`);
  const len = dv.getUint32(0x1c, true);
  if (len === 0 || len > MAX_BASE_PATH_BYTES) fail('base_path_len', 0x1c, `1 to ${MAX_BASE_PATH_BYTES}`, String(len), `has base_path_len ${len}, not 1 to ${MAX_BASE_PATH_BYTES}`);
  let basePath = '';
  try {
    basePath = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(0x20, 0x20 + len));
  } catch {
    fail('base_path', 0x20, 'UTF-8', 'invalid bytes', 'has a base_path that is not UTF-8');
  }
  if (!basePath.startsWith('/') || basePath.includes('\0')) fail('base_path', 0x20, 'an absolute path', JSON.stringify(basePath), `has base_path ${JSON.stringify(basePath)}, not an absolute path`);
  const expected = overlayLayout(baseSize, clusterBytes).fileSize;
  if (fileSize !== expected) fail('size', 0, String(expected), String(fileSize), `is ${fileSize} bytes; an overlay of a ${baseSize}-byte base with ${clusterBytes}-byte clusters is ${expected}`);
  return { clusterBytes, baseSize, basePath, committing: (flags & OVERLAY_FLAG_COMMITTING) !== 0 };
}
