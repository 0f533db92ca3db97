/**
 * A host directory shared into the guest over virtio-fs: nodevmm starts one
 * virtiofsd per share (QEMU's C daemon from qemu-system-common, or the Rust
 * one from the virtiofsd package, whichever is found first), waits for its
 * vhost-user socket, connects, and negotiates. The VM owns the share across
 * guest reboots (virtiofsd serves one connection for its life) and closes
 * it at stop: our end of the socket closes, virtiofsd exits on the hang-up,
 * and helper-process.ts's layers make sure it never outlives Node.
 *
 * Read-only shares: virtiofsd runs in a mount namespace of its own in which
 * the directory is bind-mounted read-only (unshare -m), so writes fail with
 * EROFS in the host kernel, whatever the daemon's version offers. Without
 * root, the same namespace comes with a user namespace (unshare -r) so that
 * virtiofsd may sandbox itself; files it creates then belong to this user.
 *
 * Failures are one sentence each: no virtiofsd, a directory that is not
 * there, a daemon that exits or never makes its socket (SOCKET_WAIT_MS), a
 * request it does not answer (REQUEST_TIMEOUT_MS). After any failure the
 * connection is broken for good: every later request fails at once, so
 * stopping a VM whose daemon hangs never waits more than one timeout.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NodevmmError } from '../errors';
import { FdSocket } from '../hv/unix-socket';
import { findExecutable, spawnHelper, type HelperProcess } from '../util/helper-process';
import { VhostUserError, VhostUserFrontend, type VhostUserTransport } from '../devices/virtio/vhost-user';

/** How long virtiofsd may take to create its socket. */
export const SOCKET_WAIT_MS = 10_000;
/** How long one vhost-user request may wait for room or for its reply (it blocks this thread meanwhile). */
export const REQUEST_TIMEOUT_MS = 5_000;
/** Where distributions put virtiofsd outside PATH, newest kind first. */
export const VIRTIOFSD_PATHS = ['/usr/libexec/virtiofsd', '/usr/lib/virtiofsd', '/usr/lib/qemu/virtiofsd'];

export interface ShareSpec {
  /** The host directory. */
  path: string;
  tag: string;
  readOnly: boolean;
}

export interface OpenShareOptions {
  /** The virtiofsd executable; default: `virtiofsd` in PATH, else VIRTIOFSD_PATHS. */
  command?: string;
  /** Extra virtiofsd arguments, appended. */
  extraArgs?: readonly string[];
  socketWaitMs?: number;
}

/** The virtiofsd to use, or undefined. */
export function findVirtiofsd(command?: string): string | undefined {
  if (command) return findExecutable(command);
  return findExecutable('virtiofsd') ?? VIRTIOFSD_PATHS.map((p) => findExecutable(p)).find((p) => p !== undefined);
}

const flavours = new Map<string, 'rust' | 'qemu'>();
/** The Rust daemon takes --shared-dir; QEMU's C daemon takes -o source=. Asked once per executable. */
function flavourOf(exe: string): 'rust' | 'qemu' {
  let f = flavours.get(exe);
  if (!f) {
    const help = spawnSync(exe, ['--help'], { encoding: 'utf8', timeout: 2000 });
    f = /--shared-dir/.test(`${help.stdout}${help.stderr}`) ? 'rust' : 'qemu';
    flavours.set(exe, f);
  }
  return f;
}

/** virtiofsd's own arguments for a share served on `socket`. */
export function virtiofsdArgs(flavour: 'rust' | 'qemu', dir: string, socket: string): string[] {
  return flavour === 'rust'
    ? ['--socket-path', socket, '--shared-dir', dir, '--cache', 'auto', '--sandbox', 'namespace', '--log-level', 'warn']
    : [`--socket-path=${socket}`, '-o', `source=${dir}`, '-o', 'cache=auto', '-o', 'sandbox=namespace', '-o', 'log_level=warn'];
}

