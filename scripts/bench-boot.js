#!/usr/bin/env node
'use strict';
/**
 * Boot benchmarks: nodevmm against QEMU in the same run, interleaved, medians
 * and ratios.
 *
 *   node scripts/bench-boot.js tiny [--runs N]
 *     The tiny PVH guest (prints a marker on COM1, powers off) on this
 *     machine's KVM: process start to exit and peak RSS, `nodevmm run` against
 *     `qemu-system-x86_64 -M microvm` with -device isa-debug-exit. Two
 *     baselines in the same run, interleaved: a bare `node -e` printing the
 *     marker (what any Node CLI pays before its first line), and
 *     scripts/bench/raw-first-exit.c (what a C VMM pays this machine's KVM to
 *     create a VM with irqchip, PIT, RAM and a vCPU and run it to its first
 *     exit); nodevmm's own part is its marker time minus node's.
 *     --cpu adds the main thread's CPU time from process start to the marker
 *     (scripts/bench/marker-cpu.js, preloaded into nodevmm and the bare node
 *     alike): the same own part, measured so that a busy shared host does not
 *     stretch it.
 *     --against DIR also times another checkout's bin/nodevmm.js (built, e.g.
 *     `git worktree add` of an older commit + npm run build) in the same
 *     rounds, for before/after figures under the same machine load.
 *
 *   node scripts/bench-boot.js console [--runs N] [--bytes N]
 *     The console path alone, on this machine's KVM: a tiny PVH guest that
 *     prints N bytes (default 24,000, what Debian's kernel prints while it
 *     boots) on COM1 as Linux's 8250 console does (an LSR read before each THR
 *     write), nodevmm against QEMU microvm, interleaved; wall time to the
 *     last line and the process's CPU time (user and system, /usr/bin/time),
 *     each minus the same VMM's run of a one-line guest, so that start-up is
 *     not counted. --against DIR also times another checkout's
 *     bin/nodevmm.js in the same rounds (as for tiny).
 *
 *   node scripts/bench-boot.js linux [--runs N] [--image bzimage|pvh|both]
 *     Debian's kernel + the test initramfs under a real KVM (run it through
 *     `node scripts/kvm-host.js -- node scripts/bench-boot.js linux` where
 *     /dev/kvm is KVM-PVM): process start to GUEST-INIT-OK and to exit,
 *     nodevmm against QEMU microvm with the same kernel, initrd, command line,
 *     memory and vCPUs; the bzImage (Linux boot protocol) and the vmlinux ELF
 *     extracted from it (PVH entry; QEMU takes it through -kernel too),
 *     interleaved. Each figure: min / median / max and the medians' ratio.
 *     "kernel clock start" is when the guest's printk clock read 0, after
 *     process start (for the bzImage: the decompressor included). --against
 *     DIR also boots another checkout's bin/nodevmm.js in the same rounds.
 */
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const { args, flag, numberOption, stringOption } = require('./lib/options');
const mode = args[0];
const RUNS = numberOption('--runs', mode === 'linux' ? 5 : 21);
const IMAGE = stringOption('--image') ?? 'both';
/**
 * nodevmm's serial ports as QEMU's command line has them: COM1 on stdio and no
 * others (the CLI otherwise gives the guest COM2-COM4 bound to nothing, three
 * more UARTs for Linux to probe and register).
 */
const ONE_UART = ['--com1', 'stdio', '--com2', 'none', '--com3', 'none', '--com4', 'none'];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Spawn under /usr/bin/time (for peak RSS); resolve with timings of the first match of `marker` and of exit,
 * and `kernelMs`: when a Linux guest's clock started, after process start (each console line's arrival minus
 * its printk timestamp, the smallest: lines that waited in the console's backlog arrive later than that).
 * For a bzImage that includes the decompressor's time in the guest.
 */
function timed(cmd, argv, marker, timeoutMs, env = process.env) {
  return new Promise((resolve, reject) => {
    const rssFile = path.join(os.tmpdir(), `nodevmm-bench-rss-${process.pid}-${Math.random().toString(36).slice(2)}`);
    const t0 = process.hrtime.bigint();
    // Its own process group, so a timeout kills the VMM under /usr/bin/time too (killing only
    // `time` would leave the VMM holding the pipes open, and 'close' would never come).
    const child = spawn('/usr/bin/time', ['-f', '%M %U %S', '-o', rssFile, cmd, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env });
    let out = '';
    let markerMs;
    let kernelMs = NaN;
    let scanned = 0;
    const onData = (d) => {
      out += d;
      const now = Number(process.hrtime.bigint() - t0) / 1e6;
      if (markerMs === undefined && out.includes(marker)) markerMs = now;
      const end = out.lastIndexOf('\n') + 1;
      for (const m of out.slice(scanned, end).matchAll(/^\[\s*(\d+\.\d+)\]/gm)) {
        const at = now - Number(m[1]) * 1000;
        if (!(at >= kernelMs)) kernelMs = at;
      }
      if (end > scanned) scanned = end;
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
    }, timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      const exitMs = Number(process.hrtime.bigint() - t0) / 1e6;
      let rssKiB = NaN;
      let userMs = NaN;
      let sysMs = NaN;
      try {
        const [rss, user, sys] = fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
        rssKiB = rss;
        userMs = user * 1000;
        sysMs = sys * 1000;
        fs.rmSync(rssFile);
      } catch {}
      if (markerMs === undefined) return reject(new Error(`${cmd} never printed ${marker} (status ${status}); output tail:\n${out.slice(-2000)}`));
      resolve({ markerMs, exitMs, kernelMs, rssKiB, userMs, sysMs, status });
    });
  });
}

