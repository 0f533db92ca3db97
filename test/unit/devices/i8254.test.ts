import test from 'ava';
import { MIN_TIMER_NS, Pit, PIT_HZ, PORT61_GATE2_BIT, PORT61_OUT2_BIT, type TimerHost } from '../../../lib/devices/irqchip/i8254';
import { RecordingIrqLine } from '../../../lib/devices/types';

/** A PIT on a fake clock and fake timers. */
function pit() {
  let now = 1_000_000_000n;
  const timers = new Map<number, { fn: () => void; ms: number }>();
  let id = 0;
  const host: TimerHost = {
    setTimeout: (fn, ms) => (timers.set(++id, { fn, ms }), id),
    clearTimeout: (h) => void timers.delete(h as number),
  };
  const irq0 = new RecordingIrqLine();
  const dev = new Pit({ irq0, clock: () => now, timers: host });
  const port61 = dev.systemControlPort();
  const ticksNs = (ticks: number) => BigInt(Math.ceil((ticks * 1e9) / PIT_HZ));
  return {
    dev,
    port61,
    irq0,
    timers,
    /** Move the clock by `ticks` PIT input periods. */
    advance: (ticks: number) => void (now += ticksNs(ticks)),
    /** Run the pending timer (after moving the clock to its deadline). */
    fire: () => {
      const [k, v] = [...timers.entries()][0]!;
      timers.delete(k);
      now += BigInt(v.ms) * 1_000_000n;
      v.fn();
    },
    cw: (v: number) => dev.write(3, 1, v),
    count16: (n: number, v: number) => {
      dev.write(n, 1, v & 0xff);
      dev.write(n, 1, v >> 8);
    },
    read16: (n: number) => dev.read(n, 1) | (dev.read(n, 1) << 8),
  };
}

test('mode 0 counts down from the written count, raises OUT and one IRQ0 edge at terminal count, and keeps no timer after it', (t) => {
  const p = pit();
  t.false(p.dev.timerArmed, 'no timer before the guest programs counter 0');
  p.cw(0x30); // counter 0, LSB then MSB, mode 0
  p.count16(0, 1000);
  t.is(p.read16(0), 1000);
  p.advance(400);
  t.is(p.read16(0), 600);
  t.false(p.dev.output(0));
  p.advance(610);
  t.is(p.read16(0), 65526, 'wraps past zero and keeps counting');
  t.true(p.dev.output(0));
  t.is(p.timers.size, 1);
  p.fire();
  t.is(p.irq0.pulses, 1);
  t.false(p.dev.timerArmed, 'one-shot: nothing more to wait for');
});

test('mode 2 raises IRQ0 once per period from one host timer at a time, counting N..1', (t) => {
  const p = pit();
  p.cw(0x34); // counter 0, LSB/MSB, mode 2
  p.count16(0, 11932); // 100 Hz
  t.is(p.timers.size, 1);
  t.is([...p.timers.values()][0]!.ms, 11, '11932 ticks are 10.00007 ms: the timer waits for the edge, not before it');
  p.advance(100);
  t.is(p.dev.count(0), 11832);
  for (let i = 1; i <= 3; i++) {
    p.fire();
    t.is(p.irq0.pulses, i);
    t.is(p.timers.size, 1, 'the next period has its one timer');
  }
  p.cw(0x30); // reprogramming counter 0 stops the timer until a count is written
  t.false(p.dev.timerArmed);
});

test('a period shorter than MIN_TIMER_NS gets one edge per MIN_TIMER_NS, not one per period', (t) => {
  const p = pit();
  p.cw(0x34);
  p.count16(0, 2);
  t.is([...p.timers.values()][0]!.ms, MIN_TIMER_NS / 1e6);
  p.fire();
  t.is(p.irq0.pulses, 1, 'hundreds of periods passed: one edge');
});

