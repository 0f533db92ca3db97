/**
 * The nodevmm command line: `run`, `commit`, `igvm build|inspect`, `--help`,
 * `--version`. Errors are one line `nodevmm: <sentence>` with exit status 2
 * for usage/configuration/input problems and 1 for runtime failures; stack
 * traces only with --verbose. The exit status of `run` says how the guest
 * stopped (lib/vm/lifecycle.ts EXIT_CODES).
 */
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { ConfigError, FormatError, HypervisorUnavailableError, KvmError, NodevmmError } from '../errors';
import { openHypervisor } from '../hv/hypervisor';
import type { ComPort } from '../vm/config';
import { EXIT_CODES } from '../vm/lifecycle';
import { createVm, restoreVm, type Vm } from '../vm/vm';
import { parseSize, resolveVmConfig, type VmConfig } from '../vm/config';
import { parseRunArgs, RUN_USAGE, SIGNAL_EXIT_CODES, type RunArgs, type SerialBinding } from './args';
import { checkGuestMemoryFits, hostBackableBytes } from './host-memory';
import { attachConsole } from './console';
import { readInputFile } from '../util/file-errors';
import { elfKernelFile } from '../vm/image-files';

const USAGE = `nodevmm: a virtual machine monitor for Node.js

usage: nodevmm run --kernel PATH [--initrd PATH] [--cmdline STR] [-m 1G] [-p 1] ...
       nodevmm commit OVERLAY [--base BASE]
       nodevmm igvm inspect FILE [--json]
       nodevmm igvm build --kernel K [--initrd I] [--cmdline C] -o OUT
       nodevmm --version

commands:
  run     boot a Linux kernel (Linux Direct) or an IGVM image   (nodevmm run --help)
  commit  write a kept disk overlay (--disk BASE,overlay=OVERLAY) back into its base
          and empty it; --base names the base if it moved since the overlay was made
  igvm    inspect or build IGVM images

environment: needs /dev/kvm (read/write) on Linux x86_64 or arm64, or Windows Hypervisor
Platform on Windows x64 (docs/windows.md).`;

/** `nodevmm commit OVERLAY [--base BASE]`: lib/vm/kept-overlay.ts's commitOverlay, one line of result. */
function commit(args: readonly string[]): number {
  let overlay: string | undefined;
  let base: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--base') {
      base = args[++i];
      if (base === undefined) throw new ConfigError([{ path: '--base', message: 'needs the path of the base image' }]);
    } else if (a.startsWith('-') || overlay !== undefined) {
      throw new ConfigError([{ path: a, message: 'is not an argument of nodevmm commit OVERLAY [--base BASE]' }]);
    } else overlay = a;
  }
  if (overlay === undefined) throw new ConfigError([{ path: 'commit', message: 'needs the overlay file: nodevmm commit OVERLAY [--base BASE]' }]);
  const { commitOverlay } = require('../vm/kept-overlay') as typeof import('../vm/kept-overlay');
  const r = commitOverlay(overlay, base !== undefined ? { basePath: base } : {});
  process.stdout.write(`nodevmm: committed ${r.clusters} cluster${r.clusters === 1 ? '' : 's'} (${r.bytes} bytes) of ${overlay} into ${r.basePath}${r.resumed ? ', finishing an interrupted commit' : ''}; the overlay is empty\n`);
  return 0;
}

/** Errors caused by what the user gave us: exit 2. */
function isUsageError(e: unknown): boolean {
  if (e instanceof ConfigError || e instanceof FormatError || e instanceof HypervisorUnavailableError) return true;
  if (e instanceof NodevmmError) {
    // ERR_SNAPSHOT: a snapshot folder that is damaged, of another version or for another cpu is bad input too.
    return /^ERR_(FILE|DISK|CONFIG|KERNEL|BZIMAGE|ELF|INITRD|CMDLINE|IGVM|GUEST_MEMORY_LAYOUT|INVALID_ARG|SNAPSHOT$)/.test(e.code);
  }
  return false;
}

