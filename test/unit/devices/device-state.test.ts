/**
 * Saving and restoring the legacy device models: save → JSON → restore into a
 * fresh instance → the same register script gives the same reads, interrupt
 * edges and output on both; tampered states are refused with one sentence
 * naming the component and field, never taken half-way.
 */
import test from 'ava';
import { RecordingIrqLine, type ByteSink } from '../../../lib/devices/types';
import { Uart16550 } from '../../../lib/devices/uart16550';
import { CmosRtc } from '../../../lib/devices/cmos-rtc';
import { AcpiPm } from '../../../lib/devices/acpi-pm';
import { Pl011, PL011, PL011_INT } from '../../../lib/devices/pl011';
import { Pl061, PL061 } from '../../../lib/devices/pl061';
import { DebugPort } from '../../../lib/devices/debug-port';
import { StateReader } from '../../../lib/devices/device-state';
import type { IoDevice } from '../../../lib/hv/io-bus';

class Sink implements ByteSink {
  readonly bytes: number[] = [];
  write(b: Uint8Array): void {
    this.bytes.push(...b);
  }
}

/** A JSON round trip: what a snapshot file gives back. */
const viaJson = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

type Op = ['r', number, number] | ['w', number, number, number];

/** Run `ops` on a device; the values read, in order. */
function run(dev: IoDevice, ops: readonly Op[]): number[] {
  const out: number[] = [];
  for (const op of ops) {
    if (op[0] === 'r') out.push(dev.read(op[1], op[2]));
    else dev.write(op[1], op[2], op[3]);
  }
  return out;
}

// 16550 offsets.
const RBR = 0, THR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

function uart(rxCapacity?: number) {
  const irq = new RecordingIrqLine();
  const sink = new Sink();
  const u = new Uart16550({ name: 'com1', irq, sink, ...(rxCapacity ? { rxCapacity } : {}) });
  return { u, irq, sink };
}

test('16550: bytes in the RX FIFO and a pending THRE interrupt come back, and the restored UART behaves as the original', (t) => {
  const a = uart();
  const setup: Op[] = [
    ['w', MCR, 1, 0x0b], // DTR, RTS, OUT2: interrupts reach the line
    ['w', FCR, 1, 0x81], // FIFOs on, trigger 8
    ['w', LCR, 1, 0x03],
    ['w', SCR, 1, 0x5a],
    ['w', IER, 1, 0x03], // RX data and THRE: enabling ETBEI latches THRE
  ];
  run(a.u, setup);
  a.u.enqueue(Uint8Array.of(0x31, 0x32, 0x33));
  t.true(a.u.irqAsserted());
  const state = viaJson(a.u.snapshot());
  const b = uart();
  b.u.restoreState(state, 'com1');
  t.deepEqual(b.irq.history, ['high'], 'the restored line is driven high once');
  t.deepEqual(b.u.snapshot(), a.u.snapshot());
  // The guest's interrupt handler: IIR (char timeout below the trigger), drain RBR while LSR.DR, IIR again (THRE), write, IIR.
  const script: Op[] = [['r', IIR, 1], ['r', LSR, 1], ['r', RBR, 1], ['r', RBR, 1], ['r', RBR, 1], ['r', LSR, 1], ['r', IIR, 1], ['r', IIR, 1], ['w', THR, 1, 0x41], ['r', IIR, 1], ['r', MSR, 1], ['r', SCR, 1], ['r', IIR, 1]];
  const ra = run(a.u, script);
  const rb = run(b.u, script);
  t.deepEqual(rb, ra);
  t.deepEqual(ra.slice(2, 5), [0x31, 0x32, 0x33]);
  t.is(ra[6]! & 0x0f, 0x02, 'THRE still pending after the RX data was read');
  t.deepEqual(b.sink.bytes, a.sink.bytes);
  t.deepEqual(b.irq.history.slice(1), a.irq.history.slice(a.irq.history.length - (b.irq.history.length - 1)));
  t.is(a.u.irqAsserted(), b.u.irqAsserted());
});

