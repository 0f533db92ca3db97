/**
 * Tier 2: virtio-vsock over the host kernel's vhost-vsock, seen by Debian's
 * kernel. The guest runs a tiny static program (test/e2e/guest/vsockt.c,
 * built with gcc -static here, since busybox has no vsock): it echoes one
 * host connection (1 MiB each way, checked by hash on the host), then
 * connects to the host (cid 2) and sends 1 MiB of a known pattern, then
 * unloads and reloads its vsock transport (the driver resets the device and
 * probes it again: vhost is stopped and handed the new rings) and echoes
 * again. A second VM asking for the same CID fails with one sentence, and
 * no fd is left open once the VM stopped.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildTestInitramfs } from '../../lib/initramfs/initramfs';
import { GUEST_MODULES } from '../../lib/testing/artifacts';
import { cmdParam, e2eArtifacts, e2eSkipReason, guestMarkers } from '../../lib/testing/e2e';
import { createVm } from '../../lib/vm/vm';
import { nativeBinding } from '../../lib/hv/native';
import type { VsockStream } from '../../lib/vm/vsock-stream';
import type { X86Machine } from '../../lib/vm/x86-machine';

const noVhost = fs.existsSync('/dev/vhost-vsock') ? undefined : '/dev/vhost-vsock does not exist (modprobe vhost_vsock)';
const skip = e2eSkipReason() ?? noVhost;
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`virtio-vsock e2e skipped: ${skip}`, () => {});

const MiB = 2 ** 20;
/** Unique per process, so parallel runs on one host do not collide. */
const CID = 3 + (process.pid % 1000);
const ECHO_PORT = 5000;
const ECHO_PORT_AFTER_REPROBE = 5001;
const HOST_PORT = 6000 + (process.pid % 1000);

const ROOT = path.resolve(__dirname, '..', '..', '..');
const AGENT_PORT = 1024;

/** The test initramfs plus /bin/vsockt and /bin/nodevmm-vsock-agent, compiled static now. */
function buildInitrd(dir: string): string {
  const a = e2eArtifacts!;
  const programs = { vsockt: 'test/e2e/guest/vsockt.c', 'nodevmm-vsock-agent': 'guest/vsock-agent.c' };
  const extraFiles = Object.entries(programs).map(([name, src]) => {
    const bin = path.join(dir, name);
    const cc = spawnSync('gcc', ['-static', '-O2', '-o', bin, path.join(ROOT, src)], { encoding: 'utf8' });
    if (cc.status !== 0) throw new Error(`gcc -static failed (apt-get install gcc libc6-dev): ${cc.stderr || cc.error}`);
    return { path: `/bin/${name}`, data: new Uint8Array(fs.readFileSync(bin)), mode: 0o755 };
  });
  const modules = GUEST_MODULES.map((name) => ({ name, data: new Uint8Array(fs.readFileSync(path.join(a.modulesDir, `${name}.ko`))) }));
  const initrd = path.join(dir, 'initrd.cpio.gz');
  fs.writeFileSync(initrd, buildTestInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)), modules, extraFiles }));
  return initrd;
}

function collect(s: VsockStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
/** This process's open fds and what they are ("anon_inode:[eventfd]", "socket:[...]", ...). */
function openFds(): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      out.push(`${fd} ${fs.readlinkSync(`/proc/self/fd/${fd}`)}`);
    } catch {
      // the fd readdir itself used, gone already
    }
  }
  return out;
}

async function echoOnce(t: { is(a: unknown, b: unknown): void }, s: VsockStream, bytes: number): Promise<void> {
  const payload = randomBytes(bytes);
  const echoed = collect(s);
  s.end(payload);
  const back = await echoed;
  t.is(back.length, bytes);
  t.is(sha(back), sha(payload));
  await new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
}

