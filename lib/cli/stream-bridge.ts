/**
 * Bridges between a VM's serial port and a host stream (a TCP socket, the
 * terminal) that keep memory bounded whichever side is slow.
 *
 * Input (host to guest) is paused at its source while the port does not take
 * it: the port's writable side fills only as fast as the UART's FIFO drains,
 * so a guest that does not read stops the socket or stdin being read, and
 * TCP's own flow control pushes back on the peer.
 *
 * Output (guest to host) cannot be paused: the guest writes THR with no
 * flow control, as to a real UART. When the host stream is backpressured
 * and already holds `maxPendingBytes`, further output is dropped and counted,
 * as a UART with a full FIFO drops; the stream's buffer never grows beyond
 * that plus one delivery.
 */
import type { EventEmitter } from 'node:events';
import type { Readable, Writable } from 'node:stream';

/** Output the host stream may hold unsent before further output is dropped (default 1 MiB). */
export const DEFAULT_MAX_PENDING_OUTPUT = 1024 * 1024;

export interface OutputForwarder {
  /** Bytes of guest output dropped because the stream held too much. */
  readonly dropped: number;
  detach(): void;
}

/** Forward `port`'s 'output' events to `out`, dropping (and counting) what does not fit. */
export function forwardOutput(port: EventEmitter, out: Writable, maxPendingBytes = DEFAULT_MAX_PENDING_OUTPUT): OutputForwarder {
  let dropped = 0;
  const on = (chunk: Buffer) => {
    if (out.destroyed || out.writableEnded) return;
    if (out.writableLength >= maxPendingBytes) {
      dropped += chunk.length;
      return;
    }
    out.write(chunk);
  };
  port.on('output', on);
  return {
    get dropped() {
      return dropped;
    },
    detach: () => port.off('output', on),
  };
}

export interface InputFeeder {
  detach(): void;
}

/**
 * Feed `input`'s data into `port`, pausing `input` while `port.write()`
 * says it is full and resuming on 'drain'. `map` may rewrite each chunk
 * (the console's escape keys) and return undefined to send nothing.
 */
export function feedInput(input: Readable, port: Writable, map: (chunk: Buffer) => Buffer | undefined = (c) => c): InputFeeder {
  let detached = false;
  let waiting = false;
  const onDrain = () => {
    waiting = false;
    if (!detached) input.resume();
  };
  const onData = (chunk: Buffer) => {
    const out = map(chunk);
    if (!out || out.length === 0 || detached) return;
    if (!port.write(out) && !waiting) {
      waiting = true;
      input.pause();
      port.once('drain', onDrain);
    }
  };
  input.on('data', onData);
  input.resume();
  return {
    detach: () => {
      detached = true;
      input.off('data', onData);
      port.off('drain', onDrain);
    },
  };
}

/** Both directions between a serial port and a connected socket (the `tcp:` binding). */
export function bridgeTcp(port: EventEmitter & Writable, sock: Readable & Writable, maxPendingBytes = DEFAULT_MAX_PENDING_OUTPUT): OutputForwarder {
  const output = forwardOutput(port, sock, maxPendingBytes);
  const input = feedInput(sock, port);
  return {
    get dropped() {
      return output.dropped;
    },
    detach: () => {
      output.detach();
      input.detach();
    },
  };
}
