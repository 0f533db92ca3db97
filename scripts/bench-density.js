#!/usr/bin/env node
'use strict';
/**
 * Density benchmark (one Node process, this machine's KVM):
 *  - VMs per second booted to the tiny PVH guest's marker and stopped, 1 and
 *    8 at a time, against Firecracker's published 5 microVMs per host core
 *    per second;
 *  - memory per idle VM: RSS growth per added VM (guest pages the tiny guest
 *    touches are under 0.2 MiB), against Firecracker's 5 MiB per VMM.
 *
 *   node --expose-gc scripts/bench-density.js [--seconds S] [--idle N]
 */
const os = require('node:os');
const { createVm } = require('../dist/lib/vm/vm');
const { tinyPvhKernel } = require('../dist/lib/testing/tiny-pvh');
const { processResources, kvmSkipReason } = require('../dist/lib/testing/kvm-test-helpers');

const { numberOption } = require('./lib/options');
const SECONDS = numberOption('--seconds', 10);
const IDLE = numberOption('--idle', 32);
const FC_PER_CORE = 5;
const FC_MIB_PER_VM = 5;

const kernel = tinyPvhKernel('TINY-PVH-OK\n');
const idleKernel = tinyPvhKernel('IDLE\n', { powerOff: false });

async function bootOnce() {
  const vm = await createVm({ kernel, boot: 'pvh', memory: '64M' });
  await vm.start();
  await vm.serial(1).expect('TINY-PVH-OK', { timeoutMs: 10_000 });
  const stop = await vm.waitForStop();
  if (stop.reason !== 'poweroff') throw new Error(`unexpected stop ${stop.reason}`);
}

async function rate(parallel) {
  const started = Date.now();
  let done = 0;
  const worker = async () => {
    while (Date.now() - started < SECONDS * 1000) {
      await bootOnce();
      done++;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return done / ((Date.now() - started) / 1000);
}

async function idleOverhead() {
  const vms = [];
  for (let i = 0; i < 4; i++) {
    // warm-up VM, kept so the first measured one does not pay for lazy init
    const vm = await createVm({ kernel: idleKernel, boot: 'pvh', memory: '64M' });
    await vm.start();
    await vm.serial(1).expect('IDLE');
    vms.push(vm);
  }
  global.gc?.();
  const before = processResources().rssKiB;
  for (let i = 0; i < IDLE; i++) {
    const vm = await createVm({ kernel: idleKernel, boot: 'pvh', memory: '64M' });
    await vm.start();
    await vm.serial(1).expect('IDLE');
    vms.push(vm);
  }
  global.gc?.();
  await new Promise((r) => setTimeout(r, 200));
  const after = processResources();
  for (const vm of vms) await vm.kill();
  return { perVmMiB: (after.rssKiB - before) / IDLE / 1024, threads: after.threads };
}

async function main() {
  const skip = kvmSkipReason();
  if (skip) {
    console.log(`bench-density: skipped: ${skip}`);
    return;
  }
  const cores = os.cpus().length;
  console.log(`host: ${os.cpus()[0].model}, ${cores} cpus, kernel ${os.release()}, node ${process.version}`);
  await rate(1); // warm-up (JIT, allocators)
  const one = await rate(1);
  const eight = await rate(8);
  const fc = FC_PER_CORE * cores;
  console.log(`tiny PVH VMs booted to marker and stopped, ${SECONDS} s each:`);
  console.log(`  1 at a time: ${one.toFixed(1)} VMs/s   8 at a time: ${eight.toFixed(1)} VMs/s   Firecracker published: ${FC_PER_CORE}/core/s = ${fc} VMs/s on ${cores} cores   ratio ${(eight / fc).toFixed(2)}x`);
  const idle = await idleOverhead();
  console.log(`idle VMs in one process: ${idle.perVmMiB.toFixed(2)} MiB RSS per added VM (incl. <0.2 MiB guest pages), Firecracker: ${FC_MIB_PER_VM} MiB per VMM   ratio ${(idle.perVmMiB / FC_MIB_PER_VM).toFixed(2)}x; ${IDLE + 4} VMs -> ${idle.threads} threads`);
}

main().catch((e) => {
  console.error(`bench-density: ${e.message}`);
  process.exit(1);
});
