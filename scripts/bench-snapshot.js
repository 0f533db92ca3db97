#!/usr/bin/env node
'use strict';
/**
 * Snapshot restore benchmark (issue 18), on this machine's /dev/kvm:
 *
 *  1. In-process restore of the tiny counting guest (lib/testing/counting-
 *     guest.ts) to its first exit: new partition with the snapshot's RAM
 *     file mapped copy-on-write (KvmPartition's `ram` option: the slot goes
 *     in before the irqchip), saved state applied, vCPU started, until the
 *     guest's next port read reaches JS. Beside it, in the same run: the
 *     same restore with the RAM added after the partition is made (addRam,
 *     the order before), a cold start of the guest to its first exit, and
 *     scripts/bench/restore-baseline.c, a C program doing the same restore
 *     with raw ioctls in the same order (and in the late order). Goal:
 *     restore under 5 ms; nodevmm / C says what is nodevmm's own.
 *  2. The same restore for a 256 MiB and a 3 GiB guest (RAM mapped copy-on-
 *     write: the time should not grow with RAM size; ratio ~1).
 *  3. restoreVm() of the tiny PVH VM (devices included) to its first serial
 *     byte, 64 MiB vs 4 GiB.
 *
 * Medians of interleaved rounds; ratios are within this run (the load varies).
 *
 *   node scripts/bench-snapshot.js [--samples N]
 *
 * `linux`: the Debian guest of test/e2e/snapshot.test.ts (256 MiB, the test
 * initramfs) with the exec agent on the virtio console as withVm's default
 * guest has it (`--agent com2`: on the UART, one byte per exit), in the
 * emulated KVM host:
 *
 *  1. cold boot to the first `exec` in this process, and restore (restoreVm)
 *     to the first `exec` in this process, interleaved, with the phases of
 *     each restore and a warm exec's round trip for scale; one restore in a
 *     new node process (what `nodevmm run --restore` pays);
 *  2. restore to the first exec of the same guest with 4 GiB of RAM;
 *  3. memory of one booted VM, 8 clones of its snapshot and 8 booted VMs, as
 *     the growth of this process's Pss (/proc/self/smaps_rollup): Pss splits
 *     each page among the processes mapping it, so pages shared copy-on-write
 *     count once; Rss beside it counts a page once per mapping.
 *
 *   flock /tmp/nodevmm-e2e.lock node scripts/kvm-host.js --timeout 2400 -- node scripts/bench-snapshot.js linux [--runs N] [--agent hvc0|com2]
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { vmClosesSettled } = require('../dist/lib/hv/kvm-backend');
const { KvmPartition } = require('../dist/lib/hv/kvm-partition');
const { kvmSkipReason, X86_KVM_PAGES } = require('../dist/lib/testing/kvm-test-helpers');
const { attachCountingDevice, CountingDevice, loadCountingGuest, writeCountingGuest } = require('../dist/lib/testing/counting-guest');
const { tinyPvhKernel } = require('../dist/lib/testing/tiny-pvh');
const { createVm, restoreVm } = require('../dist/lib/vm/vm');
const { flag, numberOption, stringOption } = require('./lib/options');

const SAMPLES = numberOption('--samples', 30);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const MODE = process.argv[2] === 'linux' ? 'linux' : 'tiny';
const RUNS = numberOption('--runs', 5);

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

/**
 * ms from nothing to the restored guest's first exit to JS. `late`: the RAM
 * added once the partition (irqchip, vCPU) exists, as restores did before.
 */