e2e('host to guest: 1 MiB echoed over vsock; guest to host: 1 MiB received; a second VM cannot take the same CID', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-vsock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const initrd = buildInitrd(dir);
  // The addon keeps one /dev/kvm fd for the process's life: open it before counting.
  nativeBinding().probe();
  const fdsBefore = openFds();
  const command = [
    `/bin/vsockt echo ${ECHO_PORT}`,
    `/bin/vsockt send ${HOST_PORT} ${MiB}`,
    // Sockets that just closed hold the transport module until the host acknowledges: retry.
    'i=0; until rmmod vmw_vsock_virtio_transport 2>/dev/null || [ $i -ge 100 ]; do i=$((i+1)); sleep 0.1; done',
    'insmod /lib/modules/vmw_vsock_virtio_transport.ko && echo GUEST-VSOCK-REPROBED=1',
    `/bin/vsockt echo ${ECHO_PORT_AFTER_REPROBE}`,
  ].join('; ');
  const vm = await createVm({ kernel: e2eArtifacts!.vmlinuz, initrd, memory: '256M', vsock: { cid: CID }, cmdline: cmdParam(command) });
  t.teardown(() => vm.kill().then(() => undefined));
  // Listen before the guest can connect; only this guest's connections are accepted.
  const server = vm.vsockListen(HOST_PORT);
  const fromGuest = new Promise<Buffer>((resolve, reject) => server.once('connection', (c) => collect(c).then(resolve, reject)));
  await vm.start();
  const timer = setTimeout(() => void vm.kill(), 150_000);
  try {
    await vm.expect(`GUEST-VSOCK-LISTENING=${ECHO_PORT}`, { timeoutMs: 120_000 });

    // The CID is the VM's: a second VM asking for it fails at start with one sentence.
    const twin = await createVm({ kernel: e2eArtifacts!.vmlinuz, initrd, memory: '256M', vsock: { cid: CID } });
    const err = await t.throwsAsync(() => twin.start());
    t.regex(err?.message ?? '', new RegExp(`^vsock cid ${CID} is already used by another VM on this host`));
    t.is(twin.state, 'stopped');

    const s = await vm.vsockConnect(ECHO_PORT);
    t.is(s.remoteCid, CID);
    await echoOnce(t, s, MiB);

    const got = await fromGuest;
    t.is(got.length, MiB);
    const want = Buffer.alloc(MiB);
    for (let i = 0; i < MiB; i++) want[i] = (i * 7 + 3) & 0xff;
    t.true(got.equals(want));

    // Driver reset and re-probe: vhost stopped, then handed the new rings.
    await vm.expect(`GUEST-VSOCK-LISTENING=${ECHO_PORT_AFTER_REPROBE}`, { timeoutMs: 60_000 });
    const machine = vm['machine'] as X86Machine;
    const device = machine.virtio.vsock!;
    const lastError = machine.virtio.transports.find((x) => x.device === device)!.lastError;
    t.is(device.activations, 2, `transport lastError: ${lastError}; console tail:\n${vm.serial(1).log().slice(-2000)}`);
    await echoOnce(t, await vm.vsockConnect(ECHO_PORT_AFTER_REPROBE), 64 * 1024);
    // Guest notifications on rx/tx went through the ioeventfds, not MMIO exits
    // (at most the few that raced a registration).
    t.true(device.userspaceKicks <= 4, `rx/tx kicks that exited to userspace: ${device.userspaceKicks}`);

    const stop = await vm.waitForStop();
    const log = vm.serial(1).log().replace(/\r/g, '');
    const m = guestMarkers(log);
    t.is(stop.reason, 'poweroff', log.slice(-3000));
    // Leading digits only: a kernel message may land on the same console line.
    t.deepEqual([...log.matchAll(/^GUEST-VSOCK-ECHOED=(\d+)/gm)].map((x) => Number(x[1])), [MiB, 64 * 1024]);
    t.is(Number.parseInt(m['VSOCK-SENT'] ?? '', 10), MiB);
    t.regex(m['VSOCK-REPROBED'] ?? '', /^1/);
    t.is(m['VSOCK-ERROR'], undefined);
  } finally {
    clearTimeout(timer);
  }

  // Nothing to connect to once the VM stopped, and the error says why.
  await t.throwsAsync(() => vm.vsockConnect(ECHO_PORT), { message: 'cannot connect over vsock to a vm that is stopped' });
  // vhost fd, eventfds, sockets, the listener, the VM and vCPU fds of both VMs: all closed.
  await new Promise((r) => setTimeout(r, 100));
  const after = openFds();
  t.deepEqual(after.filter((f) => !fdsBefore.includes(f)), [], `before: ${fdsBefore.join(', ')}`);
  t.is(after.length, fdsBefore.length);
});

