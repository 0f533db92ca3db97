import test from 'ava';
import { RecordingIrqLine } from '../../../lib/devices/types';
import { Pl061, PL061 } from '../../../lib/devices/pl061';

function make() {
  const irq = new RecordingIrqLine();
  return { gpio: new Pl061('pl061-test', irq), irq };
}

test('PrimeCell id registers read the PL061 part number and the B105F00D cell id', (t) => {
  const { gpio } = make();
  t.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => gpio.read(PL061.PERIPH_ID0 + i * 4, 4)), [0x61, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
});

test('the data window reads only the pins its address bits select', (t) => {
  const { gpio } = make();
  gpio.setInput(3, true);
  gpio.setInput(0, true);
  t.is(gpio.read(PL061.DATA + (0xff << 2), 4), 0x09);
  t.is(gpio.read(PL061.DATA + (0x08 << 2), 4), 0x08);
  t.is(gpio.read(PL061.DATA + (0x01 << 2), 4), 0x01);
  t.is(gpio.read(PL061.DATA, 4), 0, 'address bits 0: no pins');
});

test('an output pin reads what the guest wrote, only where the address mask allows', (t) => {
  const { gpio } = make();
  gpio.write(PL061.DIR, 4, 0x03);
  gpio.write(PL061.DATA + (0x01 << 2), 4, 0xff);
  t.is(gpio.read(PL061.DATA + (0xff << 2), 4), 0x01);
  gpio.setInput(1, true);
  t.is(gpio.read(PL061.DATA + (0xff << 2), 4), 0x01, 'pin 1 is an output: the host level does not show');
});

test('both-edges interrupts (what gpio-keys asks for) latch press and release; IC clears them; the line follows MIS', (t) => {
  const { gpio, irq } = make();
  gpio.write(PL061.IBE, 4, 1 << 3);
  gpio.write(PL061.IE, 4, 1 << 3);
  t.false(irq.level);
  gpio.setInput(3, true);
  t.true(irq.level, 'press');
  t.is(gpio.read(PL061.MIS, 4), 1 << 3);
  gpio.write(PL061.IC, 4, 1 << 3);
  t.false(irq.level);
  gpio.setInput(3, false);
  t.true(irq.level, 'release');
  gpio.write(PL061.IC, 4, 1 << 3);
  t.false(irq.level);
});

test('single-edge and level sense: rising only with IEV, level pending while the level holds', (t) => {
  const { gpio, irq } = make();
  gpio.write(PL061.IEV, 4, 1 << 2);
  gpio.write(PL061.IE, 4, 1 << 2);
  gpio.setInput(2, true);
  t.true(irq.level, 'rising edge');
  gpio.write(PL061.IC, 4, 1 << 2);
  gpio.setInput(2, false);
  t.false(irq.level, 'falling edge is not asked for');
  // Level-high on pin 5: pending while high, IC does not clear it, it goes when the level does.
  gpio.write(PL061.IS, 4, 1 << 5);
  gpio.write(PL061.IEV, 4, (1 << 5) | (1 << 2));
  gpio.write(PL061.IE, 4, 1 << 5);
  gpio.setInput(5, true);
  t.true(irq.level);
  gpio.write(PL061.IC, 4, 1 << 5);
  t.true(irq.level, 'level interrupts are not cleared by IC');
  gpio.setInput(5, false);
  t.false(irq.level);
  t.is(gpio.read(PL061.RIS, 4) & (1 << 5), 0);
});

test('a masked interrupt is raw only', (t) => {
  const { gpio, irq } = make();
  gpio.write(PL061.IBE, 4, 0xff);
  gpio.setInput(7, true);
  t.false(irq.level);
  t.is(gpio.read(PL061.RIS, 4), 1 << 7);
  t.is(gpio.read(PL061.MIS, 4), 0);
  gpio.write(PL061.IE, 4, 1 << 7);
  t.true(irq.level);
});

test('pins outside 0-7 are refused', (t) => {
  t.throws(() => make().gpio.setInput(8, true), { instanceOf: RangeError });
});