test('mode 3 is a square wave: OUT high for the first half of each period, low for the second', (t) => {
  const p = pit();
  p.cw(0xb6); // counter 2, LSB/MSB, mode 3
  p.port61.write(0, 1, PORT61_GATE2_BIT);
  p.count16(2, 100);
  t.true(p.dev.output(2));
  p.advance(49);
  t.true(p.dev.output(2));
  p.advance(2);
  t.false(p.dev.output(2));
  p.advance(50);
  t.true(p.dev.output(2), 'the next period');
  t.false(p.dev.timerArmed, 'counter 2 never holds a host timer');
});

test('the counter latch freezes the count until both bytes are read; a direct read follows the clock', (t) => {
  const p = pit();
  p.cw(0x30);
  p.count16(0, 5000);
  p.advance(1000);
  p.cw(0x00); // latch counter 0
  p.advance(1000);
  t.is(p.read16(0), 4000, 'the latched value');
  t.is(p.read16(0), 3000, 'then the live count again');
});

test('read-back latches status and count of the selected counters; the status byte has OUT, null count, access, mode and BCD', (t) => {
  const p = pit();
  p.cw(0xb0); // counter 2, LSB/MSB, mode 0
  p.cw(0xc8); // read-back: count and status of counter 2
  t.is(p.dev.read(2, 1), 0x40 | 0x30 | 0x00, 'OUT low, null count, LSB/MSB, mode 0, binary');
  p.dev.read(2, 1);
  p.dev.read(2, 1);
  p.count16(2, 300);
  p.advance(300);
  p.port61.write(0, 1, PORT61_GATE2_BIT);
  p.cw(0xe8); // read-back: status only of counter 2
  t.is(p.dev.read(2, 1), 0x30, 'count loaded: no null count; gate was low, so OUT still low');
});

test('port 0x61: counter 2 counts only with its gate high in mode 0, and bit 5 shows OUT2 as Linux polls it during TSC calibration', (t) => {
  const p = pit();
  // pit_calibrate_tsc: gate high and speaker off, then mode 0 with the latch count, then poll bit 5.
  p.port61.write(0, 1, (p.port61.read(0, 1) & ~0x02) | 0x01);
  p.cw(0xb0);
  p.count16(2, 11932);
  t.is(p.port61.read(0, 1) & PORT61_OUT2_BIT, 0);
  p.advance(11931);
  t.is(p.port61.read(0, 1) & PORT61_OUT2_BIT, 0);
  p.advance(2);
  t.is(p.port61.read(0, 1) & PORT61_OUT2_BIT, PORT61_OUT2_BIT);
  // Gate low holds a mode-0 count.
  p.cw(0xb0);
  p.count16(2, 1000);
  p.advance(100);
  p.port61.write(0, 1, 0);
  const held = p.dev.count(2);
  p.advance(500);
  t.is(p.dev.count(2), held);
  p.port61.write(0, 1, PORT61_GATE2_BIT);
  p.advance(100);
  t.is(p.dev.count(2), held - 100, 'counting resumes where it stopped');
});

test('BCD counting: the count register and the reads are four BCD digits', (t) => {
  const p = pit();
  p.cw(0x31); // counter 0, LSB/MSB, mode 0, BCD
  p.count16(0, 0x0100);
  p.advance(1);
  t.is(p.read16(0), 0x0099);
});

test('accesses other than single bytes, and reads of the control port, are dropped and counted', (t) => {
  const p = pit();
  p.dev.write(0, 2, 0x1234);
  p.dev.write(4, 1, 0);
  p.dev.write(-1, 1, 0); // found by the legacy-device fuzzer: a negative offset indexed no counter and threw
  t.is(p.dev.missedWrites, 3);
  t.is(p.dev.read(3, 1), 0xff);
  t.is(p.dev.read(0, 4), 0xffffffff);
  t.is(p.port61.read(0, 2), 0xffff);
  t.is(p.dev.read(-1, 1), 0xff);
  t.is(p.dev.missedReads, 4);
  p.dev.dispose();
  p.cw(0x34);
  p.count16(0, 1000);
  t.false(p.dev.timerArmed, 'a disposed PIT sets no timer');
});
