/**
 * A small ACPI Machine Language encoder: just the terms our DSDT needs (names,
 * integers, strings, buffers, packages, scopes, devices, methods, Return).
 * Every function returns the encoded bytes of one term, so terms compose by
 * nesting. Bad names and out-of-range values throw FormatError; there is no
 * AML parser or interpreter here (iasl is the oracle in the tests).
 * Spec: ACPI 6.5 §20.2 (AML grammar), §19.3.4 (EISAID).
 */
import { FormatError } from '../errors';
import { hex } from '../util/bytes';
import { checkUint } from './checks';

/** Encoded bytes of one AML term. */
export type AmlTerm = Uint8Array;

/** What a Name() or Package element may hold: a number becomes an Integer, a string a String, bytes are a term already. */
export type AmlData = number | bigint | string | AmlTerm;

// Opcodes, ACPI 6.5 §20.3 (AML byte stream byte values).
const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const NAME_OP = 0x08;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
const SCOPE_OP = 0x10;
const BUFFER_OP = 0x11;
const PACKAGE_OP = 0x12;
const METHOD_OP = 0x14;
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;
const EXT_OP_PREFIX = 0x5b;
const DEVICE_OP = 0x82; // after EXT_OP_PREFIX
const ROOT_CHAR = 0x5c; // '\'
const PARENT_PREFIX_CHAR = 0x5e; // '^'
const RETURN_OP = 0xa4;
const NULL_NAME = 0x00;

/** Largest value a PkgLength can express: 28 bits (4 nybbles + 3 bytes). */
export const PKG_LENGTH_MAX = (1 << 28) - 1;

function amlError(field: string, message: string, actual: string, expected?: string): FormatError {
  return new FormatError('ERR_AML_VALUE', `aml: ${message}`, { format: 'aml', field, actual, ...(expected ? { expected } : {}) });
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * One NameSeg: four characters, the first from [A-Z_], the rest from [A-Z0-9_].
 * Shorter names are padded with '_' the way ASL compilers pad them ("PCI" is
 * "PCI_"), so callers can write what they would write in ASL.
 */
export function nameSeg(seg: string): Uint8Array {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) {
    throw new FormatError(
      'ERR_AML_NAME',
      `aml: name segment "${seg}" must be 1 to 4 characters from [A-Z0-9_] not starting with a digit`,
      { format: 'aml', field: 'NameSeg', expected: '[A-Z_][A-Z0-9_]{0,3}', actual: JSON.stringify(seg) },
    );
  }
  const padded = seg.padEnd(4, '_');
  return Uint8Array.from(padded, (c) => c.charCodeAt(0));
}

/**
 * A NameString: an optional root ('\') or parent ('^'...) prefix followed by
 * dot-separated NameSegs, e.g. "\_SB.COM1", "^^FOO", "_S5". "\" alone is the
 * root scope (RootChar NullName).
 */
export function nameString(path: string): Uint8Array {
  let i = 0;
  const prefix: number[] = [];
  if (path.startsWith('\\')) {
    prefix.push(ROOT_CHAR);
    i = 1;
  } else {
    while (path[i] === '^') {
      prefix.push(PARENT_PREFIX_CHAR);
      i++;
    }
  }
  const rest = path.slice(i);
  if (rest === '') {
    if (prefix[0] !== ROOT_CHAR) {
      throw new FormatError('ERR_AML_NAME', `aml: name path "${path}" has no name segment`, {
        format: 'aml',
        field: 'NameString',
        actual: JSON.stringify(path),
      });
    }
    return Uint8Array.from([...prefix, NULL_NAME]);
  }
  const segs = rest.split('.').map((s) => {
    try {
      return nameSeg(s);
    } catch (e) {
      throw new FormatError('ERR_AML_NAME', `aml: name path "${path}" has a bad segment "${s}"`, {
        format: 'aml',
        field: 'NameString',
        expected: 'segments of 1 to 4 characters from [A-Z0-9_] not starting with a digit',
        actual: JSON.stringify(path),
      }, { cause: e });
    }
  });
  if (segs.length > 255) throw amlError('NameString', `name path has ${segs.length} segments, more than 255`, String(segs.length));
  const head =
    segs.length === 1 ? [] : segs.length === 2 ? [DUAL_NAME_PREFIX] : [MULTI_NAME_PREFIX, segs.length];
  return concat([Uint8Array.from([...prefix, ...head]), ...segs]);
}

