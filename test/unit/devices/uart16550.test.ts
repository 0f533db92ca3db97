import test from 'ava';
import { RecordingIrqLine } from '../../../lib/devices/types';
import type { ByteSink } from '../../../lib/devices/types';
import {
  Uart16550,
  type Uart16550Options,
} from '../../../lib/devices/uart16550';

// Register offsets and bits written out as the Linux driver names them
// (include/uapi/linux/serial_reg.h), so the sequences below read like the driver.
const RX = 0, TX = 0, DLL = 0, DLM = 1, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

class CollectingSink implements ByteSink {
  readonly bytes: number[] = [];
  writes = 0;
  write(bytes: Uint8Array): void {
    this.writes++;
    this.bytes.push(...bytes);
  }
}

function makeUart(extra: Partial<Uart16550Options> = {}) {
  const irq = new RecordingIrqLine();
  const sink = new CollectingSink();
  const uart = new Uart16550({ irq, sink, ...extra });
  const out = (offset: number, value: number) => uart.write(offset, 1, value);
  const inb = (offset: number) => uart.read(offset, 1);
  return { uart, irq, sink, out, inb };
}

test('every THR byte reaches the sink at once, one write per byte', (t) => {
  const { sink, out } = makeUart();
  out(TX, 0x41);
  t.deepEqual(sink.bytes, [0x41]);
  out(TX, 0x42);
  t.deepEqual(sink.bytes, [0x41, 0x42]);
  t.is(sink.writes, 2);
});

test('THRE interrupt is raised when ETBEI is enabled and THR is empty', (t) => {
  const { irq, out, inb } = makeUart();
  out(MCR, 0x08); // OUT2
  t.is(inb(IIR) & 0x0f, 0x01);
  out(IER, 0x02);
  t.is(irq.level, true);
  t.deepEqual(irq.history, ['high']);
});

test('IIR read clears THRE interrupt and lowers the line', (t) => {
  const { irq, out, inb } = makeUart();
  out(MCR, 0x08);
  out(IER, 0x02);
  t.is(inb(IIR) & 0x0f, 0x02);
  t.is(irq.level, false);
  t.is(inb(IIR) & 0x0f, 0x01);
});

test('THR write re-arms THRE so the driver gets the next TX interrupt', (t) => {
  const { irq, out, inb } = makeUart();
  out(MCR, 0x08);
  out(IER, 0x02);
  inb(IIR);
  out(TX, 0x55);
  t.is(irq.level, true);
  t.deepEqual(irq.history, ['high', 'low', 'high']);
  // Further bytes while THRE is already pending do not toggle the line.
  out(TX, 0x56);
  out(TX, 0x57);
  t.deepEqual(irq.history, ['high', 'low', 'high']);
});

test('re-enabling ETBEI re-asserts THRE (the UART_BUG_THRE probe passes)', (t) => {
  const { out, inb } = makeUart();
  out(IER, 0x02);
  const iir1 = inb(IIR);
  out(IER, 0);
  out(IER, 0x02);
  const iir2 = inb(IIR);
  out(IER, 0);
  t.is(iir1 & 0x01, 0, 'THRE pending after the first enable');
  t.is(iir2 & 0x01, 0, 'THRE pending again after re-enable');
});

test('IRQ reaches the line only while MCR.OUT2 is set', (t) => {
  const { uart, irq, out } = makeUart();
  out(IER, 0x02);
  t.is(irq.level, false);
  t.is(uart.irqAsserted(), false);
  out(MCR, 0x08);
  t.is(irq.level, true);
  out(MCR, 0x00);
  t.is(irq.level, false);
});

test('DLAB exposes divisor latch and hides RBR/THR and IER', (t) => {
  const { sink, out, inb } = makeUart();
  out(IER, 0x05);
  out(LCR, 0x83);
  t.is(inb(DLL), 0x0c, 'firmware default divisor 12 (9600 baud)');
  t.is(inb(DLM), 0x00);
  out(DLL, 0x01);
  out(DLM, 0x02);
  t.is(sink.bytes.length, 0, 'DLL write is not transmitted');
  t.is(inb(DLL), 0x01);
  t.is(inb(DLM), 0x02);
  out(LCR, 0x03);
  t.is(inb(IER), 0x05, 'IER untouched by the DLM write');
  t.is(inb(LCR), 0x03);
});

