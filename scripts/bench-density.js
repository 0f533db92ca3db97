#!/usr/bin/env node
'use strict';
/**
 * Density benchmark (one Node process, this machine's KVM):
 *  - VMs per second booted to the tiny PVH guest's marker and stopped, 1 and
 *    8 at a time, and the process's CPU time per VM (user + system, all
 *    threads: VMs per core-second is 1000 / that), against Firecracker's
 *    published 5 microVMs per host core per second and, in the same run,
 *    scripts/bench/raw-churn.c: a C program taking the same KVM steps for
 *    each VM's whole life (create, 64 MiB slot, irqchip, PIT, vCPU, 13 port
 *    exits, close), 1 and 8 threads. On a shared machine the wall-clock
 *    rates move with the load (printed); CPU per VM does not;
 *  - memory per idle VM: RSS growth per added VM, guest pages excluded (the
 *    tiny guest touches a few pages, but guest RAM asks for transparent huge
 *    pages, so they are resident as 2 MiB pages: AnonHugePages growth is
 *    subtracted), against Firecracker's 5 MiB per VMM;
 *  - with the guest artifacts cached (scripts/guest-artifacts.js): RSS growth
 *    per added VM created from Debian's kernel and the test initramfs, from
 *    their files (VMs share the bytes) against the same images handed to
 *    each VM as its own copy (what every VM held before they were shared).
 *    The VMs are created, not started: this machine's KVM cannot run Linux.
 *
 *   node --expose-gc scripts/bench-density.js [--seconds S] [--idle N]
 */
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { createVm } = require('../dist/lib/vm/vm');
const { tinyPvhKernel } = require('../dist/lib/testing/tiny-pvh');
const { processResources, kvmSkipReason } = require('../dist/lib/testing/kvm-test-helpers');

const { findGuestArtifacts } = require('../dist/lib/testing/artifacts');
const fs = require('node:fs');
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

