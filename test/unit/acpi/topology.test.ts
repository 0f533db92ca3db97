/**
 * SRAT, SLIT and PPTT byte layouts (ACPI 6.5 §5.2.16, §5.2.17, §5.2.30) and
 * the one-sentence refusals of impossible input. ACPICA's view of the same
 * tables is in iasl.test.ts.
 */
import test from 'ava';
import { encodeSrat } from '../../../lib/acpi/srat';
import { encodeSlit } from '../../../lib/acpi/slit';
import { encodePptt, PPTT_FLAGS } from '../../../lib/acpi/pptt';
import { sum8 } from '../../../lib/acpi/sdt';

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

test('SRAT: reserved 1, an xAPIC entry per small APIC ID, x2APIC above 255, one memory entry per range', (t) => {
  const b = encodeSrat({ processors: [{ apicId: 3, node: 0x123 }, { apicId: 300, node: 2 }], memory: [{ gpa: 0x1_0000_0000, size: 0x2000_0000, node: 1 }, { gpa: 0, size: 0xa0000, node: 0 }] });
  const dv = view(b);
  t.is(new TextDecoder().decode(b.subarray(0, 4)), 'SRAT');
  t.is(dv.getUint32(4, true), b.length);
  t.is(sum8(b), 0);
  t.is(dv.getUint32(36, true), 1);
  // xAPIC affinity: domain bits 7:0 at +2, APIC ID at +3, enabled, domain bits 31:8 at +9.
  t.deepEqual([...b.subarray(48, 52)], [0, 16, 0x23, 3]);
  t.is(dv.getUint32(52, true), 1);
  t.deepEqual([...b.subarray(57, 60)], [0x01, 0, 0]);
  // x2APIC affinity.
  t.deepEqual([b[64], b[65]], [2, 24]);
  t.is(dv.getUint32(68, true), 2);
  t.is(dv.getUint32(72, true), 300);
  // Memory entries sorted by address.
  t.deepEqual([b[88], b[89]], [1, 40]);
  t.is(dv.getUint32(90, true), 0);
  t.is(dv.getBigUint64(96, true), 0n);
  t.is(dv.getBigUint64(104, true), 0xa0000n);
  t.is(dv.getUint32(116, true), 1);
  t.is(dv.getBigUint64(128 + 8, true), 0x1_0000_0000n);
  t.is(dv.getUint32(128 + 2, true), 1);
  t.is(b.length, 168);
});

test('SRAT refuses empty lists, duplicate APIC IDs and overlapping memory', (t) => {
  t.throws(() => encodeSrat({ processors: [], memory: [{ gpa: 0, size: 4096, node: 0 }] }), { message: /srat: at least one processor/ });
  t.throws(() => encodeSrat({ processors: [{ apicId: 1, node: 0 }, { apicId: 1, node: 0 }], memory: [{ gpa: 0, size: 4096, node: 0 }] }), { message: /apic id 1 of processor 1 is given twice/ });
  t.throws(() => encodeSrat({ processors: [{ apicId: 0, node: 0 }], memory: [{ gpa: 0, size: 0x2000, node: 0 }, { gpa: 0x1000, size: 0x1000, node: 0 }] }), { message: /overlap/ });
  t.throws(() => encodeSrat({ processors: [{ apicId: 0, node: -1 }], memory: [{ gpa: 0, size: 4096, node: 0 }] }), { message: /processors\[0\]\.node is .* does not fit in 32 bits/ });
});

test('SLIT: the locality count and the matrix row by row; the diagonal must be 10', (t) => {
  const b = encodeSlit([[10, 21, 31], [21, 10, 255], [31, 255, 10]]);
  t.is(sum8(b), 0);
  t.is(view(b).getBigUint64(36, true), 3n);
  t.deepEqual([...b.subarray(44)], [10, 21, 31, 21, 10, 255, 31, 255, 10]);
  t.deepEqual([...encodeSlit().subarray(36)], [1, 0, 0, 0, 0, 0, 0, 0, 10]);
  t.throws(() => encodeSlit([[11]]), { message: /locality 0 to itself must be 10, not 11/ });
  t.throws(() => encodeSlit([[10, 5], [20, 10]]), { message: /distance 5 from locality 0 to 1/ });
  t.throws(() => encodeSlit([[10, 20]]), { message: /row 0 has 2 entries, the matrix is 1 x 1/ });
});

test('PPTT: packages, cores and thread leaves with parents by table offset and UIDs in vCPU order', (t) => {
  const b = encodePptt({ sockets: 2, coresPerSocket: 2, threadsPerCore: 2 });
  const dv = view(b);
  t.is(sum8(b), 0);
  t.is(b[8], 2);
  const nodes = [];
  for (let at = 36; at < b.length; at += b[at + 1]!) nodes.push({ at, flags: dv.getUint32(at + 4, true), parent: dv.getUint32(at + 8, true), id: dv.getUint32(at + 12, true) });
  t.is(nodes.length, 2 + 4 + 8);
  const leaves = nodes.filter((n) => n.flags & PPTT_FLAGS.LEAF);
  t.deepEqual(leaves.map((n) => n.id), [0, 1, 2, 3, 4, 5, 6, 7]);
  t.true(leaves.every((n) => n.flags & PPTT_FLAGS.THREAD && n.flags & PPTT_FLAGS.ACPI_ID_VALID));
  // Every parent offset names a node of the table, and a thread's grandparent is a physical package.
  const byAt = new Map(nodes.map((n) => [n.at, n]));
  for (const leaf of leaves) t.true(!!(byAt.get(byAt.get(leaf.parent)!.parent)!.flags & PPTT_FLAGS.PHYSICAL_PACKAGE));
  t.deepEqual(nodes.filter((n) => n.parent === 0).map((n) => n.id), [0, 1]);
  const flat = encodePptt({ sockets: 1, coresPerSocket: 3, threadsPerCore: 1 });
  t.is(flat.length, 36 + 4 * 20);
  t.throws(() => encodePptt({ sockets: 0, coresPerSocket: 1, threadsPerCore: 1 }), { message: /pptt: sockets is 0/ });
});