test('16550: a tampered state is refused with one sentence naming the port and field, and nothing is taken', (t) => {
  const a = uart();
  a.u.enqueue(Uint8Array.of(1, 2, 3));
  const good = viaJson(a.u.snapshot());
  const b = uart();
  const before = b.u.snapshot();
  const refuse = (state: unknown, message: string) => {
    const e = t.throws(() => b.u.restoreState(state, 'com1'));
    t.is(e?.message, message);
    t.is((e as { code?: string }).code, 'ERR_DEVICE_STATE');
    t.deepEqual(b.u.snapshot(), before);
  };
  refuse({ ...good, rx: Buffer.alloc(90).toString('base64') }, 'snapshot device state com1.rx: expected at most 64 bytes, got 90');
  refuse({ ...good, rx: [1, 2, 3] }, 'snapshot device state com1.rx: expected base64 bytes, got an array of 3');
  refuse({ ...good, ier: 0x80 }, 'snapshot device state com1.ier: has bits outside 0xf: 0x80');
  refuse({ ...good, lcr: '3' }, 'snapshot device state com1.lcr: expected an integer, got "3"');
  refuse({ ...good, divisor: 70000 }, 'snapshot device state com1.divisor: expected 0 to 65535, got 70000');
  refuse({ ...good, rxTrigger: 3 }, 'snapshot device state com1.rxTrigger: expected one of 1, 4, 8, 14, got 3');
  refuse({ ...good, threPending: 1 }, 'snapshot device state com1.threPending: expected true or false, got 1');
  refuse({ ...good, extra: 1 }, 'snapshot device state com1.extra: is not a field this version saves');
  refuse({ ...good, fifoEnabled: false, rxTrigger: 8 }, 'snapshot device state com1.rxTrigger: expected 1 while FIFOs are off, got 8');
  const { ier: _, ...missing } = good;
  refuse(missing, 'snapshot device state com1.ier: expected an integer, got undefined');
  refuse(null, 'snapshot device state com1: expected an object, got null');
});

test('16550: a FIFO larger than the restoring UART holds is refused, the same state fits a larger one', (t) => {
  const a = uart(256);
  a.u.enqueue(new Uint8Array(200).fill(7));
  const state = viaJson(a.u.snapshot());
  t.throws(() => uart().u.restoreState(state, 'com2'), { message: 'snapshot device state com2.rx: expected at most 64 bytes, got 200' });
  const big = uart(256);
  big.u.restoreState(state, 'com2');
  t.is(big.u.rxPending(), 200);
});

test('CMOS RTC: RAM, index, register C and the guest clock offset come back; reads match the original', (t) => {
  let hostMs = Date.parse('2026-03-01T10:00:00Z');
  const now = () => new Date(hostMs);
  const irqA = new RecordingIrqLine();
  const a = new CmosRtc({ irq: irqA, now, memory: { belowFourGiB: 512 << 20, aboveFourGiB: 0 } });
  const set = (rtc: CmosRtc, i: number, v: number) => {
    rtc.write(0, 1, i);
    rtc.write(1, 1, v);
  };
  set(a, 0x0b, 0x12); // 24 h, BCD, UIE
  set(a, 0x09, 0x31); // the guest sets year 31
  set(a, 0x40, 0xab);
  hostMs += 1500; // a second boundary passes: UF latches, the line goes high
  a.poll();
  t.true(irqA.level);
  a.write(0, 1, 0x0c | 0x80); // index C with NMI disabled
  const state = viaJson(a.snapshot());
  const irqB = new RecordingIrqLine();
  const b = new CmosRtc({ irq: irqB, now });
  b.restoreState(state, 'rtc');
  t.true(irqB.level, 'the pending update interrupt is driven again');
  t.true(b.nmiDisabled);
  const script: Op[] = [['r', 1, 1], ['w', 0, 1, 0x09], ['r', 1, 1], ['w', 0, 1, 0x40], ['r', 1, 1], ['w', 0, 1, 0x17], ['r', 1, 1], ['w', 0, 1, 0x00], ['r', 1, 1]];
  t.deepEqual(run(b, script), run(a, script));
  t.is(irqB.level, irqA.level);
  t.is(b.nmiDisabled, a.nmiDisabled);
});

