import test from 'ava';
import { FdtWriter, FDT_MAX_DEPTH } from '../../../lib/fdt/writer';
import { NodevmmError } from '../../../lib/errors';
import { compileDts, decompile, fdtget } from './dtc-tools';
import { testNeeding } from '../../needs';

const dtcTest = testNeeding(['dtc', 'fdtget']);

/** Big-endian words to bytes, so vectors can be written one field per line. */
function words(...ws: number[]): Uint8Array {
  const b = new Uint8Array(ws.length * 4);
  const dv = new DataView(b.buffer);
  ws.forEach((w, i) => dv.setUint32(i * 4, w, false));
  return b;
}

function tinyTree(): Uint8Array {
  const w = new FdtWriter();
  const root = w.beginNode('');
  w.propertyString('compatible', 'x');
  w.propertyU32('val', 0x12345678);
  const n = w.beginNode('n');
  w.propertyString('compatible', 'x');
  w.endNode(n);
  w.endNode(root);
  return w.finish({ bootCpuId: 0 });
}

// / { compatible = "x"; val = <0x12345678>; n { compatible = "x"; }; };
// prettier-ignore
const TINY_EXPECTED = words(
  0xd00dfeed, // 0x00 magic
  0x00000093, // 0x04 totalsize
  0x00000038, // 0x08 off_dt_struct
  0x00000084, // 0x0c off_dt_strings
  0x00000028, // 0x10 off_mem_rsvmap
  0x00000011, // 0x14 version (17)
  0x00000010, // 0x18 last_comp_version (16)
  0x00000000, // 0x1c boot_cpuid_phys
  0x0000000f, // 0x20 size_dt_strings
  0x0000004c, // 0x24 size_dt_struct
  0x00000000, // 0x28 mem_rsvmap terminator: address (hi)
  0x00000000, // 0x2c                          address (lo)
  0x00000000, // 0x30                          size (hi)
  0x00000000, // 0x34                          size (lo)
  0x00000001, // 0x38 FDT_BEGIN_NODE
  0x00000000, // 0x3c node name "" (NUL + padding)
  0x00000003, // 0x40 FDT_PROP
  0x00000002, // 0x44 len 2
  0x00000000, // 0x48 nameoff 0 ("compatible")
  0x78000000, // 0x4c "x\0" + padding
  0x00000003, // 0x50 FDT_PROP
  0x00000004, // 0x54 len 4
  0x0000000b, // 0x58 nameoff 0xb ("val")
  0x12345678, // 0x5c <0x12345678>
  0x00000001, // 0x60 FDT_BEGIN_NODE
  0x6e000000, // 0x64 node name "n\0" + padding
  0x00000003, // 0x68 FDT_PROP
  0x00000002, // 0x6c len 2
  0x00000000, // 0x70 nameoff 0 ("compatible", shared with the root's)
  0x78000000, // 0x74 "x\0" + padding
  0x00000002, // 0x78 FDT_END_NODE (n)
  0x00000002, // 0x7c FDT_END_NODE (root)
  0x00000009, // 0x80 FDT_END
  0x636f6d70, // 0x84 strings: "comp"
  0x61746962, // 0x88          "atib"
  0x6c650076, // 0x8c          "le\0v"
).slice();
const TINY_EXPECTED_FULL = new Uint8Array([...TINY_EXPECTED, 0x61, 0x6c, 0x00]); // 0x90 "al\0"

test('a tiny tree matches the annotated vector byte for byte', (t) => {
  t.deepEqual(tinyTree(), TINY_EXPECTED_FULL);
});

dtcTest('a tiny tree is byte-identical to what dtc compiles from the same source', (t) => {
  const fromDtc = compileDts('/dts-v1/;\n/ { compatible = "x"; val = <0x12345678>; n { compatible = "x"; }; };\n');
  t.deepEqual(tinyTree(), fromDtc);
});

dtcTest('dtc decompiles a tiny tree without warnings and fdtget reads the values back', (t) => {
  const blob = tinyTree();
  const r = decompile(blob);
  t.is(r.status, 0);
  t.is(r.stderr, '');
  t.is(fdtget(blob, '/', 'val', 'x'), '12345678');
  t.is(fdtget(blob, '/n', 'compatible', 's'), 'x');
});

dtcTest('memory reservations are written before the structure block, which stays 4-byte aligned', (t) => {
  const w = new FdtWriter();
  w.endNode(w.beginNode(''));
  const blob = w.finish({ bootCpuId: 3, memReserve: [{ address: 0x4000_0000n, size: 0x1000n }] });
  const dv = new DataView(blob.buffer);
  t.is(dv.getUint32(0x10, false), 0x28);
  t.is(dv.getBigUint64(0x28, false), 0x4000_0000n);
  t.is(dv.getBigUint64(0x30, false), 0x1000n);
  t.is(dv.getBigUint64(0x38, false), 0n); // terminator
  t.is(dv.getUint32(0x08, false), 0x48);
  t.is(dv.getUint32(0x1c, false), 3);
  const r = decompile(blob);
  t.is(r.stderr, '');
  t.regex(r.stdout, /\/memreserve\/\s+0x0*40000000 0x0*1000;/);
});

function code(t: import('ava').ExecutionContext, fn: () => unknown, expected: string): void {
  const e = t.throws(fn, { instanceOf: NodevmmError });
  t.is(e?.code, expected);
}

