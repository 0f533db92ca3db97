/**
 * Parser for flattened device tree blobs (versions 16 and 17) into a plain
 * tree of nodes with raw property bytes, plus typed getters and path lookup.
 * It exists so tests and tools can read back what FdtWriter produced; it
 * does not interpret bindings, resolve phandles or apply overlays.
 * Every offset and length comes from the blob and is bounds-checked, so a
 * damaged blob throws FormatError (format 'fdt'), never a RangeError.
 * Spec: Devicetree Specification v0.4, chapter 5.
 */
import { FormatError } from '../errors';
import { ByteReader, alignUp, hex } from '../util/bytes';
import { FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_HEADER_SIZE, FDT_MAGIC, FDT_NOP, FDT_PROP } from './writer';

export interface FdtHeader {
  magic: number;
  totalsize: number;
  off_dt_struct: number;
  off_dt_strings: number;
  off_mem_rsvmap: number;
  version: number;
  last_comp_version: number;
  boot_cpuid_phys: number;
  size_dt_strings: number;
  size_dt_struct: number;
}

export interface FdtNode {
  name: string;
  props: Map<string, Uint8Array>;
  children: FdtNode[];
}

export interface FdtTree {
  header: FdtHeader;
  memReserve: { address: bigint; size: bigint }[];
  root: FdtNode;
}

function fail(code: string, message: string, field: string, offset?: number, expected?: string, actual?: string): never {
  throw new FormatError(code, `fdt: ${message}`, { format: 'fdt', field, ...(offset !== undefined ? { offset } : {}), ...(expected ? { expected } : {}), ...(actual ? { actual } : {}) });
}

function parseHeader(r: ByteReader): FdtHeader {
  r.need(0, FDT_HEADER_SIZE, 'header');
  const magic = r.u32be(0, 'magic');
  if (magic !== FDT_MAGIC) fail('ERR_FDT_MAGIC', `magic is ${hex(magic)}, expected 0xd00dfeed`, 'magic', 0, hex(FDT_MAGIC), hex(magic));
  const h: FdtHeader = {
    magic,
    totalsize: r.u32be(4, 'totalsize'),
    off_dt_struct: r.u32be(8, 'off_dt_struct'),
    off_dt_strings: r.u32be(12, 'off_dt_strings'),
    off_mem_rsvmap: r.u32be(16, 'off_mem_rsvmap'),
    version: r.u32be(20, 'version'),
    last_comp_version: r.u32be(24, 'last_comp_version'),
    boot_cpuid_phys: r.u32be(28, 'boot_cpuid_phys'),
    size_dt_strings: r.u32be(32, 'size_dt_strings'),
    size_dt_struct: r.u32be(36, 'size_dt_struct'),
  };
  if (h.totalsize < FDT_HEADER_SIZE || h.totalsize > r.length) {
    fail('ERR_FDT_TOTALSIZE', `totalsize ${h.totalsize} does not fit the ${r.length}-byte input`, 'totalsize', 4, `${FDT_HEADER_SIZE}..${r.length}`, String(h.totalsize));
  }
  // Version 16 is the oldest layout with size_dt_struct; 17 is what we write.
  if (h.version < 16 || h.last_comp_version > 17) {
    fail('ERR_FDT_VERSION', `version ${h.version} (last_comp_version ${h.last_comp_version}) is not readable as version 16 or 17`, 'version', 20, '16..17', String(h.version));
  }
  const blocks: [string, number, number, number, number][] = [
    ['off_mem_rsvmap', 16, h.off_mem_rsvmap, 16, 8],
    ['off_dt_struct', 8, h.off_dt_struct, h.size_dt_struct, 4],
    ['off_dt_strings', 12, h.off_dt_strings, h.size_dt_strings, 1],
  ];
  for (const [field, at, off, size, align] of blocks) {
    if (off < FDT_HEADER_SIZE || off + size > h.totalsize) {
      fail('ERR_FDT_BLOCK_RANGE', `${field} ${hex(off)} (${size} bytes) lies outside [0x28, ${hex(h.totalsize)})`, field, at, `inside totalsize ${h.totalsize}`, hex(off));
    }
    if (off % align !== 0) fail('ERR_FDT_BLOCK_ALIGN', `${field} ${hex(off)} is not ${align}-byte aligned`, field, at, `multiple of ${align}`, hex(off));
  }
  return h;
}

function parseMemReserve(r: ByteReader, h: FdtHeader): { address: bigint; size: bigint }[] {
  const out: { address: bigint; size: bigint }[] = [];
  for (let at = h.off_mem_rsvmap; ; at += 16) {
    if (at + 16 > h.totalsize) fail('ERR_FDT_TRUNCATED', `memory reservation block at ${hex(h.off_mem_rsvmap)} has no (0, 0) terminator`, 'mem_rsvmap', at);
    const address = r.u64be(at, 'mem_rsvmap.address');
    const size = r.u64be(at + 8, 'mem_rsvmap.size');
    if (address === 0n && size === 0n) return out;
    out.push({ address, size });
  }
}

