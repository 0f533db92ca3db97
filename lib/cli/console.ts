/**
 * Binds a VM's serial port to the user's terminal. On a TTY the terminal
 * is put in raw mode and Ctrl-A is the escape key (Ctrl-A x quits, Ctrl-A h
 * helps, Ctrl-A Ctrl-A sends one Ctrl-A); otherwise stdin is piped to the
 * guest as-is so scripts can drive it. The terminal is always restored.
 */
import type { SerialPort } from '../vm/serial-port';

const CTRL_A = 0x01;

export interface ConsoleHandle {
  detach(): void;
}

export function attachConsole(port: SerialPort, opts: { interactive: boolean; onQuit: () => void }): ConsoleHandle {
  const stdin = process.stdin;
  const stdout = process.stdout;
  const tty = opts.interactive && stdin.isTTY === true;
  const onOutput = (b: Buffer) => stdout.write(b);
  port.on('output', onOutput);
  let escape = false;
  const onInput = (chunk: Buffer) => {
    if (!tty) {
      port.write(chunk);
      return;
    }
    const out: number[] = [];
    for (const c of chunk) {
      if (escape) {
        escape = false;
        if (c === 0x78 /* x */ || c === 0x58) {
          stdout.write('\r\nnodevmm: quit (Ctrl-A x)\r\n');
          opts.onQuit();
          return;
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
    if (out.length) port.write(Buffer.from(out));
  };
  if (tty) stdin.setRawMode(true);
  stdin.on('data', onInput);
  stdin.resume();
  let detached = false;
  const restore = () => {
    if (detached) return;
    detached = true;
    port.off('output', onOutput);
    stdin.off('data', onInput);
    if (tty) stdin.setRawMode(false);
    stdin.pause();
  };
  process.once('exit', restore);
  return { detach: restore };
}
