/**
 * The serial bindings keep memory bounded with a slow side: a `tcp:` peer
 * that does not read, a guest that does not read (no UART taking input), a
 * terminal that does not keep up. Real loopback sockets and Node streams.
 */
import test from 'ava';
import * as net from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import { attachConsole } from '../../../lib/cli/console';
import { bridgeTcp } from '../../../lib/cli/stream-bridge';
import { SerialPort } from '../../../lib/vm/serial-port';

const MiB = 1024 * 1024;

/** A connected pair of loopback sockets: [ours, the peer's]. */
async function socketPair(t: { teardown(f: () => void): void }): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const ours = net.connect(port, '127.0.0.1');
  await new Promise((r) => ours.once('connect', r));
  const peer = await accepted;
  t.teardown(() => {
    ours.destroy();
    peer.destroy();
    server.close();
  });
  return [ours, peer];
}

const tick = () => new Promise((r) => setImmediate(r));

test('tcp: guest output to a peer that does not read is held up to the bound, the rest dropped and counted', async (t) => {
  const [ours, peer] = await socketPair(t);
  peer.pause();
  const port = new SerialPort('com1', 1 * MiB);
  const bridge = bridgeTcp(port, ours, 1 * MiB);
  const chunk = new Uint8Array(64 * 1024).fill(0x41);
  const total = 64 * MiB;
  let maxHeld = 0;
  for (let sent = 0; sent < total; sent += chunk.length) {
    port.deliver(chunk);
    maxHeld = Math.max(maxHeld, ours.writableLength);
    if (sent % (4 * MiB) === 0) await tick();
  }
  // The kernel's socket buffers take some; the rest of 64 MiB must not pile up in Node.
  t.true(maxHeld <= 1 * MiB + chunk.length, `the socket held ${maxHeld} bytes unsent`);
  t.true(bridge.dropped > 32 * MiB, `dropped ${bridge.dropped}`);
  t.is(bridge.dropped % chunk.length, 0);
  bridge.detach();
});

test('tcp: a peer flooding a guest that does not read is paused, not buffered without bound', async (t) => {
  const [ours, peer] = await socketPair(t);
  const port = new SerialPort('com1', 1 * MiB); // no UART attached: nothing takes input
  const bridge = bridgeTcp(port, ours);
  const chunk = Buffer.alloc(64 * 1024, 0x42);
  let written = 0;
  // Write until the peer's own socket pushes back for a while (TCP flow control reached it).
  for (let rounds = 0; rounds < 400 && written < 64 * MiB; rounds++) {
    while (peer.write(chunk)) written += chunk.length;
    written += chunk.length;
    await new Promise((r) => setTimeout(r, 2));
  }
  t.true(port.writableLength <= 256 * 1024, `the port holds ${port.writableLength} bytes of input`);
  t.true(ours.isPaused(), 'our socket stopped reading');
  t.true(peer.writableLength > 0 || written < 64 * MiB, 'the peer felt the backpressure');
  // Once a UART takes input, everything the peer sent arrives, in order.
  let received = 0;
  port.attach({ enqueue: (b) => ((received += b.length), b.length) });
  peer.end();
  await new Promise<void>((resolve) => {
    const check = () => (received >= written ? resolve() : setTimeout(check, 5));
    check();
  });
  t.is(received, written);
  bridge.detach();
});

test('console: stdin is read only as fast as the guest takes it, and output a stalled terminal cannot take is dropped past the bound', async (t) => {
  const port = new SerialPort('com1', 1 * MiB);
  const stdin = new PassThrough();
  const stalled = new Writable({ highWaterMark: 16 * 1024, write: () => undefined }); // never calls back
  let report = '';
  const stderr = new Writable({ write: (c: Buffer, _e, cb) => ((report += c.toString()), cb()) });
  const h = attachConsole(port, { interactive: false, onQuit: () => undefined, stdin, stdout: stalled, stderr });
  for (let i = 0; i < 512; i++) stdin.write(Buffer.alloc(64 * 1024, 0x43)); // 32 MiB typed
  await tick();
  await tick();
  t.true(port.writableLength <= 256 * 1024, `the port holds ${port.writableLength} bytes of input`);
  t.true(stdin.isPaused(), 'stdin was paused');
  for (let i = 0; i < 256; i++) port.deliver(new Uint8Array(64 * 1024));
  t.true(stalled.writableLength <= 1 * MiB + 64 * 1024, `the terminal holds ${stalled.writableLength}`);
  let received = 0;
  port.attach({ enqueue: (b) => ((received += b.length), b.length) });
  stdin.end();
  await new Promise<void>((resolve) => {
    const check = () => (received >= 32 * MiB ? resolve() : setTimeout(check, 5));
    check();
  });
  t.is(received, 32 * MiB);
  h.detach();
  t.regex(report, /^nodevmm: com1: \d+ bytes of guest output were dropped because the terminal did not keep up\n$/);
});

test('console: with inputWhen, stdin is not touched until it settles; output flows at once; detach before it never reads', async (t) => {
  const port = new SerialPort('com1', 1 * MiB);
  let received = '';
  port.attach({ enqueue: (b) => ((received += Buffer.from(b).toString()), b.length) });
  const stdin = new PassThrough();
  let out = '';
  const stdout = new Writable({ write: (c: Buffer, _e, cb) => ((out += c.toString()), cb()) });
  let start!: () => void;
  const h = attachConsole(port, { interactive: false, onQuit: () => undefined, stdin, stdout, inputWhen: new Promise<void>((r) => (start = r)) });
  stdin.write('typed ahead\n');
  port.deliver(Buffer.from('guest says hi\n'));
  await tick();
  t.is(out, 'guest says hi\n');
  t.is(received, '', 'no input before inputWhen');
  t.is(stdin.readableFlowing, null, 'stdin was not even resumed');
  start();
  await tick();
  await tick();
  t.is(received, 'typed ahead\n', 'typed-ahead input arrives once input starts');
  h.detach();

  const stdin2 = new PassThrough();
  let start2!: () => void;
  const h2 = attachConsole(new SerialPort('com2', 1 * MiB), { interactive: false, onQuit: () => undefined, stdin: stdin2, stdout, inputWhen: new Promise<void>((r) => (start2 = r)) });
  h2.detach();
  start2();
  await tick();
  t.is(stdin2.readableFlowing, null, 'a console detached before its input started never reads stdin');
});
