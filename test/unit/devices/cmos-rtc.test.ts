import test from 'ava';
import { RecordingIrqLine } from '../../../lib/devices/types';
import { CmosRtc, type CmosRtcOptions } from '../../../lib/devices/cmos-rtc';

const GiB = 1024 * 1024 * 1024;

function makeRtc(startIso: string, extra: Partial<CmosRtcOptions> = {}) {
  let hostMs = Date.parse(startIso);
  const irq = new RecordingIrqLine();
  const rtc = new CmosRtc({ irq, now: () => new Date(hostMs), ...extra });
  const cmos = (index: number) => {
    rtc.write(0, 1, index);
    return rtc.read(1, 1);
  };
  const setCmos = (index: number, value: number) => {
    rtc.write(0, 1, index);
    rtc.write(1, 1, value);
  };
  return {
    rtc,
    irq,
    cmos,
    setCmos,
    advanceMs: (ms: number) => {
      hostMs += ms;
    },
  };
}

function bcd(v: number): number {
  return ((Math.floor(v / 10) << 4) | v % 10) & 0xff;
}

test('RTC reads host time in BCD by default', (t) => {
  const { cmos } = makeRtc('2024-02-29T13:45:56.100Z'); // a Thursday
  t.is(cmos(0x00), bcd(56));
  t.is(cmos(0x02), bcd(45));
  t.is(cmos(0x04), bcd(13));
  t.is(cmos(0x06), 5, 'day of week, Sunday = 1');
  t.is(cmos(0x07), bcd(29));
  t.is(cmos(0x08), bcd(2));
  t.is(cmos(0x09), bcd(24));
  t.is(cmos(0x32), bcd(20), 'century');
});

test('RTC reads host time in binary when register B DM is set', (t) => {
  const { cmos, setCmos } = makeRtc('2024-02-29T13:45:56.100Z');
  setCmos(0x0b, 0x02 | 0x04);
  t.is(cmos(0x00), 56);
  t.is(cmos(0x04), 13);
  t.is(cmos(0x09), 24);
  t.is(cmos(0x32), 20);
});

test('RTC reports 12-hour mode with the PM bit', (t) => {
  const { cmos, setCmos } = makeRtc('2024-02-29T13:45:56Z');
  setCmos(0x0b, 0x00);
  t.is(cmos(0x04), 0x80 | bcd(1));
  const midnight = makeRtc('2024-02-29T00:10:00Z');
  midnight.setCmos(0x0b, 0x00);
  t.is(midnight.cmos(0x04), bcd(12), '00:xx is 12 AM');
});

test('RTC time follows the host clock', (t) => {
  const { cmos, advanceMs } = makeRtc('2024-12-31T23:59:59.000Z');
  advanceMs(1500);
  t.is(cmos(0x00), 0);
  t.is(cmos(0x09), bcd(25));
  t.is(cmos(0x08), bcd(1));
});

test('register D reports valid RAM and time', (t) => {
  const { cmos } = makeRtc('2024-01-01T00:00:00Z');
  t.is(cmos(0x0d), 0x80);
});

test('RTC UIP is set only in the last millisecond before a second ticks over', (t) => {
  const { cmos, advanceMs } = makeRtc('2024-01-01T00:00:00.500Z');
  t.is(cmos(0x0a), 0x26, 'mid-second: UIP clear, divider and rate as firmware leaves them');
  advanceMs(499);
  t.is(cmos(0x0a) & 0x80, 0x80);
  advanceMs(1);
  t.is(cmos(0x0a) & 0x80, 0);
});

test('RTC UIP: the mc146818_avoid_UIP read sequence yields a consistent time', (t) => {
  // Each CMOS access advances host time by 0.4 ms, so the read straddles a tick.
  let hostMs = Date.parse('2024-06-30T23:59:59.997Z');
  const rtc = new CmosRtc({ now: () => new Date(hostMs) });
  const cmos = (index: number) => {
    hostMs += 0.4;
    rtc.write(0, 1, index);
    return rtc.read(1, 1);
  };
  let result: number[] | undefined;
  for (let attempt = 0; attempt < 100 && !result; attempt++) {
    const seconds = cmos(0x00);
    if (cmos(0x0a) & 0x80) continue;
    if (seconds !== cmos(0x00)) continue;
    const fields = [seconds, cmos(0x02), cmos(0x04), cmos(0x07), cmos(0x08), cmos(0x09)];
    if (cmos(0x0a) & 0x80) continue;
    if (seconds !== cmos(0x00)) continue;
    result = fields;
  }
  t.truthy(result);
  const [sec, min, hour, day, month, year] = result!;
  // Either all fields are from before the tick or all from after it.
  const before = [bcd(59), bcd(59), bcd(23), bcd(30), bcd(6), bcd(24)];
  const after = [0, 0, 0, bcd(1), bcd(7), bcd(24)];
  t.true(
    JSON.stringify([sec, min, hour, day, month, year]) === JSON.stringify(before) ||
      JSON.stringify([sec, min, hour, day, month, year]) === JSON.stringify(after),
  );
});

test('time written under SET runs from the written value after SET clears', (t) => {
  const { cmos, setCmos, advanceMs } = makeRtc('2024-01-01T00:00:00Z');
  setCmos(0x0b, 0x02 | 0x80);
  t.is(cmos(0x0a) & 0x80, 0, 'no UIP while SET halts updates');
  setCmos(0x00, bcd(30));
  setCmos(0x02, bcd(15));
  setCmos(0x04, bcd(8));
  setCmos(0x07, bcd(4));
  setCmos(0x08, bcd(7));
  setCmos(0x09, bcd(99));
  setCmos(0x32, bcd(19));
  advanceMs(5000);
  t.is(cmos(0x00), bcd(30), 'frozen while SET is on');
  setCmos(0x0b, 0x02);
  advanceMs(2000);
  t.is(cmos(0x00), bcd(32));
  t.is(cmos(0x02), bcd(15));
  t.is(cmos(0x04), bcd(8));
  t.is(cmos(0x07), bcd(4));
  t.is(cmos(0x08), bcd(7));
  t.is(cmos(0x09), bcd(99));
  t.is(cmos(0x32), bcd(19));
});

