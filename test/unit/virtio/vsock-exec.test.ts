import test from 'ava';
import { Duplex } from 'node:stream';
import { execOnStream, execOverVsock } from '../../../lib/vm/vsock-exec';

/** A stand-in for the agent's connection: records what the host sent, replies with `frames` once the host ended. */
function fakeAgent(reply: Buffer[], opts: { keepOpen?: boolean } = {}) {
  const sent: Buffer[] = [];
  let ended = false;
  const s = new Duplex({
    read() {},
    write(chunk: Buffer, _e, cb) {
      sent.push(chunk);
      cb();
    },
    final(cb) {
      ended = true;
      // Split across chunk boundaries on purpose: frames arrive in pieces.
      const all = Buffer.concat(reply);
      for (let i = 0; i < all.length; i += 3) s.push(all.subarray(i, i + 3));
      if (!opts.keepOpen) s.push(null); // the agent closes after its last frame
      cb();
    },
  });
  return { s, sent: () => Buffer.concat(sent).toString(), ended: () => ended };
}

const frame = (type: string, payload: Buffer) => Buffer.concat([Buffer.from([type.charCodeAt(0)]), Buffer.from(Uint32Array.of(payload.length).buffer), payload]);
const exit = (code: number) => frame('x', Buffer.from(Int32Array.of(code).buffer));

test('the command is sent and half-closed; output frames are joined; the exit frame gives the code; the stream is destroyed', async (t) => {
  const a = fakeAgent([frame('o', Buffer.from('hello ')), frame('o', Buffer.concat([Buffer.from('world\n'), Buffer.from([0x00, 0xff])])), exit(3)]);
  const r = await execOnStream(a.s, 'echo hi; exit 3', 1000);
  t.is(a.sent(), 'echo hi; exit 3');
  t.true(a.ended());
  t.deepEqual(r, { stdout: 'hello world\n\x00\ufffd', exitCode: 3 });
  t.true(a.s.destroyed);
});

test('a connection that ends before the exit frame, or an unknown frame, is an error sentence', async (t) => {
  await t.throwsAsync(() => execOnStream(fakeAgent([frame('o', Buffer.from('partial'))]).s, 'true', 1000), { code: 'ERR_EXEC_PROTOCOL', message: /closed the connection before "true" reported its exit status/ });
  await t.throwsAsync(() => execOnStream(fakeAgent([frame('z', Buffer.from('??'))]).s, 'true', 1000), { code: 'ERR_EXEC_PROTOCOL', message: /frame of type 122 and 2 bytes/ });
});

test('a command that does not finish in time times out with its last output and closes the connection', async (t) => {
  const a = fakeAgent([frame('o', Buffer.from('still going\n'))], { keepOpen: true });
  const e = await t.throwsAsync(() => execOnStream(a.s, 'sleep 100', 50), { code: 'ERR_EXEC_TIMEOUT' });
  t.regex(e!.message, /did not finish within 50 ms over vsock; last output:\nstill going/);
  t.true(a.s.destroyed);
});

test('execOverVsock retries while nothing listens, and gives up with a sentence naming the port', async (t) => {
  let attempts = 0;
  const r = await execOverVsock(async () => {
    if (++attempts < 3) throw new Error('vsock connect to cid 5 port 9 failed: nothing listens on that port in the guest (ECONNREFUSED)');
    return fakeAgent([exit(0)]).s;
  }, 9, 'true', 5000);
  t.is(attempts, 3);
  t.is(r.exitCode, 0);
  const e = await t.throwsAsync(() => execOverVsock(async () => {
    throw new Error('vsock connect to cid 5 port 9 failed: nothing listens on that port in the guest (ECONNREFUSED)');
  }, 9, 'true', 250), { code: 'ERR_EXEC_NO_AGENT' });
  t.regex(e!.message, /^exec: no agent answered on vsock port 9 within 250 ms/);
  // Other failures (a stopped VM) are not retried and pass through unchanged.
  const other = new Error('cannot connect over vsock to a vm that is stopped');
  t.is(await t.throwsAsync(() => execOverVsock(async () => { throw other; }, 9, 'true', 5000)), other);
});
