import test from 'ava';
import { FdtWriter } from '../../../lib/fdt/writer';
import { findNode, getCells, getString, getStringList, getU32, getU64, parseFdt } from '../../../lib/fdt/reader';
import { FormatError } from '../../../lib/errors';
import { compileDts } from './dtc-tools';
import { testNeeding } from '../../needs';

const dtcTest = testNeeding(['dtc', 'fdtget']);

function sample(): Uint8Array {
  const w = new FdtWriter();
  const root = w.beginNode('');
  w.propertyCells('#address-cells', [2]);
  const chosen = w.beginNode('chosen');
  w.propertyString('bootargs', 'console=ttyAMA0 panic=-1');
  w.propertyU64('linux,initrd-start', 0x4100_0000n);
  w.endNode(chosen);
  const cpus = w.beginNode('cpus');
  const cpu = w.beginNode('cpu@101');
  w.propertyU32('reg', 0x101);
  w.propertyStringList('compatible', ['arm,armv8', 'x']);
  w.propertyNull('flag');
  w.endNode(cpu);
  w.endNode(cpus);
  w.endNode(root);
  return w.finish({ bootCpuId: 0x101, memReserve: [{ address: 0x1000n, size: 0x2000n }] });
}

test('writer output reads back: header, reservations, nodes and typed properties', (t) => {
  const tree = parseFdt(sample());
  t.is(tree.header.version, 17);
  t.is(tree.header.last_comp_version, 16);
  t.is(tree.header.boot_cpuid_phys, 0x101);
  t.deepEqual(tree.memReserve, [{ address: 0x1000n, size: 0x2000n }]);
  t.is(tree.root.name, '');
  t.deepEqual(getCells(tree.root, '#address-cells'), [2]);
  const chosen = findNode(tree.root, '/chosen');
  t.truthy(chosen);
  t.is(getString(chosen!, 'bootargs'), 'console=ttyAMA0 panic=-1');
  t.is(getU64(chosen!, 'linux,initrd-start'), 0x4100_0000n);
  const cpu = findNode(tree.root, '/cpus/cpu@101')!;
  t.is(getU32(cpu, 'reg'), 0x101);
  t.deepEqual(getStringList(cpu, 'compatible'), ['arm,armv8', 'x']);
  t.is(cpu.props.get('flag')?.length, 0);
  t.is(findNode(tree.root, '/cpus/cpu@0'), undefined);
  t.is(findNode(tree.root, 'cpus'), undefined);
  t.is(getU32(cpu, 'compatible'), undefined);
});

dtcTest('a dtc-compiled blob with NOPs and padding parses', (t) => {
  const blob = compileDts('/dts-v1/;\n/ { a = <1 2>; b { c = "d"; }; };\n');
  const tree = parseFdt(blob);
  t.deepEqual(getCells(tree.root, 'a'), [1, 2]);
  t.is(getString(findNode(tree.root, '/b')!, 'c'), 'd');
});

function mutate(blob: Uint8Array, at: number, value: number): Uint8Array {
  const b = blob.slice();
  new DataView(b.buffer).setUint32(at, value, false);
  return b;
}

function code(t: import('ava').ExecutionContext, bytes: Uint8Array, expected: string): void {
  const e = t.throws(() => parseFdt(bytes), { instanceOf: FormatError });
  t.is(e?.code, expected);
  t.is(e?.format, 'fdt');
}

test('header mutations are FormatErrors naming the field', (t) => {
  const good = sample();
  code(t, mutate(good, 0x00, 0xd00dfeee), 'ERR_FDT_MAGIC');
  code(t, mutate(good, 0x04, good.length + 1), 'ERR_FDT_TOTALSIZE');
  code(t, mutate(good, 0x04, 8), 'ERR_FDT_TOTALSIZE');
  code(t, mutate(good, 0x08, 0xffff_fff0), 'ERR_FDT_BLOCK_RANGE');
  code(t, mutate(good, 0x0c, good.length), 'ERR_FDT_BLOCK_RANGE');
  code(t, mutate(good, 0x10, 0x2c), 'ERR_FDT_BLOCK_ALIGN');
  code(t, mutate(good, 0x14, 15), 'ERR_FDT_VERSION');
  code(t, mutate(good, 0x18, 18), 'ERR_FDT_VERSION');
  code(t, mutate(good, 0x24, 0xffff_ffff), 'ERR_FDT_BLOCK_RANGE');
  code(t, good.subarray(0, 20), 'ERR_FDT_TRUNCATED');
});

test('structure mutations are FormatErrors, never RangeErrors', (t) => {
  const good = sample();
  const dv = new DataView(good.buffer);
  const offStruct = dv.getUint32(8, false);
  code(t, mutate(good, offStruct, 0x7), 'ERR_FDT_TOKEN');
  code(t, mutate(good, offStruct, 0x2), 'ERR_FDT_STRUCTURE');
  // First property of the root: its len, then its nameoff.
  code(t, mutate(good, offStruct + 12, 0x7fff_ffff), 'ERR_FDT_TRUNCATED');
  code(t, mutate(good, offStruct + 16, 0xffff), 'ERR_FDT_STRING_OFFSET');
  // Cut the structure block short: the final FDT_END is lost.
  const shortStruct = mutate(good, 0x24, dv.getUint32(0x24, false) - 4);
  code(t, shortStruct, 'ERR_FDT_TRUNCATED');
  // Every single-word corruption of the structure block fails cleanly or parses.
  for (let at = offStruct; at < offStruct + dv.getUint32(0x24, false); at += 4) {
    for (const v of [0, 1, 2, 3, 9, 0xffff_ffff]) {
      const bad = mutate(good, at, v);
      try {
        parseFdt(bad);
      } catch (e) {
        t.true(e instanceof FormatError, `word at ${at} = ${v}: ${String(e)}`);
      }
    }
  }
});