test('a single field written while the clock runs keeps the others ticking', (t) => {
  const { cmos, setCmos, advanceMs } = makeRtc('2024-01-01T10:20:30Z');
  setCmos(0x04, bcd(22));
  advanceMs(1000);
  t.is(cmos(0x04), bcd(22));
  t.is(cmos(0x02), bcd(20));
  t.is(cmos(0x00), bcd(31));
});

test('setting SET clears UIE', (t) => {
  const { cmos, setCmos } = makeRtc('2024-01-01T00:00:00Z');
  setCmos(0x0b, 0x02 | 0x10);
  setCmos(0x0b, 0x02 | 0x10 | 0x80);
  t.is(cmos(0x0b), 0x82);
});

test('register C latches UF each second and clears on read', (t) => {
  const { cmos, advanceMs } = makeRtc('2024-01-01T00:00:00.200Z');
  t.is(cmos(0x0c), 0);
  advanceMs(1000);
  t.is(cmos(0x0c), 0x10, 'UF without IRQF while UIE is off');
  t.is(cmos(0x0c), 0, 'read-to-clear');
});

test('update-ended interrupt raises IRQ 8 via poll() and register C read lowers it', (t) => {
  const { rtc, irq, cmos, setCmos, advanceMs } = makeRtc('2024-01-01T00:00:00.250Z');
  setCmos(0x0b, 0x02 | 0x10);
  t.true(rtc.updateInterruptEnabled());
  t.is(rtc.msUntilNextUpdate(), 750);
  rtc.poll();
  t.false(irq.level, 'no boundary passed yet');
  advanceMs(750);
  rtc.poll();
  t.true(irq.level);
  t.is(cmos(0x0c), 0x90);
  t.false(irq.level);
  t.deepEqual(irq.history, ['high', 'low']);
});

test('CMOS RAM holds bytes and the index port carries the NMI mask', (t) => {
  const { rtc, cmos, setCmos } = makeRtc('2024-01-01T00:00:00Z');
  setCmos(0x40, 0xab);
  t.is(cmos(0x40), 0xab);
  rtc.write(0, 1, 0x80 | 0x40);
  t.true(rtc.nmiDisabled);
  t.is(rtc.read(1, 1), 0xab, 'bit 7 is not part of the address');
  rtc.write(0, 1, 0x40);
  t.false(rtc.nmiDisabled);
});

test('memory size bytes follow the firmware convention', (t) => {
  const { cmos } = makeRtc('2024-01-01T00:00:00Z', { memory: { belowFourGiB: 3 * GiB, aboveFourGiB: 2 * GiB } });
  t.is(cmos(0x15) | (cmos(0x16) << 8), 640);
  t.is(cmos(0x17) | (cmos(0x18) << 8), 0xffff, 'extended KiB saturates');
  t.is(cmos(0x30) | (cmos(0x31) << 8), 0xffff);
  t.is(cmos(0x34) | (cmos(0x35) << 8), (3 * GiB - 16 * 1024 * 1024) / 65536);
  t.is(cmos(0x5b) | (cmos(0x5c) << 8) | (cmos(0x5d) << 16), (2 * GiB) / 65536);
  const small = makeRtc('2024-01-01T00:00:00Z', { memory: { belowFourGiB: 8 * 1024 * 1024, aboveFourGiB: 0 } });
  t.is(small.cmos(0x17) | (small.cmos(0x18) << 8), 7 * 1024);
  t.is(small.cmos(0x34), 0);
});

test('guest garbage does not throw: bad BCD, bad widths, offsets, read-only registers', (t) => {
  const { rtc, cmos, setCmos } = makeRtc('2024-01-01T00:00:00Z');
  t.notThrows(() => {
    setCmos(0x0b, 0x82);
    for (const i of [0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32]) setCmos(i, 0xff);
    setCmos(0x0b, 0x02);
    for (const i of [0x00, 0x02, 0x04, 0x07, 0x08, 0x09]) cmos(i);
    setCmos(0x0c, 0xff);
    setCmos(0x0d, 0x00);
    t.is(rtc.read(2, 1), 0);
    rtc.write(5, 1, 0);
    t.is(rtc.read(1, 2), 0);
    rtc.write(1, 4, 0xffffffff);
  });
  t.is(cmos(0x0d), 0x80);
  t.is(rtc.stats.missedReads, 2);
  t.is(rtc.stats.missedWrites, 2);
});

test('restore keeps RAM and the guest clock offset', (t) => {
  const a = makeRtc('2024-01-01T00:00:00Z');
  a.setCmos(0x50, 0x12);
  a.setCmos(0x09, bcd(30)); // guest moves the clock to 2030
  const state = JSON.parse(JSON.stringify(a.rtc.snapshot()));
  const b = CmosRtc.restore(state, { now: () => new Date('2024-01-01T00:00:10Z') });
  const cmos = (i: number) => {
    b.write(0, 1, i);
    return b.read(1, 1);
  };
  t.is(cmos(0x50), 0x12);
  t.is(cmos(0x09), bcd(30));
  t.is(cmos(0x00), bcd(10));
});
