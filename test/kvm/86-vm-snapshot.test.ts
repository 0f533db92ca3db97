/**
 * Tier 1: whole-VM snapshots on this machine's /dev/kvm with the tiny PVH
 * guest. It prints a long message on COM1 byte by byte and powers off; a
 * snapshot taken part-way and restored (in this process) prints exactly the
 * rest, every time, and clones run independently of each other and of the
 * original. Refusals are one sentence.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { kvmSkipReason } from '../../lib/testing/kvm-test-helpers';
import { tinyPvhKernel } from '../../lib/testing/tiny-pvh';
import { withVm } from '../../lib/testing/harness';
import { createVm, restoreVm, type Vm } from '../../lib/vm/vm';
import { MiB } from '../../lib/util/bytes';
import { tempDir } from '../temp-dir';

const skip = kvmSkipReason();
const kvm = skip ? test.serial.skip : test.serial;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

// Long enough to outlast how late a console flood's bytes may reach JS (posted writes drain every
// 1-16 ms during a burst, lib/hv/exit-dispatcher.ts): the tests pause the guest part-way through it.
const MESSAGE = Array.from({ length: 1500 }, (_, i) => `line ${String(i).padStart(3, '0')}\n`).join('');

/** A VM printing MESSAGE, paused once at least `after` bytes of it are out. */
async function pausedPartWay(after = 300, extra: { disks?: Array<{ path: string }> } = {}): Promise<Vm> {
  const vm = await createVm({ kernel: tinyPvhKernel(MESSAGE), boot: 'pvh', memory: '64M', ...extra });
  let paused: Promise<void> | undefined;
  const reached = new Promise<void>((resolve) =>
    vm.on('serial', () => {
      if (!paused && vm.serial(1).log().length >= after) {
        paused = vm.pause();
        resolve();
      }
    }),
  );
  await vm.start();
  await reached;
  await paused;
  return vm;
}

/** The rest of the message a restored VM prints before it powers off. */
async function rest(vm: Vm): Promise<string> {
  const stop = await vm.waitForStop();
  if (stop.reason !== 'poweroff') throw new Error(`the restored vm stopped with ${stop.reason}: ${stop.message}`);
  return vm.serial(1).log();
}

kvm('a vm snapshotted part-way through its output and restored prints exactly the rest, each time', async (t) => {
  const dir = path.join(tempDir(t), 'snap');
  const vm = await pausedPartWay();
  const before = vm.serial(1).log();
  const manifest = await vm.snapshot(dir);
  t.is(manifest.formatVersion, 1);
  t.is(manifest.arch, 'x86_64');
  await vm.kill();
  t.true(before.length > 0 && before.length < MESSAGE.length, `${before.length} bytes before the snapshot`);
  for (let i = 0; i < 3; i++) {
    const r = await restoreVm(dir);
    t.is(r.restoredFrom, dir);
    t.is(before + (await rest(r)), MESSAGE);
  }
});

kvm('a vm on anonymous ram is saved byte for byte, and its restore sees what the original held', async (t) => {
  const dir = path.join(tempDir(t), 'snap');
  const vm = await pausedPartWay();
  t.true(vm.partition.ramMappings().every((r) => r.fd === -1), 'anonymous ram (no shares)');
  // A page the guest never touches, written while it is paused.
  const mark = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff);
  vm.memory.write(40 * MiB, mark);
  const before = vm.serial(1).log();
  await vm.snapshot(dir);
  const ram = fs.readFileSync(path.join(dir, 'ram-0'));
  t.is(ram.length, 64 * MiB);
  t.true(ram.equals(vm.memory.read(0, 64 * MiB)), 'the ram file is the paused guest memory');
  await vm.kill();
  const r = await restoreVm(dir);
  t.deepEqual(r.memory.read(40 * MiB, 4096), mark);
  t.is(before + (await rest(r)), MESSAGE);
});

kvm('the original and its clones each finish on their own', async (t) => {
  const vm = await pausedPartWay(200);
  const before = vm.serial(1).log();
  const clones = [await vm.clone(), await vm.clone()];
  await vm.resume();
  const [a, b, orig] = await Promise.all([rest(clones[0]!), rest(clones[1]!), rest(vm)]);
  t.is(before + a, MESSAGE, 'the first clone');
  t.is(before + b, MESSAGE, 'the second clone');
  t.is(orig, MESSAGE, 'the original');
});

