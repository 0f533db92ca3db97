#!/usr/bin/env node
'use strict';
/**
 * Exit-latency benchmark (issue: foundation). For each kind of exit, the
 * same real-mode guest loop runs under nodevmm and under a raw C KVM_RUN
 * loop (scripts/bench/raw-exits.c, compiled here), interleaved, and the
 * medians and ratios are printed, with each round's own ratio (min / median /
 * max) against the C run beside it. For exits a TypeScript device answers, the
 * C loop also runs with each exit answered by a second thread (the hand-off
 * nodevmm's design makes, without JavaScript). Also: time from `new KvmPartition` to the
 * guest's first exit, beside a C program doing the same steps with raw ioctls
 * (scripts/bench/raw-first-exit.c).
 *
 *   node scripts/bench-exits.js [--iterations N] [--rounds R] [--only REGEX] [--no-first-exit]
 *
 * --only keeps the rows whose label matches REGEX (e.g. --only '^\((c|d)\)');
 * --no-first-exit skips the VM creation measurement.
 */
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { KvmPartition } = require('../dist/lib/hv/kvm-partition');
const { waitForStop, kvmSkipReason, X86_KVM_PAGES } = require('../dist/lib/testing/kvm-test-helpers');

const { numberOption, stringOption, flag } = require('./lib/options');
const N = numberOption('--iterations', 20000);
const ROUNDS = numberOption('--rounds', 5);
const ONLY = stringOption('--only') === undefined ? undefined : new RegExp(stringOption('--only'));
const FIRST_EXIT = !flag('--no-first-exit');

const skip = kvmSkipReason();
if (skip) {
  console.log(`bench-exits: skipped: ${skip}`);
  process.exit(0);
}

// Real-mode loops. Counter in EBP so CPUID (which clobbers EAX-EDX) can sit in the loop.
const imm32 = (v) => [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff];
function loop(body) {
  const head = [0x66, 0xbd, ...imm32(N)]; // mov ebp, N
  const tail = [0x66, 0x4d]; // dec ebp
  const jnzBack = -(body.length + tail.length + 2);
  return [...head, ...body, ...tail, 0x75, jnzBack & 0xff, 0xf4]; // jnz loop; hlt
}
const GUESTS = {
  cpuid: loop([0x66, 0x31, 0xc0, 0x0f, 0xa2]), // xor eax,eax; cpuid      (handled in the kernel)
  pio: loop([0xe6, 0x10]), // out 0x10, al                                 (userspace exit)
  mmio: loop([0xa2, 0x00, 0x00]), // mov [ds:0], al with ds.base = 0xF0000   (userspace exit)
  pioread: loop([0xe4, 0x10]), // in al, 0x10
};

/** Compiles scripts/bench/<name>.c into `dir` (main's temporary folder, removed when it ends). */
function compileBaseline(dir, name) {
  const exe = path.join(dir, name);
  execFileSync('cc', ['-O2', '-pthread', '-o', exe, path.join(__dirname, 'bench', `${name}.c`)]);
  return exe;
}

const FIRST_EXIT_SAMPLES = 25;
function firstExitC(exe) {
  const r = spawnSync(exe, [String(FIRST_EXIT_SAMPLES)]);
  if (r.status !== 0) throw new Error(`baseline failed: ${r.stderr}`);
  return Number(r.stdout.toString().trim());
}

function runC(exe, mode, handoff = false) {
  const r = spawnSync(exe, [mode, String(N), ...(handoff ? ['handoff'] : [])], { input: Buffer.from(GUESTS[mode]) });
  if (r.status !== 0) throw new Error(`baseline failed: ${r.stderr}`);
  return Number(r.stdout.toString().trim().split(/\s+/)[2]);
}

