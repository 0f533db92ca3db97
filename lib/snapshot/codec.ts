/**
 * JSON for the state a snapshot holds: plain JSON plus two tagged shapes,
 * `{"$bigint": "0x…"}` for 64-bit registers and `{"$bytes": "<base64>"}`
 * for the kernel's opaque structs (XSAVE area, LAPIC page, ...). Decoding
 * also reads any other JSON unchanged, so device state (already JSON-safe)
 * goes through the same path. Input is capped in depth: a hostile file
 * cannot make the walk recurse without bound.
 */
import { SnapshotError } from '../errors';

/** Deeper nesting than any state we write; a file that nests further is refused. */
const MAX_DEPTH = 64;

/** `value` with bigints and byte arrays tagged, ready for JSON.stringify. */
export function encodeState(value: unknown, depth = 0): unknown {
  if (depth > MAX_DEPTH) throw new SnapshotError(`state nests deeper than ${MAX_DEPTH} levels`);
  if (typeof value === 'bigint') return { $bigint: `0x${value.toString(16)}` };
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
  if (Array.isArray(value)) return value.map((v) => encodeState(v, depth + 1));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = encodeState(v, depth + 1);
    return out;
  }
  if (typeof value === 'number' && !Number.isFinite(value)) throw new SnapshotError(`state holds the number ${value}, which JSON cannot carry`);
  return value;
}

const HEX = /^0x[0-9a-f]{1,16}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** The inverse of encodeState on parsed JSON; `file` names the file in errors, and the path names the field. */
export function decodeState(value: unknown, file: string, at = '', depth = 0): unknown {
  if (depth > MAX_DEPTH) throw new SnapshotError(`${file}: ${at || 'the top level'} nests deeper than ${MAX_DEPTH} levels`, { file, field: at });
  if (Array.isArray(value)) return value.map((v, i) => decodeState(v, file, `${at}[${i}]`, depth + 1));
  if (value === null || typeof value !== 'object') return value;
  const o = value as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 1 && keys[0] === '$bigint') {
    const s = o.$bigint;
    if (typeof s !== 'string' || !HEX.test(s)) throw new SnapshotError(`${file}: ${at} is not a 64-bit hex number (${JSON.stringify(s)})`, { file, field: at });
    return BigInt(s);
  }
  if (keys.length === 1 && keys[0] === '$bytes') {
    const s = o.$bytes;
    if (typeof s !== 'string' || s.length % 4 !== 0 || !BASE64.test(s)) throw new SnapshotError(`${file}: ${at} is not base64 bytes`, { file, field: at });
    return new Uint8Array(Buffer.from(s, 'base64'));
  }
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    // A key like __proto__ from JSON.parse is an own property; copying it by assignment would set the prototype.
    Object.defineProperty(out, k, { value: decodeState(o[k], file, at ? `${at}.${k}` : k, depth + 1), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** JSON text of `value` (encodeState applied). */
export function stateToJson(value: unknown): string {
  return JSON.stringify(encodeState(value));
}

/** Parse and decode a state file's bytes; a file that is not JSON is refused naming it. */
export function stateFromJson(bytes: Uint8Array, file: string): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (e) {
    throw new SnapshotError(`${file} is not valid JSON (${(e as Error).message})`, { file }, { cause: e });
  }
  return decodeState(parsed, file);
}