function kvmUnavailable(e: unknown): boolean {
  return e instanceof KvmError && e.syscall === 'open';
}

export async function main(argv: readonly string[]): Promise<number> {
  const verbose = argv.includes('--verbose');
  try {
    const [cmd, ...rest] = argv;
    if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
      process.stdout.write(USAGE + '\n');
      return cmd === undefined ? 2 : 0;
    }
    if (cmd === '--version' || cmd === '-v') {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      process.stdout.write(`nodevmm ${(require('../../../package.json') as { version: string }).version}\n`);
      return 0;
    }
    if (cmd === 'igvm') {
      // Loaded on demand: `run` should not pay for the IGVM modules at start-up.
      const { runIgvmCommand } = require('./igvm') as typeof import('./igvm');
      return runIgvmCommand(rest.filter((a) => a !== '--verbose'), {
        readFile: (p) => readInputFile('input', p),
        writeFile: (p, d) => fs.writeFileSync(p, d),
        stdout: (t) => process.stdout.write(t),
      });
    }
    if (cmd === 'run') return await run(rest);
    if (cmd === 'commit') return commit(rest.filter((a) => a !== '--verbose'));
    throw new ConfigError([{ path: cmd, message: 'is not a nodevmm command (run, commit, igvm; see nodevmm --help)' }]);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`nodevmm: ${msg}\n`);
    if (verbose && e instanceof Error && e.stack) process.stderr.write(e.stack + '\n');
    return isUsageError(e) || kvmUnavailable(e) ? 2 : 1;
  }
}


async function run(argv: readonly string[]): Promise<number> {
  const args = parseRunArgs(argv);
  if (args.help) {
    process.stdout.write(RUN_USAGE + '\n');
    return 0;
  }
  const memoryBytes = args.config.memory !== undefined ? parseSize(args.config.memory) : undefined;
  if (args.memoryArg && memoryBytes !== undefined) checkGuestMemoryFits(args.memoryArg.flag, args.memoryArg.value, memoryBytes, hostBackableBytes(), args.overcommit);
  try {
    return await runVm(args);
  } catch (e) {
    // The host refused the guest RAM mapping itself (address space, overcommit
    // policy): say which flag asked for it.
    if (e instanceof NodevmmError && (e as { errno?: unknown }).errno === 12 && /guest ram/.test(e.message)) {
      const m = args.memoryArg ?? { flag: '--memory', value: '1G' };
      throw new ConfigError([{ path: m.flag, message: `${m.value} of guest RAM could not be mapped on this host (${e.message}); use a smaller size` }]);
    }
    throw e;
  }
}

const SIGNAL_EXIT = SIGNAL_EXIT_CODES;

