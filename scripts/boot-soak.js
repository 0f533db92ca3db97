#!/usr/bin/env node
'use strict';
/**
 * Boot soak: boots Debian's kernel with the test initramfs N times with
 * nodevmm (through the API, in this process) and N times with QEMU microvm,
 * interleaved, and counts the boots that never reach GUEST-INIT-OK and
 * power off. For a nodevmm boot that stalls it prints vm.diagnose() (RIP,
 * LAPIC, UARTs) and the console tail; `--nokaslr` makes those RIPs match
 * System.map. Needs a real KVM: where /dev/kvm is KVM-PVM run it through
 * the emulated host,
 *
 *   node scripts/kvm-host.js --timeout 3000 -- node scripts/boot-soak.js [--runs N] [--timeout-s S] [--nokaslr] [--no-qemu]
 *
 * This is how the emulated host's early-boot deaths are measured against
 * QEMU's in the same run (docs/testing.md).
 */
const { spawn } = require('node:child_process');
const path = require('node:path');

const { flag, numberOption } = require('./lib/options');
const RUNS = numberOption('--runs', 10);
const TIMEOUT_MS = numberOption('--timeout-s', 180) * 1000;
const NOKASLR = flag('--nokaslr');
const WITH_QEMU = !flag('--no-qemu');
const CMD = 'echo soak';

function tail(text, lines) {
  return text.replace(/\r/g, '').trimEnd().split('\n').slice(-lines).map((l) => `    | ${l}`).join('\n');
}

async function nodevmmBoot(a) {
  const { createVm } = require('../dist/lib/vm/vm');
  const { cmdParam } = require('../dist/lib/testing/e2e');
  const cmdline = ['console=ttyS0 panic=-1', NOKASLR ? 'nokaslr' : '', cmdParam(CMD)].filter(Boolean).join(' ');
  const vm = await createVm({ kernel: a.vmlinuz, initrd: a.testInitramfs, memory: '256M', cmdline, cmdlineDefaults: false });
  await vm.start();
  let diagnosis;
  const timer = setTimeout(() => {
    // A vCPU stuck outside KVM_RUN (waiting for JS) never acknowledges a pause: give diagnose 10 s.
    const late = new Promise((resolve) => setTimeout(() => resolve('diagnose did not finish in 10 s (a vCPU did not pause)'), 10_000));
    Promise.race([vm.diagnose(), late])
      .then((d) => (diagnosis = d), (e) => (diagnosis = `diagnose failed: ${e.message}`))
      .finally(() => vm.kill());
  }, TIMEOUT_MS);
  const stop = await vm.waitForStop();
  clearTimeout(timer);
  const log = vm.serial(1).log();
  const ok = log.includes('GUEST-INIT-OK') && stop.reason === 'poweroff';
  return { ok, detail: ok ? '' : `stop ${stop.reason}${stop.message ? ` (${stop.message})` : ''}${diagnosis ? `\n    diagnosis: ${diagnosis}` : ''}\n${tail(log, 12)}` };
}

function qemuBoot(a) {
  const cmdline = ['console=ttyS0 panic=-1', NOKASLR ? 'nokaslr' : '', `nodevmm.cmd=${Buffer.from(CMD).toString('base64')}`].filter(Boolean).join(' ');
  return new Promise((resolve) => {
    const child = spawn('qemu-system-x86_64', ['-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-m', '256M', '-smp', '1', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot', '-kernel', a.vmlinuz, '-initrd', a.testInitramfs, '-append', cmdline], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      const ok = out.includes('GUEST-INIT-OK') && status === 0;
      resolve({ ok, detail: ok ? '' : `exit ${status ?? signal}\n${tail(out, 12)}` });
    });
  });
}

async function main() {
  const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');
  const a = await ensureGuestArtifacts({ arch: 'x86_64' });
  const os = require('node:os');
  console.log(`host: ${os.cpus()[0].model}, ${os.cpus().length} cpus, kernel ${os.release()}, node ${process.version}; guest Debian ${a.kernelVersion}, 256 MiB, 1 vCPU; ${RUNS} boots each, timeout ${TIMEOUT_MS / 1000} s`);
  const vmms = { nodevmm: () => nodevmmBoot(a), ...(WITH_QEMU ? { qemu: () => qemuBoot(a) } : {}) };
  const failed = Object.fromEntries(Object.keys(vmms).map((k) => [k, 0]));
  for (let i = 1; i <= RUNS; i++) {
    for (const [who, boot] of Object.entries(vmms)) {
      const t0 = Date.now();
      const r = await boot();
      if (!r.ok) failed[who]++;
      console.log(`${who} boot ${i}: ${r.ok ? 'ok' : 'FAILED'} in ${((Date.now() - t0) / 1000).toFixed(1)} s${r.ok ? '' : `: ${r.detail}`}`);
    }
  }
  console.log(`boots that did not reach GUEST-INIT-OK and power off: ${Object.entries(failed).map(([k, n]) => `${k} ${n} of ${RUNS}`).join(', ')}`);
}

main().catch((e) => {
  console.error(`boot-soak: ${e.message}`);
  process.exit(1);
});
