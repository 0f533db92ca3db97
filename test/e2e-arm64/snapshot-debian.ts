/**
 * The arm64 VM snapshot proof, run inside the emulated arm64 KVM host by
 * in-host.ts: a Debian arm64 guest with 2 vCPUs and a virtio-blk disk
 * writes a mark to its disk, starts a busy loop per vCPU, and is paused and
 * snapshotted while they run. A new Node process restores it: exec works,
 * the guest's uptime continued (not back, no jump of the time on disk), the
 * mark is on the disk, and both loops finish. Then two clones run at once,
 * each with its own overlay, independently.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createVm, restoreVm, type Vm } from '../../lib/index';
import { agentCmdline } from '../../lib/testing/index';

const MARK = 'ARM64-SNAPSHOT-MARK';
const LOOP = 300000;
const EXEC = { timeoutMs: 180_000 };

const uptime = async (vm: Vm) => Number((await vm.exec('cut -d" " -f1 /proc/uptime', EXEC)).stdout);

export async function snapshotDebian(kernel: string, initrd: Uint8Array, step: (what: string) => void, tee: (vm: Vm) => void): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arm64-snapshot-vm-'));
  const out: Record<string, unknown> = {};
  const vms: Vm[] = [];
  try {
    const disk = path.join(dir, 'disk.img');
    fs.writeFileSync(disk, Buffer.alloc(4 << 20));
    const coldStart = Date.now();
    const vm = await createVm({ kernel, initrd, memory: '256M', vcpus: 2, cmdline: `quiet ${agentCmdline('aarch64')} nodevmm.shell=1`, disks: [{ path: disk }] });
    vms.push(vm);
    tee(vm);
    await vm.start();
    await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
    step('snapshotDebian: booted');
    out.nproc = (await vm.exec('grep -c ^processor /proc/cpuinfo', EXEC)).stdout.trim();
    // Written through to the device (O_DIRECT), so it is on the image, not only in the guest's cache.
    await vm.exec(`i=0; while [ ! -e /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; printf ${MARK} | dd of=/dev/vda bs=512 count=1 conv=sync oflag=direct 2>/dev/null`, EXEC);
    out.coldBootToExecMs = Date.now() - coldStart;
    // A busy loop per vCPU (as the scheduler spreads them), each leaving a file when done.
    await vm.exec(`for c in 0 1; do (i=0; while [ $i -lt ${LOOP} ]; do i=$((i+1)); done; echo $i > /tmp/done-$c) >/dev/null 2>&1 & done`, EXEC);
    out.savedUptime = await uptime(vm);
    out.loopsDoneAtSnapshot = Number((await vm.exec('ls /tmp/done-* 2>/dev/null | wc -l', EXEC)).stdout);
    await vm.pause();
    const snap = path.join(dir, 'snap');
    const t0 = Date.now();
    const manifest = await vm.snapshot(snap);
    out.snapshotMs = Date.now() - t0;
    out.manifestArch = manifest.arch;
    out.cpuVendor = manifest.host.cpuVendor;
    await vm.kill();
    step('snapshotDebian: saved');

    // A new process: nothing of this one's state is shared.
    const vmModule = require.resolve('../../lib/vm/vm');
    const child = `
      const { restoreVm } = require(${JSON.stringify(vmModule)});
      (async () => {
        const t0 = Date.now();
        const vm = await restoreVm(${JSON.stringify(snap)});
        const up = await vm.exec('cut -d" " -f1 /proc/uptime', { timeoutMs: 180000 });
        const restoreToExecMs = Date.now() - t0;
        const up2 = await vm.exec('sleep 1; cut -d" " -f1 /proc/uptime', { timeoutMs: 180000 });
        const disk = await vm.exec('dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c ${MARK.length}', { timeoutMs: 180000 });
        const loops = await vm.exec('while [ ! -e /tmp/done-0 ] || [ ! -e /tmp/done-1 ]; do sleep 1; done; cat /tmp/done-0 /tmp/done-1', { timeoutMs: 600000 });
        await vm.kill();
        console.log('CHILD-RESULT ' + JSON.stringify({ up: Number(up.stdout), up2: Number(up2.stdout), disk: disk.stdout, loops: loops.stdout.trim().split('\\n'), restoreToExecMs }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const r = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, ['-e', child], { encoding: 'utf8', timeout: 900_000, maxBuffer: 1 << 24 }, (e, stdout, stderr) => resolve({ status: e ? Number((e as { code?: number }).code ?? 1) : 0, stdout, stderr })),
    );
    const line = /CHILD-RESULT (.*)/.exec(r.stdout)?.[1];
    out.child = line ? JSON.parse(line) : { status: r.status, stderr: r.stderr.slice(-2000), stdout: r.stdout.slice(-1000) };
    step('snapshotDebian: restored in a new process');

    // Two clones at once, each with its own overlay: each reads the mark, writes its own, reads that back.
    const clones = await Promise.all([0, 1].map(() => restoreVm(snap, { disks: [{ overlay: 'temp' }] })));
    vms.push(...clones);
    out.clones = await Promise.all(
      clones.map(async (c, i) => {
        const before = (await c.exec(`dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c ${MARK.length}`, EXEC)).stdout;
        await c.exec(`printf CLONE-${i} | dd of=/dev/vda bs=512 count=1 conv=sync oflag=direct 2>/dev/null`, EXEC);
        const after = (await c.exec('dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c 7', EXEC)).stdout;
        return { before, after };
      }),
    );
    await Promise.all(clones.map((c) => c.kill()));
    out.imageAfterClones = fs.readFileSync(disk).subarray(0, MARK.length).toString('latin1');
    return out;
  } finally {
    await Promise.all(vms.map((v) => (v.state === 'stopped' ? undefined : v.kill())));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
