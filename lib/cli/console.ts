/**
 * Binds a VM's serial port to the user's terminal. On a TTY the terminal
 * is put in raw mode and Ctrl-A is the escape key (Ctrl-A x quits, Ctrl-A h
 * helps, Ctrl-A Ctrl-A sends one Ctrl-A); otherwise stdin is piped to the
 * guest as-is so scripts can drive it. The terminal is always restored.
 */
import type { Readable, Writable } from 'node:stream';
import type { SerialPort } from '../vm/serial-port';
import { feedInput, forwardOutput } from './stream-bridge';

const CTRL_A = 0x01;

export interface ConsoleHandle {
  detach(): void;
}

export interface ConsoleOptions {
  interactive: boolean;
  onQuit: () => void;
  /** The terminal's streams (default process.stdin and process.stdout). */
  stdin?: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stdout?: Writable;
  /** Where the count of dropped output is reported at detach (default process.stderr). */
  stderr?: Writable;
}

/**
 * Input is read only as fast as the guest's UART takes it (stdin pauses
 * meanwhile); output a slow terminal or pipe cannot take is dropped past a
 * bound (lib/cli/stream-bridge.ts) rather than held without limit.
 */
export function attachConsole(port: SerialPort, opts: ConsoleOptions): ConsoleHandle {
  const stdin = opts.stdin ?? process.stdin;
  const stdout = opts.stdout ?? process.stdout;
  const tty = opts.interactive && stdin.isTTY === true && typeof stdin.setRawMode === 'function';
  const output = forwardOutput(port, stdout);
  let escape = false;
  const onInput = (chunk: Buffer): Buffer | undefined => {
    if (!tty) return chunk;
    const out: number[] = [];
    for (const c of chunk) {
      if (escape) {
        escape = false;
        if (c === 0x78 /* x */ || c === 0x58) {
          stdout.write('\r\nnodevmm: quit (Ctrl-A x)\r\n');
          opts.onQuit();
          return undefined;
        }
        if (c === 0x68 /* h */ || c === 0x3f) {
          stdout.write('\r\nnodevmm console: Ctrl-A x quit, Ctrl-A h help, Ctrl-A Ctrl-A send Ctrl-A\r\n');
          continue;
        }
        if (c === CTRL_A) out.push(CTRL_A);
        continue;
      }
      if (c === CTRL_A) escape = true;
      else out.push(c);
    }
    return out.length ? Buffer.from(out) : undefined;
  };
  if (tty) stdin.setRawMode!(true);
  const input = feedInput(stdin, port, onInput);
  let detached = false;
  const restore = () => {
    if (detached) return;
    detached = true;
    output.detach();
    input.detach();
    if (tty) stdin.setRawMode!(false);
    stdin.pause();
    if (output.dropped) (opts.stderr ?? process.stderr).write(`nodevmm: ${port.portName}: ${output.dropped} bytes of guest output were dropped because the terminal did not keep up\n`);
  };
  process.once('exit', restore);
  return { detach: restore };
}
