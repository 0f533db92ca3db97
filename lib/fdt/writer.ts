/**
 * Streaming writer for flattened device tree blobs (FDT/DTB version 17).
 * Opening a node returns a token that must be handed back to close it, and
 * every structural mistake (property after a child, out-of-order close,
 * unclosed node, NUL inside a string, duplicate phandle, bad name) throws a
 * NodevmmError instead of producing a blob that dtc or Linux would reject.
 * It does not decide what goes into a tree; see lib/arch/aarch64/fdt.ts.
 * Spec: Devicetree Specification v0.4, chapter 5 (Flattened Devicetree Format).
 */
import { NodevmmError } from '../errors';
import { hex } from '../util/bytes';

export const FDT_MAGIC = 0xd00dfeed;
export const FDT_VERSION = 17;
/** Version 17 blobs stay readable by version-16 parsers (spec §5.2). */
export const FDT_LAST_COMP_VERSION = 16;
export const FDT_HEADER_SIZE = 40;
export const FDT_BEGIN_NODE = 0x1;
export const FDT_END_NODE = 0x2;
export const FDT_PROP = 0x3;
export const FDT_NOP = 0x4;
export const FDT_END = 0x9;
/** Same limit as Linux's FDT_MAX_DEPTH: deeper trees are refused at boot anyway. */
export const FDT_MAX_DEPTH = 64;