/**
 * Bind the directory ($0) over itself, then make that bind read-only with a
 * remount of its own: the kernel ignores MS_RDONLY on the bind itself, and
 * only util-linux's mount adds the remount for `--bind -o ro`; busybox's
 * (the emulated arm64 host's, Alpine's) left the share writable. A failed
 * step stops the chain: no daemon, a share that does not open.
 */
export const READ_ONLY_BIND_SCRIPT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"';

/**
 * The command line that starts virtiofsd for `spec`: the daemon itself, or
 * through `unshare` and a shell that bind-mounts the directory read-only
 * first (read-only shares; any share without root).
 */
export function virtiofsdCommand(exe: string, flavour: 'rust' | 'qemu', spec: ShareSpec, socket: string, isRoot: boolean): { command: string; args: string[] } {
  const daemon = [...virtiofsdArgs(flavour, spec.path, socket)];
  if (!spec.readOnly && isRoot) return { command: exe, args: daemon };
  // $0 is the directory, "$@" the daemon's command line; the bind mount lives only in this namespace.
  const script = spec.readOnly ? READ_ONLY_BIND_SCRIPT : 'exec "$@"';
  return { command: 'unshare', args: [...(isRoot ? [] : ['--map-root-user']), '--mount', '--', '/bin/sh', '-c', script, spec.path, exe, ...daemon] };
}

/** A share's daemon and its vhost-user connection. */
export class VirtiofsShare {
  readonly spec: ShareSpec;
  readonly frontend: VhostUserFrontend;
  /** Where virtiofsd's socket was (it and its directory are removed once connected). */
  socketPath = '';
  /** Why the share stopped working, once it did. */
  lastError: string | undefined;
  /** Called once when the daemon exits or the connection breaks while the share is open. */
  onFailure: ((message: string) => void) | undefined;
  private closed = false;
  private reported = false;
  private reportTimer: NodeJS.Timeout | undefined;

  private constructor(
    spec: ShareSpec,
    readonly helper: HelperProcess,
    private readonly socket: FdSocket,
  ) {
    this.spec = spec;
    const transport: VhostUserTransport = {
      send: (bytes, fds) => this.io(() => this.socket.send(bytes, fds, REQUEST_TIMEOUT_MS)),
      receive: (length) => this.io(() => this.socket.receive(length, REQUEST_TIMEOUT_MS)),
      closeFd: (fd) => this.socket.closeFd(fd),
    };
    this.frontend = new VhostUserFrontend(transport);
    helper.onUnexpectedExit = (message) => this.fail(message);
  }