test('a property after a child node is an error', (t) => {
  const w = new FdtWriter();
  w.beginNode('');
  w.endNode(w.beginNode('a'));
  code(t, () => w.propertyU32('late', 1), 'ERR_FDT_PROPERTY_AFTER_CHILD');
});

test('closing a node that is not the innermost open one is an error', (t) => {
  const w = new FdtWriter();
  const root = w.beginNode('');
  w.beginNode('a');
  code(t, () => w.endNode(root), 'ERR_FDT_END_NODE_ORDER');
});

test('closing the same node twice is an error', (t) => {
  const w = new FdtWriter();
  const root = w.beginNode('');
  const a = w.beginNode('a');
  w.endNode(a);
  code(t, () => w.endNode(a), 'ERR_FDT_END_NODE_ORDER');
  w.endNode(root);
});

test('finishing with an open node is an error', (t) => {
  const w = new FdtWriter();
  w.beginNode('');
  w.beginNode('a');
  code(t, () => w.finish({ bootCpuId: 0 }), 'ERR_FDT_UNCLOSED_NODE');
});

test('finishing an empty writer is an error', (t) => {
  code(t, () => new FdtWriter().finish({ bootCpuId: 0 }), 'ERR_FDT_NO_ROOT');
});

test('a property outside any node is an error', (t) => {
  code(t, () => new FdtWriter().propertyNull('x'), 'ERR_FDT_PROPERTY_OUTSIDE_NODE');
});

test('a NUL inside a string property or node name is an error', (t) => {
  const w = new FdtWriter();
  w.beginNode('');
  code(t, () => w.propertyString('bootargs', 'a\0b'), 'ERR_FDT_NUL_IN_STRING');
  code(t, () => w.propertyStringList('compatible', ['ok', 'b\0']), 'ERR_FDT_NUL_IN_STRING');
  code(t, () => w.beginNode('a\0b'), 'ERR_FDT_NUL_IN_STRING');
});

test(`nodes deeper than ${FDT_MAX_DEPTH} levels are an error`, (t) => {
  const w = new FdtWriter();
  w.beginNode('');
  for (let i = 1; i < FDT_MAX_DEPTH; i++) w.beginNode(`n${i}`);
  code(t, () => w.beginNode('deep'), 'ERR_FDT_DEPTH');
});

test('a phandle used twice is an error, and allocPhandle skips used values', (t) => {
  const w = new FdtWriter();
  w.beginNode('');
  const a = w.beginNode('a');
  w.propertyPhandle(1);
  w.endNode(a);
  t.is(w.allocPhandle(), 2);
  t.is(w.allocPhandle(), 3);
  w.beginNode('b');
  code(t, () => w.propertyPhandle(1), 'ERR_FDT_DUPLICATE_PHANDLE');
  code(t, () => w.propertyPhandle(0), 'ERR_FDT_VALUE_RANGE');
});

test('bad node and property names are errors', (t) => {
  const w = new FdtWriter();
  code(t, () => w.beginNode('notroot'), 'ERR_FDT_NODE_NAME');
  w.beginNode('');
  for (const bad of ['', '1abc', 'has space', 'a@', 'x'.repeat(32), 'a/b']) code(t, () => w.beginNode(bad), 'ERR_FDT_NODE_NAME');
  for (const bad of ['', 'has space', 'p'.repeat(32)]) code(t, () => w.propertyNull(bad), 'ERR_FDT_PROPERTY_NAME');
  t.notThrows(() => w.beginNode('serial@effec000'));
});

test('out-of-range cells and a second root are errors', (t) => {
  const w = new FdtWriter();
  const root = w.beginNode('');
  code(t, () => w.propertyU32('a', 2 ** 32), 'ERR_FDT_VALUE_RANGE');
  code(t, () => w.propertyCells('b', [1, -1]), 'ERR_FDT_VALUE_RANGE');
  code(t, () => w.propertyU64('c', -1n), 'ERR_FDT_VALUE_RANGE');
  code(t, () => w.propertyU64('c', 1.5), 'ERR_FDT_VALUE_RANGE');
  w.propertyNull('d');
  code(t, () => w.propertyNull('d'), 'ERR_FDT_DUPLICATE_PROPERTY');
  w.endNode(root);
  code(t, () => w.beginNode(''), 'ERR_FDT_SECOND_ROOT');
});

test('the writer cannot be used after finish', (t) => {
  const w = new FdtWriter();
  w.endNode(w.beginNode(''));
  w.finish({ bootCpuId: 0 });
  code(t, () => w.beginNode(''), 'ERR_FDT_FINISHED');
  code(t, () => w.finish({ bootCpuId: 0 }), 'ERR_FDT_FINISHED');
});

test('the strings block holds each property name once', (t) => {
  const w = new FdtWriter();
  const root = w.beginNode('');
  for (let i = 0; i < 5; i++) {
    const n = w.beginNode(`n${i}`);
    w.propertyString('compatible', 'c');
    w.propertyU32('reg', i);
    w.endNode(n);
  }
  w.endNode(root);
  const blob = w.finish({ bootCpuId: 0 });
  const dv = new DataView(blob.buffer);
  t.is(dv.getUint32(0x20, false), 'compatible\0reg\0'.length);
});

dtcTest('the dtc warning check is live: a unit address without reg is reported on stderr', (t) => {
  const w = new FdtWriter();
  const root = w.beginNode('');
  w.endNode(w.beginNode('n@1'));
  w.endNode(root);
  t.regex(decompile(w.finish({ bootCpuId: 0 })).stderr, /unit_address_vs_reg/);
});
