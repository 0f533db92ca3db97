import test from 'ava';
import { RecordingIrqLine } from '../../../lib/devices/types';
import { Uart16550 } from '../../../lib/devices/uart16550';
import { localWord, type ShadowBlock } from '../../../lib/hv/io-bus';
import { ShadowedUart, uartRegistration } from '../../../lib/vm/shadowed-uart';

const IER = 1, LCR = 3, MCR = 4;

/** A shadow block that records what JS stores, in order, and holds the bytes as a vCPU thread sees them. */
function fakeBlock() {
  const bytes = new Uint8Array(32);
  const log: string[] = [];
  const block: ShadowBlock = {
    set: (off, v) => {
      bytes[off] = v;
      log.push(`set ${off}=${v.toString(16)}`);
    },
    enable: (shadows, posting) => {
      bytes[31] = (shadows ? 1 : 0) | (posting ? 2 : 0);
      log.push(`switch ${shadows ? 'S' : '-'}${posting ? 'P' : '-'}`);
    },
    word: localWord(),
    held: localWord(),
  };
  return { bytes, log, block };
}

function setup(postIer = true) {
  const uart = new Uart16550({ irq: new RecordingIrqLine(), sink: { write: () => {} } });
  const s = new ShadowedUart(uart, postIer);
  const f = fakeBlock();
  s.shadow = f.block;
  s.resync();
  return { uart, s, ...f };
}

test('registration: IER is posted and mirrored (bits 3:0) only when asked, THR always', (t) => {
  t.deepEqual(uartRegistration(true), { posted: [0, 1], shadowed: [1, 3, 4, 5, 7], mirrored: [{ offset: 1, mask: 0x0f }] });
  t.deepEqual(uartRegistration(false), { posted: [0], shadowed: [1, 3, 4, 5, 7] });
});

test('while posting is on, JS applying an earlier IER write does not overwrite the newer value a vCPU mirrored', (t) => {
  const { s, bytes } = setup();
  t.is(bytes[31], 3);
  // The vCPU posted IER=0 then IER=THRI (mirroring each); JS now applies the first.
  bytes[IER] = 0x02;
  s.write(IER, 1, 0x00);
  t.is(bytes[IER], 0x02);
  s.write(IER, 1, 0x02);
  t.is(bytes[IER], 0x02);
  // Host input changes LSR, and must not touch IER's byte either.
  bytes[IER] = 0x05;
  s.enqueue(Uint8Array.of(0x41));
  t.is(bytes[IER], 0x05);
  t.is(bytes[5]! & 1, 1); // LSR.DR
});

test('without IER posting (more than one vCPU), JS keeps IER\'s shadow byte', (t) => {
  const { s, bytes } = setup(false);
  bytes[IER] = 0x0f; // nothing else writes it; JS must restore what the UART has
  s.write(IER, 1, 0x03);
  t.is(bytes[IER], 0x03);
});

test('DLAB turns posting off before offset 1 shows the divisor latch, and IER is written back before posting turns on', (t) => {
  const { s, uart, bytes, log } = setup();
  log.length = 0;
  s.write(LCR, 1, 0x80);
  t.deepEqual(log, ['switch --', 'set 1=0', 'set 3=80', 'switch S-']);
  log.length = 0;
  s.write(IER, 1, 0x01); // DLM, synchronous now
  t.is(bytes[IER], 0x01);
  t.is(uart.peek(IER), 0x01);
  log.length = 0;
  s.write(LCR, 1, 0x03);
  t.deepEqual(log, ['set 1=0', 'set 3=3', 'switch SP']);
});

test('loopback turns posting and shadows off, and leaving it writes IER back first', (t) => {
  const { s, bytes, log } = setup();
  s.write(IER, 1, 0x05); // applied posted write; the byte is the vCPU's
  log.length = 0;
  s.write(MCR, 1, 0x10);
  t.deepEqual(log, ['switch --', 'set 1=5', 'set 4=10']);
  log.length = 0;
  s.write(MCR, 1, 0x0b);
  t.deepEqual(log, ['set 4=b', 'switch SP']);
  t.is(bytes[IER], 0x05);
});

test('resync (a restored snapshot) writes IER even while posting is on', (t) => {
  const { s, uart, bytes } = setup();
  bytes[IER] = 0x0f; // stale, from before the restore
  uart.restoreState({ ...uart.snapshot(), ier: 0x03 });
  s.resync();
  t.is(bytes[IER], 0x03);
  t.is(bytes[31], 3);
});

test('the guest waits on posted writes while the THR-empty interrupt is enabled (interrupt-driven sending), not while a console polls', (t) => {
  const { s } = setup();
  t.false(s.postedAwaited(), 'reset: IER 0');
  s.write(IER, 1, 0x02); // ETBEI: the driver waits for THRE interrupts
  t.true(s.postedAwaited());
  s.write(IER, 1, 0x01); // receive interrupts only, as while a kernel console prints
  t.false(s.postedAwaited());
});