/** Names from spec §2.2.1 (node) and §2.2.4 (property); 31 characters at most. */
const NODE_NAME_RE = /^[A-Za-z][A-Za-z0-9,._+-]{0,30}(@[A-Za-z0-9,._+-]+)?$/;
const PROPERTY_NAME_RE = /^[A-Za-z0-9,._+?#-]{1,31}$/;

/** Proof that a node is open; only the writer that issued it can close it. */
export class FdtNodeToken {
  /** @internal */
  constructor(
    readonly serial: number,
    readonly depth: number,
    readonly name: string,
  ) {}
}

export interface FdtMemReserveEntry {
  address: bigint;
  size: bigint;
}

export interface FdtFinishOptions {
  /** Physical id of the boot CPU (header field `boot_cpuid_phys`). */
  bootCpuId: number;
  /** Memory reservation block entries; the terminating (0, 0) entry is added here. */
  memReserve?: readonly FdtMemReserveEntry[];
}

interface OpenNode {
  token: FdtNodeToken;
  hasChild: boolean;
  props: Set<string>;
}

function usage(code: string, message: string): NodevmmError {
  return new NodevmmError(code, message);
}

function checkNoNul(what: string, s: string): void {
  if (s.includes('\0')) throw usage('ERR_FDT_NUL_IN_STRING', `fdt ${what} ${JSON.stringify(s)} contains a NUL character, which would end the string early`);
}

/**
 * @example
 * const w = new FdtWriter();
 * const root = w.beginNode('');
 * w.propertyString('compatible', 'linux,dummy-virt');
 * w.endNode(root);
 * const dtb = w.finish({ bootCpuId: 0 });
 */
export class FdtWriter {
  private readonly struct = new BeBuffer(1024);
  private readonly strings = new BeBuffer(256);
  private readonly stringOffsets = new Map<string, number>();
  private readonly stack: OpenNode[] = [];
  private readonly usedPhandles = new Set<number>();
  private readonly reservedPhandles = new Set<number>();
  private nextPhandle = 1;
  private serial = 0;
  private rootDone = false;
  private finished = false;

  /** Opens a node; the root is the first node and is named "". */
  beginNode(name: string): FdtNodeToken {
    this.checkNotFinished();
    checkNoNul('node name', name);
    const parent = this.stack[this.stack.length - 1];
    if (!parent) {
      if (this.rootDone) throw usage('ERR_FDT_SECOND_ROOT', `fdt node ${JSON.stringify(name)} would be a second root node; a tree has exactly one root`);
      if (name !== '') throw usage('ERR_FDT_NODE_NAME', `fdt root node must be named "", not ${JSON.stringify(name)}`);
    } else if (!NODE_NAME_RE.test(name)) {
      throw usage('ERR_FDT_NODE_NAME', `fdt node name ${JSON.stringify(name)} is invalid; it must be 1-31 characters [A-Za-z0-9,._+-] starting with a letter, optionally followed by @unit-address`);
    }
    if (this.stack.length >= FDT_MAX_DEPTH) {
      throw usage('ERR_FDT_DEPTH', `fdt node ${JSON.stringify(name)} would be at depth ${this.stack.length + 1}, deeper than the limit of ${FDT_MAX_DEPTH}`);
    }
    if (parent) parent.hasChild = true;
    this.struct.u32be(FDT_BEGIN_NODE);
    this.struct.bytes(new TextEncoder().encode(name)).u8(0).align(4);
    const token = new FdtNodeToken(++this.serial, this.stack.length, name);
    this.stack.push({ token, hasChild: false, props: new Set() });
    return token;
  }

  /** Closes the innermost open node, which must be the one `token` names. */
  endNode(token: FdtNodeToken): void {
    this.checkNotFinished();
    const top = this.stack[this.stack.length - 1];
    if (!top || top.token !== token) {
      const open = top ? JSON.stringify(top.token.name) : 'none';
      throw usage('ERR_FDT_END_NODE_ORDER', `fdt endNode(${JSON.stringify(token.name)}) is out of order; the innermost open node is ${open}`);
    }
    this.stack.pop();
    if (this.stack.length === 0) this.rootDone = true;
    this.struct.u32be(FDT_END_NODE);
  }

  /** Raw property; every other property method ends here. */
  property(name: string, value: Uint8Array): void {
    this.checkNotFinished();
    checkNoNul('property name', name);
    const node = this.stack[this.stack.length - 1];
    if (!node) throw usage('ERR_FDT_PROPERTY_OUTSIDE_NODE', `fdt property ${JSON.stringify(name)} is outside any node`);
    // The structure block lists a node's properties before its children (spec §5.4.2).
    if (node.hasChild) throw usage('ERR_FDT_PROPERTY_AFTER_CHILD', `fdt property ${JSON.stringify(name)} comes after a child node of ${JSON.stringify(node.token.name)}; properties must precede child nodes`);
    if (!PROPERTY_NAME_RE.test(name)) throw usage('ERR_FDT_PROPERTY_NAME', `fdt property name ${JSON.stringify(name)} is invalid; it must be 1-31 characters [A-Za-z0-9,._+?#-]`);
    if (node.props.has(name)) throw usage('ERR_FDT_DUPLICATE_PROPERTY', `fdt property ${JSON.stringify(name)} is set twice in node ${JSON.stringify(node.token.name)}`);
    if (name === 'phandle' || name === 'linux,phandle') this.recordPhandle(name, value);
    node.props.add(name);
    this.struct.u32be(FDT_PROP).u32be(value.length).u32be(this.stringOffset(name));
    this.struct.bytes(value).align(4);
  }

  propertyNull(name: string): void {
    this.property(name, new Uint8Array(0));
  }

  propertyU32(name: string, value: number): void {
    this.property(name, encodeCells(name, [value]));
  }

  propertyU64(name: string, value: bigint | number): void {
    const v = typeof value === 'bigint' ? value : Number.isSafeInteger(value) ? BigInt(value) : -1n;
    if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw usage('ERR_FDT_VALUE_RANGE', `fdt property ${JSON.stringify(name)} value ${String(value)} must be an integer in [0, 2^64)`);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, false);
    this.property(name, b);
  }

  /** A list of big-endian u32 cells (`reg`, `interrupts`, `clocks`...). */
  propertyCells(name: string, cells: readonly number[]): void {
    this.property(name, encodeCells(name, cells));
  }

  propertyString(name: string, value: string): void {
    this.propertyStringList(name, [value]);
  }

  /** Strings, each NUL-terminated, back to back (spec §2.2.4.1 `<stringlist>`). */
  propertyStringList(name: string, values: readonly string[]): void {
    const enc = new TextEncoder();
    const w = new BeBuffer(64);
    for (const s of values) {
      checkNoNul(`string in property ${JSON.stringify(name)}:`, s);
      w.bytes(enc.encode(s)).u8(0);
    }
    this.property(name, w.finish());
  }

  /** Writes `phandle = <value>` in the current node; the value must not be in use. */
  propertyPhandle(value: number): void {
    this.propertyU32('phandle', value);
  }

  /** A phandle value no node uses yet; write it with `propertyPhandle`. */
  allocPhandle(): number {
    this.checkNotFinished();
    while (this.usedPhandles.has(this.nextPhandle) || this.reservedPhandles.has(this.nextPhandle)) this.nextPhandle++;
    const v = this.nextPhandle++;
    this.reservedPhandles.add(v);
    return v;
  }

  /** Emits FDT_END and lays out header, memory reservations, structure and strings. */
  finish(options: FdtFinishOptions): Uint8Array {
    this.checkNotFinished();
    const open = this.stack[this.stack.length - 1];
    if (open) throw usage('ERR_FDT_UNCLOSED_NODE', `fdt node ${JSON.stringify(open.token.name)} is still open at finish (${this.stack.length} open)`);
    if (!this.rootDone) throw usage('ERR_FDT_NO_ROOT', 'fdt has no root node at finish');
    if (!Number.isInteger(options.bootCpuId) || options.bootCpuId < 0 || options.bootCpuId > 0xffff_ffff) {
      throw usage('ERR_FDT_VALUE_RANGE', `fdt bootCpuId ${options.bootCpuId} must be an integer in [0, 2^32)`);
    }
    for (const r of options.memReserve ?? []) {
      if (r.address < 0n || r.size < 0n || r.address > 0xffff_ffff_ffff_ffffn || r.size > 0xffff_ffff_ffff_ffffn) {
        throw usage('ERR_FDT_VALUE_RANGE', `fdt memory reservation (${hex(r.address)}, ${hex(r.size)}) must fit in 64 bits`);
      }
      // A (0, 0) entry would terminate the list early and hide the entries after it.
      if (r.size === 0n) throw usage('ERR_FDT_VALUE_RANGE', `fdt memory reservation at ${hex(r.address)} has size 0, which readers take as the end of the list`);
    }
    this.finished = true;
    this.struct.u32be(FDT_END);
    const structBytes = this.struct.finish();
    const stringBytes = this.strings.finish();
    const reserves = options.memReserve ?? [];

    // The header is 40 bytes, so the reservation block that follows is already
    // 8-byte aligned (spec §5.3); entries are 16 bytes, so the structure block
    // after it is 4-byte aligned (spec §5.4).
    const offMemRsvmap = FDT_HEADER_SIZE;
    const offDtStruct = offMemRsvmap + (reserves.length + 1) * 16;
    const offDtStrings = offDtStruct + structBytes.length;
    const totalSize = offDtStrings + stringBytes.length;

    const out = new BeBuffer(totalSize);
    out.u32be(FDT_MAGIC).u32be(totalSize).u32be(offDtStruct).u32be(offDtStrings).u32be(offMemRsvmap);
    out.u32be(FDT_VERSION).u32be(FDT_LAST_COMP_VERSION).u32be(options.bootCpuId);
    out.u32be(stringBytes.length).u32be(structBytes.length);
    for (const r of reserves) out.u64be(r.address).u64be(r.size);
    out.u64be(0n).u64be(0n);
    out.bytes(structBytes).bytes(stringBytes);
    return out.finish();
  }

  private recordPhandle(name: string, value: Uint8Array): void {
    if (value.length !== 4) throw usage('ERR_FDT_VALUE_RANGE', `fdt property ${JSON.stringify(name)} is ${value.length} bytes; a phandle is one 32-bit cell`);
    const v = new DataView(value.buffer, value.byteOffset, 4).getUint32(0, false);
    // 0 and 0xffffffff are reserved by spec §2.3.3 as "no phandle".
    if (v === 0 || v === 0xffff_ffff) throw usage('ERR_FDT_VALUE_RANGE', `fdt phandle ${hex(v)} is reserved; use 1 to 0xfffffffe`);
    if (this.usedPhandles.has(v)) throw usage('ERR_FDT_DUPLICATE_PHANDLE', `fdt phandle ${hex(v)} is already used by another node`);
    this.usedPhandles.add(v);
  }

  private stringOffset(name: string): number {
    const known = this.stringOffsets.get(name);
    if (known !== undefined) return known;
    const at = this.strings.length;
    this.strings.bytes(new TextEncoder().encode(name)).u8(0);
    this.stringOffsets.set(name, at);
    return at;
  }

  private checkNotFinished(): void {
    if (this.finished) throw usage('ERR_FDT_FINISHED', 'fdt writer was already finished; start a new FdtWriter');
  }
}

