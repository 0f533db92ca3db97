#!/usr/bin/env node
'use strict';
/**
 * Where a real kernel's boot exits to JavaScript: boots a kernel through
 * createVm (not the CLI bundle, so the bus can be counted) and prints, per
 * port or MMIO register and direction, how many accesses reached JS through
 * the mailbox (the vCPU waited for JS) and how many were posted (it did not),
 * plus the exit counters and, for each guest console line, the host time it
 * arrived beside the guest's own timestamp. Diagnostic only; run it where
 * /dev/kvm runs Linux (inside the emulated KVM host here):
 *
 *   node scripts/kvm-host.js --timeout 600 -- node scripts/diag/boot-exits.js [--image bzimage|pvh] [--cmdline "..."] [--qemu]
 *
 * --qemu boots the same kernel, initrd and command line under QEMU microvm
 * instead (as scripts/bench-boot.js linux does) and prints only its console
 * lines with their arrival times since QEMU's process started, to compare.
 */
const path = require('node:path');
const root = path.resolve(__dirname, '..', '..');
const { stringOption } = require('../lib/options');
const { IoBus } = require(path.join(root, 'dist/lib/hv/io-bus'));
const { ExitDispatcher } = require(path.join(root, 'dist/lib/hv/exit-dispatcher'));
const { createVm } = require(path.join(root, 'dist/lib/vm/vm'));
const { ensureGuestArtifacts } = require(path.join(root, 'dist/lib/testing/artifacts'));

const t0 = performance.now();
const counts = new Map();
let posting = false;
const count = (bus, address, size, dir) => {
  const key = `${bus.kind} 0x${address.toString(16)} ${dir}${size} ${posting ? 'posted' : 'mailbox'}`;
  counts.set(key, (counts.get(key) ?? 0) + 1);
};
const { read, write } = IoBus.prototype;
IoBus.prototype.read = function (address, size) {
  count(this, address, size, 'r');
  return read.call(this, address, size);
};
IoBus.prototype.write = function (address, size, value) {
  count(this, address, size, 'w');
  return write.call(this, address, size, value);
};
const { applyPosted } = ExitDispatcher.prototype;
ExitDispatcher.prototype.applyPosted = function (...a) {
  posting = true;
  try {
    return applyPosted.apply(this, a);
  } finally {
    posting = false;
  }
};

/** QEMU microvm with the same kernel, initrd and command line: its console lines with their arrival times. */
function qemu(kernel, initrd, cmdline) {
  const { spawn } = require('node:child_process');
  const q0 = performance.now();
  const child = spawn('qemu-system-x86_64', ['-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-m', '512M', '-smp', '1', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot', '-kernel', kernel, '-initrd', initrd, '-append', cmdline], { stdio: ['ignore', 'pipe', 'inherit'] });
  let line = '';
  child.stdout.on('data', (b) => {
    line += b.toString('latin1');
    let i;
    while ((i = line.indexOf('\n')) >= 0) {
      console.log(`${((performance.now() - q0) / 1000).toFixed(2).padStart(7)} | ${line.slice(0, i).replace(/\r$/, '')}`);
      line = line.slice(i + 1);
    }
  });
  return new Promise((resolve) => child.on('close', resolve));
}

async function main() {
  const a = await ensureGuestArtifacts({ arch: 'x86_64' });
  const image = stringOption('--image') ?? 'bzimage';
  const cmdline = stringOption('--cmdline') ?? 'console=ttyS0 panic=-1';
  const kernel = image === 'pvh' ? a.vmlinux : a.vmlinuz;
  if (process.argv.includes('--qemu')) {
    console.log(`boot-exits: QEMU microvm, ${image}, "${cmdline}"`);
    await qemu(kernel, a.testInitramfs, cmdline);
    return;
  }
  const vm = await createVm({ kernel, initrd: a.testInitramfs, cmdline, cmdlineDefaults: false, memory: '512M', vcpus: 1, serial: { com1: true, com2: false, com3: false, com4: false } });
  let line = '';
  const lines = [];
  vm.on('serial', (_c, b) => {
    line += b.toString('latin1');
    let i;
    while ((i = line.indexOf('\n')) >= 0) {
      lines.push([performance.now() - t0, line.slice(0, i).replace(/\r$/, '')]);
      line = line.slice(i + 1);
    }
  });
  let stats;
  vm.on('state', (s) => s === 'stopping' && (stats = vm.exitStats()));
  const started = performance.now() - t0;
  await vm.start();
  const stop = await vm.waitForStop();
  console.log(`boot-exits: ${image}, "${cmdline}": vcpus started at ${started.toFixed(0)} ms, stop ${stop.reason}`);
  for (const [ms, l] of lines) console.log(`${(ms / 1000).toFixed(2).padStart(7)} | ${l}`);
  console.log('accesses that reached JS, by register:');
  for (const [k, n] of [...counts].sort((x, y) => y[1] - x[1])) console.log(`  ${String(n).padStart(7)}  ${k}`);
  const cpu = process.cpuUsage();
  // The main (JS) thread alone: the process's figure includes the vCPU threads' time in the guest.
  const [ut, st] = require('node:fs').readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ').slice(11, 13).map(Number);
  console.log(`JS thread CPU: user ${ut * 10} ms, system ${st * 10} ms (clock ticks of 10 ms)`);
  if (stats) console.log(`exits to JS ${stats.exitsToJs}, native ${stats.exitsNative}, posted ${stats.exitsPosted}; JS dispatches ${stats.notifications} (posted-write drains ${stats.postedDrains}, rescues ${stats.rescues}); process CPU user ${(cpu.user / 1000).toFixed(0)} ms, system ${(cpu.system / 1000).toFixed(0)} ms`);
}
main().catch((e) => {
  console.error(`boot-exits: ${e.stack}`);
  process.exit(1);
});
