import test from 'ava';
import { execOnSerial } from '../../../lib/vm/exec';
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

/** Deliver `total` bytes of filler in `chunk`-byte deliveries, then `tail`. */
function flood(port: SerialPort, total: number, chunk: number, tail: string): void {
  const filler = bytes(('z'.repeat(63) + '\n').repeat(chunk / 64));
  for (let sent = 0; sent < total; sent += chunk) port.deliver(filler);
  port.deliver(bytes(tail));
}

test('with an expect() pending, matching costs the new output plus a bounded window per delivery, not all unconsumed output', async (t) => {
  const total = 1 << 20;
  const chunk = 4096;
  const deliveries = total / chunk + 1;
  const port = new SerialPort('com1', 64 << 20);
  const str = port.expect('END-OF-FLOOD');
  flood(port, total, chunk, 'END-OF-FLOOD\n');
  await str;
  // A string looks back its own length - 1 (plus one byte of context).
  t.true(port.expectScannedChars <= total + 16 + deliveries * 'END-OF-FLOOD'.length, `scanned ${port.expectScannedChars}`);
  const before = port.expectScannedChars;
  const re = port.expect(/DONE-(\d+)/, { maxMatchBytes: 256 });
  flood(port, total, chunk, 'DONE-7\n');
  t.is((await re)[1], '7');
  const scanned = port.expectScannedChars - before;
  // Re-scanning all unconsumed output would be ~total * deliveries / 2 (128 MiB here).
  t.true(scanned <= total + 16 + deliveries * 257, `scanned ${scanned}`);
});

test('a pattern split across deliveries is found, and ^ and \\b see the byte before the window', async (t) => {
  const port = new SerialPort('com1', 1 << 20);
  const p = port.expect('ABCDEF');
  for (const piece of ['xxA', 'BC', 'D', 'EFyy']) port.deliver(bytes(piece));
  const m = await p;
  t.is(m[0], 'ABCDEF');
  t.is(m.index, 2, 'the index counts from where the search could start, as before');
  // The window starts mid-line: ^ (multiline) must not match there, only after a newline.
  const line = port.expectAt(/^GO\b/m, { maxMatchBytes: 2 });
  port.deliver(bytes('yyyyyyyyNOGO'));
  // This delivery's window starts at the last "GO", which follows "NO".
  port.deliver(bytes(' x'));
  port.deliver(bytes('\nGO\n'));
  const g = await line;
  t.is(g.match[0], 'GO');
  t.true(port.log().endsWith('\nGO\n'));
  t.is(g.start, port.totalBytes - 3, 'matched the GO at the start of a line, not the one after NO');
  t.is(port.text(port.totalBytes - 4, port.totalBytes), '\nGO\n');
});

test('a RegExp match longer than maxMatchBytes is not found by later deliveries (the documented limit); a larger window finds it', async (t) => {
  const short = new SerialPort('com1', 1 << 20);
  const missed = short.expect(/BEGIN[\s\S]*END/, { maxMatchBytes: 100, timeoutMs: 50 });
  short.deliver(bytes('BEGIN'));
  short.deliver(bytes('.'.repeat(1000)));
  short.deliver(bytes('END'));
  await t.throwsAsync(missed, { code: 'ERR_SERIAL_TIMEOUT' });
  const wide = new SerialPort('com1', 1 << 20);
  const found = wide.expect(/BEGIN[\s\S]*END/, { maxMatchBytes: 2000 });
  wide.deliver(bytes('BEGIN'));
  wide.deliver(bytes('.'.repeat(1000)));
  wide.deliver(bytes('END'));
  t.is((await found)[0].length, 1008);
});

test('exec() returns output far longer than the match window, taken between its markers', async (t) => {
  const port = new SerialPort('com2', 16 << 20);
  const big = ('0123456789abcdef'.repeat(4) + '\n').repeat(8192); // 520 KiB
  // A shell on the far side of the UART: echoes the line, then prints what the
  // markers print (the quotes removed) around the command's output.
  port.attach({
    enqueue: (b) => {
      const line = Buffer.from(b).toString('latin1');
      const [, begin, end] = /^echo '(\w+)''(\w)'.*echo '(\w+)''E'=\$\?\n$/.exec(line)!.map(String);
      setImmediate(() => {
        port.deliver(bytes(line.replace(/\n/g, '\r\n')));
        port.deliver(bytes(`${begin}${end}\r\n`));
        for (let i = 0; i < big.length; i += 4096) port.deliver(bytes(big.slice(i, i + 4096).replace(/\n/g, '\r\n')));
        // The status split across two deliveries: 1, then 27.
        port.deliver(bytes(`${/^echo '(\w+)''B'/.exec(line)![1]}E=1`));
        setImmediate(() => port.deliver(bytes('27\r\n')));
      });
      return b.length;
    },
  });
  const r = await execOnSerial(port, 'cat big', { timeoutMs: 10_000 });
  t.is(r.exitCode, 127);
  t.is(r.stdout.length, big.length);
  t.is(r.stdout, big);
});

test('a target that reports room from inside enqueue() (the virtio console) gets each byte once and the write completes once', async (t) => {
  const port = new SerialPort('hvc0', 1 << 20);
  const received: string[] = [];
  let room = 3;
  port.attach({
    enqueue(b: Uint8Array): number {
      const n = Math.min(room, b.length);
      received.push(Buffer.from(b.subarray(0, n)).toString('latin1'));
      // The guest's buffers take the bytes at once: room again, said before enqueue returns.
      if (n > 0) port.rxSpace();
      return n;
    },
  });
  const errors: Error[] = [];
  port.on('error', (e) => errors.push(e));
  await new Promise<void>((resolve, reject) => port.write('abcdefgh', (e) => (e ? reject(e) : resolve())));
  t.is(received.join(''), 'abcdefgh');
  room = 0;
  let done = false;
  port.write('ij', () => (done = true));
  t.false(done);
  room = 8;
  port.rxSpace();
  await new Promise((r) => setImmediate(r));
  t.true(done);
  t.is(received.join(''), 'abcdefghij');
  t.deepEqual(errors, []);
});