/** Parses a DTB; throws FormatError naming the field and offset of the first problem. */
export function parseFdt(bytes: Uint8Array): FdtTree {
  const r = new ByteReader(bytes, 'fdt');
  const header = parseHeader(r);
  const memReserve = parseMemReserve(r, header);
  const structEnd = header.off_dt_struct + header.size_dt_struct;
  // Reads inside the structure block go through a reader limited to it, so a
  // token can never run into the strings block or past totalsize.
  const sr = new ByteReader(bytes.subarray(0, structEnd), 'fdt');
  const strings = bytes.subarray(header.off_dt_strings, header.off_dt_strings + header.size_dt_strings);
  const stringsReader = new ByteReader(strings, 'fdt');

  const stack: FdtNode[] = [];
  let root: FdtNode | undefined;
  let at = header.off_dt_struct;
  for (;;) {
    const token = sr.u32be(at, 'structure token');
    const tokenAt = at;
    at += 4;
    if (token === FDT_BEGIN_NODE) {
      const name = sr.cstring(at, 'node name');
      at = alignUp(at + new TextEncoder().encode(name).length + 1, 4);
      const node: FdtNode = { name, props: new Map(), children: [] };
      const parent = stack[stack.length - 1];
      if (parent) parent.children.push(node);
      else if (root) fail('ERR_FDT_STRUCTURE', `second root node ${JSON.stringify(name)} at ${hex(tokenAt)}`, 'FDT_BEGIN_NODE', tokenAt);
      else root = node;
      stack.push(node);
    } else if (token === FDT_END_NODE) {
      if (!stack.pop()) fail('ERR_FDT_STRUCTURE', `FDT_END_NODE at ${hex(tokenAt)} closes no open node`, 'FDT_END_NODE', tokenAt);
    } else if (token === FDT_PROP) {
      const len = sr.u32be(at, 'property len');
      const nameoff = sr.u32be(at + 4, 'property nameoff');
      const value = sr.slice(at + 8, len, 'property value');
      const node = stack[stack.length - 1];
      if (!node) fail('ERR_FDT_STRUCTURE', `property at ${hex(tokenAt)} is outside any node`, 'FDT_PROP', tokenAt);
      if (nameoff >= strings.length) fail('ERR_FDT_STRING_OFFSET', `property nameoff ${hex(nameoff)} at ${hex(at + 4)} is outside the ${strings.length}-byte strings block`, 'nameoff', at + 4);
      const name = stringsReader.cstring(nameoff, 'property name');
      node.props.set(name, value.slice());
      at = alignUp(at + 8 + len, 4);
    } else if (token === FDT_NOP) {
      continue;
    } else if (token === FDT_END) {
      if (stack.length > 0) fail('ERR_FDT_STRUCTURE', `FDT_END at ${hex(tokenAt)} with ${stack.length} node(s) still open`, 'FDT_END', tokenAt);
      if (!root) fail('ERR_FDT_STRUCTURE', 'structure block has no root node', 'FDT_END', tokenAt);
      return { header, memReserve, root };
    } else {
      fail('ERR_FDT_TOKEN', `unknown structure token ${hex(token)} at ${hex(tokenAt)}`, 'structure token', tokenAt, '1, 2, 3, 4 or 9', hex(token));
    }
  }
}

/** Looks a node up by absolute path ("/", "/cpus/cpu@0"); unit addresses must match exactly. */
export function findNode(root: FdtNode, path: string): FdtNode | undefined {
  if (!path.startsWith('/')) return undefined;
  let node: FdtNode | undefined = root;
  for (const part of path.split('/').filter((p) => p !== '')) {
    node = node.children.find((c: FdtNode) => c.name === part);
    if (!node) return undefined;
  }
  return node;
}

function cellsOf(value: Uint8Array): number[] {
  const dv = new DataView(value.buffer, value.byteOffset, value.byteLength);
  const out: number[] = [];
  for (let i = 0; i + 4 <= value.length; i += 4) out.push(dv.getUint32(i, false));
  return out;
}

/** A one-cell property, or undefined when absent or not exactly 4 bytes. */
export function getU32(node: FdtNode, name: string): number | undefined {
  const v = node.props.get(name);
  return v && v.length === 4 ? (cellsOf(v)[0] ?? undefined) : undefined;
}

/** A two-cell property, or undefined when absent or not exactly 8 bytes. */
export function getU64(node: FdtNode, name: string): bigint | undefined {
  const v = node.props.get(name);
  return v && v.length === 8 ? new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, false) : undefined;
}

/** All cells of a property, or undefined when absent or not a multiple of 4 bytes. */
export function getCells(node: FdtNode, name: string): number[] | undefined {
  const v = node.props.get(name);
  return v && v.length % 4 === 0 ? cellsOf(v) : undefined;
}

/** A NUL-terminated list of strings, or undefined when absent or not NUL-terminated. */
export function getStringList(node: FdtNode, name: string): string[] | undefined {
  const v = node.props.get(name);
  if (!v || v.length === 0 || v[v.length - 1] !== 0) return undefined;
  return new TextDecoder().decode(v.subarray(0, v.length - 1)).split('\0');
}

/** The first string of a string property. */
export function getString(node: FdtNode, name: string): string | undefined {
  return getStringList(node, name)?.[0];
}
