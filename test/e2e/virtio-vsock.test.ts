/**
 * Tier 2: virtio-vsock over the host kernel's vhost-vsock, seen by Debian's
 * kernel. The guest runs a tiny static program (test/e2e/guest/vsockt.c,
 * built with gcc -static here, since busybox has no vsock): it echoes one
 * host connection (1 MiB each way, checked by hash on the host), then
 * connects to the host (cid 2) and sends 1 MiB of a known pattern. A second
 * VM asking for the same CID fails with one sentence.
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
import type { VsockStream } from '../../lib/vm/vsock-stream';

const noVhost = fs.existsSync('/dev/vhost-vsock') ? undefined : '/dev/vhost-vsock does not exist (modprobe vhost_vsock)';
const skip = e2eSkipReason() ?? noVhost;
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`virtio-vsock e2e skipped: ${skip}`, () => {});

const MiB = 2 ** 20;
/** Unique per process, so parallel runs on one host do not collide. */
const CID = 3 + (process.pid % 1000);
const ECHO_PORT = 5000;
const HOST_PORT = 6000 + (process.pid % 1000);

function buildInitrd(dir: string): string {
  const a = e2eArtifacts!;
  const bin = path.join(dir, 'vsockt');
  const src = path.resolve(__dirname, '..', '..', '..', 'test', 'e2e', 'guest', 'vsockt.c');
  const cc = spawnSync('gcc', ['-static', '-O2', '-o', bin, src], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`gcc -static failed (apt-get install gcc libc6-dev): ${cc.stderr || cc.error}`);
  const modules = GUEST_MODULES.map((name) => ({ name, data: new Uint8Array(fs.readFileSync(path.join(a.modulesDir, `${name}.ko`))) }));
  const initrd = path.join(dir, 'initrd.cpio.gz');
  fs.writeFileSync(initrd, buildTestInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)), modules, extraFiles: [{ path: '/bin/vsockt', data: new Uint8Array(fs.readFileSync(bin)), mode: 0o755 }] }));
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

e2e('host to guest: 1 MiB echoed over vsock; guest to host: 1 MiB received; a second VM cannot take the same CID', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-vsock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const initrd = buildInitrd(dir);
  const command = [`/bin/vsockt echo ${ECHO_PORT}`, `/bin/vsockt send ${HOST_PORT} ${MiB}`].join('; ');
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
    const payload = randomBytes(MiB);
    const echoed = collect(s);
    s.end(payload);
    const back = await echoed;
    t.is(back.length, MiB);
    t.is(sha(back), sha(payload));
    await new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));

    const got = await fromGuest;
    t.is(got.length, MiB);
    const want = Buffer.alloc(MiB);
    for (let i = 0; i < MiB; i++) want[i] = (i * 7 + 3) & 0xff;
    t.true(got.equals(want));

    const stop = await vm.waitForStop();
    const log = vm.serial(1).log().replace(/\r/g, '');
    const m = guestMarkers(log);
    t.is(stop.reason, 'poweroff', log.slice(-3000));
    t.is(m['VSOCK-ECHOED'], String(MiB));
    t.is(m['VSOCK-SENT'], String(MiB));
    t.is(m['VSOCK-ERROR'], undefined);
  } finally {
    clearTimeout(timer);
  }

  // Nothing to connect to once the VM stopped, and the error says why.
  await t.throwsAsync(() => vm.vsockConnect(ECHO_PORT), { message: 'cannot connect over vsock to a vm that is stopped' });
});
