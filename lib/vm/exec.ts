/**
 * exec() over a serial shell. The command is wrapped between two markers
 * whose echoed form differs from their printed form (the quotes split them),
 * so the terminal echo of the command line never matches; output is taken
 * strictly between the printed markers. Use a port the kernel does not log
 * to (com2, the agent port, by default) and kernel messages cannot
 * interleave at all.
 */
import { NodevmmError } from '../errors';
import type { AgentPort } from './config';
import type { SerialPort } from './serial-port';

export interface ExecOptions {
  timeoutMs?: number;
  /**
   * Which port carries the shell: a serial port or `hvc0`, the virtio
   * console (a byte per exit on a UART, a buffer per exit on hvc0: much
   * faster where exits are slow). Default: the port the guest's command line
   * names with `nodevmm.agent=` (the test initramfs's agent), else com2.
   */
  port?: AgentPort;
}

export interface ExecResult {
  stdout: string;
  exitCode: number;
}

/** Serialize exec calls per port: a shell runs one command at a time. */
const queues = new WeakMap<SerialPort, Promise<unknown>>();

/** Printed by the guest agent (lib/initramfs test init) when its shell reads commands. */
export const AGENT_READY = 'NODEVMM-AGENT-READY';

/**
 * Run `command` through the shell on `port`. `ready` resolves once the agent
 * has said it is listening (bytes sent earlier could be lost when the guest
 * opens the port and resets the UART's FIFOs).
 */
export function execOnSerial(port: SerialPort, command: string, opts: ExecOptions = {}, ready: Promise<unknown> = Promise.resolve()): Promise<ExecResult> {
  const prev = queues.get(port) ?? Promise.resolve();
  const run = prev.catch(() => undefined).then(() => ready).then(() => execOnce(port, command, opts));
  queues.set(port, run);
  return run;
}

async function execOnce(port: SerialPort, command: string, opts: ExecOptions): Promise<ExecResult> {
  if (command.includes('\n')) throw new NodevmmError('ERR_INVALID_ARG', 'exec: the command must be a single line (join lines with ; or use sh -c)');
  // node:crypto loads on the first exec, not with every VM (~3 ms of CLI start-up, docs/benchmarks.md).
  const id = (require('node:crypto') as typeof import('node:crypto')).randomBytes(6).toString('hex');
  const begin = `NVX${id}B`;
  const end = `NVX${id}E`;
  // 'NVX<id>''B' prints NVX<id>B but echoes with the quotes, so only output matches.
  const split = (m: string) => `'${m.slice(0, -1)}''${m.slice(-1)}'`;
  const line = `echo ${split(begin)}; ( ${command} ) </dev/null 2>&1; echo ${split(end)}=$?\n`;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  // Two short matches, the markers, and the output taken between them: a
  // single pattern spanning the output would have to be searched whole
  // (expect() bounds how long a RegExp match may be).
  const started = port.expectAt(new RegExp(`${begin}\\r?\\n`), { timeoutMs });
  port.write(line);
  let from: number;
  let m: RegExpExecArray;
  let to: number;
  try {
    from = (await started).end;
    // Up to the line end: a status split across deliveries ("=1" then "27") must not match early.
    const ended = await port.expectAt(new RegExp(`${end}=(\\d+)\\r?\\n`), { timeoutMs: Math.max(1, deadline - Date.now()) });
    m = ended.match;
    to = ended.start;
  } catch (e) {
    throw new NodevmmError('ERR_EXEC_TIMEOUT', `exec: ${JSON.stringify(command)} did not finish within ${timeoutMs} ms on ${port.portName}; last lines:\n${port.tail(30)}`, { cause: e });
  }
  const stdout = port.text(from, to);
  if (stdout === undefined) throw new NodevmmError('ERR_EXEC_OUTPUT', `exec: the output of ${JSON.stringify(command)} on ${port.portName} was longer than the port's log (serialLogBytes) keeps`);
  return { stdout: stdout.replace(/\r\n/g, '\n'), exitCode: Number(m[1]) };
}
