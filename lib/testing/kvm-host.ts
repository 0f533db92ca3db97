/**
 * Runs a shell command inside an emulated KVM host: QEMU TCG emulating an AMD
 * EPYC with SVM and NPT, booting Debian's kernel with real kvm_amd, so tests
 * get a /dev/kvm that runs unmodified Linux guests even where the local
 * /dev/kvm cannot (KVM-PVM). This machine's / is shared read-only over 9p and
 * becomes the command's root, so absolute paths (the checkout, node) work as
 * they do here. It does not isolate: the command sees all of /, read-only.
 * See docs/testing.md for the layers and for debugging a guest that hangs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import * as os from 'node:os';
import * as path from 'node:path';
import { NodevmmError } from '../errors';
import { buildInitramfs, INIT_PRELUDE } from '../initramfs/initramfs';
import { createHostWatchdog } from './host-watchdog';
import { DEFAULT_STALL_MS, watchForStall } from './qemu-stall';
import { ensureGuestArtifacts, guestCacheRoot, KVM_HOST_MODULES, type GuestArtifacts } from './artifacts';

/**
 * Error codes that mean the emulated host itself failed (its kernel died or wedged, QEMU froze or fell silent,
 * it never booted, it ended without the command's status), not the command: worth a fresh host.
 */
export const KVM_HOST_FAILURES: ReadonlySet<string> = new Set(['ERR_KVM_HOST_DEAD', 'ERR_KVM_HOST_STALLED', 'ERR_KVM_HOST_BOOT', 'ERR_KVM_HOST_NO_STATUS', 'ERR_KVM_HOST_SILENT']);

export interface KvmHostOptions {
  /** Hard limit for the whole run, boot included; QEMU is killed when it passes. */
  timeoutMs: number;
  /** Working directory of the command (an absolute path on this machine). */
  cwd: string;
  /** Extra environment for the command, on top of PATH, HOME, CI and NODEVMM_CACHE from here. */
  env?: Record<string, string>;
  memoryMiB?: number;
  /** CPUs of the emulated host (default DEFAULT_KVM_HOST_CPUS). */
  smp?: number;
  /**
   * QEMU's TCG threading: 'multi' (default, one host thread per vCPU) or 'single' (one thread
   * runs every vCPU in turn: slower, but rules out races in the emulator's multi-threaded mode).
   */
  tcgThread?: 'multi' | 'single';
  /**
   * A unix socket for QEMU's human monitor (`socat - UNIX-CONNECT:PATH`, then `info registers`):
   * where a wedged host's CPU is, when its console says nothing. Default: none.
   */
  monitorSocket?: string;
  /** Console text as it arrives (kernel messages and the command's output). */
  onConsole?: (text: string) => void;
  /** How long the host may take to reach its ready marker before the run is abandoned. */
  bootTimeoutMs?: number;
  /** Use these instead of calling ensureGuestArtifacts. */
  artifacts?: GuestArtifacts;
  /**
   * Give up on the host as soon as its console matches this (e.g. its kernel's soft-lockup or
   * panic lines): the run fails with ERR_KVM_HOST_ABORTED instead of waiting for the timeout.
   */
  abortOn?: RegExp;
  /** Bytes typed into the host's console (an interactive session); default: none. */
  input?: NodeJS.ReadableStream;
  /** Give up on a frozen host: QEMU used no CPU at all for this long (ms; default 90000, 0: never; see qemu-stall.ts). */
  stallMs?: number;
  /**
   * Give up on a host whose kernel panicked or is wedged (a soft lockup of a minute, a
   * repeated RCU stall; see host-watchdog.ts) with ERR_KVM_HOST_DEAD. Default true.
   */
  watchdog?: boolean;
  /**
   * Give up on a host whose console printed nothing for this long (ms; default: never) with
   * ERR_KVM_HOST_SILENT: a host wedged while QEMU still burns CPU, which neither the stall
   * watchdog (no CPU used) nor the console watchdog (a lockup report) can see. For callers
   * whose command prints regularly (the e2e tier: a TAP line per test, a kernel line per guest).
   */
  silenceMs?: number;
}

