import test from 'ava';
import { RecordingIrqLine } from '../../../lib/devices/types';
import { Pl011, PL011, PL011_FR, PL011_INT } from '../../../lib/devices/pl011';

function make() {
  const irq = new RecordingIrqLine();
  const out: number[] = [];
  const uart = new Pl011('pl011-test', irq, { write: (b) => out.push(...b) });
  return { uart, irq, out };
}

test('PrimeCell id registers read the PL011 part number and the B105F00D cell id', (t) => {
  const { uart } = make();
  const ids = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => uart.read(PL011.PERIPH_ID0 + i * 4, 4));
  t.deepEqual(ids, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
});

test('bytes written to DR reach the sink and raise the TX interrupt status', (t) => {
  const { uart, out } = make();
  t.is(uart.read(PL011.RIS, 4) & PL011_INT.TX, 0);
  for (const c of 'ok\n') uart.write(PL011.DR, 4, c.charCodeAt(0));
  t.is(Buffer.from(out).toString(), 'ok\n');
  t.is(uart.read(PL011.RIS, 4) & PL011_INT.TX, PL011_INT.TX);
  t.is(uart.bytesOut, 3);
});

test('the interrupt line follows RIS & IMSC and ICR clears it', (t) => {
  const { uart, irq } = make();
  uart.write(PL011.DR, 4, 0x41);
  t.false(irq.level, 'masked: no interrupt');
  uart.write(PL011.IMSC, 4, PL011_INT.TX);
  t.true(irq.level);
  t.is(uart.read(PL011.MIS, 4), PL011_INT.TX);
  uart.write(PL011.ICR, 4, PL011_INT.TX);
  t.false(irq.level);
  t.is(uart.read(PL011.MIS, 4), 0);
  t.deepEqual(irq.history, ['high', 'low']);
});

test('FR reports an empty transmit FIFO and tracks the receive FIFO', (t) => {
  const { uart } = make();
  let fr = uart.read(PL011.FR, 4);
  t.truthy(fr & PL011_FR.TXFE);
  t.falsy(fr & PL011_FR.TXFF);
  t.falsy(fr & PL011_FR.BUSY);
  t.truthy(fr & PL011_FR.RXFE);
  uart.pushInput(Uint8Array.of(0x61, 0x62));
  fr = uart.read(PL011.FR, 4);
  t.falsy(fr & PL011_FR.RXFE);
  t.is(uart.read(PL011.DR, 4), 0x61);
  t.is(uart.read(PL011.DR, 4), 0x62);
  t.truthy(uart.read(PL011.FR, 4) & PL011_FR.RXFE);
});

test('received bytes raise RX until the FIFO is drained', (t) => {
  const { uart, irq } = make();
  uart.write(PL011.IMSC, 4, PL011_INT.RX | PL011_INT.RT);
  uart.pushInput(Uint8Array.of(0x31));
  t.true(irq.level);
  uart.read(PL011.DR, 4);
  t.false(irq.level);
});

test('input beyond the 32-entry FIFO is dropped and counted', (t) => {
  const { uart } = make();
  uart.pushInput(new Uint8Array(40).fill(0x7a));
  t.is(uart.rxOverruns, 8);
  t.truthy(uart.read(PL011.FR, 4) & PL011_FR.RXFF);
});

test('divisor, line and control registers read back what Linux programmed', (t) => {
  const { uart } = make();
  t.is(uart.read(PL011.CR, 4), 0x300, 'reset value: TXE | RXE');
  uart.write(PL011.IBRD, 4, 13);
  uart.write(PL011.FBRD, 4, 1);
  uart.write(PL011.LCR_H, 4, 0x70);
  uart.write(PL011.CR, 4, 0x301);
  t.deepEqual(uart.divisors, { ibrd: 13, fbrd: 1, lcrh: 0x70, cr: 0x301 });
  t.is(uart.read(PL011.IBRD, 2), 13);
  t.is(uart.read(PL011.FBRD + 0, 1), 1);
});

test('enqueue takes what fits in the 32-byte FIFO, and onRxSpace fires once the guest emptied it', (t) => {
  const irq = new RecordingIrqLine();
  let space = 0;
  const uart = new Pl011('pl011-test', irq, { write: () => {} }, () => space++);
  t.is(uart.enqueue(new Uint8Array(40).fill(0x61)), 32);
  t.is(uart.rxOverruns, 0, 'refused bytes are not overruns: the host keeps them');
  t.is(space, 0);
  for (let i = 0; i < 31; i++) uart.read(PL011.DR, 4);
  t.is(space, 0, 'not until the FIFO is empty');
  uart.read(PL011.DR, 4);
  t.is(space, 1);
  t.is(uart.enqueue(new Uint8Array(8)), 8);
  for (let i = 0; i < 8; i++) uart.read(PL011.DR, 4);
  t.is(space, 1, 'nothing was refused: no callback');
});
