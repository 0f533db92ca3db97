/**
 * `withVm(t, options, fn)`: a VM per test, for ava and node:test, on x86_64
 * and arm64 hosts alike. Boots a guest (by default Debian's kernel and our
 * test initramfs from the artifact cache, with a shell agent for exec on
 * the virtio console, hvc0), waits for the guest's marker,
 * runs `fn`, and always tears the VM down. When the test fails or times
 * out, the serial logs are attached to the test output.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NodevmmError } from '../errors';
import { buildTestInitramfs } from '../initramfs/initramfs';
import { agentTty, hostArch, type AgentPort, type Arch, type VmConfig } from '../vm/config';
import { createVm, restoreVm, type Vm } from '../vm/vm';
import { ensureGuestArtifacts } from './artifacts';

/** The parts of ava's ExecutionContext and node:test's TestContext we use. */
export interface TestContextLike {
  log?: (...values: unknown[]) => void;
  diagnostic?: (message: string) => void;
  teardown?: (fn: () => void | Promise<void>) => void;
  after?: (fn: () => void | Promise<void>) => void;
  timeout?: (ms: number) => void;
}

export interface WithVmOptions extends VmConfig {
  /** Wait for this on COM1 before running fn (default GUEST-INIT-OK; false: don't wait). */
  waitFor?: RegExp | string | false;
  /** Whole-test deadline in ms (boot + fn), default 120000. */
  timeoutMs?: number;
  /** Boot time budget for waitFor, default 60000. */
  bootTimeoutMs?: number;
  /**
   * Start an exec agent (a shell) in the default test initramfs: on the
   * virtio console (hvc0, added to the config) unless the config sets
   * `virtioConsole` itself, then on COM2 (ttyS1; ttyAMA1 on arm64); or on
   * the port named here. exec() finds it. Default true. Over hvc0 a
   * command travels as one buffer, not a byte per exit: an exec round trip
   * in the emulated KVM host went from ~0.4-0.6 s to ~0.1 s.
   */
  agent?: boolean | AgentPort;
  /**
   * Boot once per process and start every test from a snapshot (x86_64):
   * the first withVm with this name boots the guest, waits for `waitFor`,
   * runs `snapshotWarmUp` through exec if given, snapshots and kills it;
   * each withVm with the name (the first too) gets a VM restored from
   * that snapshot, its disks on private temporary overlays. The options of
   * the first call make the snapshot; its disks must be images that boot
   * may write (the clones never do). The folder goes at process exit.
   */
  snapshot?: string;
  /** With `snapshot`: a command run before the snapshot is taken, e.g. to warm caches. */
  snapshotWarmUp?: string;
}

/** Snapshot folders of withVm({ snapshot }) by name, made once per process. */
const readySnapshots = new Map<string, Promise<string>>();

/** Boot `cfg`, wait for `waitFor`, run the warm-up, snapshot into a temporary folder; the folder. */
async function bootAndSnapshot(cfg: VmConfig, waitFor: RegExp | string | false, bootTimeoutMs: number, warmUp: string | undefined): Promise<string> {
  const vm = await createVm(cfg);
  try {
    await vm.start();
    if (waitFor !== false) await vm.serial(1).expect(waitFor, { timeoutMs: bootTimeoutMs });
    if (warmUp !== undefined) await vm.exec(warmUp, { timeoutMs: bootTimeoutMs });
    await vm.pause();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-withvm-'));
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    await vm.snapshot(path.join(dir, 'snap'));
    return path.join(dir, 'snap');
  } finally {
    await vm.kill();
  }
}

/**
 * Kernel command line flag: the test init starts a shell for exec() on
 * `port` (default com2; `hvc0`, the virtio console, needs `virtioConsole:
 * true`); `arch` names the guest's tty for it. exec() finds the port here.
 */
export function agentCmdline(arch: Arch = hostArch(), port: AgentPort = 'com2'): string {
  return `nodevmm.agent=${agentTty(arch, port)}`;
}

/** agentCmdline() of this host: `nodevmm.agent=ttyS1` on x86_64, `nodevmm.agent=ttyAMA1` on arm64. */
export const AGENT_CMDLINE = agentCmdline();

/** The arm64 test initramfs, built once per process from the cached busybox and modules. */
let arm64Initramfs: Uint8Array | undefined;

/** The default guest: Debian's kernel and the test initramfs of this host's architecture. */
async function defaultGuest(arch: Arch): Promise<{ kernel: string; initrd: string | Uint8Array }> {
  if (arch === 'x86_64') {
    const a = await ensureGuestArtifacts({ arch: 'x86_64' });
    return { kernel: a.vmlinuz, initrd: a.testInitramfs };
  }
  // Loaded here: an x86 test never needs the arm64 host's module.
  const { arm64GuestModules, findArm64Artifacts } = require('./arm64-kvm-host') as typeof import('./arm64-kvm-host');
  const a = findArm64Artifacts();
  if (!a) throw new NodevmmError('ERR_ARTIFACTS_ARCH', 'withVm: no arm64 guest artifacts in the cache (node scripts/arm64-kvm-host.js fetches them; NODEVMM_CACHE names the cache), or pass kernel and initrd');
  arm64Initramfs ??= buildTestInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)), modules: arm64GuestModules(a) });
  return { kernel: a.image, initrd: arm64Initramfs };
}