test('loopback echoes THR into RBR and does not reach the sink', (t) => {
  const { sink, out, inb } = makeUart();
  out(MCR, 0x10);
  out(TX, 0x5a);
  t.is(inb(LSR) & 0x01, 0x01);
  t.is(inb(RX), 0x5a);
  t.is(inb(LSR) & 0x01, 0x00);
  t.deepEqual(sink.bytes, []);
});

test('loopback folds MCR outputs into MSR and flags deltas until MSR is read', (t) => {
  const { inb, out } = makeUart();
  t.is(inb(MSR) & 0xf0, 0xb0, 'outside loopback the line is connected: DCD, DSR, CTS');
  out(MCR, 0x10 | 0x0a); // LOOP | RTS | OUT2
  const msr = inb(MSR);
  t.is(msr & 0xf0, 0x90, 'CTS from RTS, DCD from OUT2');
  t.not(msr & 0x0f, 0, 'DSR dropped, so a delta is reported');
  t.is(inb(MSR) & 0x0f, 0, 'reading MSR cleared the deltas');
  out(MCR, 0x10 | 0x04); // OUT1 -> RI
  t.is(inb(MSR) & 0x40, 0x40);
  out(MCR, 0x10);
  t.is(inb(MSR) & 0x04, 0x04, 'trailing edge of RI sets TERI');
});

test('loopback FIFO holds 16 bytes and sets LSR.OE on overrun', (t) => {
  const { uart, out, inb } = makeUart();
  out(FCR, 0x07);
  out(MCR, 0x10);
  for (let i = 0; i < 20; i++) out(TX, i);
  t.is(uart.rxPending(), 16);
  t.is(uart.stats.rxOverruns, 4);
  const lsr = inb(LSR);
  t.is(lsr & 0x02, 0x02);
  t.is(inb(LSR) & 0x02, 0, 'LSR read clears OE');
});

test('RX FIFO drops beyond capacity and counts', (t) => {
  const { uart } = makeUart();
  const input = new Uint8Array(100).map((_, i) => i);
  t.is(uart.fifoCapacity(), 64);
  t.is(uart.enqueue(input), 64);
  t.is(uart.stats.rxDropped, 36);
  t.is(uart.enqueue(Uint8Array.of(1)), 0);
  t.is(uart.stats.rxDropped, 37);
});

test('RX capacity is configurable and validated', (t) => {
  const { uart } = makeUart({ rxCapacity: 256 });
  t.is(uart.enqueue(new Uint8Array(300)), 256);
  t.throws(() => makeUart({ rxCapacity: 8 }), { instanceOf: RangeError });
  t.throws(() => makeUart({ rxCapacity: 1.5 }), { instanceOf: RangeError });
});

test('onRxSpace fires once after a refusal, when the guest has drained the FIFO', (t) => {
  let calls = 0;
  const { uart, inb } = makeUart({ onRxSpace: () => calls++ });
  uart.enqueue(new Uint8Array(70));
  for (let i = 0; i < 63; i++) inb(RX);
  t.is(calls, 0, 'still one byte left');
  inb(RX);
  t.is(calls, 1);
  uart.enqueue(Uint8Array.of(1));
  inb(RX);
  t.is(calls, 1, 'no refusal since, no second call');
});

test('received data raises RDA, FIFO mode below trigger reports character timeout', (t) => {
  const { uart, irq, out, inb } = makeUart();
  out(MCR, 0x08);
  out(IER, 0x01);
  uart.enqueue(Uint8Array.of(0x61));
  t.is(irq.level, true);
  t.is(inb(IIR), 0x04, 'no FIFO: RDA with IIR bits 7:6 clear');
  inb(RX);
  t.is(irq.level, false);
  out(FCR, 0x81); // enable, trigger 8
  uart.enqueue(Uint8Array.of(1, 2, 3));
  t.is(inb(IIR), 0xcc, 'FIFO enabled, character timeout below the trigger level');
  uart.enqueue(new Uint8Array(5));
  t.is(inb(IIR), 0xc4, 'at the trigger level: RDA');
});

