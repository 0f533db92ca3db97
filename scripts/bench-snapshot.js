#!/usr/bin/env node
'use strict';
/**
 * Snapshot restore benchmark (issue 18), on this machine's /dev/kvm:
 *
 *  1. In-process restore of the tiny counting guest (lib/testing/counting-
 *     guest.ts) to its first exit: new partition, RAM mapped from the
 *     snapshot file, saved state applied, vCPU started, until the guest's
 *     next port read reaches JS. Beside it, in the same run, a cold start of
 *     the same guest to its first exit. Goal: restore under 5 ms.
 *  2. The same restore for a 256 MiB and a 3 GiB guest (RAM mapped copy-on-
 *     write: the time should not grow with RAM size; ratio ~1).
 *  3. restoreVm() of the tiny PVH VM (devices included) to its first serial
 *     byte, 64 MiB vs 4 GiB.
 *
 * Medians of interleaved rounds; ratios are within this run (the load varies).
 *
 *   node scripts/bench-snapshot.js [--samples N]
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { KvmPartition } = require('../dist/lib/hv/kvm-partition');
const { kvmSkipReason, X86_KVM_PAGES } = require('../dist/lib/testing/kvm-test-helpers');
const { attachCountingDevice, CountingDevice, loadCountingGuest } = require('../dist/lib/testing/counting-guest');
const { tinyPvhKernel } = require('../dist/lib/testing/tiny-pvh');
const { createVm, restoreVm } = require('../dist/lib/vm/vm');
const { numberOption } = require('./lib/options');

const SAMPLES = numberOption('--samples', 30);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const skip = kvmSkipReason();
if (skip) {
  console.log(`bench-snapshot: skipped: ${skip}`);
  process.exit(0);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (v) => `${v.toFixed(2)} ms`;

/** Snapshot the counting guest of `ram` bytes paused inside its 5th read; { state, ramFile }. */
async function snapshotCounting(dir, ram) {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  try {
    loadCountingGuest(p, 1000, ram);
    let paused;
    await new Promise((resolve, reject) => {
      p.once('vcpu-stop', (s) => reject(new Error(`the guest stopped: ${s.message}`)));
      attachCountingDevice(p, new CountingDevice(() => {}, (n) => n === 5 && ((paused = p.pause()), resolve())));
      p.start();
    });
    await paused;
    const state = p.saveState();
    const ramFile = path.join(dir, `ram-${ram}`);
    const fd = fs.openSync(ramFile, 'w');
    p.writeRamTo([fd]);
    fs.closeSync(fd);
    return { state, ramFile, ram };
  } finally {
    p.destroy();
  }
}

/** ms from nothing to the restored guest's first exit to JS. */
async function restoreToFirstExit(s) {
  const t0 = performance.now();
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  try {
    const fd = fs.openSync(s.ramFile, 'r');
    p.addRam({ gpa: 0, size: s.ram, privateFile: fd });
    fs.closeSync(fd);
    p.restoreState(s.state);
    let t1 = 0;
    await new Promise((resolve, reject) => {
      p.once('vcpu-stop', (s) => reject(new Error(`the restored guest stopped: ${s.message}`)));
      const d = new CountingDevice(() => {}, () => {
        if (!t1) {
          t1 = performance.now();
          resolve();
        }
      });
      d.reads = 5;
      attachCountingDevice(p, d);
      p.start();
    });
    return t1 - t0;
  } finally {
    p.destroy();
  }
}

/** ms from nothing to a freshly loaded guest's first exit to JS. */
async function coldToFirstExit(ram) {
  const t0 = performance.now();
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  try {
    loadCountingGuest(p, 1000, ram);
    let t1 = 0;
    await new Promise((resolve) => {
      attachCountingDevice(p, new CountingDevice(() => {}, () => {
        if (!t1) {
          t1 = performance.now();
          resolve();
        }
      }));
      p.start();
    });
    return t1 - t0;
  } finally {
    p.destroy();
  }
}

/** A PVH VM of `memory` snapshotted part-way through a long message. */
async function snapshotPvh(dir, memory) {
  const msg = 'x'.repeat(4000) + '\n';
  const vm = await createVm({ kernel: tinyPvhKernel(msg), boot: 'pvh', memory });
  let paused;
  const reached = new Promise((resolve) => vm.on('serial', () => !paused && vm.serial(1).log().length > 100 && ((paused = vm.pause()), resolve())));
  await vm.start();
  await reached;
  await paused;
  const d = path.join(dir, `vm-${memory}`);
  await vm.snapshot(d);
  await vm.kill();
  return d;
}

async function restoreVmToFirstByte(dir) {
  const t0 = performance.now();
  const vm = await restoreVm(dir);
  await vm.serial(1).expect(/x/, { timeoutMs: 10_000 });
  const t = performance.now() - t0;
  await vm.kill();
  return t;
}

async function main() {
  // A paused partition does not hold the event loop open (it waits for nobody): the benchmark does.
  const keepAlive = setInterval(() => {}, 1000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-bench-snapshot-'));
  try {
    const tiny = await snapshotCounting(dir, 2 * MiB);
    const small = await snapshotCounting(dir, 256 * MiB);
    const big = await snapshotCounting(dir, 3 * GiB); // the most one region holds below the MMIO gap
    const pvhSmall = await snapshotPvh(dir, '64M');
    const pvhBig = await snapshotPvh(dir, '4G');
    for (let i = 0; i < 3; i++) {
      await restoreToFirstExit(tiny);
      await coldToFirstExit(2 * MiB);
    }
    const r = { restore: [], cold: [], r256: [], r4g: [], vm64: [], vm4g: [] };
    for (let i = 0; i < SAMPLES; i++) {
      r.restore.push(await restoreToFirstExit(tiny));
      r.cold.push(await coldToFirstExit(2 * MiB));
      r.r256.push(await restoreToFirstExit(small));
      r.r4g.push(await restoreToFirstExit(big));
      if (i < Math.min(SAMPLES, 10)) {
        r.vm64.push(await restoreVmToFirstByte(pvhSmall));
        r.vm4g.push(await restoreVmToFirstByte(pvhBig));
      }
    }
    const m = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, median(v)]));
    const size = (f) => `${(fs.statSync(f).blocks * 512 / MiB).toFixed(1)} MiB on disk`;
    console.log(`bench-snapshot: ${SAMPLES} samples, medians (${os.cpus()[0].model}, load ${os.loadavg()[0].toFixed(1)})`);
    console.log(`  tiny guest (2 MiB) restore to first exit   ${ms(m.restore)}   (goal < 5 ms)`);
    console.log(`  tiny guest (2 MiB) cold start to first exit ${ms(m.cold)}   restore/cold ${(m.restore / m.cold).toFixed(2)}`);
    console.log(`  restore to first exit, 256 MiB guest        ${ms(m.r256)}   (ram file ${size(small.ramFile)})`);
    console.log(`  restore to first exit, 3 GiB guest          ${ms(m.r4g)}   3 GiB / 256 MiB ${(m.r4g / m.r256).toFixed(2)}`);
    console.log(`  restoreVm (devices) to first serial byte, 64 MiB ${ms(m.vm64)}, 4 GiB ${ms(m.vm4g)}   4 GiB / 64 MiB ${(m.vm4g / m.vm64).toFixed(2)}`);
  } finally {
    clearInterval(keepAlive);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