async function runNodevmm(mode, variant) {
  const p = new KvmPartition({ vcpus: 1, irqchip: false, ...(variant.spinUs !== undefined ? { dispatchSpinUs: variant.spinUs } : {}) });
  try {
    p.addRam({ gpa: 0, size: 0xf0000 });
    let count = 0;
    const dev = { name: 'bench', read: () => { count++; return 0; }, write: () => { count++; } };
    if (mode === 'mmio') p.mmio.register(0xf0000, 0x1000, dev);
    else if (variant.path === 'native') p.pio.registerConstant(0x10, 1, 'bench-const', 0);
    else if (variant.path === 'posted') {
      const r = p.pio.register(0x10, 1, dev, { posted: [0] });
      r.shadow.enable(true, true);
    } else p.pio.register(0x10, 1, dev);
    p.memory.write(0x1000, Uint8Array.from(GUESTS[mode]));
    const v = p.vcpus[0];
    const s = v.getSregs();
    v.setSregs({ cs: { ...s.cs, base: 0n, selector: 0 }, ds: { ...s.ds, base: 0xf0000n, selector: 0xf000 } });
    v.setRegs({ rip: 0x1000n, rflags: 2n, rsp: 0x8000n });
    const stop = waitForStop(p, 120000);
    const t0 = process.hrtime.bigint();
    p.start();
    await stop;
    const t1 = process.hrtime.bigint();
    return { ns: Number(t1 - t0) / N, count, stats: p.stats() };
  } finally {
    p.destroy();
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timeToFirstExit() {
  const samples = [];
  for (let i = 0; i < FIRST_EXIT_SAMPLES + 5; i++) {
    const t0 = process.hrtime.bigint();
    let t1 = 0n;
    const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
    p.addRam({ gpa: 0, size: 256 * 1024 * 1024 });
    const done = new Promise((resolve) => {
      p.pio.register(0x10, 1, { name: 'first-exit', read: () => 0, write: () => { t1 = process.hrtime.bigint(); resolve(); } });
    });
    p.memory.write(0x1000, Uint8Array.of(0xe6, 0x10, 0xf4)); // out 0x10, al; hlt
    const v = p.vcpus[0];
    const s = v.getSregs();
    v.setSregs({ cs: { ...s.cs, base: 0n, selector: 0 } });
    v.setRegs({ rip: 0x1000n });
    p.start();
    await done;
    p.destroy();
    if (i >= 5) samples.push(Number(t1 - t0) / 1e6);
  }
  return median(samples);
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-bench-'));
  try {
    await measure(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function measure(dir) {
  const exe = compileBaseline(dir, 'raw-exits');
  const firstExe = compileBaseline(dir, 'raw-first-exit');
  const rows = [
    { label: '(a) cpuid, handled in the kernel', mode: 'cpuid', variant: { path: 'kernel' } },
    { label: '(b) port write, answered natively (constant route)', mode: 'pio', variant: { path: 'native' } },
    { label: '(b2) port write, posted (queued for a TS device)', mode: 'pio', variant: { path: 'posted' } },
    { label: '(c) port write, TypeScript device', mode: 'pio', variant: { path: 'js' } },
    { label: '(c2) port read, TypeScript device', mode: 'pioread', variant: { path: 'js' } },
    { label: '(c0) port write, TypeScript device, polling off', mode: 'pio', variant: { path: 'js', spinUs: 0 } },
    { label: '(d) MMIO write, TypeScript device', mode: 'mmio', variant: { path: 'js' } },
    { label: '(d0) MMIO write, TypeScript device, polling off', mode: 'mmio', variant: { path: 'js', spinUs: 0 } },
  ];
  console.log(`exit latency: ${N} iterations per run, ${ROUNDS} interleaved rounds, medians; baseline = raw C KVM_RUN loop, same guest; "rounds": min / median / max of each round's ratio`);
  console.log(`host: ${os.cpus()[0].model}, ${os.cpus().length} cpus, ${os.release()}, node ${process.version}`);
  const out = [];
  for (const row of rows) {
    if (ONLY && !ONLY.test(row.label)) continue;
    const c = [];
    const n = [];
    // For an exit a TypeScript device answers, also the C loop with the same hand-off between
    // two threads (raw-exits.c "handoff"): what moving an exit to another core costs here.
    const handoff = row.variant.path === 'js' && row.variant.spinUs === undefined;
    const h = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Which side goes first alternates, so a drift of the host's speed (an exit here
      // costs ±15 % from one second to the next) does not always favour the same side.
      if (r % 2 === 0) c.push(runC(exe, row.mode));
      n.push((await runNodevmm(row.mode, row.variant)).ns);
      if (handoff) h.push(runC(exe, row.mode, true));
      if (r % 2 === 1) c.push(runC(exe, row.mode));
    }
    const cm = median(c);
    const nm = median(n);
    // Each round's ratio against the C run beside it: the spread says how far one
    // ratio of medians can be trusted.
    const perRound = n.map((x, i) => x / c[i]).sort((a, b) => a - b);
    const spread = `rounds ${perRound[0].toFixed(2)} / ${median(perRound).toFixed(2)} / ${perRound[perRound.length - 1].toFixed(2)}`;
    out.push({ label: row.label, nodevmm: nm, c: cm, ratio: nm / cm, perRound, ...(handoff ? { cHandoff: median(h) } : {}) });
    console.log(`${row.label.padEnd(62)} nodevmm ${nm.toFixed(0).padStart(6)} ns   raw C ${cm.toFixed(0).padStart(6)} ns   ratio ${(nm / cm).toFixed(2)}x   ${spread}`);
    if (handoff) {
      const hm = median(h);
      console.log(`${''.padEnd(62)} raw C answering on a second thread ${hm.toFixed(0).padStart(6)} ns (${(hm / cm).toFixed(2)}x the plain loop); nodevmm ${(nm / hm).toFixed(2)}x that`);
    }
  }
  if (!FIRST_EXIT) return;
  // Interleaved as above: C, nodevmm, C, nodevmm...; medians of the rounds' medians.
  const firstC = [];
  const firstN = [];
  for (let r = 0; r < ROUNDS; r++) {
    firstC.push(firstExitC(firstExe));
    firstN.push(await timeToFirstExit());
  }
  const first = median(firstN);
  const firstRaw = median(firstC);
  console.log(
    `${'create vm (1 vcpu, 256 MiB, irqchip+pit), run to first exit'.padEnd(62)} nodevmm ${first.toFixed(2).padStart(6)} ms   raw C ${firstRaw.toFixed(2).padStart(6)} ms   ratio ${(first / firstRaw).toFixed(2)}x`,
  );
  if (process.env.BENCH_JSON) {
    fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify({ rows: out, firstExitMs: first, firstExitRawCMs: firstRaw }, null, 2));
  }
}

main().catch((e) => {
  console.error(`bench-exits: ${e.message}`);
  process.exit(1);
});