export interface KvmHostResult {
  exitCode: number;
  consoleLog: string;
  durationMs: number;
  /** Time from spawning QEMU to the host's ready marker. */
  bootMs: number;
}

/** Printed by the host's init once /dev/kvm is up and the host root is mounted (just before switch_root). */
export const KVM_HOST_READY_MARKER = 'NODEVMM-KVM-HOST-READY';
export const KVM_HOST_EXIT_MARKER = 'NODEVMM-KVM-HOST-EXIT=';
export const KVM_HOST_FAILED_MARKER = 'NODEVMM-KVM-HOST-FAILED:';

const QEMU = 'qemu-system-x86_64';
const NINEP_OPTS = 'trans=virtio,version=9p2000.L,msize=512000';
const CONSOLE_TAIL_LINES = 30;
const DEFAULT_BOOT_TIMEOUT_MS = 120_000;
/**
 * CPUs of the emulated host unless a caller says otherwise. With 2, the host's kernel wedged
 * under a guest with several vCPUs (soft lockups: a guest vCPU spinning for another that waits
 * for the same emulated CPU, which TCG's nested SVM never takes back on the host's timer):
 * `bench-boot.js linux --runs 3` wedged from ~90 s on and used its whole 1400 s, and run-tests'
 * 4-vCPU e2e test wedged twice out of two; with 4 both finished (the benchmark in 274 s,
 * 2026-12-06). Idle emulated CPUs cost little; all of them share this machine's cores.
 */
export const DEFAULT_KVM_HOST_CPUS = 4;
const TCG_FEATURE_WARNING = /warning: TCG doesn't support requested feature/;

/** The host's /init: modules, 9p root, pseudo filesystems, switch_root, status, power off. */
export const KVM_HOST_INIT = `${INIT_PRELUDE}
fail() { echo "${KVM_HOST_FAILED_MARKER} $*"; sync; poweroff -f; }
results=
artifacts=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    nodevmm.results=*) results="\${arg#nodevmm.results=}" ;;
    nodevmm.artifacts=*) artifacts="\${arg#nodevmm.artifacts=}" ;;
    nodevmm.project=*) project="\${arg#nodevmm.project=}" ;;
  esac
done
[ -n "$results" ] || fail "no nodevmm.results= on the kernel command line"
[ -c /dev/kvm ] || fail "/dev/kvm missing after loading kvm-amd (is SVM emulated?)"
mkdir -p /host
mount -t 9p -o ro,cache=loose,${NINEP_OPTS} host /host || fail "mounting the host root over 9p"
mount -t proc proc /host/proc || fail "mounting /proc"
mount -t sysfs sysfs /host/sys || fail "mounting /sys"
mount -t devtmpfs devtmpfs /host/dev || fail "mounting /dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "mounting /tmp"
mount -t tmpfs -o mode=755 tmpfs /host/run
# The results folder usually lives under /tmp, which is now an empty tmpfs: recreate the
# mount point so the folder has the same absolute path inside as outside.
mkdir -p "/host$results"
mount -t 9p -o ${NINEP_OPTS} results "/host$results" || fail "mounting the results share"
# The artifacts may also live under /tmp (NODEVMM_CACHE=/tmp/...): share them the same way.
if [ -n "$artifacts" ]; then
  mkdir -p "/host$artifacts"
  mount -t 9p -o ro,cache=loose,${NINEP_OPTS} artifacts "/host$artifacts" || fail "mounting the artifacts share"
fi
# The working directory may live under /tmp too (a CI checkout): share it read-only at its path.
if [ -n "$project" ]; then
  mkdir -p "/host$project"
  mount -t 9p -o ro,cache=loose,${NINEP_OPTS} project "/host$project" || fail "mounting the project share"
fi
# switch_root, not chroot: the kernel refuses user namespaces (passt's sandbox) and
# pivot_root (virtiofsd's) to a chrooted process. The host's root becomes the real
# root of this mount namespace, and PID 1 (still us) continues in it with a copy of
# our busybox on /run's tmpfs, since this initramfs is emptied and the host's own
# poweroff needs systemd. (Its name must start with "busybox": a busybox called by
# any other name takes that name for the applet to run.)
cp /bin/busybox /host/run/busybox-nodevmm || fail "copying busybox to /run"
echo "${KVM_HOST_READY_MARKER} $(cut -d' ' -f1 /proc/uptime)"
exec switch_root /host /run/busybox-nodevmm sh -c '
/bin/sh "$0/run.sh"
status=$?
echo "$status" > "$0/exit-status"
echo "${KVM_HOST_EXIT_MARKER}$status"
sync
umount "$0"
/run/busybox-nodevmm poweroff -f
' "$results"
fail "switch_root to the host root failed"
`;