test('IIR reports FIFO enabled bits after FCR write', (t) => {
  const { inb, out } = makeUart();
  t.is(inb(IIR), 0x01);
  out(FCR, 0x01);
  t.is(inb(IIR), 0xc1);
  out(FCR, 0x00);
  t.is(inb(IIR), 0x01);
});

test('FCR clear-RX empties the FIFO', (t) => {
  const { uart, out, inb } = makeUart();
  out(FCR, 0x01);
  uart.enqueue(Uint8Array.of(1, 2, 3));
  out(FCR, 0x03);
  t.is(uart.rxPending(), 0);
  t.is(inb(LSR) & 0x01, 0);
});

test('IIR reports the highest-priority interrupt first', (t) => {
  const { uart, out, inb } = makeUart();
  out(FCR, 0x01);
  out(IER, 0x0f);
  out(MCR, 0x10); // loopback: modem-status delta pending
  for (let i = 0; i < 17; i++) out(TX, i); // 16 looped bytes and one overrun
  t.is(inb(IIR) & 0x0f, 0x06, 'line status first');
  inb(LSR);
  t.is(inb(IIR) & 0x0f, 0x04, 'then received data (16 bytes, trigger level 1)');
  while (uart.rxPending() > 0) inb(RX);
  t.is(inb(IIR) & 0x0f, 0x02, 'then THRE (consumed by this read)');
  t.is(inb(IIR) & 0x0f, 0x00, 'then modem status');
  inb(MSR);
  t.is(inb(IIR) & 0x0f, 0x01);
});

test('LSR always reports the transmitter idle', (t) => {
  const { out, inb } = makeUart();
  out(TX, 0x20);
  t.is(inb(LSR) & 0x60, 0x60);
});

test('scratch register holds a byte and IER keeps only its four defined bits', (t) => {
  const { out, inb } = makeUart();
  out(SCR, 0xa5);
  t.is(inb(SCR), 0xa5);
  out(IER, 0xff);
  t.is(inb(IER), 0x0f);
  out(MCR, 0xff);
  t.is(inb(MCR), 0x1f);
});

test('guest garbage at unknown offsets and widths does not throw', (t) => {
  const { uart } = makeUart();
  t.notThrows(() => {
    for (const offset of [-1, 8, 100, 0.5, NaN]) {
      t.is(uart.read(offset, 1), 0);
      uart.write(offset, 1, 0xff);
    }
    for (const size of [0, 2, 4, 8]) {
      t.is(uart.read(0, size), 0);
      uart.write(0, size, 0xffffffff);
    }
    for (let offset = 0; offset < 8; offset++) uart.write(offset, 1, 0x1ff);
  });
  t.is(uart.stats.missedReads, 9);
  t.is(uart.stats.missedWrites, 9);
});

test('THRE is raised even when the sink throws', (t) => {
  const irq = new RecordingIrqLine();
  const uart = new Uart16550({
    irq,
    sink: {
      write() {
        throw new Error('host sink broke');
      },
    },
  });
  uart.write(MCR, 1, 0x08);
  uart.write(IER, 1, 0x02);
  uart.read(IIR, 1);
  t.notThrows(() => uart.write(TX, 1, 0x41));
  t.is(uart.stats.hostErrors, 1);
  t.is(irq.level, true);
});

