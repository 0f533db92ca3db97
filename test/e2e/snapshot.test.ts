/**
 * Tier 2: snapshots of Debian guests. A guest snapshotted after init is
 * restored in a new process: exec works, its clock continued (monotonic, no
 * jump of the time it spent saved), and what it wrote to its virtio-blk disk
 * before the snapshot is on the disk. Eight clones of that snapshot run at
 * once, each with its own overlay, independently. A guest with 2 vCPUs
 * snapshotted while both spin finishes the work after the restore.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ensureGuestArtifacts } from '../../lib/testing/artifacts';
import { e2eSkipReason } from '../../lib/testing/e2e';
import { AGENT_CMDLINE } from '../../lib/testing/harness';
import { openDisk } from '../../lib/vm/disk-images';
import { createVm, restoreVm, type Vm } from '../../lib/vm/vm';

const skip = e2eSkipReason();
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`snapshot e2e skipped: ${skip}`, () => {});

const CLONES = 8;
const MARK = 'SNAPSHOT-DISK-MARK';

async function bootDebian(t: { teardown(f: () => void | Promise<void>): void }, extra: { vcpus?: number; disk?: string } = {}): Promise<Vm> {
  const a = await ensureGuestArtifacts({ arch: 'x86_64' });
  const vm = await createVm({
    kernel: a.vmlinuz,
    initrd: a.testInitramfs,
    // As withVm: the agent on COM2, and a shell on the console so init does not power off.
    cmdline: `${AGENT_CMDLINE} nodevmm.shell=1`,
    memory: '256M',
    vcpus: extra.vcpus ?? 1,
    ...(extra.disk ? { disks: [{ path: extra.disk }] } : {}),
  });
  t.teardown(() => (vm.state === 'stopped' ? undefined : vm.kill().then(() => undefined)));
  await vm.start();
  await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 240_000 });
  return vm;
}

/** A killed VM lets go of its disk once its last request is done (it closes the image after that): wait for it, bounded. */
async function imageUnlocked(image: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      openDisk(image, false).close();
      return;
    } catch (e) {
      if (i > 200) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

const uptime = async (vm: Vm) => Number((await vm.exec('cut -d" " -f1 /proc/uptime', { timeoutMs: 180_000 })).stdout);

e2e('a Debian guest snapshotted after init continues in a new process: exec, a sane clock, and its disk write', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-snap-e2e-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const disk = path.join(dir, 'disk.img');
  fs.writeFileSync(disk, Buffer.alloc(4 << 20));
  const coldStart = Date.now();
  const vm = await bootDebian(t, { disk });
  // Written through to the device (O_DIRECT), so it is on the image, not only in the guest's cache.
  const w = await vm.exec(`printf ${MARK} | dd of=/dev/vda bs=512 count=1 conv=sync oflag=direct 2>/dev/null; echo $?`, { timeoutMs: 180_000 });
  t.is(w.stdout, '0\n');
  const coldBootToExecMs = Date.now() - coldStart;
  const savedUptime = await uptime(vm);
  await vm.pause();
  const snap = path.join(dir, 'snap');
  await vm.snapshot(snap);
  await vm.kill();
  await imageUnlocked(disk);
  t.true(fs.readFileSync(disk).subarray(0, MARK.length).toString() === MARK, 'the write reached the image');

  // A new process: nothing of this one's state is shared.
  const vmModule = require.resolve('../../lib/vm/vm');
  const child = `
    const { restoreVm } = require(${JSON.stringify(vmModule)});
    (async () => {
      const t0 = Date.now();
      const vm = await restoreVm(${JSON.stringify(snap)});
      const up = await vm.exec('cut -d" " -f1 /proc/uptime', { timeoutMs: 180000 });
      const up2 = await vm.exec('sleep 1; cut -d" " -f1 /proc/uptime', { timeoutMs: 180000 });
      const disk = await vm.exec('dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c ${MARK.length}', { timeoutMs: 180000 });
      const restoreToExecMs = Date.now() - t0;
      await vm.kill();
      console.log(JSON.stringify({ up: Number(up.stdout), up2: Number(up2.stdout), disk: disk.stdout, restoreToExecMs }));
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const r = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, ['-e', child], { encoding: 'utf8', timeout: 900_000, maxBuffer: 1 << 24 }, (e, stdout, stderr) => resolve({ status: e ? Number((e as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );
  t.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { up: number; up2: number; disk: string; restoreToExecMs: number };
  t.log(`saved uptime ${savedUptime} s; restored ${out.up} s, then ${out.up2} s`);
  t.log(`restore to first exec ${out.restoreToExecMs} ms (new process), cold boot to first exec ${coldBootToExecMs} ms: ${(out.restoreToExecMs / coldBootToExecMs).toFixed(3)}x`);
  t.is(out.disk, MARK);
  t.true(out.up >= savedUptime, 'the guest clock did not go back');
  // The guest's clock resumes where it was saved: the time the snapshot sat on disk does not count.
  t.true(out.up - savedUptime < 60, `the guest clock jumped ${out.up - savedUptime} s`);
  t.true(out.up2 > out.up, 'the guest clock runs');

  // Eight clones of the same snapshot at once, each with its own overlay: each writes its own mark and reads it back.
  const clones = await Promise.all(Array.from({ length: CLONES }, () => restoreVm(snap, { disks: [{ overlay: 'temp' }] })));
  t.teardown(() => Promise.all(clones.map((c) => (c.state === 'stopped' ? undefined : c.kill()))).then(() => undefined));
  const results = await Promise.all(
    clones.map(async (c, i) => {
      const before = (await c.exec(`dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c ${MARK.length}`, { timeoutMs: 120_000 })).stdout;
      await c.exec(`printf CLONE-${i} | dd of=/dev/vda bs=512 count=1 conv=sync oflag=direct 2>/dev/null`, { timeoutMs: 120_000 });
      const after = (await c.exec('dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c 7', { timeoutMs: 120_000 })).stdout;
      return { before, after };
    }),
  );
  results.forEach((res, i) => {
    t.is(res.before, MARK, `clone ${i} starts from the snapshot's disk`);
    t.is(res.after, `CLONE-${i}`, `clone ${i} reads its own write, no other clone's`);
  });
  await Promise.all(clones.map((c) => c.kill()));
  t.is(fs.readFileSync(disk).subarray(0, MARK.length).toString(), MARK, "the clones' writes stayed in their overlays");
});