/** Boots the emulated host, runs `command` with /bin/sh in `cwd`, and returns its exit status and the console. */
export async function runInKvmHost(command: string, options: KvmHostOptions): Promise<KvmHostResult> {
  if (!Number.isFinite(options.timeoutMs) || options.timeoutMs <= 0) {
    throw new NodevmmError('ERR_KVM_HOST_OPTIONS', `kvm-host: timeoutMs is ${options.timeoutMs}, expected a positive number`);
  }
  if (!path.isAbsolute(options.cwd)) {
    throw new NodevmmError('ERR_KVM_HOST_OPTIONS', `kvm-host: cwd ${JSON.stringify(options.cwd)} is not an absolute path`);
  }
  const artifacts = options.artifacts ?? (await ensureGuestArtifacts({ arch: 'x86_64' }));
  const results = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-kvm-host-'));
  try {
    const modules = KVM_HOST_MODULES.map((name) => ({ name, data: new Uint8Array(fs.readFileSync(path.join(artifacts.modulesDir, `${name}.ko`))) }));
    const busybox = new Uint8Array(fs.readFileSync(artifacts.busybox));
    const initrd = path.join(results, 'kvm-host-initramfs.cpio.gz');
    fs.writeFileSync(initrd, buildInitramfs({ busybox, modules, init: KVM_HOST_INIT }));
    fs.writeFileSync(path.join(results, 'run.sh'), runScript(command, options));
    const args = qemuArgs(artifacts.vmlinuz, initrd, results, artifacts.dir, { ...options, projectDir: options.cwd });
    return await runQemu(args, results, options);
  } finally {
    fs.rmSync(results, { recursive: true, force: true });
  }
}

/** The QEMU command line for the emulated host (exported for docs and debugging). */
export function qemuArgs(kernel: string, initrd: string, results: string, artifactsDir: string, options: Pick<KvmHostOptions, 'memoryMiB' | 'smp' | 'tcgThread' | 'monitorSocket'> & { projectDir?: string }): string[] {
  // Under /tmp (which the host's init replaces with a tmpfs) the working directory needs its own share.
  const project = options.projectDir && (options.projectDir === '/tmp' || options.projectDir.startsWith('/tmp/')) ? options.projectDir : undefined;
  const projectArgs = project ? ['-virtfs', `local,path=${project},mount_tag=project,security_model=none,readonly=on,multidevs=remap`] : [];
  return [
    '-M', 'q35', '-accel', `tcg,thread=${options.tcgThread ?? 'multi'}`, '-cpu', 'EPYC,+svm,+npt',
    '-m', `${options.memoryMiB ?? 4096}M`, '-smp', String(options.smp ?? DEFAULT_KVM_HOST_CPUS),
    '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot',
    '-kernel', kernel, '-initrd', initrd,
    '-append', `console=ttyS0 quiet panic=-1 mitigations=off transparent_hugepage=never nodevmm.results=${results} nodevmm.artifacts=${artifactsDir}${project ? ` nodevmm.project=${project}` : ''}`,
    '-virtfs', 'local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${results},mount_tag=results,security_model=none,multidevs=remap`,
    '-virtfs', `local,path=${artifactsDir},mount_tag=artifacts,security_model=none,readonly=on,multidevs=remap`,
    ...projectArgs,
    ...(options.monitorSocket ? ['-monitor', `unix:${options.monitorSocket},server=on,wait=off`] : []),
  ];
}

