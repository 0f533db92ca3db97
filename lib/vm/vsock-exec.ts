/**
 * exec() over virtio-vsock, against the guest agent in guest/vsock-agent.c:
 * one connection per command; we send the command and shut down our side,
 * the agent answers with frames [type u8][length u32 le][payload]: 'o'
 * output (stdout and stderr merged, as exec over serial), then one 'x' with
 * the exit status (i32 le). No markers, no echo, any bytes in the output.
 */
import type { Duplex } from 'node:stream';
import { NodevmmError } from '../errors';
import type { ExecResult } from './exec';

const FRAME_OUTPUT = 0x6f; // 'o'
const FRAME_EXIT = 0x78; // 'x'
const HEADER = 5;
/** How long to wait between attempts while the agent is not listening yet (the guest is booting). */
const CONNECT_RETRY_MS = 100;

/** Connection errors that mean "nobody listens yet", worth retrying until the timeout. */
const NOT_LISTENING = /\((ECONNREFUSED|ECONNRESET|ETIMEDOUT)\)$/;

/** Run `command` on an open connection to the agent; destroys the stream when done. */
export function execOnStream(stream: Duplex, command: string, timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const output: Buffer[] = [];
    let settled = false;
    const finish = (e: Error | undefined, r?: ExecResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.destroy();
      if (e) reject(e);
      else resolve(r!);
    };
    const timer = setTimeout(() => {
      const so_far = Buffer.concat(output).toString('utf8').split('\n').slice(-30).join('\n');
      finish(new NodevmmError('ERR_EXEC_TIMEOUT', `exec: ${JSON.stringify(command)} did not finish within ${timeoutMs} ms over vsock; last output:\n${so_far}`));
    }, timeoutMs);
    stream.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= HEADER) {
        const type = buf[0]!;
        const len = buf.readUInt32LE(1);
        if (buf.length < HEADER + len) return;
        const payload = buf.subarray(HEADER, HEADER + len);
        buf = buf.subarray(HEADER + len);
        if (type === FRAME_OUTPUT) output.push(Buffer.from(payload));
        else if (type === FRAME_EXIT && len === 4) return finish(undefined, { stdout: Buffer.concat(output).toString('utf8'), exitCode: payload.readInt32LE(0) });
        else return finish(new NodevmmError('ERR_EXEC_PROTOCOL', `exec over vsock: the agent sent a frame of type ${type} and ${len} bytes, which is not output or an exit status`));
      }
    });
    stream.on('end', () => finish(new NodevmmError('ERR_EXEC_PROTOCOL', `exec over vsock: the agent closed the connection before ${JSON.stringify(command)} reported its exit status`)));
    stream.on('error', (e) => finish(new NodevmmError('ERR_EXEC_PROTOCOL', `exec over vsock: ${e.message}`, { cause: e })));
    stream.end(command);
  });
}

/**
 * Connect to the agent (retrying while nothing listens, as the guest may
 * still be booting) and run `command`.
 */
export async function execOverVsock(connect: () => Promise<Duplex>, agentPort: number, command: string, timeoutMs = 30_000): Promise<ExecResult> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let stream: Duplex;
    try {
      stream = await connect();
    } catch (e) {
      const msg = (e as Error).message;
      if (!NOT_LISTENING.test(msg)) throw e;
      if (Date.now() + CONNECT_RETRY_MS > deadline) {
        throw new NodevmmError('ERR_EXEC_NO_AGENT', `exec: no agent answered on vsock port ${agentPort} within ${timeoutMs} ms (run guest/vsock-agent.c in the guest: nodevmm-vsock-agent ${agentPort} &): ${msg}`, { cause: e });
      }
      await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
      continue;
    }
    return execOnStream(stream, command, Math.max(1, deadline - Date.now()));
  }
}