test('CMOS RTC: tampered states are refused by field', (t) => {
  const good = viaJson(new CmosRtc().snapshot());
  const rtc = new CmosRtc();
  t.throws(() => rtc.restoreState({ ...good, ram: Buffer.alloc(64).toString('base64') }, 'rtc'), { message: 'snapshot device state rtc.ram: expected exactly 128 bytes, got 64' });
  t.throws(() => rtc.restoreState({ ...good, ram: Buffer.alloc(300).toString('base64') }, 'rtc'), { message: 'snapshot device state rtc.ram: expected at most 128 bytes, got 300' });
  t.throws(() => rtc.restoreState({ ...good, index: 128 }, 'rtc'), { message: 'snapshot device state rtc.index: expected 0 to 127, got 128' });
  t.throws(() => rtc.restoreState({ ...good, offsetMs: 'NaN' }, 'rtc'), { message: 'snapshot device state rtc.offsetMs: expected a finite number, got "NaN"' });
  t.throws(() => rtc.restoreState({ ...good, offsetMs: 1e300 }, 'rtc'), { message: 'snapshot device state rtc.offsetMs: expected at most 1000000000000000 in magnitude, got 1e+300' });
  t.throws(() => rtc.restoreState({ ...good, regC: 0x0f }, 'rtc'), { message: 'snapshot device state rtc.regC: has bits outside 0xf0: 0xf' });
});

test('ACPI PM: registers, the SCI and the PM timer continue; tampered bits are refused', (t) => {
  let ns = 0n;
  const sciA = new RecordingIrqLine();
  const a = new AcpiPm({ sci: sciA, clock: () => ns });
  a.write(0x02, 2, 0x0100); // PWRBTN_EN
  a.write(0x0e, 2, 0x0001);
  ns = 3_000_000_000n;
  a.pressPowerButton();
  t.true(sciA.level);
  const state = viaJson(a.snapshot());
  let ns2 = 777n;
  const sciB = new RecordingIrqLine();
  const b = new AcpiPm({ sci: sciB, clock: () => ns2 });
  b.restoreState(state, 'pm');
  t.true(sciB.level);
  const script: Op[] = [['r', 0x00, 2], ['r', 0x02, 2], ['r', 0x04, 2], ['r', 0x0e, 2], ['r', 0x08, 4], ['w', 0x00, 2, 0x0100], ['r', 0x00, 2]];
  t.deepEqual(run(b, script), run(a, script));
  t.false(sciB.level);
  ns += 1_000_000n;
  ns2 += 1_000_000n;
  t.is(b.read(0x08, 4), a.read(0x08, 4), 'both timers advanced by the same 1 ms');
  t.throws(() => b.restoreState({ ...state, pm1Status: 0x0002 }, 'pm'), { message: 'snapshot device state pm.pm1Status: has bits outside 0x8101: 0x2' });
  t.throws(() => b.restoreState({ ...state, timer: -1 }, 'pm'), { message: 'snapshot device state pm.timer: expected 0 to 4294967295, got -1' });
});

function pl011() {
  const irq = new RecordingIrqLine();
  const sink = new Sink();
  return { p: new Pl011('pl011-com1', irq, sink), irq, sink };
}

test('PL011: the receive FIFO, the mask and the raised interrupt come back; reads match the original', (t) => {
  const a = pl011();
  a.p.write(PL011.IBRD, 4, 13);
  a.p.write(PL011.LCR_H, 4, 0x70);
  a.p.write(PL011.CR, 4, 0x301);
  a.p.write(PL011.IMSC, 4, PL011_INT.RX | PL011_INT.RT);
  t.is(a.p.enqueue(new Uint8Array(40).fill(0x61)), 32, 'the FIFO takes 32, the host waits');
  t.true(a.irq.level);
  const state = viaJson(a.p.snapshot());
  const b = pl011();
  b.p.restoreState(state, 'com1');
  t.true(b.irq.level);
  const script: Op[] = [['r', PL011.FR, 4], ['r', PL011.MIS, 4], ...Array.from({ length: 33 }, (): Op => ['r', PL011.DR, 4]), ['r', PL011.FR, 4], ['r', PL011.MIS, 4], ['w', PL011.DR, 4, 0x42], ['r', PL011.RIS, 4], ['r', PL011.IBRD, 4]];
  t.deepEqual(run(b.p, script), run(a.p, script));
  t.is(b.irq.level, a.irq.level);
  t.deepEqual(b.sink.bytes, [0x42]);
  t.throws(() => pl011().p.restoreState({ ...state, rx: Buffer.alloc(40).toString('base64') }, 'com1'), { message: 'snapshot device state com1.rx: expected at most 32 bytes, got 40' });
  t.throws(() => pl011().p.restoreState({ ...state, fbrd: 0x40 }, 'com1'), { message: 'snapshot device state com1.fbrd: has bits outside 0x3f: 0x40' });
});