function runScript(command: string, options: KvmHostOptions): string {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin',
    HOME: process.env.HOME ?? '/root',
    NODEVMM_CACHE: guestCacheRoot(),
    NODEVMM_IN_KVM_HOST: '1',
    // npm and npx write logs and caches under $HOME, which is read-only in here.
    npm_config_cache: '/tmp/npm-cache',
    ...(process.env.CI ? { CI: process.env.CI } : {}),
    ...options.env,
  };
  const lines = ['cd ' + shellQuote(options.cwd) + ' || exit 125'];
  for (const [k, v] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) {
      throw new NodevmmError('ERR_KVM_HOST_OPTIONS', `kvm-host: environment name ${JSON.stringify(k)} is not a valid shell variable name`);
    }
    lines.push(`export ${k}=${shellQuote(v)}`);
  }
  lines.push(command, '');
  return lines.join('\n');
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** QEMU processes of hosts still running, so a signal to this process can take them down too. */
const liveHosts = new Set<ChildProcess>();
let signalsHooked = false;

/**
 * A SIGINT or SIGTERM to this process would leave the emulated host running
 * (QEMU is not in a terminal's process group when we are run by a test
 * runner): kill the hosts, then exit as the signal would have.
 */
function hookSignals(): void {
  if (signalsHooked) return;
  signalsHooked = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const c of liveHosts) c.kill('SIGKILL');
      process.kill(process.pid, sig);
    });
  }
}