e2e('exec() over vsock, next to a disk and rng (vsock in the second slot, edge-triggered between level-triggered ones)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-vsock-exec-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const initrd = buildInitrd(dir);
  const disk = path.join(dir, 'disk.img');
  fs.writeFileSync(disk, Buffer.alloc(MiB, 0x5a));
  const vm = await createVm({ kernel: e2eArtifacts!.vmlinuz, initrd, memory: '256M', disks: [{ path: disk }], rng: true, vsock: { cid: CID, agentPort: AGENT_PORT }, cmdline: cmdParam(`/bin/nodevmm-vsock-agent ${AGENT_PORT}`) });
  t.teardown(() => vm.kill().then(() => undefined));
  await vm.start();
  // The first exec waits (retrying the connection) while the guest boots.
  const first = await vm.exec('echo hello; echo oops >&2; exit 7', { timeoutMs: 120_000 });
  t.deepEqual(first, { stdout: 'hello\noops\n', exitCode: 7 }, vm.serial(1).log().slice(-2000));
  const big = await vm.exec("head -c 200000 /dev/zero | tr '\\0' 'a'; printf '\\001\\377'");
  t.is(big.exitCode, 0);
  t.is(big.stdout.length, 200_002);
  t.is(big.stdout.slice(0, 200_000), 'a'.repeat(200_000));
  const many = await Promise.all([1, 2, 3].map((n) => vm.exec(`sleep 0.${n}; echo run-${n}`)));
  t.deepEqual(many.map((r) => r.stdout), ['run-1\n', 'run-2\n', 'run-3\n'], JSON.stringify(many));
  // The level-triggered neighbours work while vsock carries the commands.
  const blk = await vm.exec('cat /sys/block/vda/size; dd if=/dev/vda bs=512 count=1 2>/dev/null | od -An -tx1 | head -1');
  t.regex(blk.stdout, /^2048\n( 5a){16}\n$/);
  const rng = await vm.exec('dd if=/dev/hwrng bs=16 count=1 2>/dev/null | wc -c');
  t.is(rng.stdout.trim(), '16');
  await vm.kill();
});

e2e('a host reset rebuilds the machine: the old connection is closed, the CID is free for the new vhost device, which works', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-vsock-reset-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const initrd = buildInitrd(dir);
  const vm = await createVm({ kernel: e2eArtifacts!.vmlinuz, initrd, memory: '256M', vsock: { cid: CID }, cmdline: cmdParam(`/bin/vsockt echo ${ECHO_PORT}`) });
  t.teardown(() => vm.kill().then(() => undefined));
  await vm.start();
  await vm.expect(`GUEST-VSOCK-LISTENING=${ECHO_PORT}`, { timeoutMs: 120_000 });
  const old = await vm.vsockConnect(ECHO_PORT);
  old.on('error', () => {}); // ECONNRESET or EOF: either way it must close
  old.resume();
  const oldClosed = new Promise<boolean>((resolve) => {
    old.once('close', () => resolve(true));
    setTimeout(() => resolve(false), 20_000).unref();
  });
  await vm.reset();
  t.true(await oldClosed, 'the connection to the old guest closed after the reset');
  t.is(vm.boots, 2);
  await vm.expect(`GUEST-VSOCK-LISTENING=${ECHO_PORT}`, { timeoutMs: 120_000 });
  await echoOnce(t, await vm.vsockConnect(ECHO_PORT), 256 * 1024);
  const stop = await vm.waitForStop();
  t.is(stop.reason, 'poweroff', vm.serial(1).log().slice(-2000));
});
