#!/usr/bin/env node
// Diagnostic (not a test): a guest's own reboot (busybox `reboot -f`, PSCI
// SYSTEM_RESET) with onReset 'restart', several times in a row with 1 and 2
// vCPUs, in the emulated arm64 KVM host. Core dumps are on inside the host;
// a core is copied out to $DIAG_OUT (default /tmp/arm64-restart-diag/out)
// for `gdb-multiarch` with the host's sysroot (~/.cache/nodevmm/arm64/root).
// Usage (under the e2e lock): node scripts/diag/arm64-guest-reboot.js [--vcpus 1,2] [--reboots 3]
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const argv = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const step = (s) => fs.writeSync(1, `DIAG-STEP ${(process.uptime()).toFixed(1)} ${s}\n`);

async function guest() {
  const { createVm } = require('../../dist/lib/index');
  const { agentCmdline } = require('../../dist/lib/testing/index');
  const { buildTestInitramfs } = require('../../dist/lib/initramfs/initramfs');
  const { arm64GuestModules, findArm64Artifacts } = require('../../dist/lib/testing/arm64-kvm-host');
  const a = findArm64Artifacts();
  if (!a) throw new Error('arm64 artifacts not visible inside the host (NODEVMM_CACHE)');
  const initrd = buildTestInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)), modules: arm64GuestModules(a) });
  const stayUp = Buffer.from('while :; do sleep 3600; done').toString('base64');
  const reboots = Number(flag('--reboots', '3'));
  for (const vcpus of flag('--vcpus', '1,2').split(',').map(Number)) {
    step(`vcpus ${vcpus}: create`);
    const vm = await createVm({ kernel: a.image, initrd, memory: '256M', vcpus, onReset: 'restart', cmdline: `quiet ${agentCmdline('aarch64')} nodevmm.cmd=${stayUp}` });
    vm.on('state', (s) => step(`vcpus ${vcpus}: state ${s} (boots ${vm.boots})`));
    vm.on('reset', () => step(`vcpus ${vcpus}: reset event (old machine disposed, new one not yet built)`));
    vm.on('stop', (r) => step(`vcpus ${vcpus}: stop ${JSON.stringify(r.reason)} ${r.message}`));
    vm.on('serial', (port, bytes) => {
      for (const line of bytes.toString('latin1').split(/\r?\n/)) if (line.trim()) fs.writeSync(1, `[${port}] ${line}\n`);
    });
    await vm.start();
    await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 180_000 });
    for (let i = 1; i <= reboots; i++) {
      const up = await vm.exec('echo up', { timeoutMs: 60_000 });
      step(`vcpus ${vcpus}: reboot ${i}: agent says ${up.stdout.trim()}`);
      const resetSeen = new Promise((r) => vm.once('reset', r));
      vm.serial(2).write('reboot -f\n');
      await resetSeen;
      step(`vcpus ${vcpus}: reboot ${i}: restarted, waiting for init`);
      await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 180_000 });
      step(`vcpus ${vcpus}: reboot ${i}: init ok, boots ${vm.boots}`);
    }
    await vm.kill();
    step(`vcpus ${vcpus}: done`);
  }
  step('ALL-OK');
}

async function host() {
  const os = require('node:os');
  const { runInArm64KvmHost, findArm64Artifacts } = require('../../dist/lib/testing/arm64-kvm-host');
  const artifacts = findArm64Artifacts();
  if (!artifacts) throw new Error('no arm64 artifacts (node scripts/arm64-kvm-host.js fetches them)');
  const out = process.env.DIAG_OUT || '/tmp/arm64-restart-diag/out';
  fs.mkdirSync(out, { recursive: true });
  const before = new Set(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('nodevmm-arm64-host-')));
  const args = argv.filter((x) => x !== '--host').map((x) => `'${x}'`).join(' ');
  const cmd = [
    'ulimit -c unlimited',
    "echo '/results/core.%e.%p' > /proc/sys/kernel/core_pattern",
    `node scripts/diag/arm64-guest-reboot.js --guest ${args}`,
    'st=$?',
    'echo "DIAG-NODE-EXIT=$st"',
    'ls -la /results',
    'sync',
    'echo DIAG-COPY-NOW',
    'sleep 5',
    'exit $st',
  ].join('\n');
  let copied = false;
  let log = '';
  const r = await runInArm64KvmHost(cmd, {
    timeoutMs: Number(flag('--timeout', '2400')) * 1000,
    projectDir: root,
    artifacts,
    env: { NODEVMM_CACHE: `/host${path.dirname(artifacts.dir)}` },
    onConsole: (text) => {
      process.stdout.write(text);
      log += text;
      if (!copied && log.includes('DIAG-COPY-NOW')) {
        copied = true;
        for (const d of fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('nodevmm-arm64-host-') && !before.has(n))) {
          for (const f of fs.readdirSync(path.join(os.tmpdir(), d)).filter((n) => n.startsWith('core'))) {
            fs.copyFileSync(path.join(os.tmpdir(), d, f), path.join(out, f));
            console.log(`\nDIAG: copied ${f} to ${out}`);
          }
        }
      }
    },
  });
  fs.writeFileSync(path.join(out, 'console.log'), r.consoleLog);
  console.log(`\nDIAG: host exit ${r.exitCode}, ${(r.durationMs / 1000).toFixed(0)} s; console in ${out}/console.log`);
}

(argv.includes('--guest') ? guest() : host()).then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