test('restore rebuilds registers and re-raises a pending interrupt', (t) => {
  const a = makeUart();
  a.out(MCR, 0x08);
  a.out(FCR, 0x41);
  a.out(IER, 0x01);
  a.out(SCR, 0x77);
  a.uart.enqueue(Uint8Array.of(9, 8));
  const state = JSON.parse(JSON.stringify(a.uart.snapshot()));
  const irq = new RecordingIrqLine();
  const b = Uart16550.restore(state, { irq, sink: new CollectingSink() });
  t.deepEqual(irq.history, ['high']);
  t.is(b.read(SCR, 1), 0x77);
  t.is(b.read(IIR, 1), 0xcc);
  t.is(b.read(RX, 1), 9);
  t.deepEqual(b.snapshot(), { ...state, rx: Buffer.of(8).toString('base64') });
});

test('restore rejects malformed state with ERR_DEVICE_STATE', (t) => {
  const { uart } = makeUart();
  const good = uart.snapshot();
  const opts = { irq: new RecordingIrqLine(), sink: new CollectingSink() };
  t.throws(() => Uart16550.restore({ ...good, lcr: 300 }, opts), { code: 'ERR_DEVICE_STATE' });
  t.throws(() => Uart16550.restore({ ...good, rx: Buffer.alloc(65).toString('base64') }, opts), { code: 'ERR_DEVICE_STATE', message: 'snapshot device state uart.rx: expected at most 64 bytes, got 65' });
  t.throws(() => Uart16550.restore({ ...good, rxTrigger: 3 }, opts), { code: 'ERR_DEVICE_STATE' });
});

/**
 * The register sequence of Linux's autoconfig() and autoconfig_16550a()
 * (drivers/tty/serial/8250/8250_port.c), including the size_fifo() loopback
 * count that the 16550A-variants probe runs. Returns the port type Linux would
 * pick, as the string /proc/tty/driver/serial prints.
 */
function linuxAutoconfig(out: (o: number, v: number) => void, inb: (o: number) => number): string {
  // Existence test: IER must read back 0 and then 0x0F.
  const scratch = inb(IER);
  out(IER, 0);
  const scratch2 = inb(IER) & 0x0f;
  out(IER, 0x0f);
  const scratch3 = inb(IER) & 0x0f;
  out(IER, scratch);
  if (scratch2 !== 0 || scratch3 !== 0x0f) return 'none (IER test failed)';
  const saveMcr = inb(MCR);
  const saveLcr = inb(LCR);
  // Loopback test: LOOP | RTS | OUT2 must read back as CTS | DCD.
  out(MCR, 0x10 | 0x0a);
  const status1 = inb(MSR) & 0xf0;
  out(MCR, saveMcr);
  if (status1 !== 0x90) return 'none (LOOP test failed)';
  // EFR reset through LCR 0xBF, then FIFO enable and IIR bits 7:6.
  out(LCR, 0xbf);
  out(2, 0); // UART_EFR
  out(LCR, 0);
  out(FCR, 0x01);
  const kind = inb(IIR) >> 6;
  let type: string;
  if (kind === 0) type = '8250/16450';
  else if (kind === 1) type = 'unknown';
  else if (kind === 2) type = '16550';
  else type = autoconfig16550a(out, inb);
  out(LCR, saveLcr);
  return type;
}

function autoconfig16550a(out: (o: number, v: number) => void, inb: (o: number) => number): string {
  // EFR visible with DLAB set (ST16C650V1)?
  out(LCR, 0x80);
  if (inb(2) === 0) return '16650';
  // EFR behind LCR 0xBF (ST16C650V2, TI16C752)?
  out(LCR, 0xbf);
  if (inb(2) === 0) return '16650V2';
  // National SuperIO: LOOP mirrored in EXCR1 at LCR 0xE0.
  out(LCR, 0);
  const mcr = inb(MCR);
  out(LCR, 0xe0);
  let excr1 = inb(2);
  if (!((excr1 ^ mcr) & 0x10)) {
    out(LCR, 0);
    out(MCR, mcr ^ 0x10);
    out(LCR, 0xe0);
    excr1 = inb(2);
    out(LCR, 0);
    out(MCR, mcr);
    if ((excr1 ^ mcr) & 0x10) return 'NS16550A';
  }
  // TI16750: IIR bit 5 with 64-byte FIFO mode requested.
  out(LCR, 0);
  out(FCR, 0x01 | 0x20);
  const s1 = inb(IIR) >> 5;
  out(FCR, 0x01);
  out(LCR, 0x80);
  out(FCR, 0x01 | 0x20);
  const s2 = inb(IIR) >> 5;
  out(FCR, 0x01);
  out(LCR, 0);
  if (s1 === 6 && s2 === 7) return '16750';
  // XScale: IER bit 6 (UUE) writable?
  const iersave = inb(IER);
  out(IER, iersave & ~0x40);
  if (!(inb(IER) & 0x40)) {
    out(IER, iersave | 0x40);
    if (inb(IER) & 0x40) return 'XScale';
  }
  out(IER, iersave);
  return sizeFifo(out, inb) === 64 ? 'U6_16550A' : '16550A';
}