function report(t: TestContextLike, text: string): void {
  if (t.log) t.log(text);
  else if (t.diagnostic) for (const line of text.split('\n')) t.diagnostic(line);
  else process.stderr.write(text + '\n');
}

/**
 * A teardown that kills `vm` if it still runs, once. The test framework holds
 * it until the test ends, which may be long after the VM is done (several
 * withVm calls in one test), so it lets go of the VM when it has run. It is
 * made here, not inside withVm: closures made in one function share that
 * function's variables, so a teardown made there would keep the VM alive
 * through the others' references to it.
 */
function killOnce(vm: Vm): () => Promise<void> {
  let live: Vm | undefined = vm;
  return async () => {
    const v = live;
    live = undefined;
    if (v && v.state !== 'stopped') await v.kill();
  };
}

export async function withVm<T>(t: TestContextLike, options: WithVmOptions, fn: (vm: Vm) => Promise<T>): Promise<T> {
  const { waitFor = /GUEST-INIT-OK/, timeoutMs = 120_000, bootTimeoutMs = 60_000, agent = true, snapshot, snapshotWarmUp, ...config } = options;
  const cfg: VmConfig = { memory: '256M', ...config };
  if (cfg.kernel === undefined && cfg.igvm === undefined) {
    const arch = cfg.arch ?? hostArch();
    const g = await defaultGuest(arch);
    cfg.kernel = g.kernel;
    cfg.initrd ??= g.initrd;
    // The guest must stay up after its init: x86 starts the console shell (nodevmm.shell=1); on
    // arm64 that shell's cttyhack was seen taking ttyAMA1, the agent's port, so the init waits instead.
    const stayUp = arch === 'aarch64' ? `nodevmm.cmd=${Buffer.from('while :; do sleep 3600; done').toString('base64')}` : 'nodevmm.shell=1';
    if (agent) {
      const port: AgentPort = agent === true ? (cfg.virtioConsole === undefined ? 'hvc0' : 'com2') : agent;
      if (port === 'hvc0') cfg.virtioConsole = true;
      cfg.cmdline = [cfg.cmdline, agentCmdline(arch, port), stayUp].filter(Boolean).join(' ');
    }
  }
  t.timeout?.(timeoutMs + 10_000);
  let vm: Vm;
  if (snapshot !== undefined) {
    let ready = readySnapshots.get(snapshot);
    if (!ready) {
      ready = bootAndSnapshot(cfg, waitFor, bootTimeoutMs, snapshotWarmUp);
      readySnapshots.set(snapshot, ready);
      // A failed boot is this test's failure; the next test tries again.
      ready.catch(() => readySnapshots.delete(snapshot));
    }
    vm = await restoreVm(await ready, { disks: (cfg.disks ?? []).map(() => ({ overlay: 'temp' as const })) });
  } else {
    vm = await createVm(cfg);
  }
  const teardown = killOnce(vm);
  (t.teardown ?? t.after)?.call(t, teardown);
  let timer: NodeJS.Timeout | undefined;
  try {
    const body = (async () => {
      // A restored VM runs already, past its marker.
      if (vm.state === 'created') {
        await vm.start();
        if (waitFor !== false) await vm.serial(1).expect(waitFor, { timeoutMs: bootTimeoutMs });
      }
      return fn(vm);
    })();
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new NodevmmError('ERR_TEST_TIMEOUT', `withVm: the test did not finish within ${timeoutMs} ms`)), timeoutMs);
    });
    return await Promise.race([body, deadline]);
  } catch (e) {
    // Where the guest was (vCPU, LAPIC, UART state) before it is killed: a console may say nothing.
    if (vm.state === 'running' || vm.state === 'paused') report(t, `NODEVMM-DIAGNOSIS ${await vm.diagnose().catch((d: Error) => `diagnose failed: ${d.message}`)}`);
    for (const n of ['com1', 'com2', 'hvc0'] as const) {
      try {
        const log = (n === 'hvc0' ? vm.virtioConsole() : vm.serial(n)).log();
        if (log) report(t, `--- ${n === 'hvc0' ? 'virtio console hvc0' : `serial ${n}`} (${log.length} bytes, last 8 KiB) ---\n${log.slice(-8192)}`);
      } catch {
        // port not configured
      }
    }
    throw e;
  } finally {
    if (timer) clearTimeout(timer);
    await teardown();
  }
}
