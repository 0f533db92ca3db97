// Proves the end-to-end tier: under a real KVM (here or in the emulated host), QEMU's microvm
// boots the cached Debian kernel with our test initramfs, runs a command given on the kernel
// command line, and powers off. Its wall time is the baseline nodevmm's boot benchmarks compare to.
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { findGuestArtifacts } from '../../lib/testing/artifacts';
import { detectKvm } from '../../lib/testing/detect';
import { timeoutReport } from '../../lib/testing/e2e';

const kvm = detectKvm();
const artifacts = findGuestArtifacts('x86_64');
const skipReason = kvm.kind !== 'real' ? kvm.reason : !artifacts ? 'guest artifacts are not built (node scripts/guest-artifacts.js)' : undefined;
const BOOT_TIMEOUT_MS = 120_000;

interface QemuRun {
  console: string;
  wallMs: number;
  status: number | null;
}

function runMicrovm(kernel: string, initrd: string, cmdline: string): Promise<QemuRun> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const args = [
      '-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-m', '512M', '-smp', '2',
      '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot',
      '-kernel', kernel, '-initrd', initrd, '-append', cmdline,
    ];
    const child = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(timeoutReport('microvm guest', out, Date.now() - started, BOOT_TIMEOUT_MS)));
    }, BOOT_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ console: out.replace(/\r/g, ''), wallMs: Date.now() - started, status });
    });
  });
}

function marker(log: string, key: string): string | undefined {
  return new RegExp(`^${key}=(.*)$`, 'm').exec(log)?.[1];
}

const maybe = skipReason ? test.skip : test.serial;
if (skipReason) test.skip(`e2e tier skipped: ${skipReason}`, () => {});

maybe('qemu microvm under kvm boots the debian kernel to GUEST-INIT-OK, runs the command line command and powers off', async (t) => {
  if (!artifacts) return t.fail('unreachable: artifacts checked in skipReason');
  const token = randomBytes(8).toString('hex');
  // The guest reverses the token, so the expected output exists only if the command really ran.
  const command = `echo ${token} | rev; test "$(nproc)" = 2`;
  const cmdline = `console=ttyS0 quiet nodevmm.cmd=${Buffer.from(command).toString('base64')}`;
  const run = await runMicrovm(artifacts.vmlinux, artifacts.testInitramfs, cmdline);
  t.log(`microvm + kvm: boot, command and power-off in ${run.wallMs} ms (guest uptime at init ${marker(run.console, 'GUEST-UPTIME')} s)`);
  t.is(run.status, 0, run.console);
  t.regex(run.console, /^GUEST-INIT-OK$/m);
  t.is(marker(run.console, 'GUEST-UNAME-R'), artifacts.kernelVersion);
  t.is(marker(run.console, 'GUEST-NPROC'), '2');
  const memKb = Number(marker(run.console, 'GUEST-MEMTOTAL-KB'));
  t.true(memKb > 256 * 1024 && memKb <= 512 * 1024, `MemTotal ${memKb} kB for a 512 MiB guest`);
  t.true(run.console.includes([...token].reverse().join('')), 'the reversed token is in the console output');
  t.is(marker(run.console, 'GUEST-CMD-EXIT'), '0');
});

maybe('a failing command line command reports its exit status', async (t) => {
  if (!artifacts) return t.fail('unreachable: artifacts checked in skipReason');
  const cmdline = `console=ttyS0 quiet nodevmm.cmd=${Buffer.from('exit 7').toString('base64')}`;
  const run = await runMicrovm(artifacts.vmlinux, artifacts.testInitramfs, cmdline);
  t.log(`microvm + kvm: ${run.wallMs} ms`);
  t.is(marker(run.console, 'GUEST-CMD-EXIT'), '7');
});
