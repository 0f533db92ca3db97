/**
 * Binds a VM's serial port to the user's terminal. On a TTY the terminal
 * is put in raw mode and Ctrl-A is the escape key (Ctrl-A x quits, Ctrl-A s
 * saves a snapshot, Ctrl-A h helps, Ctrl-A Ctrl-A sends one Ctrl-A); otherwise stdin is piped to the
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
  /** Ctrl-A s: save a snapshot (absent: the key says how to turn it on). */
  onSnapshot?: () => void;
  /** The terminal's streams (default process.stdin and process.stdout). */
  stdin?: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stdout?: Writable;
  /** Where the count of dropped output is reported at detach (default process.stderr). */
  stderr?: Writable;
  /**
   * Read input (and, on a terminal, switch to raw mode) only once this
   * settles; output is forwarded at once. `nodevmm run` passes "the vCPUs
   * run": setting up process.stdin (~1 ms) then happens beside the guest's
   * first instructions, not before them. Input typed meanwhile waits in the
   * terminal or pipe.
   */
  inputWhen?: Promise<unknown>;
}

/**
 * Input is read only as fast as the guest's UART takes it (stdin pauses
 * meanwhile); output a slow terminal or pipe cannot take is dropped past a
 * bound (lib/cli/stream-bridge.ts) rather than held without limit.
 */
export function attachConsole(port: SerialPort, opts: ConsoleOptions): ConsoleHandle {
  const stdout = opts.stdout ?? process.stdout;
  const output = forwardOutput(port, stdout);
  let escape = false;
  let detached = false;
  // Set when input starts: process.stdin is not even created before that.
  let input: { stdin: NonNullable<ConsoleOptions['stdin']>; tty: boolean; feeder: ReturnType<typeof feedInput> } | undefined;
  const onInput = (chunk: Buffer): Buffer | undefined => {
    if (!input?.tty) return chunk;
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
          stdout.write('\r\nnodevmm console: Ctrl-A x quit, Ctrl-A s snapshot, Ctrl-A h help, Ctrl-A Ctrl-A send Ctrl-A\r\n');
          continue;
        }
        if (c === 0x73 /* s */) {
          if (opts.onSnapshot) opts.onSnapshot();
          else stdout.write('\r\nnodevmm: no snapshot folder: start with --snapshot-dir DIR to save snapshots with Ctrl-A s\r\n');
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
  const startInput = () => {
    if (detached) return;
    const stdin = opts.stdin ?? process.stdin;
    const tty = opts.interactive && stdin.isTTY === true && typeof stdin.setRawMode === 'function';
    if (tty) stdin.setRawMode!(true);
    input = { stdin, tty, feeder: feedInput(stdin, port, onInput) };
  };
  if (opts.inputWhen) opts.inputWhen.then(startInput, startInput);
  else startInput();
  const restore = () => {
    if (detached) return;
    detached = true;
    output.detach();
    if (input) {
      input.feeder.detach();
      if (input.tty) input.stdin.setRawMode!(false);
      input.stdin.pause();
    }
    if (output.dropped) (opts.stderr ?? process.stderr).write(`nodevmm: ${port.portName}: ${output.dropped} bytes of guest output were dropped because the terminal did not keep up\n`);
  };
  process.once('exit', restore);
  return { detach: restore };
}