async function restoreToFirstExit(s, late = false) {
  const t0 = performance.now();
  const fd = fs.openSync(s.ramFile, 'r');
  let p;
  try {
    const ram = { gpa: 0, size: s.ram, privateFile: fd };
    p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES, ...(late ? {} : { ram: [ram] }) });
    if (late) p.addRam(ram);
  } finally {
    fs.closeSync(fd);
  }
  try {
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

/** ms from nothing to a freshly loaded guest's first exit to JS (its RAM mapped as a restore's is). */
async function coldToFirstExit(ram) {
  const t0 = performance.now();
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES, ram: [{ gpa: 0, size: ram }] });
  try {
    writeCountingGuest(p, 1000);
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

/** The counting guest's RAM before it ever ran, for the C baseline to start from. */
function freshCountingImage(dir, ram) {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  try {
    loadCountingGuest(p, 1000, ram);
    const file = path.join(dir, `fresh-${ram}`);
    const fd = fs.openSync(file, 'w');
    p.writeRamTo([fd]);
    fs.closeSync(fd);
    return file;
  } finally {
    p.destroy();
  }
}

/** Median ms of restore-baseline.c's restores of `image` (`late`: slot after the irqchip). */
function cRestore(exe, image, ram, dir, samples, late = false) {
  const out = execFileSync(exe, [image, String(ram), dir, String(samples), ...(late ? ['late'] : [])], { encoding: 'utf8', timeout: 120_000 });
  return Number(out.trim());
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
    const exe = path.join(dir, 'restore-baseline');
    execFileSync('cc', ['-O2', '-pthread', '-o', exe, path.join(__dirname, 'bench', 'restore-baseline.c')]);
    const images = { tiny: freshCountingImage(dir, 2 * MiB), small: freshCountingImage(dir, 256 * MiB), big: freshCountingImage(dir, 3 * GiB) };
    for (let i = 0; i < 3; i++) {
      await restoreToFirstExit(tiny);
      await restoreToFirstExit(tiny, true);
      await coldToFirstExit(2 * MiB);
    }
    const r = { restore: [], late: [], cold: [], r256: [], r4g: [], vm64: [], vm4g: [], c: [], cLate: [], c256: [], c4g: [] };
    // Rounds of SAMPLES JS samples, each followed by the C program's SAMPLES restores, so both see the same load.
    const ROUNDS = 3;
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < SAMPLES; i++) {
        // Each after the last VM's fd is closed (a closer thread tears the VM down): the C program closes its VMs before the next, too.
        const settled = async (ms) => (await vmClosesSettled(), ms);
        r.restore.push(await settled(await restoreToFirstExit(tiny)));
        r.late.push(await settled(await restoreToFirstExit(tiny, true)));
        r.cold.push(await settled(await coldToFirstExit(2 * MiB)));
        r.r256.push(await settled(await restoreToFirstExit(small)));
        r.r4g.push(await settled(await restoreToFirstExit(big)));
        if (round === 0 && i < Math.min(SAMPLES, 10)) {
          r.vm64.push(await restoreVmToFirstByte(pvhSmall));
          r.vm4g.push(await restoreVmToFirstByte(pvhBig));
        }
      }
      r.c.push(cRestore(exe, images.tiny, 2 * MiB, dir, SAMPLES));
      r.cLate.push(cRestore(exe, images.tiny, 2 * MiB, dir, SAMPLES, true));
      r.c256.push(cRestore(exe, images.small, 256 * MiB, dir, SAMPLES));
      r.c4g.push(cRestore(exe, images.big, 3 * GiB, dir, SAMPLES));
    }
    const m = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, median(v)]));
    const size = (f) => `${(fs.statSync(f).blocks * 512 / MiB).toFixed(1)} MiB on disk`;
    console.log(`bench-snapshot: ${ROUNDS} rounds of ${SAMPLES} samples, medians (${os.cpus()[0].model}, load ${os.loadavg()[0].toFixed(1)})`);
    const row = (label, a, c, note = '') => console.log(`  ${label.padEnd(44)} ${ms(a).padStart(9)}  ${c === undefined ? ''.padStart(9) : ms(c).padStart(9)}  ${c === undefined ? '     ' : (a / c).toFixed(2).padStart(5)}  ${note}`);
    console.log(`  ${''.padEnd(44)} ${'nodevmm'.padStart(9)}  ${'C'.padStart(9)}  ${'ratio'.padStart(5)}`);
    row('restore to first exit, tiny guest (2 MiB)', m.restore, m.c, '(goal < 5 ms)');
    row('the same, RAM slot after the irqchip', m.late, m.cLate, '(the order before)');
    row('restore to first exit, 256 MiB guest', m.r256, m.c256, `(ram file ${size(small.ramFile)})`);
    row('restore to first exit, 3 GiB guest', m.r4g, m.c4g);
    console.log(`  3 GiB / 256 MiB: nodevmm ${(m.r4g / m.r256).toFixed(2)}, C ${(m.c4g / m.c256).toFixed(2)}`);
    row('cold start to first exit, tiny guest', m.cold, undefined, `restore / cold ${(m.restore / m.cold).toFixed(2)}`);
    console.log(`  restoreVm (devices) to first serial byte, 64 MiB ${ms(m.vm64)}, 4 GiB ${ms(m.vm4g)}   4 GiB / 64 MiB ${(m.vm4g / m.vm64).toFixed(2)}`);
  } finally {
    clearInterval(keepAlive);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** This process's memory now, KiB (smaps_rollup: Rss counts shared pages per mapping, Pss splits them). */
function memoryKiB() {
  const text = fs.readFileSync('/proc/self/smaps_rollup', 'utf8');
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: field('Rss'), pss: field('Pss'), pssAnon: field('Pss_Anon'), pssFile: field('Pss_File'), pssShmem: field('Pss_Shmem') };
}

