/**
 * The native non-blocking I/O calls (socketRead/socketWrite for vsock streams,
 * fdReadv/fdWritev for TAPs) share one EINTR/EAGAIN policy: bytes moved, -1
 * when the fd would block, a thrown errno otherwise. Checked here on a TCP
 * loopback socket (the syscalls are the same for AF_VSOCK) and an eventfd.
 */
import test from 'ava';
import * as net from 'node:net';
import { nativeBinding } from '../../../lib/hv/native';

test('socketWrite moves bytes, socketRead returns -1 when nothing is there, and both throw with the errno on a bad fd', async (t) => {
  const b = nativeBinding();
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect(port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  const peer = await accepted;
  peer.pause();
  const fd = (peer as unknown as { _handle: { fd: number } })._handle.fd;
  t.is(b.socketRead(fd, new Uint8Array(16)), -1, 'nothing sent yet');
  t.is(b.socketWrite(fd, new TextEncoder().encode('hello')), 5);
  const got = await new Promise<Buffer>((r) => client.once('data', r));
  t.is(got.toString(), 'hello');
  const buf = new Uint8Array(16);
  t.throws(() => b.socketRead(1 << 20, buf), { code: 'EBADF' });
  t.throws(() => b.socketWrite(1 << 20, buf), { code: 'EBADF' });
  client.destroy();
  peer.destroy();
  server.close();
});

test('fdReadv returns -1 on an empty non-blocking fd and reads what was written', (t) => {
  const b = nativeBinding();
  const fd = b.eventfd(0);
  try {
    const eight = new Uint8Array(8);
    t.is(b.fdReadv(fd, [eight]), -1);
    t.is(b.fdWritev(fd, [Uint8Array.of(3, 0, 0, 0, 0, 0, 0, 0)]), 8);
    t.is(b.fdReadv(fd, [eight]), 8);
    t.is(eight[0], 3);
  } finally {
    b.closeFd(fd);
  }
});
