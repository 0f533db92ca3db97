import test from 'ava';
import { SerialPort } from '../../../lib/vm/serial-port';

const bytes = (s: string) => Buffer.from(s, 'latin1');

test('the log keeps every byte in order across many small deliveries and block seals', (t) => {
  const port = new SerialPort('com1', 1 << 20);
  let expected = '';
  // 3000 deliveries: more than one seal by count (256) and by size (64 KiB).
  for (let i = 0; i < 3000; i++) {
    const s = `line ${i} ${'x'.repeat(i % 97)}\n`;
    expected += s;
    port.deliver(bytes(s));
  }
  t.is(port.log(), expected);
  t.is(port.totalBytes, expected.length);
  t.is(port.tail(2), `line 2999 ${'x'.repeat(2999 % 97)}\n`);
});

test('past the limit the oldest output is dropped, the newest kept, and expect() still finds what follows', async (t) => {
  const limit = 128 * 1024;
  const port = new SerialPort('com1', limit);
  const block = 'y'.repeat(1000) + '\n';
  for (let i = 0; i < 1000; i++) port.deliver(bytes(block));
  const log = port.log();
  t.true(log.length <= limit + 64 * 1024 + block.length, `log ${log.length} bytes`);
  t.true(log.length >= limit - 64 * 1024 - block.length, `log ${log.length} bytes`);
  t.true(log.endsWith(block));
  t.is(port.totalBytes, 1000 * block.length);
  const waiting = port.expect(/MARK-(\d+)/, { timeoutMs: 5000 });
  for (let i = 0; i < 300; i++) port.deliver(bytes(block));
  port.deliver(bytes('MAR'));
  port.deliver(bytes('K-42\n'));
  t.is((await waiting)[1], '42');
});

test('expect() consumes: a second expect for the same pattern waits for the next occurrence', async (t) => {
  const port = new SerialPort('com1', 1 << 20);
  for (let i = 0; i < 600; i++) port.deliver(bytes(`noise ${i}\n`));
  port.deliver(bytes('READY 1\n'));
  t.is((await port.expect(/READY (\d)/))[1], '1');
  const next = port.expect(/READY (\d)/, { timeoutMs: 5000 });
  for (let i = 0; i < 600; i++) port.deliver(bytes(`noise ${i}\n`));
  port.deliver(bytes('READY 2\n'));
  t.is((await next)[1], '2');
  await t.throwsAsync(port.expect(/READY/, { timeoutMs: 20 }), { message: /did not appear within 20 ms; last lines:\n[\s\S]*READY 2/ });
});
