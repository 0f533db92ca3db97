import test from 'ava';
import { RecordingIrqLine } from '../../../lib/devices/types';
import { AcpiPm, PM1_EN_OFFSET, type AcpiPmOptions } from '../../../lib/devices/acpi-pm';

function makePm(extra: Partial<AcpiPmOptions> = {}) {
  const sci = new RecordingIrqLine();
  let now = 0n;
  const sleeps: number[] = [];
  let resets = 0;
  const pm = new AcpiPm({
    sci,
    clock: () => now,
    onSleep: (t) => sleeps.push(t),
    onReset: () => resets++,
    ...extra,
  });
  return {
    pm,
    sci,
    sleeps,
    resets: () => resets,
    advanceNs: (ns: bigint) => {
      now += ns;
    },
  };
}

test('SLP_EN with SLP_TYP 0 calls onSleep(0)', (t) => {
  const { pm, sleeps } = makePm();
  pm.write(0x04, 2, 0x2000);
  t.deepEqual(sleeps, [0]);
});

test('SLP_EN reports the SLP_TYP written with it, and SLP_TYP alone does nothing', (t) => {
  const { pm, sleeps } = makePm();
  pm.write(0x04, 2, 5 << 10);
  t.deepEqual(sleeps, []);
  t.is(pm.read(0x04, 2), (5 << 10) | 1, 'SLP_TYP is stored and SCI_EN reads set');
  pm.write(0x04, 2, (1 << 10) | 0x2000);
  t.deepEqual(sleeps, [1]);
  t.is(pm.read(0x04, 2) & 0x2000, 0, 'SLP_EN is write-only');
});

test('SLP_EN written as a single high byte still triggers the sleep', (t) => {
  const { pm, sleeps } = makePm();
  pm.write(0x05, 1, 0x20 | (7 << 2));
  t.deepEqual(sleeps, [7]);
});

test('SCI_EN always reads as set', (t) => {
  const { pm } = makePm();
  t.is(pm.read(0x04, 2) & 1, 1);
  pm.write(0x04, 2, 0);
  t.is(pm.read(0x04, 2) & 1, 1);
});

test('reset register 0x01 calls onReset', (t) => {
  const { pm, resets } = makePm();
  pm.write(0x33, 1, 0x01);
  t.is(resets(), 1);
  pm.write(0x33, 1, 0x06);
  t.is(resets(), 1, 'other values are ignored');
});

test('PM timer advances at 3.579545 MHz', (t) => {
  const { pm, advanceNs } = makePm();
  t.is(pm.read(0x08, 4), 0);
  advanceNs(1_000_000_000n);
  t.is(pm.read(0x08, 4), 3_579_545);
  advanceNs(1_000n); // 1 µs = 3.58 ticks
  t.is(pm.read(0x08, 4), 3_579_548);
});

test('PM timer wraps at 32 bits and is read-only', (t) => {
  const { pm, advanceNs } = makePm();
  // 2^32 ticks take about 1199.86 s.
  const wrapNs = (2n ** 32n * 1_000_000_000n) / 3_579_545n + 1n;
  advanceNs(wrapNs);
  const v = pm.read(0x08, 4);
  t.true(v < 4, `wrapped to a small value, got ${v}`);
  pm.write(0x08, 4, 0x12345678);
  t.is(pm.read(0x08, 4), v);
});

test('PM timer byte-lane reads agree with the dword read', (t) => {
  const { pm, advanceNs } = makePm();
  advanceNs(123_456_789_012n);
  const dword = pm.read(0x08, 4);
  const bytes = [0, 1, 2, 3].map((i) => pm.read(0x08 + i, 1));
  t.is(bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | ((bytes[3]! << 24) >>> 0), dword);
  t.is(pm.read(0x08, 2), dword & 0xffff);
});