function sizeFifo(out: (o: number, v: number) => void, inb: (o: number) => number): number {
  const oldLcr = inb(LCR);
  out(LCR, 0);
  const oldFcr = inb(FCR); // reads IIR, as the driver does
  const oldMcr = inb(MCR);
  out(FCR, 0x01 | 0x02 | 0x04);
  out(MCR, 0x10);
  out(LCR, 0x80);
  const oldDl = inb(DLL) | (inb(DLM) << 8);
  out(DLL, 1);
  out(DLM, 0);
  out(LCR, 0x03);
  for (let i = 0; i < 256; i++) out(TX, i);
  let count = 0;
  while (inb(LSR) & 0x01 && count < 256) {
    inb(RX);
    count++;
  }
  out(FCR, oldFcr);
  out(MCR, oldMcr);
  out(LCR, 0x80);
  out(DLL, oldDl & 0xff);
  out(DLM, oldDl >> 8);
  out(LCR, oldLcr);
  return count;
}

test('Linux 8250 autoconfig probe sequence detects a 16550A', (t) => {
  const { uart, sink, irq, out, inb } = makeUart();
  t.is(linuxAutoconfig(out, inb), '16550A');
  t.deepEqual(sink.bytes, [], 'the loopback FIFO-size test never reaches the console');
  t.is(irq.level, false, 'no interrupt leaks while the driver probes with OUT2 clear');
  t.is(inb(LCR), 0, 'LCR restored');
  t.is(uart.snapshot().divisor, 0x0c, 'divisor restored by size_fifo');
});

test('Linux autoconfig still sees a 16550A with a large host RX capacity', (t) => {
  const { out, inb } = makeUart({ rxCapacity: 64 * 4 });
  t.is(linuxAutoconfig(out, inb), '16550A');
});

test('Linux startup THRE and TXEN tests see a well-behaved UART', (t) => {
  const { out, inb, irq } = makeUart();
  // serial8250_do_startup: the UART_BUG_THRE test.
  out(IER, 0x02);
  const iir1 = inb(IIR);
  out(IER, 0);
  out(IER, 0x02);
  const iir = inb(IIR);
  out(IER, 0);
  t.false(!(iir1 & 0x01) && !!(iir & 0x01), 'no UART_BUG_THRE');
  // LCR 8N1, DTR|RTS|OUT2, then the UART_BUG_TXEN test.
  out(LCR, 0x03);
  out(MCR, 0x0b);
  out(IER, 0x02);
  const lsr = inb(LSR);
  const iir2 = inb(IIR);
  out(IER, 0);
  t.false(!!(lsr & 0x40) && !!(iir2 & 0x01), 'no UART_BUG_TXEN');
  t.deepEqual(irq.history, ['high', 'low']);
});

test('enqueue is refused in loopback and resumes via onRxSpace when loopback ends', (t) => {
  let calls = 0;
  const { uart, out } = makeUart({ onRxSpace: () => calls++ });
  out(MCR, 0x10);
  t.is(uart.enqueue(Uint8Array.of(1, 2)), 0);
  out(MCR, 0x00);
  t.is(calls, 1);
  t.is(uart.enqueue(Uint8Array.of(1, 2)), 2);
});
