/**
 * The arm64 proof's guest side, run inside the emulated arm64 KVM host by
 * boot.test.ts (node dist/test/e2e-arm64/in-host.js AGENT_BINARY). Everything
 * goes through the package's public entry points (dist/lib/index.js, what
 * `require('nodevmm')` gives, and dist/lib/testing/index.js, `nodevmm/testing`)
 * and the CLI, as a user's script would:
 *   cli:       `nodevmm run` with 2 vCPUs boots the test initramfs, which powers off (PSCI SYSTEM_OFF)
 *   lifecycle: withVm with onReset 'restart'; expect; exec('uname -m') over ttyAMA1; pause/resume/diagnose;
 *              host reset(); a guest `reboot -f` (PSCI SYSTEM_RESET); shutdown() by the power key
 *   devices:   virtio-blk, -rng, -console, -net on a TAP, -vsock with exec over it;
 *              a guest reboot with onReset 'stop' ends it as 'reset'
 *   shares:    virtio-fs, a writable and a read-only share (virtiofsd), read, write, EROFS
 *   userNet:   user networking on passt: DHCP, the host's loopback through the gateway, a forward
 *              (user-net.ts)
 *   overlays:  two VMs at once on one read-only base image with temporary overlays (overlays.ts)
 *   snapshotTiny: a hand-made two-vCPU guest snapshotted mid-computation and restored twice at once
 *              (snapshot-tiny.ts; partitions, not the public API)
 *   snapshotDebian: vm.snapshot of a 2-vCPU guest mid-work, restoreVm in a new process, two clones
 *              (snapshot-debian.ts)
 * Each part prints one line `ARM64-RESULT <name> <json>`; a part that throws prints its error there.
 * `--only NAME[,NAME]` runs just those parts (a quick run of one part while working on it).
 */
import { spawnSync } from 'node:child_process';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createVm, type StopReason, type Vm } from '../../lib/index';
import { agentCmdline, withVm } from '../../lib/testing/index';
import { buildTestInitramfs, GUEST_MARKERS } from '../../lib/initramfs/initramfs';
import { arm64GuestModules, findArm64Artifacts } from '../../lib/testing/arm64-kvm-host';
import { overlays } from './overlays';
import { snapshotDebian } from './snapshot-debian';
import { snapshotTiny } from './snapshot-tiny';
import { userNet } from './user-net';

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..', '..');
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt >= 0 ? new Set((process.argv[onlyAt + 1] ?? '').split(',')) : undefined;
const agentBinary = process.argv.slice(2).find((a, i, all) => !a.startsWith('--') && all[i - 1] !== '--only');
const a = findArm64Artifacts();
if (!a) throw new Error('arm64 artifacts not visible inside the host (NODEVMM_CACHE)');
const artifacts = a;

/** A progress line written synchronously, so it is on the console even if the process dies right after. */
function step(what: string): void {
  fs.writeSync(1, `ARM64-STEP ${what}\n`);
}

/** The guest's console and agent output on the host console, prefixed, for a failure's log. */
function tee(vm: Vm): void {
  vm.on('state', (s) => step(`state ${s}`));
  vm.on('serial', (port, bytes) => {
    for (const line of bytes.toString('latin1').split(/\r?\n/)) if (line.trim()) fs.writeSync(1, `[${port}] ${line}\n`);
  });
}

function report(name: string, value: unknown): void {
  console.log(`ARM64-RESULT ${name} ${JSON.stringify(value)}`);
}

async function part(name: string, fn: () => Promise<Record<string, unknown>>): Promise<void> {
  if (only && !only.has(name)) return;
  step(`part ${name}`);
  const t0 = Date.now();
  try {
    report(name, { ...(await fn()), ms: Date.now() - t0 });
  } catch (e) {
    report(name, { error: (e as Error).stack ?? String(e), ms: Date.now() - t0 });
  }
}

/** A shell loop that waits up to 20 s for a device node (virtio_mmio probes asynchronously). */
const waitFor = (dev: string) => `i=0; while [ ! -e ${dev} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; [ -e ${dev} ]`;

