import test from 'ava';
import { ConfigError, NodevmmError } from '../../../lib/errors';
import { E820_ACPI, E820_RAM, E820_RESERVED, buildE820, encodeE820Table, type E820Entry } from '../../../lib/arch/x86_64/e820';
import { MMIO_GAP_START, ramRangesFor } from '../../../lib/arch/x86_64/layout';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const FOUR_GIB = 4 * GiB;

function rows(e: E820Entry[]): [number, number, number][] {
  return e.map((x) => [x.addr, x.addr + x.size, x.type]);
}

/** Properties every map must have: sorted, non-overlapping, RAM never in the MMIO gap. */
function checkInvariants(t: import('ava').ExecutionContext, e: E820Entry[], memoryBytes: number): void {
  for (let i = 1; i < e.length; i++) t.true(e[i]!.addr >= e[i - 1]!.addr + e[i - 1]!.size, `entry ${i} overlaps or is out of order`);
  for (const x of e) t.false(x.type === E820_RAM && x.addr < FOUR_GIB && x.addr + x.size > MMIO_GAP_START, 'ram in the mmio gap');
  // All memory is accounted for: RAM + ACPI + the legacy hole equals the memory size.
  t.is(e.reduce((s, x) => s + x.size, 0), memoryBytes);
}

test('128 MiB: low RAM, the legacy hole, RAM from 1 MiB', (t) => {
  const e = buildE820({ ramRanges: ramRangesFor(128 * MiB) });
  t.deepEqual(rows(e), [
    [0, 0xa0000, E820_RAM],
    [0xa0000, 0x100000, E820_RESERVED],
    [0x100000, 128 * MiB, E820_RAM],
  ]);
  checkInvariants(t, e, 128 * MiB);
});

test('1 GiB with ACPI tables: the ACPI range is type 3 and rounded up to a page', (t) => {
  const e = buildE820({ ramRanges: ramRangesFor(GiB), acpiRange: { gpa: 0x19000, size: 0x1801 } });
  t.deepEqual(rows(e), [
    [0, 0x19000, E820_RAM],
    [0x19000, 0x1b000, E820_ACPI],
    [0x1b000, 0xa0000, E820_RAM],
    [0xa0000, 0x100000, E820_RESERVED],
    [0x100000, GiB, E820_RAM],
  ]);
  checkInvariants(t, e, GiB);
});

test('3.5 GiB stays below the MMIO gap in one range', (t) => {
  const size = 3.5 * GiB;
  t.deepEqual(ramRangesFor(size), [{ gpa: 0, size }]);
  const e = buildE820({ ramRanges: ramRangesFor(size) });
  t.deepEqual(e[e.length - 1], { addr: 0x100000, size: size - 0x100000, type: E820_RAM });
  checkInvariants(t, e, size);
});

test('6 GiB crosses the gap: RAM up to 0xf8000000, the rest from 4 GiB', (t) => {
  const size = 6 * GiB;
  t.deepEqual(ramRangesFor(size), [
    { gpa: 0, size: MMIO_GAP_START },
    { gpa: FOUR_GIB, size: size - MMIO_GAP_START },
  ]);
  const e = buildE820({ ramRanges: ramRangesFor(size), acpiRange: { gpa: 0x19000, size: 0x2000 } });
  t.deepEqual(rows(e).slice(-2), [
    [0x100000, MMIO_GAP_START, E820_RAM],
    [FOUR_GIB, FOUR_GIB + size - MMIO_GAP_START, E820_RAM],
  ]);
  checkInvariants(t, e, size);
});

test('the MMIO gap holds the IOAPIC and the LAPIC', (t) => {
  for (const a of [0xfec00000, 0xfee00000]) t.true(a >= MMIO_GAP_START && a < FOUR_GIB);
});

test('memory that is not a positive multiple of 2 MiB is a config error', (t) => {
  for (const bad of [0, 3 * MiB, 1.5, -2 * MiB]) t.throws(() => ramRangesFor(bad), { instanceOf: ConfigError });
});

test('an ACPI range reaching into the legacy hole is refused', (t) => {
  t.is(t.throws(() => buildE820({ ramRanges: ramRangesFor(GiB), acpiRange: { gpa: 0x9f000, size: 0x2000 } }), { instanceOf: NodevmmError }).code, 'ERR_E820_LAYOUT');
});

test('entries encode as packed 20-byte {u64 addr, u64 size, u32 type}', (t) => {
  const b = encodeE820Table([{ addr: 0x100000, size: 0x7f00000, type: 1 }, { addr: 0x1_0000_0000, size: 0x8000_0000, type: 3 }]);
  t.is(b.length, 40);
  const dv = new DataView(b.buffer);
  t.is(dv.getBigUint64(0, true), 0x100000n); // [0] addr
  t.is(dv.getBigUint64(8, true), 0x7f00000n); // [0] size
  t.is(dv.getUint32(16, true), 1); // [0] type
  t.is(dv.getBigUint64(20, true), 0x1_0000_0000n); // [1] addr
  t.is(dv.getBigUint64(28, true), 0x8000_0000n); // [1] size
  t.is(dv.getUint32(36, true), 3); // [1] type
});