kvm('restoring gives the disk image by default and a private overlay when asked', async (t) => {
  const dir = tempDir(t);
  const disk = path.join(dir, 'disk.img');
  fs.writeFileSync(disk, Buffer.alloc(1 << 20, 0x5a));
  const vm = await pausedPartWay(300, { disks: [{ path: disk }] });
  await vm.snapshot(path.join(dir, 'snap'));
  await vm.kill();
  const same = await restoreVm(path.join(dir, 'snap'));
  t.deepEqual(same.config.disks, [{ path: disk, readonly: false }]);
  await same.kill();
  // Two at once on one image: each with its own overlay (the image's lock is shared by overlays' bases).
  const clones = await Promise.all([restoreVm(path.join(dir, 'snap'), { disks: [{ overlay: 'temp' }] }), restoreVm(path.join(dir, 'snap'), { disks: [{ overlay: 'temp' }] })]);
  for (const c of clones) t.deepEqual(c.config.disks, [{ path: disk, readonly: false, overlay: 'temp' }]);
  await Promise.all(clones.map((c) => rest(c)));
});

kvm('a running vm, and a vm written into a folder that is not empty, are refused', async (t) => {
  const vm = await createVm({ kernel: tinyPvhKernel('X\n', { powerOff: false }), boot: 'pvh', memory: '64M' });
  t.teardown(() => void vm.kill());
  await vm.start();
  await t.throwsAsync(vm.snapshot(tempDir(t)), { code: 'ERR_VM_STATE', message: 'cannot snapshot a vm that is running' });
  await vm.pause();
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'other'), '');
  await t.throwsAsync(vm.snapshot(dir), { code: 'ERR_SNAPSHOT', message: /is not empty/ });
});

kvm('restoring a damaged snapshot fails with one sentence naming the file', async (t) => {
  const dir = path.join(tempDir(t), 'snap');
  const vm = await pausedPartWay();
  await vm.snapshot(dir);
  await vm.kill();
  fs.truncateSync(path.join(dir, 'ram-0'), 4096);
  await t.throwsAsync(restoreVm(dir), { code: 'ERR_SNAPSHOT', message: /ram-0 is 4096 bytes, the manifest says 67108864: it was truncated or replaced/ });
  await t.throwsAsync(restoreVm(path.join(dir, 'nothing')), { code: 'ERR_SNAPSHOT', message: /has no manifest\.json/ });
});

kvm('a snapshot whose guest saw a cpu feature this host lacks is refused naming the cpuid bit', async (t) => {
  const dir = path.join(tempDir(t), 'snap');
  const vm = await pausedPartWay();
  await vm.snapshot(dir);
  await vm.kill();
  const mp = path.join(dir, 'manifest.json');
  const m = JSON.parse(fs.readFileSync(mp, 'utf8'));
  // Claim the guest saw every bit of CPUID.7:EBX: no host offers them all.
  const leaf7 = m.guestCpuid.find((e: { function: number; index: number }) => e.function === 7 && e.index === 0);
  leaf7.ebx = 0xffffffff;
  fs.writeFileSync(mp, JSON.stringify(m));
  await t.throwsAsync(restoreVm(dir), { code: 'ERR_SNAPSHOT', message: /^the snapshot's guest saw cpu features this host does not offer \(cpuid leaf 0x7 ebx bits? [\d, ]+\): restore the snapshot on a host with the same cpu$/ });
});

kvm('withVm({ snapshot }) boots once and starts each test from a VM restored from that snapshot', async (t) => {
  const opts = { kernel: tinyPvhKernel(MESSAGE), boot: 'pvh' as const, memory: '64M', agent: false, waitFor: /line 010\n/, snapshot: 'kvm-tier-ready' };
  const runs: Array<{ from: string | undefined; log: string }> = [];
  for (let i = 0; i < 3; i++) {
    await withVm(t, opts, async (vm) => {
      const stop = await vm.waitForStop();
      t.is(stop.reason, 'poweroff');
      runs.push({ from: vm.restoredFrom, log: vm.serial(1).log() });
    });
  }
  t.truthy(runs[0]!.from);
  t.true(runs.every((r) => r.from === runs[0]!.from), 'one snapshot serves every test');
  t.true(runs.every((r) => r.log === runs[0]!.log), 'every test starts from the same point');
  t.true(MESSAGE.endsWith(runs[0]!.log) && runs[0]!.log.length < MESSAGE.length - 10 * 9, 'each continues after the marker');
});