async function sh(vm: Vm, command: string, port?: 'com2'): Promise<string> {
  const r = await vm.exec(command, { timeoutMs: 60_000, ...(port ? { port } : {}) });
  if (r.exitCode !== 0) throw new Error(`guest command ${JSON.stringify(command)} exited ${r.exitCode}: ${r.stdout}`);
  return r.stdout.trim();
}

function cli(initrd: Uint8Array): Record<string, unknown> {
  const file = path.join(os.tmpdir(), 'arm64-test-initramfs.cpio.gz');
  fs.writeFileSync(file, initrd);
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'nodevmm.js'), 'run', '--kernel', artifacts.image, '--initrd', file, '-p', '2', '--cmdline', 'quiet', '--com1', 'stdio'], { input: '', timeout: 300_000 });
  const out = r.stdout.toString('latin1');
  const nproc = Number(/GUEST-NPROC=(\d+)/.exec(out)?.[1] ?? -1);
  // The console's last lines when the marker is missing, to tell a lost line from a cut-off run.
  return { status: r.status, stderr: r.stderr.toString().trim(), initOk: out.includes(GUEST_MARKERS.initOk), nproc, ...(nproc < 0 ? { tail: out.slice(-1500) } : {}) };
}

async function lifecycle(): Promise<Record<string, unknown>> {
  const t = { log: (...v: unknown[]) => console.log(...v) };
  step('lifecycle: withVm');
  // waitFor false: the console is teed to the host's from the start, then the marker is awaited here.
  return withVm(t, { onReset: 'restart', cmdline: 'quiet', timeoutMs: 400_000, waitFor: false }, async (vm) => {
    tee(vm);
    step('lifecycle: started');
    await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
    const out: Record<string, unknown> = { arch: vm.config.arch, memory: vm.config.memory };
    // Without shares, anonymous RAM: no region has an fd (docs/linux-direct-arm64.md, "Guest RAM").
    out.ramIsMemfd = vm.partition.ramMappings().every((r) => r.fd >= 0);
    step('lifecycle: booted');
    out.unameM = await sh(vm, 'uname -m');
    step('lifecycle: exec done');
    await vm.pause();
    out.paused = vm.state;
    // While paused every vCPU is out of KVM_RUN: diagnose() reads their registers.
    out.diagnose = await vm.diagnose();
    await vm.resume();
    out.afterResume = await sh(vm, 'echo resumed');
    // A host reset is a power cycle into the same kernel: the init prints its marker again.
    step('lifecycle: reset');
    await vm.reset();
    await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
    out.bootsAfterHostReset = vm.boots;
    out.afterHostReset = await sh(vm, 'echo agent-again');
    // The guest resets itself (busybox reboot -f: PSCI SYSTEM_RESET); onReset 'restart' boots it again.
    step('lifecycle: guest reboot');
    const resetSeen = new Promise<void>((r) => vm.once('reset', () => r()));
    // Typed into the agent's shell (withVm's default guest has it on the virtio console): exec would wait for an answer.
    vm.virtioConsole().write('reboot -f\n');
    await resetSeen;
    await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
    out.bootsAfterGuestReboot = vm.boots;
    out.afterGuestReboot = await sh(vm, 'echo agent-after-reboot');
    // The power key: gpio-keys reports KEY_POWER, the test init powers off (PSCI SYSTEM_OFF).
    step('lifecycle: shutdown');
    const stop: StopReason = await vm.shutdown({ timeoutMs: 120_000 });
    out.shutdown = stop.reason;
    out.powerButtonSeen = vm.serial(1).log().includes('GUEST-POWER-BUTTON');
    return out;
  });
}

const VDA_PATTERN = 'host-pattern-0123456789';
const VDA_WRITE = 'written-by-the-guest';
const TAP = 'ntap0';
const HOST_IP = '10.0.9.1';
const GUEST_IP = '10.0.9.2';
const AGENT_PORT = 1024;