/** VMs per second with `parallel` at a time, and this process's CPU milliseconds per VM. */
async function rate(parallel) {
  const started = Date.now();
  const cpu0 = process.cpuUsage();
  let done = 0;
  const worker = async () => {
    while (Date.now() - started < SECONDS * 1000) {
      await bootOnce();
      done++;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  const cpu = process.cpuUsage(cpu0);
  return { perS: done / ((Date.now() - started) / 1000), cpuMs: (cpu.user + cpu.system) / 1000 / done };
}

/** The C baseline: [VMs per second, CPU ms per VM] for `vms` VMs on each of `threads` threads. */
function rawChurn(exe, vms, threads) {
  const [perS, cpuMs] = execFileSync(exe, [String(vms), '64', String(threads)], { encoding: 'utf8' }).trim().split(' ').map(Number);
  return { perS, cpuMs };
}

/** Resident anonymous memory in transparent huge pages, in KiB. */
function anonHugeKiB() {
  return Number(/^AnonHugePages:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1] ?? 0);
}

/**
 * RSS growth per VM that `make` adds, in MiB, after `warm` VMs made first (so lazy
 * start-up costs are not counted), with the growth of transparent huge pages apart:
 * guest RAM asks for THP, so the few pages a tiny guest touches are resident as whole
 * 2 MiB pages, and nothing else in the process uses THP here. VMs are held until measured.
 */
async function growthPerAddedVm(make, n, warm) {
  const vms = [];
  for (let i = 0; i < warm; i++) vms.push(await make());
  global.gc?.();
  const before = processResources().rssKiB;
  const hugeBefore = anonHugeKiB();
  for (let i = 0; i < n; i++) vms.push(await make());
  global.gc?.();
  await new Promise((r) => setTimeout(r, 200));
  const after = processResources();
  const hugeAfter = anonHugeKiB();
  for (const vm of vms) await vm.kill();
  const perVmMiB = (after.rssKiB - before) / n / 1024;
  const guestMiB = (hugeAfter - hugeBefore) / n / 1024;
  return { perVmMiB, guestMiB, vmmMiB: perVmMiB - guestMiB, threads: after.threads };
}

async function idleVm() {
  const vm = await createVm({ kernel: idleKernel, boot: 'pvh', memory: '64M' });
  await vm.start();
  await vm.serial(1).expect('IDLE');
  return vm;
}

async function main() {
  const skip = kvmSkipReason();
  if (skip) {
    console.log(`bench-density: skipped: ${skip}`);
    return;
  }
  const cores = os.cpus().length;
  console.log(`host: ${os.cpus()[0].model}, ${cores} cpus, kernel ${os.release()}, node ${process.version}`);
  const rawExe = path.join(os.tmpdir(), `nodevmm-raw-churn-${process.pid}`);
  execFileSync('cc', ['-O2', '-pthread', '-o', rawExe, path.join(__dirname, 'bench', 'raw-churn.c')]);
  let raw1;
  let raw8;
  let one;
  let eight;
  try {
    await rate(1); // warm-up (JIT, allocators)
    raw1 = rawChurn(rawExe, 100, 1);
    one = await rate(1);
    raw8 = rawChurn(rawExe, 40, 8);
    eight = await rate(8);
  } finally {
    fs.rmSync(rawExe, { force: true });
  }
  const fc = FC_PER_CORE * cores;
  const perCore = (r) => `${(1000 / r.cpuMs).toFixed(0)}/core-s`;
  console.log(`tiny PVH VMs booted to marker and stopped, ${SECONDS} s each (load average ${os.loadavg()[0].toFixed(1)} on ${cores} cores):`);
  console.log(`  nodevmm, 1 at a time: ${one.perS.toFixed(1)} VMs/s, CPU ${one.cpuMs.toFixed(2)} ms/VM (${perCore(one)})   8 at a time: ${eight.perS.toFixed(1)} VMs/s, CPU ${eight.cpuMs.toFixed(2)} ms/VM (${perCore(eight)})`);
  console.log(`  raw C, 1 thread:      ${raw1.perS.toFixed(1)} VMs/s, CPU ${raw1.cpuMs.toFixed(2)} ms/VM (${perCore(raw1)})   8 threads:   ${raw8.perS.toFixed(1)} VMs/s, CPU ${raw8.cpuMs.toFixed(2)} ms/VM (${perCore(raw8)})`);
  console.log(`  ratios nodevmm / raw C: 1 at a time ${(one.perS / raw1.perS).toFixed(2)}x, 8 at a time ${(eight.perS / raw8.perS).toFixed(2)}x; Firecracker published: ${FC_PER_CORE}/core/s = ${fc} VMs/s on ${cores} cores   ratio ${(eight.perS / fc).toFixed(2)}x`);
  const idle = await growthPerAddedVm(idleVm, IDLE, 4);
  console.log(`idle VMs in one process: ${idle.perVmMiB.toFixed(2)} MiB RSS per added VM, of which guest RAM in huge pages ${idle.guestMiB.toFixed(2)} MiB; VMM overhead ${idle.vmmMiB.toFixed(2)} MiB, Firecracker: ${FC_MIB_PER_VM} MiB per VMM   ratio ${(idle.vmmMiB / FC_MIB_PER_VM).toFixed(2)}x; ${IDLE + 4} VMs -> ${idle.threads} threads`);
  const a = findGuestArtifacts();
  if (!a) {
    console.log('Linux images: skipped (no cached guest artifacts; node scripts/guest-artifacts.js fetches them)');
    return;
  }
  const config = { kernel: a.vmlinuz, initrd: a.testInitramfs, memory: '128M' };
  const shared = (await growthPerAddedVm(() => createVm(config), 8, 1)).perVmMiB;
  const kernelBytes = fs.readFileSync(a.vmlinuz);
  const initrdBytes = fs.readFileSync(a.testInitramfs);
  const copied = (await growthPerAddedVm(() => createVm({ ...config, kernel: new Uint8Array(kernelBytes), initrd: new Uint8Array(initrdBytes) }), 8, 1)).perVmMiB;
  const imageMiB = (kernelBytes.length + initrdBytes.length) / 1048576;
  console.log(`VMs created from Debian's kernel + test initramfs (${imageMiB.toFixed(1)} MiB of images): ${shared.toFixed(2)} MiB RSS per added VM from the files (shared), ${copied.toFixed(2)} MiB with a copy each   ratio ${(shared / copied).toFixed(2)}x`);
}

main().catch((e) => {
  console.error(`bench-density: ${e.message}`);
  process.exit(1);
});