function report(label, rows) {
  const line = (name, f, unit, digits = 1) => {
    const n = median(rows.nodevmm.map(f));
    const q = median(rows.qemu.map(f));
    console.log(`  ${name.padEnd(28)} nodevmm ${n.toFixed(digits).padStart(8)} ${unit}   qemu ${q.toFixed(digits).padStart(8)} ${unit}   ratio ${(n / q).toFixed(2)}x`);
  };
  console.log(label);
  return line;
}

async function tiny() {
  const { tinyPvhKernel } = require('../dist/lib/testing/tiny-pvh');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-bench-'));
  const ours = path.join(dir, 'tiny-acpi.elf');
  const theirs = path.join(dir, 'tiny-debugexit.elf');
  fs.writeFileSync(ours, tinyPvhKernel('TINY-PVH-OK\n'));
  fs.writeFileSync(theirs, tinyPvhKernel('TINY-PVH-OK\n', { exit: 'isa-debug-exit' }));
  const rows = { nodevmm: [], qemu: [] };
  let cpu;
  const bareNode = [];
  const rawKvm = [];
  const againstDir = stringOption('--against');
  // --cpu: every node process preloads marker-cpu.js, which appends its main thread's CPU time at the marker to a file per kind.
  const cpuFiles = flag('--cpu') ? { nodevmm: path.join(dir, 'cpu-nodevmm'), against: path.join(dir, 'cpu-against'), bare: path.join(dir, 'cpu-bare') } : undefined;
  const node = (kind, argv) => (cpuFiles ? ['-r', path.join(__dirname, 'bench', 'marker-cpu.js'), ...argv] : argv);
  const cpuEnv = (kind) => (cpuFiles ? { ...process.env, NODEVMM_BENCH_CPU_FILE: cpuFiles[kind] } : process.env);
  const against = [];
  const runArgs = ['run', '--kernel', ours, '--boot', 'pvh', '-m', '128M', '--com1', 'stdio'];
  try {
    const rawExe = path.join(dir, 'raw-first-exit');
    execFileSync('cc', ['-O2', '-pthread', '-o', rawExe, path.join(__dirname, 'bench', 'raw-first-exit.c')]);
    for (let i = 0; i < RUNS; i++) {
      rows.nodevmm.push(await timed(process.execPath, node('nodevmm', [path.join(root, 'bin', 'nodevmm.js'), ...runArgs]), 'TINY-PVH-OK', 30_000, cpuEnv('nodevmm')));
      if (againstDir) against.push(await timed(process.execPath, node('against', [path.join(path.resolve(againstDir), 'bin', 'nodevmm.js'), ...runArgs]), 'TINY-PVH-OK', 30_000, cpuEnv('against')));
      rows.qemu.push(await timed('qemu-system-x86_64', ['-M', 'microvm', '-accel', 'kvm', '-m', '128M', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-device', 'isa-debug-exit', '-kernel', theirs], 'TINY-PVH-OK', 30_000));
      bareNode.push(await timed(process.execPath, node('bare', ['-e', 'process.stdout.write("TINY-PVH-OK\\n")']), 'TINY-PVH-OK', 10_000, cpuEnv('bare')));
      rawKvm.push(Number(execFileSync(rawExe, ['3']).toString().trim()));
    }
    if (cpuFiles) {
      const ms = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split('\n').map((ns) => Number(ns) / 1e6) : []);
      cpu = { nodevmm: median(ms(cpuFiles.nodevmm)), bare: median(ms(cpuFiles.bare)), against: againstDir ? median(ms(cpuFiles.against)) : undefined };
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const line = report(`tiny PVH guest, 128 MiB, 1 vCPU, ${RUNS} interleaved runs, medians (process start to ...)`, rows);
  line('marker on COM1', (r) => r.markerMs, 'ms');
  line('exit', (r) => r.exitMs, 'ms');
  line('peak RSS', (r) => r.rssKiB / 1024, 'MiB');
  const nodeMs = median(bareNode.map((r) => r.markerMs));
  const ownMs = median(rows.nodevmm.map((r) => r.markerMs)) - nodeMs;
  const kvmMs = median(rawKvm);
  console.log(`  bare node -e printing the marker: ${nodeMs.toFixed(1)} ms; nodevmm's own part (marker minus that): ${ownMs.toFixed(1)} ms`);
  if (againstDir) {
    const m = median(against.map((r) => r.markerMs));
    console.log(`  --against ${againstDir}: marker ${m.toFixed(1)} ms, exit ${median(against.map((r) => r.exitMs)).toFixed(1)} ms, own part ${(m - nodeMs).toFixed(1)} ms (this checkout: ${ownMs.toFixed(1)} ms)`);
  }
  if (cpu) {
    const also = cpu.against !== undefined ? `; --against: ${cpu.against.toFixed(1)} ms, own part ${(cpu.against - cpu.bare).toFixed(1)} ms` : '';
    console.log(`  main-thread CPU, process start to marker (--cpu): nodevmm ${cpu.nodevmm.toFixed(1)} ms, bare node ${cpu.bare.toFixed(1)} ms, own part ${(cpu.nodevmm - cpu.bare).toFixed(1)} ms${also}`);
  }
  console.log(`  raw C, this machine's KVM: create vm (irqchip, PIT, 256 MiB, 1 vCPU) and run to the first exit: ${kvmMs.toFixed(1)} ms; nodevmm's own part without it: ${(ownMs - kvmMs).toFixed(1)} ms`);
  // Baseline for "minus guest memory": a Node process that does nothing.
  const idle = [];
  for (let i = 0; i < 5; i++) idle.push((await timed(process.execPath, ['-e', 'console.log("IDLE")'], 'IDLE', 10_000)).rssKiB);
  console.log(`  (node -e itself peaks at ${(median(idle) / 1024).toFixed(1)} MiB; the tiny guest touches under 0.2 MiB of guest RAM)`);
}

async function consoleOutput() {
  const { tinyPvhKernel } = require('../dist/lib/testing/tiny-pvh');
  const bytes = numberOption('--bytes', 24_000);
  const line = `${'x'.repeat(79)}\n`;
  const long = `${line.repeat(Math.ceil(bytes / line.length)).slice(0, bytes)}CONSOLE-DONE\n`;
  const short = 'CONSOLE-DONE\n';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-bench-'));
  const kernels = {};
  for (const [name, msg] of [['long', long], ['short', short]]) {
    kernels[name] = { ours: path.join(dir, `${name}.elf`), theirs: path.join(dir, `${name}-debugexit.elf`) };
    fs.writeFileSync(kernels[name].ours, tinyPvhKernel(msg, { waitForThre: true }));
    fs.writeFileSync(kernels[name].theirs, tinyPvhKernel(msg, { waitForThre: true, exit: 'isa-debug-exit' }));
  }
  const againstDir = stringOption('--against');
  const rows = { nodevmm: { long: [], short: [] }, qemu: { long: [], short: [] }, against: { long: [], short: [] } };
  const ours = (dir, k) => timed(process.execPath, [path.join(dir, 'bin', 'nodevmm.js'), 'run', '--kernel', kernels[k].ours, '--boot', 'pvh', '-m', '128M', ...ONE_UART], 'CONSOLE-DONE', 60_000);
  try {
    for (let i = 0; i < RUNS; i++) {
      for (const k of ['long', 'short']) {
        rows.nodevmm[k].push(await ours(root, k));
        if (againstDir) rows.against[k].push(await ours(path.resolve(againstDir), k));
        rows.qemu[k].push(await timed('qemu-system-x86_64', ['-M', 'microvm', '-accel', 'kvm', '-m', '128M', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-device', 'isa-debug-exit', '-kernel', kernels[k].theirs], 'CONSOLE-DONE', 60_000));
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`console: ${bytes} bytes on COM1 (LSR read before each THR write), tiny PVH guest, 128 MiB, ${RUNS} interleaved runs, medians, minus a one-line guest's run`);
  const rowsOf = [
    ['wall time to the last line', (r) => r.markerMs],
    ['process CPU, user', (r) => r.userMs],
    ['process CPU, system', (r) => r.sysMs],
  ];
  for (const [name, f] of rowsOf) {
    const unit = 'ms';
    const own = (who) => median(rows[who].long.map(f)) - median(rows[who].short.map(f));
    const n = own('nodevmm');
    const q = own('qemu');
    const also = againstDir ? `   --against ${own('against').toFixed(0)} ${unit} (${(own('against') / q).toFixed(2)}x)` : '';
    console.log(`  ${name.padEnd(28)} nodevmm ${n.toFixed(0).padStart(6)} ${unit}   qemu ${q.toFixed(0).padStart(6)} ${unit}   ratio ${(n / q).toFixed(2)}x   (${((n * 1e3) / bytes).toFixed(1)} vs ${((q * 1e3) / bytes).toFixed(1)} us per byte)${also}`);
  }
}

async function linux() {
  const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');
  const a = await ensureGuestArtifacts({ arch: 'x86_64' });
  const cmdline = 'console=ttyS0 panic=-1';
  const images = { bzimage: a.vmlinuz, pvh: a.vmlinux };
  const kinds = IMAGE === 'both' ? ['bzimage', 'pvh'] : [IMAGE];
  if (!kinds.every((k) => k in images)) throw new Error(`--image ${IMAGE}: use bzimage, pvh or both`);
  const againstDir = stringOption('--against');
  const rows = Object.fromEntries(kinds.map((k) => [k, { nodevmm: [], qemu: [], against: [] }]));
  const failures = { nodevmm: 0, qemu: 0, against: 0 };
  // Under the emulated KVM host a guest occasionally dies in early boot (docs/testing.md):
  // such a run is counted and reported, and replaced by another, for either VMM.
  const attempt = async (who, cmd, argv) => {
    for (let tries = 0; tries < 3; tries++) {
      try {
        return await timed(cmd, argv, 'GUEST-INIT-OK', 120_000);
      } catch (e) {
        failures[who]++;
        const [first, ...rest] = e.message.split('\n');
        console.log(`  (${who} run failed and was repeated: ${first})`);
        // The tail of the guest's console, so the failure can be told apart later.
        for (const l of rest.join('\n').trim().split('\n').slice(-12)) console.log(`    | ${l}`);
      }
    }
    throw new Error(`${who} failed three times in a row`);
  };
  for (let i = 0; i < RUNS; i++) {
    for (const kind of kinds) {
      const kernel = images[kind];
      const runArgs = ['run', '--kernel', kernel, '--initrd', a.testInitramfs, '--no-default-cmdline', '--cmdline', cmdline, '-m', '512M', '-p', '1', ...ONE_UART];
      rows[kind].nodevmm.push(await attempt('nodevmm', process.execPath, [path.join(root, 'bin', 'nodevmm.js'), ...runArgs]));
      if (againstDir) rows[kind].against.push(await attempt('against', process.execPath, [path.join(path.resolve(againstDir), 'bin', 'nodevmm.js'), ...runArgs]));
      rows[kind].qemu.push(await attempt('qemu', 'qemu-system-x86_64', ['-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-m', '512M', '-smp', '1', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot', '-kernel', kernel, '-initrd', a.testInitramfs, '-append', cmdline]));
    }
  }
  console.log(`  failed runs repeated: nodevmm ${failures.nodevmm}, qemu ${failures.qemu}${againstDir ? `, --against ${failures.against}` : ''}`);
  const spread = (xs, digits) => {
    const s = [...xs].sort((x, y) => x - y);
    return `${s[0].toFixed(digits)} / ${median(s).toFixed(digits)} / ${s[s.length - 1].toFixed(digits)}`;
  };
  for (const kind of kinds) {
    const r = rows[kind];
    console.log(`Debian ${a.kernelVersion} ${kind === 'pvh' ? 'vmlinux through PVH' : 'bzImage'} + test initramfs, 512 MiB, 1 vCPU, "${cmdline}", ${RUNS} interleaved runs, min / median / max`);
    const line = (name, f, unit, digits) => {
      const n = r.nodevmm.map(f);
      const q = r.qemu.map(f);
      console.log(`  ${name.padEnd(24)} nodevmm ${spread(n, digits)} ${unit}   qemu ${spread(q, digits)} ${unit}   ratio ${(median(n) / median(q)).toFixed(2)}x`);
      if (againstDir) {
        const o = r.against.map(f);
        console.log(`  ${''.padEnd(24)} --against ${spread(o, digits)} ${unit}   ratio to qemu ${(median(o) / median(q)).toFixed(2)}x, this checkout to --against ${(median(n) / median(o)).toFixed(2)}x`);
      }
    };
    line('GUEST-INIT-OK', (x) => x.markerMs, 'ms', 0);
    line('kernel clock start', (x) => x.kernelMs, 'ms', 0);
    line('exit (after poweroff)', (x) => x.exitMs, 'ms', 0);
    line('peak RSS', (x) => x.rssKiB / 1024, 'MiB', 1);
  }
}

const modes = { tiny, linux, console: consoleOutput };
if (!modes[mode]) {
  console.error('usage: node scripts/bench-boot.js tiny|console|linux [--runs N]');
  process.exit(2);
}
console.log(`host: ${os.cpus()[0].model}, ${os.cpus().length} cpus, kernel ${os.release()}, node ${process.version}`);
modes[mode]().catch((e) => {
  console.error(`bench-boot: ${e.message}`);
  process.exit(1);
});