test('power button raises SCI only when enabled and clears on write-1', (t) => {
  const { pm, sci } = makePm();
  pm.pressPowerButton();
  t.is(pm.read(0x00, 2) & 0x100, 0x100, 'PWRBTN_STS set');
  t.false(sci.level, 'no SCI while PWRBTN_EN is clear');
  pm.write(0x02, 2, 0x100);
  t.true(sci.level, 'enabling raises the SCI for the latched status');
  pm.write(0x00, 2, 0x0001); // W1C of another bit leaves PWRBTN_STS alone
  t.true(sci.level);
  pm.write(0x00, 2, 0x0100);
  t.false(sci.level);
  t.is(pm.read(0x00, 2) & 0x100, 0);
  t.deepEqual(sci.history, ['high', 'low']);
});

test('PM1 enable keeps only defined bits (timer, global lock, power button, RTC)', (t) => {
  const { pm } = makePm();
  pm.write(0x02, 2, 0xffff);
  t.is(pm.read(0x02, 2), 0x0521);
});

test('a dword write at offset 0 clears status and sets enable together', (t) => {
  const { pm, sci } = makePm();
  pm.pressPowerButton();
  pm.write(0x00, 4, (0x0100 << 16) | 0x0100);
  t.is(pm.read(0x00, 2), 0);
  t.is(pm.read(0x02, 2), 0x100);
  t.false(sci.level);
});

test('GPE status and enable assert the SCI together; status is write-1-to-clear', (t) => {
  const { pm, sci } = makePm();
  pm.raiseGpe(3);
  t.is(pm.read(0x0c, 2), 0x8);
  t.false(sci.level);
  pm.write(0x0e, 2, 0x8);
  t.true(sci.level);
  pm.write(0x0c, 2, 0x8);
  t.false(sci.level);
  t.throws(() => pm.raiseGpe(16), { instanceOf: RangeError });
});

test('guest garbage at unknown offsets does not throw', (t) => {
  const { pm, sleeps, resets } = makePm();
  t.notThrows(() => {
    t.is(pm.read(0x10, 4), 0xffffffff, 'undefined register reads all-ones');
    t.is(pm.read(0x36, 1), 0xff);
    pm.write(0x10, 4, 0xffffffff);
    t.is(pm.read(0x40, 1), 0, 'outside the block: a missed access');
    pm.write(0x37, 1, 0xff);
    pm.write(0, 3, 0xffffff);
    pm.read(0, 8);
    pm.write(-1, 1, 0);
    pm.write(0.5, 1, 0);
  });
  t.deepEqual(sleeps, []);
  t.is(resets(), 0);
  t.is(pm.stats.missedWrites, 5);
});

test('a throwing host callback does not escape into the guest access', (t) => {
  const pm = new AcpiPm({
    sci: new RecordingIrqLine(),
    clock: () => 0n,
    onReset: () => {
      throw new Error('host bug');
    },
  });
  t.notThrows(() => pm.write(0x33, 1, 1));
  t.is(pm.stats.hostErrors, 1);
});

test('restore keeps registers, continues the timer and re-drives the SCI', (t) => {
  const a = makePm();
  a.advanceNs(2_000_000_000n);
  a.pm.write(0x02, 2, 0x100);
  a.pm.pressPowerButton();
  const state = a.pm.snapshot();
  t.is(state.timer, 7_159_090);
  const sci = new RecordingIrqLine();
  const b = AcpiPm.restore(state, { sci, clock: () => 50n });
  t.deepEqual(sci.history, ['high']);
  t.is(b.read(0x08, 4), 7_159_090);
  t.is(b.read(0x00, 2), 0x100);
});

test('PM1_EN keeps the GBL_EN and RTC_EN bits ACPICA enables and reads back', (t) => {
  const pm = new AcpiPm({ sci: new RecordingIrqLine() });
  pm.write(PM1_EN_OFFSET, 2, 0x0420);
  t.is(pm.read(PM1_EN_OFFSET, 2) & 0x0420, 0x0420);
  // Neither event ever fires, so enabling them must not raise the SCI.
  t.false(pm.sciAsserted());
});