async function runVm(args: RunArgs): Promise<number> {
  // --trace: milestones in ms since the process started (performance.now()'s origin).
  const marks: Array<[string, number]> = [['cli', performance.now()]];
  const hv = openHypervisor();
  const probe = hv.probe();
  if (!probe.ok) throw new HypervisorUnavailableError(hv.name === 'whp' ? 'ERR_NO_WHP' : 'ERR_NO_KVM', probe.message);
  let vm: Vm;
  if (args.restore !== undefined) {
    const disks = args.config.disks?.map((d) => (d.overlay ? { path: d.path, overlay: d.overlay } : { path: d.path }));
    vm = await restoreVm(args.restore, disks ? { disks } : {});
  } else {
    // An IGVM image boots through createVm's own IGVM loader, with the plan it made while checking the file.
    const { config, paths } = readBootImages(args.config);
    marks.push(['images read', performance.now()]);
    vm = await createVm(config);
    Object.assign(vm.paths, paths);
  }
  const cleanups: Array<() => void> = [];
  const quit = () => void vm.kill();
  const onSnapshot = args.snapshotDir === undefined ? undefined : () => void snapshotRunning(vm, args.snapshotDir!);
  // Console input starts once the vCPUs run and the event loop has turned once (the guest's first
  // exits, and its first output, come in that turn): see ConsoleOptions.inputWhen.
  let vcpusRunning!: () => void;
  const inputWhen = new Promise<void>((r) => (vcpusRunning = r));
  for (const [name, binding] of Object.entries(args.serial) as [ComPort, SerialBinding][]) {
    if (binding.kind === 'none' || binding.kind === 'null') continue;
    cleanups.push(await bindSerial(vm, name, binding, quit, inputWhen, onSnapshot));
  }
  if (args.config.virtioConsole && args.serial.com1.kind === 'none') {
    const h = attachConsole(vm.virtioConsole(), { interactive: true, onQuit: quit, inputWhen, ...(onSnapshot ? { onSnapshot } : {}) });
    cleanups.push(() => h.detach());
  }
  let signalled: keyof typeof SIGNAL_EXIT | undefined;
  const onSigint = () => {
    signalled ??= 'SIGINT';
    quit();
  };
  const onSigterm = () => {
    signalled ??= 'SIGTERM';
    quit();
  };
  process.once('SIGINT', onSigint);
  process.once('SIGTERM', onSigterm);
  try {
    marks.push(['vm built', performance.now()]);
    if (vm.state === 'created') await vm.start();
    marks.push(['vcpus running', performance.now()]);
    setTimeout(vcpusRunning, 0);
    if (args.trace) {
      process.stderr.write(`nodevmm: since process start: ${marks.map(([n, ms]) => `${n} ${ms.toFixed(0)}ms`).join(', ')}\n`);
      process.stderr.write(`nodevmm: build phases ${vm.timings.map(([n, ms]) => `${n} ${ms.toFixed(1)}ms`).join(', ')}\n`);
    }
    let exitsByDevice: ReturnType<Vm['jsExitsByDevice']> = [];
    let exitStats: ReturnType<Vm['exitStats']>;
    // Read as the VM starts stopping, while its machine (and counters) still exist.
    if (args.trace) vm.on('state', (s) => s === 'stopping' && ((exitsByDevice = vm.jsExitsByDevice()), (exitStats = vm.exitStats())));
    const stop = await vm.waitForStop();
    if (args.trace) {
      const top = exitsByDevice.slice(0, 8).map((d) => `${d.name}@0x${d.start.toString(16)} ${d.accesses}`);
      process.stderr.write(`nodevmm: exits answered in JS, by device: ${top.join(', ') || 'none'}\n`);
      const st = exitStats;
      const cpu = process.cpuUsage();
      if (st) {
        process.stderr.write(
          `nodevmm: exits to JS ${st.exitsToJs}, native ${st.exitsNative}, posted ${st.exitsPosted}; JS dispatches ${st.notifications} (posted-write drains ${st.postedDrains}, rescues ${st.rescues}); process CPU user ${(cpu.user / 1000).toFixed(0)}ms system ${(cpu.system / 1000).toFixed(0)}ms${jsThreadCpu()}\n`,
        );
      }
    }
    // Let batched console output reach the terminal before we exit.
    await new Promise((r) => setImmediate(r));
    if (stop.reason === 'killed' && signalled) return SIGNAL_EXIT[signalled];
    if (stop.reason !== 'poweroff' && stop.reason !== 'killed') process.stderr.write(`nodevmm: vm stopped: ${stop.reason}: ${stop.message}\n`);
    return EXIT_CODES[stop.reason];
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    for (const c of cleanups) c();
  }
}

/**
 * The kernel and initrd read here, synchronously, rather than by createVm:
 * the CLI has nothing else to do meanwhile, and createVm's asynchronous read
 * (open, stat, read, stat, close on the thread pool, which starts with it)
 * took 2-12 ms of start-up on a busy 2-core host against 0.3 ms
 * (docs/benchmarks.md). The config is checked first, so errors come in the
 * same order as from createVm, and with the same sentences (fileError). An
 * empty file is left to createVm, which says what is wrong with it. An x86_64
 * ELF kernel is only looked at: createVm reads its segments straight into
 * guest RAM (lib/vm/image-files.ts elfKernelFile).
 */