/**
 * Big-endian growable buffer. Not ByteWriter: its u8/u32be/bytes evaluate
 * `this.dv`/`this.buf` before `reserve()` swaps in a larger buffer, so any
 * write that makes it grow throws a RangeError (reported to the owner of
 * lib/util/bytes.ts). This one reserves first, then writes.
 */
class BeBuffer {
  private buf: Uint8Array;
  private len = 0;
  constructor(capacity: number) {
    this.buf = new Uint8Array(Math.max(16, capacity));
  }
  get length(): number {
    return this.len;
  }
  private reserve(n: number): number {
    const at = this.len;
    if (at + n > this.buf.length) {
      const grown = new Uint8Array(Math.max(at + n, this.buf.length * 2));
      grown.set(this.buf.subarray(0, at));
      this.buf = grown;
    }
    this.len = at + n;
    return at;
  }
  u8(v: number): this {
    const at = this.reserve(1);
    this.buf[at] = v;
    return this;
  }
  u32be(v: number): this {
    const at = this.reserve(4);
    new DataView(this.buf.buffer).setUint32(at, v >>> 0, false);
    return this;
  }
  u64be(v: bigint): this {
    const at = this.reserve(8);
    new DataView(this.buf.buffer).setBigUint64(at, v, false);
    return this;
  }
  bytes(b: Uint8Array): this {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
    return this;
  }
  /** Zero padding up to a multiple of `n` (new buffer space is already zero). */
  align(n: number): this {
    const r = this.len % n;
    if (r !== 0) this.reserve(n - r);
    return this;
  }
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

function encodeCells(name: string, cells: readonly number[]): Uint8Array {
  const b = new Uint8Array(cells.length * 4);
  const dv = new DataView(b.buffer);
  cells.forEach((c, i) => {
    if (!Number.isInteger(c) || c < 0 || c > 0xffff_ffff) {
      throw usage('ERR_FDT_VALUE_RANGE', `fdt property ${JSON.stringify(name)} cell ${i} is ${c}; a cell must be an integer in [0, 2^32)`);
    }
    dv.setUint32(i * 4, c, false);
  });
  return b;
}