async function settledMemoryKiB() {
  if (global.gc) global.gc();
  await new Promise((r) => setTimeout(r, 200));
  return memoryKiB();
}

async function linux() {
  const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');
  const { agentCmdline } = require('../dist/lib/testing/harness');
  const a = await ensureGuestArtifacts({ arch: 'x86_64' });
  // The exec agent on the virtio console, as withVm's default guest has it (--agent com2: on the UART).
  const agentPort = stringOption('--agent') ?? 'hvc0';
  if (agentPort !== 'hvc0' && agentPort !== 'com2') {
    console.error(`bench-snapshot: --agent ${agentPort}: give hvc0 or com2`);
    process.exit(2);
  }
  const config = (memory) => ({ kernel: a.vmlinuz, initrd: a.testInitramfs, cmdline: `${agentCmdline('x86_64', agentPort)} nodevmm.shell=1`, memory, virtioConsole: agentPort === 'hvc0' });
  const EXEC = { timeoutMs: 600_000 };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-bench-snapshot-'));
  const keepAlive = setInterval(() => {}, 1000);
  const now = () => performance.now();
  /** Cold boot to the first exec; the running VM and the ms. */
  const cold = async (memory) => {
    const t0 = now();
    const vm = await createVm(config(memory));
    await vm.start();
    await vm.exec('true', EXEC);
    return { vm, ms: now() - t0 };
  };
  /** Restore to the first exec, with where the time went. */
  const restore = async (snap) => {
    const t0 = now();
    const vm = await restoreVm(snap);
    const t1 = now();
    await vm.exec('true', EXEC);
    const t2 = now();
    await vm.exec('true', EXEC);
    const t3 = now();
    return { vm, ms: t2 - t0, restoreVmMs: t1 - t0, firstExecMs: t2 - t1, secondExecMs: t3 - t2, timings: vm.timings };
  };
  /** Boot, warm up (the exec agent, a command), pause, snapshot; the folder and the cold figure. */
  const prepare = async (memory, name) => {
    const c = await cold(memory);
    await c.vm.exec('uname -a >/dev/null; cat /proc/meminfo >/dev/null', EXEC);
    const t0 = now();
    await c.vm.exec('true', EXEC);
    const warmExecMs = now() - t0;
    await c.vm.pause();
    const snap = path.join(dir, name);
    await c.vm.snapshot(snap);
    await c.vm.kill();
    return { snap, coldMs: c.ms, warmExecMs };
  };
  try {
    console.log(`bench-snapshot linux: Debian ${a.kernelVersion} + test initramfs, 1 vCPU, in ${os.cpus()[0].model} (${os.cpus().length} cpus, kernel ${os.release()}), ${RUNS} runs, exec agent on ${agentPort}`);
    const small = await prepare('256M', 'snap-256m');
    const big = flag('--no-4g') ? undefined : await prepare('4G', 'snap-4g');
    const du = (d) => fs.readdirSync(d).reduce((n, f) => n + fs.statSync(path.join(d, f)).blocks * 512, 0) / MiB;
    console.log(`  snapshots: 256 MiB guest ${du(small.snap).toFixed(1)} MiB on disk${big ? `, 4 GiB guest ${du(big.snap).toFixed(1)} MiB` : ''}`);

    // 1 and 2: interleaved cold boots and restores, all in this process.
    const r = { cold: [small.coldMs], restore: [], restoreVm: [], firstExec: [], secondExec: [], big: [], phases: [] };
    for (let i = 0; i < RUNS; i++) {
      const x = await restore(small.snap);
      await x.vm.kill();
      r.restore.push(x.ms);
      r.restoreVm.push(x.restoreVmMs);
      r.firstExec.push(x.firstExecMs);
      r.secondExec.push(x.secondExecMs);
      r.phases.push(x.timings);
      if (big) {
        const y = await restore(big.snap);
        await y.vm.kill();
        r.big.push(y.ms);
      }
      if (i < 2) {
        const c = await cold('256M');
        await c.vm.kill();
        r.cold.push(c.ms);
      }
    }
    // One restore in a new process: node's start and the module loads included.
    const vmModule = require.resolve('../dist/lib/vm/vm');
    const child = `const t0 = performance.now(); const { restoreVm } = require(${JSON.stringify(vmModule)});
      (async () => { const vm = await restoreVm(${JSON.stringify(small.snap)}); await vm.exec('true', { timeoutMs: 600000 });
      console.log(JSON.stringify({ inChild: performance.now() - t0 })); await vm.kill(); })().catch((e) => { console.error(e); process.exit(1); });`;
    const t0 = now();
    const out = await new Promise((resolve, reject) => {
      const c = require('node:child_process').spawn(process.execPath, ['-e', child], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      c.stdout.on('data', (d) => {
        text += d;
        if (text.includes('\n')) resolve({ wall: now() - t0, ...JSON.parse(text.trim().split('\n')[0]) });
      });
      c.on('exit', (code) => code && reject(new Error(`the restoring child exited with ${code}`)));
    });
    const m = (k) => median(r[k]);
    console.log('  in-process, medians:');
    console.log(`    cold boot to first exec            ${ms(m('cold'))}   (${r.cold.length} boots)`);
    console.log(`    restore to first exec              ${ms(m('restore'))}   restore / cold ${(m('restore') / m('cold')).toFixed(3)}   (goal 0.05)`);
    console.log(`      restoreVm() resolved             ${ms(m('restoreVm'))}`);
    console.log(`      then the first exec              ${ms(m('firstExec'))}`);
    console.log(`      a second exec                    ${ms(m('secondExec'))}   (a warm exec before the snapshot: ${ms(small.warmExecMs)})`);
    const phaseNames = [...new Set(r.phases.flat().map(([n]) => n))];
    console.log(`      build phases: ${phaseNames.map((n) => `${n} ${median(r.phases.map((ph) => ph.filter(([k]) => k === n).reduce((s, [, v]) => s + v, 0))).toFixed(1)}`).join(', ')} ms`);
    if (big) console.log(`    restore to first exec, 4 GiB guest ${ms(m('big'))}   4 GiB / 256 MiB ${(m('big') / m('restore')).toFixed(2)}   (its cold boot: ${ms(big.coldMs)})`);
    console.log(`  new process: spawn to first exec ${ms(out.wall)} (inside the child ${ms(out.inChild)}), restore / cold ${(out.wall / m('cold')).toFixed(3)}`);

    // 3: memory.
    const mem = async (label, make) => {
      const before = await settledMemoryKiB();
      const vms = await make();
      await Promise.all(vms.map((v) => v.exec('cat /proc/meminfo >/dev/null', EXEC)));
      const after = await settledMemoryKiB();
      await Promise.all(vms.map((v) => v.kill()));
      const d = (k) => (after[k] - before[k]) / 1024;
      console.log(`    ${label.padEnd(22)} Pss +${d('pss').toFixed(1)} MiB (anon ${d('pssAnon').toFixed(1)}, file ${d('pssFile').toFixed(1)}, shmem ${d('pssShmem').toFixed(1)})   Rss +${d('rss').toFixed(1)} MiB`);
      return d('pss');
    };
    console.log('  memory (growth of this process, 256 MiB guests, each after an exec):');
    const one = await mem('one booted VM', async () => [(await cold('256M')).vm]);
    const oneClone = await mem('one clone', async () => [await restoreVm(small.snap)]);
    const clones = await mem('8 clones', async () => Promise.all(Array.from({ length: 8 }, () => restoreVm(small.snap))));
    // One after another: eight L2 kernels booting at once stall in early boot in this emulated host (docs/testing.md).
    const booted = await mem('8 booted VMs', async () => {
      const vms = [];
      for (let i = 0; i < 8; i++) vms.push((await cold('256M')).vm);
      return vms;
    });
    console.log(`    8 clones / one booted VM ${(clones / one).toFixed(2)}x (goal < 2x); 8 booted / one ${(booted / one).toFixed(2)}x; one clone / one booted ${(oneClone / one).toFixed(2)}x`);
  } finally {
    clearInterval(keepAlive);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

(MODE === 'linux' ? linux() : main()).catch((e) => {
  console.error(e);
  process.exit(1);
});