function readBootImages(config: VmConfig): { config: VmConfig; paths: { kernel?: string; initrd?: string } } {
  const resolved = resolveVmConfig(config);
  const out: VmConfig = { ...config };
  const paths: { kernel?: string; initrd?: string } = {};
  for (const k of ['kernel', 'initrd'] as const) {
    const p = config[k];
    if (typeof p !== 'string') continue;
    // An x86_64 ELF kernel stays a path: createVm reads its segments straight into guest RAM.
    if (k === 'kernel' && resolved.arch === 'x86_64' && elfKernelFile(p)) {
      paths[k] = p;
      continue;
    }
    const bytes = readInputFile(k, p);
    if (bytes.length === 0) continue;
    out[k] = bytes;
    paths[k] = p;
  }
  return { config: out, paths };
}

/** Ctrl-A s: pause, save into `dir`, run on; one line on stderr either way. */
async function snapshotRunning(vm: Vm, dir: string): Promise<void> {
  if (vm.state !== 'running') return;
  try {
    await vm.pause();
    const started = performance.now();
    await vm.snapshot(dir);
    process.stderr.write(`\r\nnodevmm: snapshot saved in ${dir} (${(performance.now() - started).toFixed(0)} ms); nodevmm run --restore ${dir} continues from here\r\n`);
  } catch (e) {
    process.stderr.write(`\r\nnodevmm: snapshot failed: ${(e as Error).message}\r\n`);
  } finally {
    if ((vm.state as string) === 'paused') await vm.resume();
  }
}

async function bindSerial(vm: Vm, name: ComPort, b: SerialBinding, quit: () => void, inputWhen: Promise<unknown>, onSnapshot?: () => void): Promise<() => void> {
  const port = vm.serial(name);
  switch (b.kind) {
    case 'console':
    case 'stdio': {
      const h = attachConsole(port, { interactive: b.kind === 'console', onQuit: quit, inputWhen, ...(onSnapshot ? { onSnapshot } : {}) });
      return () => h.detach();
    }
    case 'file': {
      let fd: number;
      try {
        fd = fs.openSync(b.path, 'a');
      } catch (e) {
        throw new NodevmmError('ERR_FILE', `${name} output file ${b.path} cannot be opened: ${(e as Error).message}`);
      }
      const on = (chunk: Buffer) => fs.writeSync(fd, chunk);
      port.on('output', on);
      return () => {
        port.off('output', on);
        fs.closeSync(fd);
      };
    }
    case 'tcp': {
      const sock = await new Promise<net.Socket>((resolve, reject) => {
        // node:net loads only for a tcp: serial binding (CLI start-up time, docs/benchmarks.md).
        const s = (require('node:net') as typeof net).connect(b.port, b.host, () => resolve(s));
        s.once('error', (e) => reject(new NodevmmError('ERR_FILE', `${name}: cannot connect to tcp:${b.host}:${b.port}: ${e.message}`)));
      });
      sock.on('error', () => undefined);
      const bridge = (require('./stream-bridge') as typeof import('./stream-bridge')).bridgeTcp(port, sock);
      return () => {
        bridge.detach();
        sock.destroy();
        if (bridge.dropped) process.stderr.write(`nodevmm: ${name}: ${bridge.dropped} bytes of guest output were dropped because tcp:${b.host}:${b.port} did not read them in time\n`);
      };
    }
    default:
      return () => undefined;
  }
}

/**
 * The JS thread's own time on a CPU, for --trace: process CPU counts the vCPU threads too
 * (guest time included), and under an emulator every millisecond the JS thread runs is one
 * the guest's vCPU may wait for. From the scheduler's per-thread accounting (ns); empty
 * where the kernel does not provide it.
 */
function jsThreadCpu(): string {
  try {
    const [runNs] = fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ');
    return `, JS thread on CPU ${(Number(runNs) / 1e6).toFixed(0)}ms`;
  } catch {
    return '';
  }
}