  /** Start virtiofsd for `spec`, wait for its socket, connect and negotiate. One-sentence NodevmmError on failure. */
  static async open(spec: ShareSpec, opts: OpenShareOptions = {}): Promise<VirtiofsShare> {
    const what = `share ${JSON.stringify(spec.tag)} (${spec.path})`;
    let st: fs.Stats;
    try {
      st = fs.statSync(spec.path);
    } catch (e) {
      throw new NodevmmError('ERR_SHARE', `${what}: the directory ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read (${(e as Error).message})`}`, { cause: e });
    }
    if (!st.isDirectory()) throw new NodevmmError('ERR_SHARE', `${what}: ${spec.path} is not a directory`);
    const exe = findVirtiofsd(opts.command);
    if (!exe) throw new NodevmmError('ERR_HELPER_MISSING', `${what}: virtiofsd is not installed: none in PATH or ${VIRTIOFSD_PATHS.join(', ')} (apt-get install virtiofsd, or qemu-system-common for QEMU's)`);
    const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-virtiofs-'));
    const socketPath = path.join(socketDir, 'vhost-user.sock');
    let helper: HelperProcess | undefined;
    let socket: FdSocket | undefined;
    try {
      const isRoot = process.getuid?.() === 0;
      const { command, args } = virtiofsdCommand(exe, flavourOf(exe), { ...spec, path: path.resolve(spec.path) }, socketPath, isRoot);
      helper = spawnHelper({ name: 'virtiofsd', command, args: [...args, ...(opts.extraArgs ?? [])], installHint: 'apt-get install virtiofsd' });
      socket = await waitForSocket(socketPath, helper, opts.socketWaitMs ?? SOCKET_WAIT_MS);
      // virtiofsd serves this one connection for its life: the path is no longer needed, and
      // removing it now leaves nothing behind however this process ends.
      fs.rmSync(socketDir, { recursive: true, force: true });
      const share = new VirtiofsShare(spec, helper, socket);
      share.socketPath = socketPath;
      try {
        share.frontend.open();
      } catch (e) {
        throw new Error(`the vhost-user handshake with virtiofsd failed: ${(e as Error).message}`, { cause: e });
      }
      socket.watchHangup((why) => share.fail(`the vhost-user connection to virtiofsd (pid ${helper!.pid ?? '?'}) broke: ${why}`));
      return share;
    } catch (e) {
      socket?.close();
      helper?.kill();
      fs.rmSync(socketDir, { recursive: true, force: true });
      const code = (e as { code?: string }).code === 'ERR_HELPER_MISSING' ? 'ERR_HELPER_MISSING' : 'ERR_SHARE';
      throw new NodevmmError(code, `${what}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Run a socket operation; the first failure breaks the connection for good. */
  private io<T>(f: () => T): T {
    if (this.lastError !== undefined) throw new VhostUserError(`virtiofsd for ${JSON.stringify(this.spec.tag)} is unusable: ${this.lastError}`);
    if (this.closed) throw new VhostUserError(`the share ${JSON.stringify(this.spec.tag)} is closed`);
    try {
      return f();
    } catch (e) {
      const code = (e as { code?: string }).code;
      const why = code === 'ETIMEDOUT' ? `virtiofsd did not answer within ${REQUEST_TIMEOUT_MS} ms` : (e as Error).message;
      this.fail(why);
      throw new VhostUserError(`virtiofsd for ${JSON.stringify(this.spec.tag)}: ${why}`, { cause: e });
    }
  }

  /**
   * The first failure breaks the connection at once; the report waits a
   * moment when the daemon has not exited yet, since a broken connection
   * usually comes just before the exit, whose status and stderr say more.
   */
  private fail(message: string): void {
    if (this.closed || this.reported) return;
    this.lastError ??= message;
    if (this.helper.exited) return this.report();
    this.reportTimer ??= setTimeout(() => this.report(), 200);
  }

  private report(): void {
    if (this.closed || this.reported) return;
    this.reported = true;
    clearTimeout(this.reportTimer);
    if (this.helper.exited) this.lastError = this.helper.exitMessage();
    this.onFailure?.(this.lastError!);
  }

  /** Close our end (virtiofsd exits on the hang-up) and stop virtiofsd; a second call does nothing. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      clearTimeout(this.reportTimer);
      this.socket.close();
    }
    return this.helper.stop();
  }
}

/** Poll for the socket until it accepts, the daemon exits, or `ms` pass. */
async function waitForSocket(socketPath: string, helper: HelperProcess, ms: number): Promise<FdSocket> {
  const deadline = Date.now() + ms;
  let lastError = '';
  for (;;) {
    if (helper.exited) throw new Error(`${helper.exitMessage()} before it created its socket`);
    if (fs.existsSync(socketPath)) {
      try {
        return FdSocket.connect(socketPath);
      } catch (e) {
        // ECONNREFUSED: the file exists a moment before the daemon listens on it.
        lastError = (e as Error).message;
      }
    }
    if (Date.now() >= deadline) {
      throw new Error(`virtiofsd (pid ${helper.pid ?? '?'}) did not create its socket ${socketPath} within ${ms} ms${lastError ? ` (${lastError})` : ''}${helper.stderrTail() ? `: ${helper.stderrTail()}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}
