/**
 * `nodevmm run` on an arm64 host: the same flags as x86 (kernel, initrd,
 * cmdline, memory, processors, COM1 binding → the first PL011, --disk,
 * --rng, --virtio-console), booting a flat arm64 Image through Linux Direct
 * with a device tree. virtio-net and virtio-vsock are x86-only for now and
 * refused with one sentence. The exit status follows the same table: PSCI
 * SYSTEM_OFF is power-off, SYSTEM_RESET reset.
 */
import { NodevmmError } from '../errors';
import { DEFAULTS, parseSize } from '../vm/config';
import { SerialPort } from '../vm/serial-port';
import { attachConsole } from './console';
import { readInputFile } from '../util/file-errors';
import { EXIT_CODES, type StopReasonKind } from '../vm/lifecycle';
import { SIGNAL_EXIT_CODES, type RunArgs } from './args';

/** Default command line on arm64: the PL011 is ttyAMA0 (OpenVMM uses the same). */
export const ARM64_DEFAULT_CMDLINE = 'panic=-1 console=ttyAMA0';


export async function runArm64(args: RunArgs): Promise<number> {
  // Loaded here so x86 hosts never load the arm64 modules.
  const { Arm64LinuxVm } = require('../vm/arm64-linux') as typeof import('../vm/arm64-linux');
  const c = args.config;
  if (typeof c.kernel !== 'string') throw new NodevmmError('ERR_CONFIG', '--kernel is required on arm64 (IGVM is x86-only here)');
  const memory = parseSize(c.memory ?? '1G');
  if (memory === undefined) throw new NodevmmError('ERR_CONFIG', `--memory ${String(c.memory)} is not a size`);
  // Refused before anything is opened, so the user learns it without a boot.
  if (c.net?.length) throw new NodevmmError('ERR_CONFIG', `--net ${c.net[0]!.tap !== undefined ? `tap:${c.net[0]!.tap}` : 'user'} is x86-only for now: arm64 VMs have no virtio-net yet (--disk, --rng and --virtio-console work)`);
  if (c.vsock !== undefined) throw new NodevmmError('ERR_CONFIG', `--vsock ${c.vsock.cid} is x86-only for now: arm64 VMs have no virtio-vsock yet (--disk, --rng and --virtio-console work)`);
  if (c.shares?.length) throw new NodevmmError('ERR_CONFIG', `--share ${c.shares[0]!.path}:${c.shares[0]!.tag} is x86-only for now: arm64 VMs have no virtio-fs yet (--disk, --rng and --virtio-console work)`);
  const cmdline = [c.cmdlineDefaults === false ? '' : ARM64_DEFAULT_CMDLINE, c.cmdline ?? ''].filter(Boolean).join(' ');
  const binding = args.serial.com1;
  const out = binding.kind === 'console' || binding.kind === 'stdio' ? (b: Uint8Array) => process.stdout.write(b) : () => undefined;
  // As on x86, hvc0 takes the terminal only when COM1 (here the PL011) does not.
  const hvc = c.virtioConsole ? new SerialPort('hvc0', DEFAULTS.serialLogBytes) : undefined;
  const vm = new Arm64LinuxVm({
    kernel: readInputFile('kernel', c.kernel),
    ...(typeof c.initrd === 'string' ? { initrd: readInputFile('initrd', c.initrd) } : {}),
    cmdline,
    vcpus: c.vcpus ?? 1,
    memoryBytes: memory,
    console: { write: out },
    ...(c.disks ? { disks: c.disks } : {}),
    ...(c.rng ? { rng: true } : {}),
    ...(hvc ? { virtioConsole: hvc } : {}),
  });
  const onInput = (d: Buffer) => vm.console.pushInput(new Uint8Array(d));
  if (binding.kind === 'console' || binding.kind === 'stdio') {
    process.stdin.on('data', onInput);
    process.stdin.resume();
  }
  // Not interactive, like the PL011 binding above: no raw mode and no Ctrl-A escape on arm64 yet.
  const hvcTerminal = hvc && binding.kind === 'none' ? attachConsole(hvc, { interactive: false, onQuit: () => {} }) : undefined;
  // SIGINT and SIGTERM stop the VM with the statuses x86 uses (130, 143); destroy() runs below.
  let onSigint = () => {};
  let onSigterm = () => {};
  const signalled = new Promise<number>((resolve) => {
    onSigint = () => resolve(SIGNAL_EXIT_CODES.SIGINT);
    onSigterm = () => resolve(SIGNAL_EXIT_CODES.SIGTERM);
  });
  process.once('SIGINT', onSigint);
  process.once('SIGTERM', onSigterm);
  try {
    const r = await Promise.race([vm.run(), signalled]);
    if (typeof r === 'number') return r;
    const reason: StopReasonKind = r.reason === 'poweroff' ? 'poweroff' : r.reason === 'reset' ? 'reset' : 'internal-error';
    if (reason !== 'poweroff') process.stderr.write(`nodevmm: vm stopped: ${reason}: ${r.stop.message}\n`);
    return EXIT_CODES[reason];
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    hvcTerminal?.detach();
    process.stdin.off('data', onInput);
    process.stdin.pause();
    vm.destroy();
  }
}
