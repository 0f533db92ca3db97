/**
 * Helper daemons a VM runs beside itself (passt for user networking): found
 * in PATH before anything starts (a missing binary is one sentence naming
 * the package), started so that they never outlive this process, their last
 * stderr lines kept for error messages, and stopped in bounded time.
 *
 * Why a helper cannot outlive Node, in three layers:
 * - `setpriv --pdeathsig KILL` (util-linux) sets PR_SET_PDEATHSIG before it
 *   execs the helper, so the kernel sends SIGKILL when the thread that
 *   spawned it (the event loop's thread) dies, also on SIGKILL of Node. The
 *   kernel clears that setting when the helper changes its user ID (passt
 *   run as root switches to nobody), hence the next layer.
 * - the helper talks over a socket whose other end only this process holds
 *   (passt --fd with --one-off): when Node dies the kernel closes that end
 *   and the helper exits on the hang-up.
 * - on an ordinary exit of Node, a process 'exit' hook kills every helper
 *   still running.
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NodevmmError } from '../errors';

/** Bytes of a helper's stderr kept for error messages. */
const STDERR_TAIL_BYTES = 4096;
/** How long stop() waits after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 2000;

/** The absolute path of `name` found in PATH (or `name` itself when it is a path), or undefined. */
export function findExecutable(name: string, envPath = process.env.PATH ?? ''): string | undefined {
  const candidates = name.includes('/') ? [name] : envPath.split(':').filter(Boolean).map((d) => path.join(d, name));
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return path.resolve(c);
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface SpawnHelperOptions {
  /** For messages: "passt". */
  name: string;
  /** Executable name (looked up in PATH) or path. */
  command: string;
  args: readonly string[];
  /** What to tell the user when the binary is missing: "apt-get install passt". */
  installHint: string;
  /** Extra stdio entries from fd 3 on ('pipe' gives a connected UNIX stream socket). */
  extraStdio?: Array<'pipe' | 'ignore'>;
}

const live = new Set<ChildProcess>();
let exitHooked = false;

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

/** A helper daemon started by spawnHelper. */
export class HelperProcess {
  readonly name: string;
  readonly child: ChildProcess;
  private stderr = '';
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exitWaiters: Array<() => void> = [];
  private stopping = false;

  /** Called once when the helper exits without stop() having been asked for, with one sentence. */
  onUnexpectedExit: ((message: string) => void) | undefined;

  constructor(name: string, child: ChildProcess) {
    this.name = name;
    this.child = child;
    child.stderr?.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString('utf8')).slice(-STDERR_TAIL_BYTES);
    });
    child.on('error', (e) => {
      // spawn itself failed (the binary vanished between the PATH check and exec).
      this.stderr += `\n${e.message}`;
    });
    child.on('exit', (code, signal) => {
      live.delete(child);
      this.exitInfo = { code, signal };
      for (const w of this.exitWaiters.splice(0)) w();
      if (!this.stopping) this.onUnexpectedExit?.(this.exitMessage());
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get exited(): boolean {
    return this.exitInfo !== undefined;
  }

  /** The helper's last stderr lines, trimmed (syslog complaints of passt's dropped). */
  stderrTail(): string {
    return this.stderr
      .split('\n')
      .filter((l) => l.trim() && !/^Failed to send \d+ bytes to syslog/.test(l))
      .slice(-6)
      .join('; ');
  }

  /** "passt exited with status 1: No external routable interface for IPv4". */
  exitMessage(): string {
    const e = this.exitInfo;
    const how = !e ? 'is running' : e.signal ? `was killed by ${e.signal}` : `exited with status ${e.code}`;
    const tail = this.stderrTail();
    return `${this.name} (pid ${this.pid ?? '?'}) ${how}${tail ? `: ${tail}` : ''}`;
  }

  /** SIGTERM, then SIGKILL after a grace period; resolves once the process is gone. Idempotent. */
  stop(): Promise<void> {
    this.stopping = true;
    if (this.exited || this.child.pid === undefined) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.exitWaiters.push(resolve);
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), STOP_GRACE_MS);
      t.unref();
      this.exitWaiters.push(() => clearTimeout(t));
    });
  }

  /** Kill at once (for stop paths that cannot wait); the process is reaped in the background. */
  kill(): void {
    this.stopping = true;
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

/** Start a helper that dies with this process; throws a one-sentence NodevmmError when it cannot start. */
/** Whether each setpriv found knows --pdeathsig (util-linux's does, busybox's does not); asked once per path. */
const pdeathsigBySetpriv = new Map<string, boolean>();
function hasPdeathsig(setpriv: string, spawnSync: typeof import('node:child_process').spawnSync): boolean {
  let known = pdeathsigBySetpriv.get(setpriv);
  if (known === undefined) {
    const help = spawnSync(setpriv, ['--help'], { encoding: 'utf8', timeout: 2000 });
    known = /--pdeathsig/.test(`${help.stdout ?? ''}${help.stderr ?? ''}`);
    pdeathsigBySetpriv.set(setpriv, known);
  }
  return known;
}

export function spawnHelper(opts: SpawnHelperOptions): HelperProcess {
  const exe = findExecutable(opts.command);
  if (!exe) throw new NodevmmError('ERR_HELPER_MISSING', `${opts.name} is not installed: no ${opts.command} in PATH (${opts.installHint})`);
  const setpriv = findExecutable('setpriv');
  if (!setpriv) throw new NodevmmError('ERR_HELPER_MISSING', `setpriv is not installed: nodevmm starts ${opts.name} through it so that it dies with this process (apt-get install util-linux)`);
  // node:child_process loads when a helper starts, not with every VM (CLI start-up time, docs/benchmarks.md).
  const { spawn, spawnSync } = require('node:child_process') as typeof import('node:child_process');
  if (!hasPdeathsig(setpriv, spawnSync)) {
    throw new NodevmmError('ERR_HELPER_MISSING', `${setpriv} has no --pdeathsig (busybox's setpriv?): nodevmm starts ${opts.name} through util-linux's setpriv so that it dies with this process (apt-get install util-linux, and put its setpriv first in PATH)`);
  }
  const child = spawn(setpriv, ['--pdeathsig', 'KILL', '--', exe, ...opts.args], {
    stdio: ['ignore', 'ignore', 'pipe', ...(opts.extraStdio ?? [])],
  });
  if (child.pid !== undefined) {
    live.add(child);
    hookExit();
  }
  return new HelperProcess(opts.name, child);
}