/**
 * Encodes a PkgLength whose value is `length` (which by definition counts the
 * PkgLength bytes themselves). ACPI 6.5 §20.2.4:
 *
 *   "If the PkgLength has only one byte, bit 0 through 5 are used to encode
 *   the package length (in other words, values 0-63). If the package length
 *   value is more than 63, more than one byte must be used for the encoding in
 *   which case bit 4 and 5 of the PkgLeadByte are reserved and must be zero.
 *   If multiple bytes encode the length, bits 0-3 of the PkgLeadByte become
 *   the least significant 4 bits of the resulting package length value. The
 *   next ByteData will become the next least significant 8 bits of the
 *   resulting value and so on, up to 3 ByteData bytes. Thus, the maximum
 *   package length is 2**28."
 *
 * Bits 7-6 of the lead byte hold the count of ByteData that follow.
 */
export function encodePkgLength(length: number): Uint8Array {
  if (!Number.isSafeInteger(length) || length < 0 || length > PKG_LENGTH_MAX) {
    throw amlError('PkgLength', `package length ${length} is outside 0..${hex(PKG_LENGTH_MAX)}`, String(length), `0..${PKG_LENGTH_MAX}`);
  }
  if (length <= 63) return Uint8Array.of(length);
  const follow = length < 1 << 12 ? 1 : length < 1 << 20 ? 2 : 3;
  const out = new Uint8Array(1 + follow);
  out[0] = (follow << 6) | (length & 0x0f);
  for (let k = 0; k < follow; k++) out[1 + k] = (length >>> (4 + 8 * k)) & 0xff;
  return out;
}

/**
 * The PkgLength that precedes `contentLength` bytes. The encoding's own size
 * counts, so the boundaries sit at 63, 4095-2 and so on rather than at the
 * powers of two of the content alone.
 */
export function pkgLengthFor(contentLength: number): Uint8Array {
  for (let size = 1; size <= 4; size++) {
    const total = contentLength + size;
    if (size === 1 ? total <= 63 : total < 1 << (4 + 8 * (size - 1))) return encodePkgLength(total);
  }
  throw amlError('PkgLength', `package content of ${contentLength} bytes does not fit a 28-bit PkgLength`, String(contentLength));
}

/** `op PkgLength content`, the shape of every sized term. */
function sized(op: readonly number[], content: readonly Uint8Array[]): Uint8Array {
  const body = concat(content);
  return concat([Uint8Array.from(op), pkgLengthFor(body.length), body]);
}

/** The shortest Integer encoding: Zero, One, or a Byte/Word/DWord/QWord constant. */
export function integer(value: number | bigint): AmlTerm {
  checkUint(value, 64, 'Integer', 'aml');
  const v = BigInt(value);
  if (v === 0n) return Uint8Array.of(ZERO_OP);
  if (v === 1n) return Uint8Array.of(ONE_OP);
  const [prefix, size] =
    v <= 0xffn ? [BYTE_PREFIX, 1] : v <= 0xffffn ? [WORD_PREFIX, 2] : v <= 0xffffffffn ? [DWORD_PREFIX, 4] : [QWORD_PREFIX, 8];
  const out = new Uint8Array(1 + size);
  out[0] = prefix;
  for (let k = 0; k < size; k++) out[1 + k] = Number((v >> BigInt(8 * k)) & 0xffn);
  return out;
}

/** A String constant: ASCII 0x01-0x7F, NUL-terminated in the stream. */
export function string(value: string): AmlTerm {
  if (!/^[\x01-\x7f]*$/.test(value)) {
    throw amlError('String', `string ${JSON.stringify(value)} must contain only ascii characters 0x01-0x7f`, JSON.stringify(value));
  }
  return concat([Uint8Array.of(STRING_PREFIX), Uint8Array.from(value, (c) => c.charCodeAt(0)), Uint8Array.of(0)]);
}

/** Buffer (size) { bytes }, with the size equal to the byte count. */
export function buffer(bytes: Uint8Array): AmlTerm {
  return sized([BUFFER_OP], [integer(bytes.length), bytes]);
}

function data(value: AmlData): AmlTerm {
  if (typeof value === 'number' || typeof value === 'bigint') return integer(value);
  if (typeof value === 'string') return string(value);
  return value;
}

