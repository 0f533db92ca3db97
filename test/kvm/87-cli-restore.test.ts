/**
 * Tier 1: `nodevmm run --restore DIR` continues, in a new process, a VM
 * this process snapshotted part-way through its output: the child prints
 * exactly the rest of the message and exits 0 when the guest powers off.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { kvmSkipReason } from '../../lib/testing/kvm-test-helpers';
import { tinyPvhKernel } from '../../lib/testing/tiny-pvh';
import { createVm } from '../../lib/vm/vm';
import { tempDir } from '../temp-dir';

const skip = kvmSkipReason();
const kvm = skip ? test.serial.skip : test.serial;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

const BIN = path.resolve(__dirname, '../../../bin/nodevmm.js');
// Long enough to outlast how late a console flood's bytes may reach JS (posted writes drain every
// 1-16 ms during a burst, lib/hv/exit-dispatcher.ts): the test pauses the guest part-way through it.
const MESSAGE = Array.from({ length: 1200 }, (_, i) => `row ${String(i).padStart(3, '0')}\n`).join('');

kvm('nodevmm run --restore continues a snapshot in a new process and ends with the guest', async (t) => {
  const dir = path.join(tempDir(t), 'snap');
  const vm = await createVm({ kernel: tinyPvhKernel(MESSAGE), boot: 'pvh', memory: '64M' });
  let paused: Promise<void> | undefined;
  const reached = new Promise<void>((resolve) =>
    vm.on('serial', () => {
      if (!paused && vm.serial(1).log().length >= 250) {
        paused = vm.pause();
        resolve();
      }
    }),
  );
  await vm.start();
  await reached;
  await paused;
  const before = vm.serial(1).log();
  await vm.snapshot(dir);
  await vm.kill();
  const r = spawnSync(process.execPath, [BIN, 'run', '--restore', dir, '--com1', 'stdio'], { timeout: 60_000, input: '' });
  t.is(r.status, 0, r.stderr.toString());
  t.is(before + r.stdout.toString('latin1'), MESSAGE);
  const bad = spawnSync(process.execPath, [BIN, 'run', '--restore', path.join(dir, 'missing'), '--com1', 'stdio'], { timeout: 60_000, input: '' });
  t.is(bad.status, 2);
  t.regex(bad.stderr.toString(), /^nodevmm: .*has no manifest\.json: it is not a nodevmm snapshot, or its writing did not finish\n$/);
});