async function devices(initrd: Uint8Array): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arm64-devices-'));
  const disk = path.join(dir, 'vda.img');
  const image = Buffer.alloc(8 * 2 ** 20);
  image.write(VDA_PATTERN, 0, 'latin1');
  fs.writeFileSync(disk, image);
  // The init runs this after GUEST-INIT-OK and waits for it, so it neither powers off nor starts
  // the console shell (nodevmm.shell=1): with a virtio console, that shell's cttyhack was once
  // seen reading the agent's ttyAMA1 too, splitting exec's input between two shells.
  const startAgent = Buffer.from(`nodevmm-vsock-agent ${AGENT_PORT} >/dev/null 2>&1 & wait`).toString('base64');
  const vm = await createVm({
    kernel: artifacts.image,
    initrd,
    memory: '256M',
    cmdline: `quiet ${agentCmdline('aarch64')} nodevmm.cmd=${startAgent}`,
    disks: [{ path: disk }],
    rng: true,
    virtioConsole: true,
    net: [{ tap: TAP }],
    vsock: { cid: 3, agentPort: AGENT_PORT },
  });
  const out: Record<string, unknown> = {};
  tee(vm);
  try {
    step('devices: start');
    await vm.start();
    await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
    // exec goes over vsock (vsock.agentPort), unless a serial port is named.
    out.vsockUnameM = (await vm.exec('uname -m', { timeoutMs: 60_000 })).stdout.trim();
    await sh(vm, [waitFor('/dev/vda'), waitFor('/dev/hwrng'), waitFor('/dev/hvc0'), waitFor('/sys/class/net/eth0')].join(' && '), 'com2');
    out.vdaSectors = await sh(vm, 'cat /sys/block/vda/size', 'com2');
    out.vdaHead = await sh(vm, `dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c ${VDA_PATTERN.length}`, 'com2');
    await sh(vm, `printf '${VDA_WRITE}' | dd of=/dev/vda bs=512 seek=2048 conv=notrunc,fsync 2>/dev/null`, 'com2');
    out.hwrngCurrent = await sh(vm, 'cat /sys/class/misc/hw_random/rng_current', 'com2');
    out.hwrng = await sh(vm, 'dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d " \\n"', 'com2');
    const hvc = vm.virtioConsole().expect('HVC-HELLO', { timeoutMs: 30_000 });
    await sh(vm, 'echo HVC-HELLO > /dev/hvc0', 'com2');
    out.hvc0 = (await hvc)[0];
    // The TAP exists once the vm started (nodevmm creates it): address it here, the guest's eth0 there.
    await run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', TAP]);
    await run('ip', ['link', 'set', TAP, 'up']);
    await sh(vm, `ip addr add ${GUEST_IP}/24 dev eth0 && ip link set eth0 up`, 'com2');
    const ping = await vm.exec(`ping -c 3 -W 5 ${HOST_IP}`, { timeoutMs: 60_000, port: 'com2' });
    out.ping = { exitCode: ping.exitCode, received: /(\d+) packets received/.exec(ping.stdout)?.[1] };
    const stats = vm.netStats()[0]!;
    out.netStats = { rxPackets: stats.rxPackets, txPackets: stats.txPackets };
    out.irqs = (await sh(vm, `grep virtio /proc/interrupts | awk '{ printf "%s:%s ", $(NF-2), $(NF-1) }'`, 'com2')).split(' ').filter(Boolean).sort();
    // The guest resets itself with onReset 'stop' (the default): the vm stops with reason 'reset'.
    vm.serial(2).write('sync; reboot -f\n');
    out.guestReboot = (await vm.waitForStop()).reason;
    out.written = fs.readFileSync(disk).subarray(2048 * 512, 2048 * 512 + VDA_WRITE.length).toString('latin1');
    return out;
  } finally {
    await vm.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Live virtiofsd processes serving a directory under `dir`. */
function virtiofsdPids(dir: string): number[] {
  const pids: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      if (argv.some((a) => /virtiofsd$/.test(a)) && argv.some((a) => a.includes(dir))) pids.push(Number(pid));
    } catch {
      // gone
    }
  }
  return pids;
}

const SHARE_HOST_TEXT = 'written-by-the-host';
const SHARE_GUEST_TEXT = 'written-by-the-guest';