/** Package (n) { elements }; NumElements is a byte, so at most 255 elements. */
export function pkg(elements: readonly AmlData[]): AmlTerm {
  if (elements.length > 255) throw amlError('NumElements', `package has ${elements.length} elements, more than 255`, String(elements.length));
  return sized([PACKAGE_OP], [Uint8Array.of(elements.length), ...elements.map(data)]);
}

/** Name (path, value). */
export function name(path: string, value: AmlData): AmlTerm {
  return concat([Uint8Array.of(NAME_OP), nameString(path), data(value)]);
}

/** Scope (path) { terms }. */
export function scope(path: string, terms: readonly AmlTerm[]): AmlTerm {
  return sized([SCOPE_OP], [nameString(path), ...terms]);
}

/** Device (path) { terms }. */
export function device(path: string, terms: readonly AmlTerm[]): AmlTerm {
  return sized([EXT_OP_PREFIX, DEVICE_OP], [nameString(path), ...terms]);
}

export interface MethodFlags {
  /** Number of arguments, 0-7. */
  args?: number;
  /** Serialized methods get an implicit mutex, needed only if the body creates named objects. */
  serialized?: boolean;
  /** SyncLevel of that mutex, 0-15. */
  syncLevel?: number;
}

/** Method (path, args, Serialized|NotSerialized, syncLevel) { terms }. */
export function method(path: string, flags: MethodFlags, terms: readonly AmlTerm[]): AmlTerm {
  const args = flags.args ?? 0;
  const syncLevel = flags.syncLevel ?? 0;
  if (!Number.isInteger(args) || args < 0 || args > 7) throw amlError('ArgCount', `method argument count ${args} is outside 0..7`, String(args));
  if (!Number.isInteger(syncLevel) || syncLevel < 0 || syncLevel > 15) {
    throw amlError('SyncLevel', `method sync level ${syncLevel} is outside 0..15`, String(syncLevel));
  }
  // MethodFlags: bits 0-2 ArgCount, bit 3 SerializeFlag, bits 4-7 SyncLevel (§20.2.5.2).
  const methodFlags = args | (flags.serialized ? 1 << 3 : 0) | (syncLevel << 4);
  return sized([METHOD_OP], [nameString(path), Uint8Array.of(methodFlags), ...terms]);
}

/** Return (value). */
export function ret(value: AmlData): AmlTerm {
  return concat([Uint8Array.of(RETURN_OP), data(value)]);
}

/**
 * EISAID ("PNP0501"): three upper-case letters packed 5 bits each (A=1) and
 * four hex digits, stored so the bytes in memory read 0x41 0xD0 0x05 0x01 for
 * PNP0501, i.e. the big-endian compressed ID read back as a little-endian
 * DWord (ACPI 6.5 §19.6.35).
 */
export function eisaId(id: string): AmlTerm {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) {
    throw new FormatError('ERR_AML_EISAID', `aml: eisa id "${id}" must be three upper-case letters and four upper-case hex digits`, {
      format: 'aml',
      field: 'EISAID',
      expected: '[A-Z]{3}[0-9A-F]{4}',
      actual: JSON.stringify(id),
    });
  }
  const c = (k: number): number => id.charCodeAt(k) - 0x40;
  const b0 = (c(0) << 2) | (c(1) >> 3);
  const b1 = ((c(1) & 7) << 5) | c(2);
  const b2 = parseInt(id.slice(3, 5), 16);
  const b3 = parseInt(id.slice(5, 7), 16);
  return integer((b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)) >>> 0);
}

/** Name (_HID, ...): an EISAID for "PNP0501"-style IDs, otherwise a string ("ACPI0007", "LNRO0005"). */
export function hid(id: string): AmlTerm {
  return name('_HID', /^[A-Z]{3}[0-9A-F]{4}$/.test(id) ? eisaId(id) : string(id));
}

/** Name (_UID, n). */
export function uid(value: number): AmlTerm {
  return name('_UID', value);
}

/** Name (_CRS, ResourceTemplate () {...}) given the encoded template buffer term. */
export function crs(resourceTemplate: AmlTerm): AmlTerm {
  return name('_CRS', resourceTemplate);
}

/** _STA bits (ACPI 6.5 §6.3.7): present, enabled, shown in UI, functioning. */
export const STA_PRESENT_ENABLED_FUNCTIONING = 0x0f;

/** Method (_STA) { Return (value) }. */
export function sta(value: number = STA_PRESENT_ENABLED_FUNCTIONING): AmlTerm {
  return method('_STA', {}, [ret(value)]);
}
