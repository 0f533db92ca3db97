#!/usr/bin/env node
// Diagnostic (not a test): the e2e-arm64 proof's VM sequence (test/e2e-arm64/in-host.ts)
// over and over in one node process inside the emulated arm64 KVM host, with
// core dumps on: a lifecycle VM (exec, pause/diagnose/resume, host reset,
// guest reboot with onReset 'restart', shutdown by the power key, which ends
// it with PSCI SYSTEM_OFF inside the partition's event dispatch), then a
// devices VM (disk, rng, console, TAP, vsock) started right after and killed
// once its init ran. Cores are copied to $DIAG_OUT (default /tmp/arm64-vm-cycle).
// Usage (under the e2e lock): node scripts/diag/arm64-vm-cycle-stress.js [cycles]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const argv = process.argv.slice(2);
const cycles = Number(argv.find((a) => /^\d+$/.test(a)) ?? 8);
const step = (s) => fs.writeSync(1, `CYCLE ${(process.uptime()).toFixed(1)} ${s}\n`);

async function guest() {
  const { createVm } = require('../../dist/lib/index');
  const { agentCmdline } = require('../../dist/lib/testing/index');
  const { buildTestInitramfs } = require('../../dist/lib/initramfs/initramfs');
  const { arm64GuestModules, findArm64Artifacts } = require('../../dist/lib/testing/arm64-kvm-host');
  const a = findArm64Artifacts();
  if (!a) throw new Error('arm64 artifacts not visible inside the host (NODEVMM_CACHE)');
  const initrd = buildTestInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)), modules: arm64GuestModules(a) });
  const stayUp = Buffer.from('while :; do sleep 3600; done').toString('base64');
  const cmdline = `quiet ${agentCmdline('aarch64')} nodevmm.cmd=${stayUp}`;
  const disk = path.join(os.tmpdir(), 'cycle-vda.img');
  fs.writeFileSync(disk, Buffer.alloc(8 * 2 ** 20));
  for (let c = 1; c <= cycles; c++) {
    step(`${c}: lifecycle create`);
    const vm = await createVm({ kernel: a.image, initrd, memory: '256M', onReset: 'restart', cmdline });
    await vm.start();
    await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 180_000 });
    await vm.exec('uname -m', { timeoutMs: 60_000 });
    await vm.pause();
    await vm.diagnose();
    await vm.resume();
    step(`${c}: host reset`);
    await vm.reset();
    await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 180_000 });
    await vm.exec('echo again', { timeoutMs: 60_000 });
    step(`${c}: guest reboot`);
    const resetSeen = new Promise((r) => vm.once('reset', r));
    vm.serial(2).write('reboot -f\n');
    await resetSeen;
    await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 180_000 });
    step(`${c}: shutdown`);
    const stop = await vm.shutdown({ timeoutMs: 120_000 });
    step(`${c}: lifecycle stopped: ${stop.reason}`);
    const dev = await createVm({
      kernel: a.image,
      initrd,
      memory: '256M',
      cmdline,
      disks: [{ path: disk }],
      rng: true,
      virtioConsole: true,
      net: [{ tap: 'ntap0' }],
      vsock: { cid: 3 },
    });
    step(`${c}: devices start`);
    await dev.start();
    step(`${c}: devices running`);
    await dev.expect(/GUEST-INIT-OK/, { timeoutMs: 180_000 });
    await dev.kill();
    step(`${c}: devices killed`);
  }
  step('ALL-OK');
}

async function host() {
  const { runInArm64KvmHost, findArm64Artifacts } = require('../../dist/lib/testing/arm64-kvm-host');
  const artifacts = findArm64Artifacts();
  if (!artifacts) throw new Error('no arm64 artifacts (node scripts/arm64-kvm-host.js fetches them)');
  const out = process.env.DIAG_OUT || '/tmp/arm64-vm-cycle';
  fs.mkdirSync(out, { recursive: true });
  const before = new Set(fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('nodevmm-arm64-host-')));
  const cmd = [
    'ulimit -c unlimited',
    'export NODEVMM_CRASH_REPORT=1',
    "echo '/results/core.%e.%p' > /proc/sys/kernel/core_pattern",
    `node scripts/diag/arm64-vm-cycle-stress.js --guest ${cycles}`,
    'st=$?',
    'echo "CYCLE-NODE-EXIT=$st"',
    'ls -la /results',
    'sync',
    'echo CYCLE-COPY-NOW',
    'sleep 5',
    'exit $st',
  ].join('\n');
  let log = '';
  let copied = false;
  const r = await runInArm64KvmHost(cmd, {
    timeoutMs: 2400_000,
    projectDir: root,
    artifacts,
    env: { NODEVMM_CACHE: `/host${path.dirname(artifacts.dir)}` },
    onConsole: (text) => {
      process.stdout.write(text);
      log += text;
      if (copied || !log.includes('CYCLE-COPY-NOW')) return;
      copied = true;
      for (const d of fs.readdirSync(os.tmpdir()).filter((x) => x.startsWith('nodevmm-arm64-host-') && !before.has(x))) {
        for (const f of fs.readdirSync(path.join(os.tmpdir(), d)).filter((x) => x.startsWith('core'))) {
          fs.copyFileSync(path.join(os.tmpdir(), d, f), path.join(out, f));
          console.log(`\nCYCLE: copied ${f} to ${out}`);
        }
      }
    },
  });
  fs.writeFileSync(path.join(out, 'console.log'), r.consoleLog);
  console.log(`\nCYCLE: host exit ${r.exitCode}, ${(r.durationMs / 1000).toFixed(0)} s`);
}

(argv.includes('--guest') ? guest() : host()).then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