test('PL061: pins, sense setup and a latched edge come back; a saved level status the pins lack is recomputed', (t) => {
  const irqA = new RecordingIrqLine();
  const a = new Pl061('pl061', irqA);
  a.write(PL061.IBE, 4, 0x08); // both edges on pin 3
  a.write(PL061.IE, 4, 0x08);
  a.write(PL061.DIR, 4, 0x01);
  a.write(0x004, 4, 0x01); // pin 0 output high through the masked window
  a.setInput(3, true);
  t.true(irqA.level);
  const state = viaJson(a.snapshot());
  const irqB = new RecordingIrqLine();
  const b = new Pl061('pl061', irqB);
  b.restoreState(state, 'gpio');
  t.true(irqB.level);
  t.true(b.inputHigh(3));
  const script: Op[] = [['r', 0x3fc, 4], ['r', PL061.RIS, 4], ['r', PL061.MIS, 4], ['w', PL061.IC, 4, 0x08], ['r', PL061.MIS, 4]];
  t.deepEqual(run(b, script), run(a, script));
  a.setInput(3, false);
  b.setInput(3, false);
  t.is(b.read(PL061.RIS, 4), a.read(PL061.RIS, 4));
  t.is(irqB.level, irqA.level);
  // Pin 5 level-sensitive, active high, but low: a RIS claiming it pending is corrected from the pins.
  const c = new Pl061('pl061', new RecordingIrqLine());
  c.restoreState({ ...state, is: 0x20, iev: 0x20, ris: 0x20, inputs: 0 }, 'gpio');
  t.is(c.read(PL061.RIS, 4) & 0x20, 0);
  t.throws(() => c.restoreState({ ...state, dir: 256 }, 'gpio'), { message: 'snapshot device state gpio.dir: expected 0 to 255, got 256' });
});

test('POST port: the last code and the count come back', (t) => {
  const a = new DebugPort();
  a.write(0, 1, 0x1234);
  const b = new DebugPort();
  b.restoreState(viaJson(a.snapshot()), 'post');
  t.is(b.lastCode, 0x34);
  t.is(b.writes, 1);
  const fresh = new DebugPort();
  fresh.restoreState(viaJson(new DebugPort().snapshot()), 'post');
  t.is(fresh.lastCode, undefined);
  t.throws(() => fresh.restoreState({ lastCode: 256, writes: 0 }, 'post'), { message: 'snapshot device state post.lastCode: expected -1 to 255, got 256' });
});

test('StateReader: base64 is checked before it is decoded, and long strings are not echoed', (t) => {
  const r = (v: unknown) => new StateReader('x', { f: v });
  t.throws(() => r('AAA').bytes('f', 10), { message: 'snapshot device state x.f: expected base64 bytes, got "AAA"' });
  t.throws(() => r('AA=A').bytes('f', 10), { message: 'snapshot device state x.f: expected base64 bytes, got "AA=A"' });
  t.throws(() => r('A'.repeat(4000)).bytes('f', 10), { message: 'snapshot device state x.f: expected at most 10 bytes, got 3000' });
  t.throws(() => r('x'.repeat(100)).int('f', 0, 1), { message: 'snapshot device state x.f: expected an integer, got a string of 100 characters' });
  t.deepEqual([...r('AQID').bytes('f', 3)], [1, 2, 3]);
  t.is(r('0x1f').u64('f'), 0x1fn);
  t.throws(() => r('0x1ffffffffffffffff').u64('f'), { message: /expected a hex string/ });
  t.throws(() => r(1.5).int('f', 0, 9), { message: 'snapshot device state x.f: expected an integer, got 1.5' });
});