e2e('a guest with 2 vCPUs snapshotted while both spin finishes the work after the restore', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-snap-e2e-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const vm = await bootDebian(t, { vcpus: 2 });
  t.is((await vm.exec('grep -c ^processor /proc/cpuinfo', { timeoutMs: 180_000 })).stdout, '2\n');
  // Two busy loops (one per vCPU as the scheduler spreads them), each leaving a file when done.
  await vm.exec('for c in 0 1; do (i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo $i > /tmp/done-$c) & done', { timeoutMs: 180_000 });
  t.is((await vm.exec('ls /tmp/done-* 2>/dev/null | wc -l', { timeoutMs: 180_000 })).stdout, '0\n', 'the loops were still running at the snapshot');
  await vm.pause();
  await vm.snapshot(path.join(dir, 'snap'));
  await vm.kill();
  const r = await restoreVm(path.join(dir, 'snap'));
  t.teardown(() => (r.state === 'stopped' ? undefined : r.kill().then(() => undefined)));
  const done = await r.exec('while [ ! -e /tmp/done-0 ] || [ ! -e /tmp/done-1 ]; do sleep 1; done; cat /tmp/done-0 /tmp/done-1', { timeoutMs: 600_000 });
  t.is(done.stdout, '400000\n400000\n');
});