function runQemu(args: string[], results: string, options: KvmHostOptions): Promise<KvmHostResult> {
  const started = Date.now();
  const bootTimeoutMs = Math.min(options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS, options.timeoutMs);
  return new Promise((resolve, reject) => {
    let log = '';
    let bootMs: number | undefined;
    let failure: NodevmmError | undefined;
    const child = spawn(QEMU, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    liveHosts.add(child);
    hookSignals();
    child.on('exit', () => liveHosts.delete(child));
    const elapsed = () => ((Date.now() - started) / 1000).toFixed(1);
    const stop = (code: string, why: string) => {
      failure ??= new NodevmmError(code, `kvm-host: ${why} after ${elapsed()} s; last ${CONSOLE_TAIL_LINES} console lines:\n${tail(log)}`);
      child.kill('SIGKILL');
    };
    const hardTimer = setTimeout(() => stop('ERR_KVM_HOST_TIMEOUT', `the run hit its ${options.timeoutMs} ms limit`), options.timeoutMs);
    // Before giving up, one newline on the host's serial console: in the one-CPU, single-thread
    // TCG host of many-vms, QEMU went to sleep with eight nested guests alive and never woke
    // (0 CPU for minutes, three attempts in a row on 2026-12-07), as if the host's next timer
    // interrupt were lost; a receive interrupt makes the host's kernel look at its timers again.
    let nudges = 0;
    const stopWatching = watchForStall(
      child.pid,
      options.stallMs ?? DEFAULT_STALL_MS,
      (idle) => stop('ERR_KVM_HOST_STALLED', `${QEMU} used no CPU for ${idle} s: the emulated host is frozen${nudges ? ' (a byte on its serial console did not wake it)' : ''}`),
      (idle) => {
        nudges++;
        process.stderr.write(`kvm-host: ${QEMU} used no CPU for ${idle} s: sending a newline to the host's serial console to wake it\n`);
        if (!child.stdin.destroyed) child.stdin.write('\n');
      },
    );
    const watchdog = options.watchdog === false ? undefined : createHostWatchdog();
    const silenceMs = options.silenceMs ?? 0;
    let silenceTimer: NodeJS.Timeout | undefined;
    const heard = () => {
      if (!silenceMs) return;
      clearTimeout(silenceTimer);
      silenceTimer = setTimeout(() => stop('ERR_KVM_HOST_SILENT', `the console printed nothing for ${silenceMs / 1000} s: the emulated host is wedged`), silenceMs);
    };
    heard();
    const bootTimer = setTimeout(() => {
      if (bootMs === undefined) stop('ERR_KVM_HOST_BOOT', `the host never printed ${KVM_HOST_READY_MARKER} within ${bootTimeoutMs} ms`);
    }, bootTimeoutMs);
    // Stateful: a character split across two chunks (ava's "›" in test titles) stays whole.
    const decoder = new StringDecoder('utf8');
    const onText = (chunk: Buffer) => {
      const text = decoder.write(chunk);
      heard();
      log += text;
      options.onConsole?.(text);
      if (bootMs === undefined && log.includes(KVM_HOST_READY_MARKER)) bootMs = Date.now() - started;
      // Only the new text (plus a line's worth before it, for a match split across chunks):
      // scanning the whole log per chunk is quadratic over an e2e session's megabytes.
      const fresh = log.slice(Math.max(0, log.length - text.length - 200));
      const failed = new RegExp(`${KVM_HOST_FAILED_MARKER} (.*)`).exec(fresh);
      if (failed && !failure) failure = new NodevmmError('ERR_KVM_HOST_INIT', `kvm-host: the host's init failed: ${failed[1]?.trim()} (after ${elapsed()} s); last ${CONSOLE_TAIL_LINES} console lines:\n${tail(log)}`);
      const abort = options.abortOn?.exec(fresh);
      if (abort && !failure) stop('ERR_KVM_HOST_ABORTED', `the host's console showed "${abort[0]}"`);
      const dead = watchdog?.feed(text);
      if (dead && !failure) stop('ERR_KVM_HOST_DEAD', `gave up: ${dead}`);
    };
    child.stdout.on('data', onText);
    if (options.input) {
      const input = options.input;
      const forward = (d: Buffer) => child.stdin.write(d);
      input.on('data', forward);
      child.on('close', () => input.off('data', forward));
      child.stdin.on('error', () => undefined);
    }
    // TCG lists every EPYC feature it cannot emulate on stderr; they are expected and harmless.
    child.stderr.on('data', (chunk: Buffer) => {
      const kept = chunk.toString('utf8').split('\n').filter((l) => !TCG_FEATURE_WARNING.test(l)).join('\n');
      if (kept.trim()) onText(Buffer.from(kept));
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(hardTimer);
      clearTimeout(bootTimer);
      clearTimeout(silenceTimer);
      stopWatching();
      reject(
        err.code === 'ENOENT'
          ? new NodevmmError('ERR_KVM_HOST_QEMU_MISSING', `kvm-host: ${QEMU} is not installed (apt-get install qemu-system-x86)`, { cause: err })
          : new NodevmmError('ERR_KVM_HOST_SPAWN', `kvm-host: starting ${QEMU} failed: ${err.message}`, { cause: err }),
      );
    });
    child.on('close', (qemuStatus) => {
      clearTimeout(hardTimer);
      clearTimeout(bootTimer);
      clearTimeout(silenceTimer);
      stopWatching();
      if (failure) return reject(failure);
      const durationMs = Date.now() - started;
      let status: number | undefined;
      try {
        status = Number(fs.readFileSync(path.join(results, 'exit-status'), 'utf8').trim());
      } catch {
        const m = new RegExp(`${KVM_HOST_EXIT_MARKER}(\\d+)`).exec(log);
        if (m?.[1]) status = Number(m[1]);
      }
      if (status === undefined || !Number.isInteger(status)) {
        return reject(new NodevmmError('ERR_KVM_HOST_NO_STATUS', `kvm-host: ${QEMU} exited with status ${qemuStatus} after ${elapsed()} s without reporting the command's exit status; last ${CONSOLE_TAIL_LINES} console lines:\n${tail(log)}`));
      }
      resolve({ exitCode: status, consoleLog: log, durationMs, bootMs: bootMs ?? durationMs });
    });
  });
}

function tail(log: string): string {
  return log.replace(/\r/g, '').trimEnd().split('\n').slice(-CONSOLE_TAIL_LINES).join('\n');
}
