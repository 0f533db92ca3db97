import test from 'ava';
import { Writable } from 'node:stream';
import { BatchingSink, RingLog, TeeSink } from '../../../lib/devices/serial-sinks';
import { RecordingIrqLine } from '../../../lib/devices/types';
import { Uart16550 } from '../../../lib/devices/uart16550';

const nextMacrotask = () => new Promise<void>((resolve) => setImmediate(resolve));

test('byte-at-a-time UART output reaches a callback as one chunk per macrotask', async (t) => {
  const chunks: string[] = [];
  const sink = new BatchingSink((c) => chunks.push(Buffer.from(c).toString()));
  const uart = new Uart16550({ irq: new RecordingIrqLine(), sink });
  for (const ch of 'hello, world\n') uart.write(0, 1, ch.charCodeAt(0));
  t.deepEqual(chunks, [], 'nothing delivered synchronously');
  await nextMacrotask();
  t.deepEqual(chunks, ['hello, world\n']);
  t.is(sink.stats.flushes, 1);
  for (const ch of 'ok') uart.write(0, 1, ch.charCodeAt(0));
  await nextMacrotask();
  t.deepEqual(chunks, ['hello, world\n', 'ok']);
});

test('reaching the batch threshold flushes at once', (t) => {
  const chunks: Uint8Array[] = [];
  const sink = new BatchingSink((c) => chunks.push(c), { maxBatchBytes: 4, schedule: () => {} });
  sink.write(Uint8Array.of(1, 2, 3));
  t.is(chunks.length, 0);
  sink.write(Uint8Array.of(4));
  t.deepEqual(chunks.map((c) => [...c]), [[1, 2, 3, 4]]);
});

test('delivered chunks are copies the sink does not reuse', (t) => {
  const chunks: Uint8Array[] = [];
  const sink = new BatchingSink((c) => chunks.push(c), { maxBatchBytes: 2, schedule: () => {} });
  sink.write(Uint8Array.of(1, 2));
  sink.write(Uint8Array.of(3, 4));
  t.deepEqual(chunks.map((c) => [...c]), [[1, 2], [3, 4]]);
});

test('writeByte batches like write, grows its buffer, flushes at the threshold and drops past the bound', (t) => {
  const chunks: number[][] = [];
  const sink = new BatchingSink((c) => chunks.push([...c]), { maxBatchBytes: 600, maxPendingBytes: 600, schedule: () => {} });
  for (let i = 0; i < 599; i++) sink.writeByte(i & 0xff);
  t.is(chunks.length, 0);
  t.is(sink.pendingBytes, 599, 'past the first 256-byte buffer');
  sink.writeByte(7);
  t.is(chunks.length, 1);
  t.is(chunks[0]!.length, 600);
  t.is(chunks[0]![300], 300 & 0xff);
  t.is(chunks[0]![599], 7);
  const slow = new Writable({ highWaterMark: 1, write: () => {} });
  const blocked = new BatchingSink(slow, { maxBatchBytes: 1, maxPendingBytes: 2 });
  blocked.writeByte(1); // delivered; the stream now waits for 'drain'
  blocked.writeByte(2);
  blocked.writeByte(3);
  blocked.writeByte(4);
  t.is(blocked.pendingBytes, 2);
  t.is(blocked.stats.dropped, 1);
});

test('the UART hands its THR bytes to a sink\'s writeByte when it has one', (t) => {
  const bytes: number[] = [];
  const uart = new Uart16550({ irq: new RecordingIrqLine(), sink: { write: () => t.fail('write used'), writeByte: (b) => void bytes.push(b) } });
  for (const ch of 'ok') uart.write(0, 1, ch.charCodeAt(0));
  t.deepEqual(bytes, [0x6f, 0x6b]);
});

test('a backpressured Writable holds a bounded backlog and counts drops', async (t) => {
  const received: Buffer[] = [];
  let release: (() => void) | undefined;
  const slow = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, cb) {
      received.push(chunk);
      release = cb;
    },
  });
  const sink = new BatchingSink(slow, { maxBatchBytes: 4, maxPendingBytes: 8 });
  sink.write(Uint8Array.of(1, 2, 3, 4)); // delivered, stream now needs drain
  sink.write(new Uint8Array(10)); // 8 held, 2 dropped
  t.is(sink.pendingBytes, 8);
  t.is(sink.stats.dropped, 2);
  release?.();
  await nextMacrotask();
  await nextMacrotask();
  t.is(Buffer.concat(received).length, 12);
  t.is(sink.pendingBytes, 0);
});

test('a closed Writable or throwing callback drops bytes instead of throwing', async (t) => {
  const closed = new Writable({ write: (_c, _e, cb) => cb() });
  closed.end();
  const a = new BatchingSink(closed, { maxBatchBytes: 1 });
  t.notThrows(() => a.write(Uint8Array.of(1)));
  t.is(a.stats.dropped, 1);
  const b = new BatchingSink(
    () => {
      throw new Error('consumer broke');
    },
    { maxBatchBytes: 1 },
  );
  t.notThrows(() => b.write(Uint8Array.of(1, 2)));
  t.is(b.stats.dropped, 2);
  await nextMacrotask();
});

test('batching options are validated', (t) => {
  t.throws(() => new BatchingSink(() => {}, { maxBatchBytes: 0 }), { instanceOf: RangeError });
  t.throws(() => new BatchingSink(() => {}, { maxBatchBytes: 10, maxPendingBytes: 5 }), { instanceOf: RangeError });
});

test('ring log keeps the newest bytes in order', (t) => {
  const log = new RingLog(8);
  log.write(Buffer.from('abcdef'));
  t.is(log.text(), 'abcdef');
  log.write(Buffer.from('ghij'));
  t.is(log.text(), 'cdefghij');
  log.write(Buffer.from('0123456789xyz'));
  t.is(log.text(), '56789xyz');
  t.is(log.totalBytes, 23);
  log.clear();
  t.is(log.bytes().length, 0);
});

test('tee writes to every sink even when one throws', (t) => {
  const a = new RingLog(16);
  const b = new RingLog(16);
  const tee = new TeeSink(
    a,
    {
      write() {
        throw new Error('broken');
      },
    },
    b,
  );
  tee.write(Buffer.from('hi'));
  t.is(a.text(), 'hi');
  t.is(b.text(), 'hi');
  t.is(tee.failures, 1);
});