/**
 * virtio-fs: a writable and a read-only share (a virtiofsd each, the helpers boot.test.ts put in
 * PATH); the guest mounts both, reads a file the host wrote, writes one the host then reads, and
 * fails to write into the read-only one; the daemons are gone once the VM stopped.
 */
async function shares(initrd: Uint8Array): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arm64-shares-'));
  const rw = path.join(dir, 'rw');
  const ro = path.join(dir, 'ro');
  fs.mkdirSync(rw);
  fs.mkdirSync(ro);
  fs.writeFileSync(path.join(rw, 'from-host'), SHARE_HOST_TEXT);
  fs.writeFileSync(path.join(ro, 'ro.txt'), 'read-only');
  const script = [
    'mkdir -p /mnt/rw /mnt/ro',
    'mount -t virtiofs data /mnt/rw && echo GUEST-MOUNT-RW=1',
    'mount -t virtiofs config /mnt/ro && echo GUEST-MOUNT-RO=1',
    'echo "GUEST-READ=$(cat /mnt/rw/from-host)"',
    `printf '${SHARE_GUEST_TEXT}' > /mnt/rw/from-guest && sync && echo GUEST-WROTE=1`,
    'echo "GUEST-RO-READ=$(cat /mnt/ro/ro.txt)"',
    'touch /mnt/ro/nope 2>/dev/null; echo "GUEST-RO-TOUCH=$?"',
    'umount /mnt/rw /mnt/ro && echo GUEST-UMOUNT=1',
  ].join('\n');
  const vm = await createVm({
    kernel: artifacts.image,
    initrd,
    memory: '256M',
    cmdline: `quiet nodevmm.cmd=${Buffer.from(script).toString('base64')}`,
    shares: [
      { path: rw, tag: 'data' },
      { path: ro, tag: 'config', readOnly: true },
    ],
  });
  tee(vm);
  try {
    step('shares: start');
    await vm.start();
    const daemons = virtiofsdPids(dir).length;
    const stop = await vm.waitForStop();
    const log = vm.serial(1).log();
    const marker = (k: string) => new RegExp(`^GUEST-${k}=(.*)$`, 'm').exec(log.replace(/\r/g, ''))?.[1]?.trim();
    let written: string | null = null;
    try {
      written = fs.readFileSync(path.join(rw, 'from-guest'), 'latin1');
    } catch {}
    // The daemons are stopped with the VM (SIGTERM, SIGKILL after a grace period): bounded wait.
    let left = -1;
    for (let i = 0; i < 100 && left !== 0; i++) {
      left = virtiofsdPids(dir).length;
      if (left) await new Promise((r) => setTimeout(r, 50));
    }
    return {
      stop: stop.reason,
      mountRw: marker('MOUNT-RW'),
      mountRo: marker('MOUNT-RO'),
      read: marker('READ'),
      wrote: marker('WROTE'),
      written,
      roRead: marker('RO-READ'),
      roTouch: marker('RO-TOUCH'),
      roCreated: fs.existsSync(path.join(ro, 'nope')),
      umount: marker('UMOUNT'),
      daemons,
      daemonsLeft: left,
    };
  } finally {
    await vm.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const modules = arm64GuestModules(artifacts);
  const busybox = new Uint8Array(fs.readFileSync(artifacts.busybox));
  const plain = buildTestInitramfs({ busybox, modules });
  await part('snapshotTiny', snapshotTiny);
  if (!only || only.has('cli')) report('cli', cli(plain));
  await part('lifecycle', lifecycle);
  await part('snapshotDebian', () => snapshotDebian(artifacts.image, plain, step, tee));
  await part('shares', () => shares(plain));
  await part('userNet', () => userNet(step, tee));
  await part('overlays', () => overlays(artifacts.image, plain, step, tee));
  if (only && !only.has('devices')) return;
  if (!agentBinary) report('devices', { error: 'no vsock agent binary given' });
  else {
    const withAgent = buildTestInitramfs({ busybox, modules, extraFiles: [{ path: '/bin/nodevmm-vsock-agent', data: new Uint8Array(fs.readFileSync(agentBinary)), mode: 0o755 }] });
    await part('devices', () => devices(withAgent));
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
